"""The server under test: its command, its start under RLIMIT_NOFILE, its process
tree, its end.

A :class:`Target` is a name and a command line. ``{port}`` in any argument becomes a
free port, found by binding port 0 and closing it again (another program could take
it in between: the start then fails clearly, as "never listened" or as the server's
own error); a command without ``{port}`` needs a fixed ``port``. The built-in presets
(:data:`PRESETS`) are commands like any other.

The server starts in a session of its own, so that its whole tree (a master and its
workers, a shell and its child) can be signalled at once, under the limit ``ulimit
-n`` would set, soft and hard. It counts as ready when 127.0.0.1:port accepts a
connection; one that exits first, or never listens, gives a clear error instead.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from ngxffi.event.listening import Listening

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 3.0


class LabError(Exception):
    """A request the lab cannot carry out (the CLI's exit status 2)."""


@dataclass(frozen=True)
class Target:
    """A server to test: ``name`` (for the table) and ``argv``, where ``{port}``
    stands for the port and ``{tmp}`` for a fresh directory of this run (removed
    afterwards), holding ``files`` (name, text: ``{port}`` and ``{tmp}`` replaced
    too); ``port`` is the fixed port of a command without ``{port}``; ``policy`` and
    ``resume`` describe the ngxffi preset (None for the others)."""

    name: str
    argv: tuple[str, ...]
    port: int | None = None
    policy: str | None = None
    resume: bool | None = None
    files: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.argv:
            raise LabError(f"server {self.name!r}: no command")
        texts = [*self.argv, *(text for _, text in self.files)]
        if self.port is None and not any("{port}" in t for t in texts):
            raise LabError(
                f"server {self.name!r}: the command has no {{port}} to replace and "
                "no --port says where it listens"
            )

    def command(self, port: int, tmp: Path) -> list[str]:
        """``argv`` with every ``{port}`` and ``{tmp}`` replaced; writes ``files``."""
        for name, text in self.files:
            (tmp / name).write_text(_fill(text, port, tmp))
        return [_fill(a, port, tmp) for a in self.argv]


def _fill(text: str, port: int, tmp: Path) -> str:
    return text.replace("{port}", str(port)).replace("{tmp}", str(tmp))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _python(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", *args)


NGINX_CONF = """daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    server { listen 127.0.0.1:{port}; location / { return 200 "ok\\n"; } }
}
"""


def _nginx() -> Target:
    nginx = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if nginx is None:
        raise LabError("server 'nginx': nginx is not installed (apt-get install nginx)")
    argv = (nginx, "-p", "{tmp}", "-e", "stderr", "-c", "{tmp}/nginx.conf")
    return Target("nginx", argv, files=(("nginx.conf", NGINX_CONF),))


def preset(
    name: str, policy: str = Listening.emfile_policy, resume: bool = True
) -> Target:
    """A built-in server by name (:data:`PRESETS`); ``policy`` and ``resume`` are the
    ngxffi server's EMFILE policy and resume rule."""
    if name == "ngxffi":
        argv = _python("ngxffi.lab.servers", "ngxffi", "{port}", policy)
        mode = "resume" if resume else "no-resume"
        return Target(name, (*argv, mode), policy=policy, resume=resume)
    if name == "asyncio":
        return Target(name, _python("ngxffi.lab.servers", "asyncio", "{port}"))
    if name == "nginx":
        return _nginx()
    raise LabError(f"no built-in server {name!r}: choose one of {', '.join(PRESETS)}")


PRESETS = {
    "ngxffi": "ngxffi's event core: event_accept, the EMFILE policy of --policy",
    "asyncio": "an asyncio.Protocol server on the default event loop",
    "nginx": "nginx itself (return 200), one worker under a master, if installed",
}


@dataclass
class Started:
    """A running server: its process, its port, its run directory (``{tmp}``, which
    holds its stderr)."""

    target: Target
    proc: subprocess.Popen[bytes]
    port: int
    tmp: Path

    def tree(self) -> list[psutil.Process]:
        """The server and every descendant still alive (workers included)."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def stderr_tail(self, lines: int = 5) -> str:
        path = self.tmp / STDERR
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.strip().splitlines()[-lines:])


STDERR = "lab-server.stderr"


def _limit(soft: int, hard: int) -> Callable[[], None]:
    def preexec() -> None:  # in the child, before exec: as `ulimit -n` does
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return preexec


def start(
    target: Target,
    soft: int,
    hard: int,
    env: dict[str, str],
    verbose: bool = False,
    start_timeout: float = START_TIMEOUT_S,
) -> Started:
    """Start ``target`` under RLIMIT_NOFILE (soft, hard) and wait up to
    ``start_timeout`` seconds until its port accepts. Raises :class:`StartError`
    when it exits first or never listens (the process is stopped by then)."""
    port = target.port if target.port is not None else free_port()
    tmp = Path(tempfile.mkdtemp(prefix="ngxffi-lab-"))
    try:
        with (tmp / STDERR).open("wb") as err:
            proc = subprocess.Popen(
                target.command(port, tmp),
                stdin=subprocess.DEVNULL,
                stdout=None if verbose else subprocess.DEVNULL,
                stderr=None if verbose else err,
                preexec_fn=_limit(soft, hard),
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            )
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LabError(
            f"server {target.name!r}: cannot run {target.argv[0]}: {e}"
        ) from e
    started = Started(target, proc, port, tmp)
    try:
        _wait_listening(started, start_timeout)
    except BaseException:
        stop(started)
        raise
    return started


class StartError(Exception):
    """The server did not become ready: the reason, for the result."""


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _listener(port: int) -> int | None:
    """The pid listening on 127.0.0.1:port, if this lab can see it."""
    with contextlib.suppress(psutil.Error):
        for c in psutil.net_connections("tcp4"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr[1] == port:
                return c.pid
    return None


def _wait_listening(started: Started, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = started.proc.poll()
        if _accepts(started.port):
            if status is None:
                return
            raise StartError(
                f"exited with status {status}, and pid {_listener(started.port)} "
                f"listens on port {started.port}: a daemon, which the lab cannot "
                "stop (stop it yourself), nor measure: run the server in the "
                "foreground (nginx: -g 'daemon off;')"
            )
        if status not in (None, 0):  # 0: perhaps a daemon still starting
            tail = started.stderr_tail()
            raise StartError(
                f"exited with status {status} before listening"
                + (f"; its stderr ends:\n{tail}" if tail else "")
            )
        if time.monotonic() > deadline:
            what = "exited with status 0 and nothing" if status == 0 else "never"
            raise StartError(
                f"{what} listened on 127.0.0.1:{started.port} within {timeout:g} s"
            )
        time.sleep(0.02)  # polling a port that nothing announces


def stop(started: Started) -> int | None:
    """End the server's session: SIGTERM, then SIGKILL after a grace period; return
    its exit status if it had already exited by itself, else None."""
    status = started.proc.poll()
    members = started.tree()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(started.proc.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=STOP_TIMEOUT_S)
    for p in alive:  # one that left the session, or ignores SIGTERM
        with contextlib.suppress(psutil.Error):
            p.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(started.proc.pid, signal.SIGKILL)
    started.proc.wait()
    shutil.rmtree(started.tmp, ignore_errors=True)
    return status


@contextlib.contextmanager
def running(
    target: Target,
    soft: int,
    hard: int,
    env: dict[str, str],
    verbose: bool = False,
    start_timeout: float = START_TIMEOUT_S,
) -> Iterator[Started]:
    """:func:`start`, then :func:`stop` however the block ends."""
    started = start(target, soft, hard, env, verbose, start_timeout)
    try:
        yield started
    finally:
        stop(started)
