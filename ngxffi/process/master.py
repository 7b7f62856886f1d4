"""The master process (≈ ngx_master_process_cycle, ngx_start_worker_processes,
ngx_reap_children in src/os/unix/ngx_process_cycle.c and ngx_process.c).

Given the listening sockets (opened by :mod:`ngxffi.process.cycle`), the master forks
``worker_processes`` workers, and then
only waits for signals, with all of them blocked (nginx's ``sigsuspend``; here
``sigtimedwait``, which has no handler races):

* SIGCHLD: reap; a worker that died without being asked is started again in the same
  slot, unless it exited with code 2 (fatal, as nginx);
* SIGTERM, SIGINT: fast shutdown — TERM the workers, again with a delay doubling from
  50 ms, KILL once the delay passes 1 s; exit when none is left;
* SIGQUIT: graceful shutdown — QUIT the workers (they stop accepting, close idle
  connections and finish the rest), close the listening sockets, exit when none is left;
* SIGWINCH: stop the workers gracefully, as SIGQUIT, but the master stays.

Each worker gets SIGTERM if the master dies (``PR_SET_PDEATHSIG``): no orphans. The
titles are nginx's: ``ngxffi: master process <command line>``, ``ngxffi: worker
process``. SIGUSR1 reopens the log files, the master's and every worker's; a worker
that dies holding the accept mutex has it forced free. SIGHUP re-reads the
configuration: if it is good, new workers start and the old ones stop gracefully; if
not, the error is logged and the old workers go on serving.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable

import setproctitle

from ngxffi._ngx import lib
from ngxffi.core.log import ALERT, CRIT, NOTICE, log_error

SIGNALS = {
    signal.SIGHUP,
    signal.SIGCHLD,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGWINCH,
    signal.SIGUSR1,
}
FATAL = 2  # a worker exit code that means "do not respawn me"


class Master:
    """Forks ``n`` workers that each run ``worker(slot)`` and keeps them alive."""

    def __init__(
        self,
        n: int,
        worker: Callable[[int], int],
        on_quit: Callable[[], object],
        on_reopen: Callable[[], object] = lambda: None,
        on_exit: Callable[[int], object] = lambda pid: None,
        reload: Callable[[], tuple[int, Callable[[int], int]] | None] = lambda: None,
    ) -> None:
        self.n = n
        self.worker = worker
        self.on_quit = on_quit  # closes the listening sockets
        self.on_reopen = on_reopen  # reopens the master's own log
        self.on_exit = on_exit  # a worker died: free what it held (the accept mutex)
        self.reload = reload  # SIGHUP: the new (n, worker), or None to keep the old
        self.retiring: set[int] = set()  # old workers finishing after a reload
        self.workers: dict[int, int] = {}  # pid -> slot
        self.terminate = False
        self.quit = False
        self.noaccepting = False  # SIGWINCH: workers stopped, master stays

    def run(self) -> int:
        setproctitle.setproctitle("ngxffi: master process " + " ".join(sys.argv))
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        for slot in range(self.n):
            self.spawn(slot)
        delay = 0  # ms: the termination cycle's, doubling
        while True:
            if not self.workers and not self.retiring and (self.terminate or self.quit):
                log_error(NOTICE, "exit")
                return 0
            if delay:
                info = signal.sigtimedwait(SIGNALS, delay / 1000)
            else:
                info = signal.sigwaitinfo(SIGNALS)
            if info is None:  # the termination delay ran out: insist
                delay *= 2
                self.signal_workers(signal.SIGKILL if delay > 1000 else signal.SIGTERM)
                continue
            self.on_signal(info.si_signo)
            if self.terminate and delay == 0:
                delay = 50
                self.signal_workers(signal.SIGTERM)

    def on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            self.reap()
        elif signum in (signal.SIGTERM, signal.SIGINT):
            self.terminate = True
        elif signum == signal.SIGQUIT and not self.quit:
            self.quit = True
            self.signal_workers(signal.SIGQUIT)
            self.on_quit()
        elif signum == signal.SIGHUP and not (self.terminate or self.quit):
            self.reconfigure()
        elif signum == signal.SIGUSR1:
            log_error(NOTICE, "reopening logs")
            self.on_reopen()
            self.signal_workers(signal.SIGUSR1)
        elif signum == signal.SIGWINCH:
            log_error(NOTICE, "gracefully shutting down worker processes")
            self.noaccepting = True
            self.signal_workers(signal.SIGQUIT)

    def reconfigure(self) -> None:
        """SIGHUP, as nginx's master: on a good configuration, start new workers,
        then stop the old ones gracefully; on a bad one, keep the old ones."""
        log_error(NOTICE, "reconfiguring")
        new = self.reload()
        if new is None:
            return
        self.n, self.worker = new
        old = list(self.workers)
        self.retiring.update(old)
        self.workers.clear()
        self.noaccepting = False
        for slot in range(self.n):
            self.spawn(slot)
        for pid in old:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)

    def spawn(self, slot: int) -> None:
        """Fork a worker for ``slot``. Imitates ngx_spawn_process."""
        master = os.getpid()
        pid = os.fork()
        if pid:
            self.workers[pid] = slot
            log_error(NOTICE, f"start worker process {pid}")
            return
        code = FATAL
        try:
            lib.ngxffi_pdeathsig(signal.SIGTERM)
            if os.getppid() != master:  # the master died before prctl
                os._exit(0)
            # the signals stay blocked until the worker has its handlers installed
            setproctitle.setproctitle("ngxffi: worker process")
            code = self.worker(slot)
        except BaseException as e:  # a worker never returns into the caller
            log_error(ALERT, f"worker process {os.getpid()} failed: {e!r}")
        finally:
            os._exit(code)

    def reap(self) -> None:
        """Imitates ngx_reap_children: log each dead worker, start a new one in its
        slot unless we are stopping or it exited fatally."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.retiring:  # an old worker done after a reload
                self.retiring.discard(pid)
                self.on_exit(pid)
                log_error(NOTICE, f"old worker process {pid} exited")
                continue
            slot = self.workers.pop(pid, None)
            if slot is None:
                continue
            self.on_exit(pid)
            if os.WIFSIGNALED(status):
                how = f"exited on signal {os.WTERMSIG(status)}"
            else:
                how = f"exited with code {os.WEXITSTATUS(status)}"
            stopping = self.terminate or self.quit or self.noaccepting
            log_error(NOTICE if stopping else ALERT, f"worker process {pid} {how}")
            if stopping:
                continue
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == FATAL:
                log_error(
                    CRIT,
                    f"worker process {pid} exited with fatal code 2 "
                    "and cannot be respawned",
                )
                continue
            self.spawn(slot)

    def signal_workers(self, signum: int) -> None:
        for pid in [*self.workers, *self.retiring]:
            with contextlib.suppress(ProcessLookupError):  # reaped at the next SIGCHLD
                os.kill(pid, signum)
