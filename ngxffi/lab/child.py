"""The server as a child process: started under RLIMIT_NOFILE, ready when its port
accepts, its process tree, and its end.

It starts in a session of its own, so that its whole tree (a master and its workers,
a shell and its child) can be signalled at once, under the limits ``ulimit -n`` would
set, soft and hard, and with ``PR_SET_PDEATHSIG`` so that a lab killed outright takes
its server with it (the direct child only: the kernel has no such rule for
grandchildren). Every process ever seen in the tree is remembered, and killed at the
end if still alive: a worker whose master died, or one that called ``setsid``, is no
longer in the tree but is still the server's.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ngxffi._ngx import lib
from ngxffi.lab.options import Options
from ngxffi.lab.target import LabError, Target, free_port

STOP_TIMEOUT_S = 3.0
DAEMON_GRACE_S = 1.0  # after an exit 0, how long a daemon may take to listen
STDERR = "lab-server.stderr"


class StartError(Exception):
    """The server did not become ready: the reason, for the result."""


@dataclass
class Started:
    """A running server: its process, its port, its run directory (``{tmp}``, which
    holds its stderr), and every process seen in its tree."""

    proc: subprocess.Popen[bytes]
    port: int
    tmp: Path
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def tree(self) -> list[psutil.Process]:
        """The server and every descendant still alive (workers included)."""
        try:
            root = psutil.Process(self.proc.pid)
            members = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        for p in members:
            self.seen.setdefault(p.pid, p)
        return members

    def stderr_tail(self, lines: int = 5) -> str:
        """The last ``lines`` of what the server wrote on stderr."""
        path = self.tmp / STDERR
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.strip().splitlines()[-lines:])


def _limit(soft: int, hard: int) -> Callable[[], None]:
    def preexec() -> None:  # in the child, before exec: as `ulimit -n` does
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        lib.ngxffi_pdeathsig(signal.SIGKILL)

    return preexec


def start(target: Target, options: Options, env: dict[str, str]) -> Started:
    """Start ``target`` under ``options``' RLIMIT_NOFILE (soft and hard), with
    ``env`` added to the environment, and wait up to ``options.start_timeout``
    seconds until its port accepts. Raises :class:`StartError` when it exits first or
    never listens (the process is stopped by then)."""
    verbose = options.verbose
    port = target.port if target.port is not None else free_port()
    tmp = Path(tempfile.mkdtemp(prefix="ngxffi-lab-"))
    try:
        with (tmp / STDERR).open("wb") as err:
            proc = subprocess.Popen(
                target.command(port, tmp),
                stdin=subprocess.DEVNULL,
                stdout=None if verbose else subprocess.DEVNULL,
                stderr=None if verbose else err,
                preexec_fn=_limit(options.nofile, options.hard),
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            )
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        program = target.argv[0]
        raise LabError(f"server {target.name!r}: cannot run {program}: {e}") from e
    started = Started(proc, port, tmp)
    try:
        _wait_listening(started, options.start_timeout)
    except BaseException:
        stop(started)
        raise
    return started


def _accepts(port: int) -> bool:
    """Whether 127.0.0.1:port accepts a connection now."""
    with socket.socket() as s:
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _listener(port: int) -> psutil.Process | None:
    """The process listening on 127.0.0.1:port, if this lab can see it."""
    with contextlib.suppress(psutil.Error):
        for c in psutil.net_connections("tcp4"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr[1] == port:
                return psutil.Process(c.pid) if c.pid else None
    return None


def _daemon(started: Started, status: int) -> StartError:
    """The command exited and something listens on its port: a daemon it started
    (the port was free before). It is the run's, so it is stopped."""
    daemon = _listener(started.port)
    if daemon is not None:
        started.seen[daemon.pid] = daemon
    who = f"pid {daemon.pid}" if daemon else "a process the lab cannot see"
    return StartError(
        f"exited with status {status} while {who} listens on port {started.port}: "
        "a daemon, which the lab cannot measure (it has left the process tree); it "
        "was stopped. Run the server in the foreground (nginx: -g 'daemon off;')"
    )


def _wait_listening(started: Started, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    exited_at = None
    while True:
        status = started.proc.poll()
        if _accepts(started.port):
            if status is None:
                return
            raise _daemon(started, status)
        if status not in (None, 0):
            tail = started.stderr_tail()
            raise StartError(
                f"exited with status {status} before listening"
                + (f"; its stderr ends:\n{tail}" if tail else "")
            )
        now = time.monotonic()
        if status == 0:  # perhaps a daemon still starting: a short grace
            exited_at = exited_at or now
            if now - exited_at > DAEMON_GRACE_S:
                raise StartError("exited with status 0 without listening")
        if now > deadline:
            raise StartError(
                f"never listened on 127.0.0.1:{started.port} within {timeout:g} s"
            )
        time.sleep(0.02)  # polling a port that nothing announces


def stop(started: Started) -> None:
    """End the server: SIGTERM to its session and to every process seen in its tree,
    SIGKILL to what is left after a grace period. SIGINT and SIGTERM wait meanwhile,
    so that a second Ctrl-C cannot leave the server running."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        started.tree()  # the latest members too
        root = started.proc
        others = [p for pid, p in started.seen.items() if pid != root.pid]
        others = [p for p in others if p.is_running()]
        _signal_all(started, others, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        with contextlib.suppress(subprocess.TimeoutExpired):
            root.wait(timeout=STOP_TIMEOUT_S)
        left = max(0.0, deadline - time.monotonic())
        _, alive = psutil.wait_procs(others, timeout=left)
        _signal_all(started, alive, signal.SIGKILL)
        root.wait()
        psutil.wait_procs(alive, timeout=STOP_TIMEOUT_S)
        shutil.rmtree(started.tmp, ignore_errors=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _signal_all(
    started: Started, members: list[psutil.Process], signum: signal.Signals
) -> None:
    """``signum`` to the session (while its leader is not reaped, its pid cannot
    name another group) and to each of ``members`` (psutil checks that each is
    still the process it was)."""
    if started.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(started.proc.pid, signum)
    for p in members:  # those that left the session, or were never in it
        with contextlib.suppress(psutil.Error):
            p.send_signal(signum)


@contextlib.contextmanager
def running(target: Target, options: Options, env: dict[str, str]) -> Iterator[Started]:
    """:func:`start`, then :func:`stop` however the block ends."""
    started = start(target, options, env)
    try:
        yield started
    finally:
        stop(started)
