"""Starting a configuration: one process or a master and its workers (≈ the choice
between ngx_single_process_cycle and ngx_master_process_cycle in src/core/nginx.c and
src/os/unix/ngx_process_cycle.c, with ngx_clone_listening of ngx_connection.c).

The listening sockets are opened here, before any fork, so that every worker inherits
them; with ``reuseport`` each worker gets a clone of its own, bound to the same
address. On SIGHUP the master re-reads the configuration; a new address (or, with
reuseport, a new number of workers) opens new sockets, and the old workers finish on
their own copies.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ngxffi import os as nos
from ngxffi import sockaddr
from ngxffi._ngx import lib
from ngxffi.core import log
from ngxffi.core.conf import ConfigError
from ngxffi.event.conf import EventConf
from ngxffi.event.listening import Listening, open_listening_sockets
from ngxffi.event.stats import Stats
from ngxffi.process.conf import CoreConf
from ngxffi.process.master import Master
from ngxffi.process.shm import SharedStats
from ngxffi.process.shmtx import force_unlock
from ngxffi.process.worker import Configuration, Worker

Reread = Callable[[], Configuration]  # raises ConfigError or OSError


def run(
    configuration: Configuration,
    reread: Reread | None = None,
    announce: Callable[[str], object] | None = None,
) -> int:
    """Serve ``configuration`` until stopped: in this process, or with
    ``worker_processes`` above 1 (and ``master_process`` on) in workers under a
    master, which calls ``reread`` on SIGHUP. ``announce`` is told the address the
    listening socket got (port 0 takes any free one) once it is open."""
    core = configuration.conf[CoreConf]
    if core.worker_rlimit_nofile:
        hard = nos.getrlimit(lib.RLIMIT_NOFILE)[1]
        nos.setrlimit(lib.RLIMIT_NOFILE, (core.worker_rlimit_nofile, hard))
    single = core.worker_processes == 1 or not core.master_process
    listening = clone_listening(configuration, 1 if single else core.worker_processes)
    with contextlib.ExitStack() as stack:
        stack.callback(close_listening, listening)
        if core.pid:
            Path(core.pid).write_text(f"{os.getpid()}\n")
            stack.callback(Path(core.pid).unlink, missing_ok=True)
        if announce is not None:
            announce(sockaddr.to_text(nos.getsockname(listening[0].fd)))
        if single:  # nginx's `master_process off` too, whatever worker_processes says
            return Worker(configuration, listening[0], Stats()).run()
        processes = Processes(configuration, listening, reread)
        stack.callback(processes.close)  # the sockets a reload opened, too
        return processes.master().run()


def clone_listening(configuration: Configuration, workers: int) -> list[Listening]:
    """The configuration's listening socket, opened; with ``reuseport`` one per
    worker, all bound to the same address (nginx's ngx_clone_listening)."""
    template = configuration.listening
    listening: list[Listening] = []
    try:
        for _ in range(workers if template.reuseport else 1):
            ls = replace(template, fd=-1, connection=None)
            open_listening_sockets([ls])
            listening.append(ls)
            # port 0: the clones take the port the first one got
            template = replace(template, address=nos.getsockname(ls.fd))
    except BaseException:
        close_listening(listening)
        raise
    return listening


def close_listening(listening: list[Listening]) -> None:
    for ls in listening:
        ls.close()


@dataclass
class Generation:
    """The workers of one configuration (a reload starts a new generation; the old
    one finishes on the sockets it was started with)."""

    configuration: Configuration
    sockets: list[Listening]  # one shared, or with reuseport one per worker
    stats: Stats

    def run(self, slot: int) -> int:
        """The worker in ``slot`` (in the forked process)."""
        if len(self.sockets) == 1:  # shared: the accept mutex, or EPOLLEXCLUSIVE
            mutex = self.configuration.conf[EventConf].accept_mutex
            accept = "mutex" if mutex else "exclusive"
            return Worker(self.configuration, self.sockets[0], self.stats, accept).run()
        for i, other in enumerate(self.sockets):  # reuseport: this worker's own
            if i != slot:
                nos.close(other.fd)
        return Worker(self.configuration, self.sockets[slot], self.stats).run()


class Processes:
    """The master's side of a configuration: the shared counters (mapped before
    fork), the listening sockets and what each worker runs; the Master calls back
    into it for quitting, log reopening, dead workers and reloads."""

    def __init__(
        self,
        configuration: Configuration,
        listening: list[Listening],
        reread: Reread | None,
    ) -> None:
        self.configuration = configuration
        self.listening = listening
        self.reread = reread
        self.stats = SharedStats()  # before fork: one set of counters for all workers

    def master(self) -> Master:
        return Master(
            self.configuration.conf[CoreConf].worker_processes,
            self.worker_for(),
            self.close,
            self.reopen,
            self.worker_exited,
            self.reload,
        )

    def worker_for(self) -> Callable[[int], int]:
        """What a worker of the current configuration runs, given its slot."""
        return Generation(self.configuration, list(self.listening), self.stats).run

    def close(self) -> None:
        """SIGQUIT: the master stops listening (the workers keep their copies)."""
        close_listening(self.listening)

    def reopen(self) -> None:
        """SIGUSR1: the master's own log."""
        log.configure(*self.configuration.conf[CoreConf].error_log)

    def worker_exited(self, pid: int) -> None:
        if force_unlock(self.stats, pid):
            log.log_error(log.ALERT, f"shared memory lock of {pid} forced free")

    def reload(self) -> tuple[int, Callable[[int], int]] | None:
        """SIGHUP: the new configuration's workers, or None (the old ones stay)."""
        try:
            if self.reread is None:
                raise ConfigError("no configuration to re-read")
            new = self.reread()
            core = new.conf[CoreConf]
            if core.worker_processes == 1 or not core.master_process:
                raise ConfigError("cannot leave the master process by a reload")
            if self._new_sockets_needed(new):
                fresh = clone_listening(new, core.worker_processes)
                self.close()  # the old workers keep their own copies
                self.listening = fresh
        except (ConfigError, OSError) as e:
            log.log_error(log.EMERG, f"reconfiguring failed: {e}")
            return None
        self.configuration = new
        log.configure(*core.error_log)
        return core.worker_processes, self.worker_for()

    def _new_sockets_needed(self, new: Configuration) -> bool:
        old, fresh = self.configuration.listening, new.listening
        per_worker = len(self.listening) > 1  # reuseport: one socket per worker
        workers = new.conf[CoreConf].worker_processes
        return _socket_options(old) != _socket_options(fresh) or (
            per_worker and workers != len(self.listening)
        )


def _socket_options(ls: Listening) -> tuple[object, ...]:
    """What a listening socket is opened with (a change needs a new socket)."""
    return (
        ls.address,
        ls.backlog,
        ls.reuseport,
        ls.deferred_accept,
        ls.rcvbuf,
        ls.sndbuf,
        ls.emfile_policy,
    )
