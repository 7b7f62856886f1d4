"""The HTTP servers the benchmarks compare, and how a benchmark starts and stops them.

Every server answers every request with a small ``200`` whose body is ``hello``:

* ``nginx``: nginx itself (``return 200 "hello"``), access log off;
* ``ngxffi``: ``ngxffi serve`` with ``return = [200, "hello"]``;
* ``asyncio``, ``uvloop``, ``ngxffi-asyncio``, ``selectors``: the Python servers of
  python_servers.py.

:func:`running` starts one server fresh on a free port, waits until it listens (bounded
polling) and stops it on exit, even on error: SIGTERM, then SIGKILL after a timeout,
and any child left over killed too. Each server gets ``LIMIT`` file descriptors
(RLIMIT_NOFILE, worker_connections).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

QUICK = os.environ.get("NGXFFI_BENCH_QUICK", "") not in ("", "0")
LIMIT = 20_000  # RLIMIT_NOFILE and worker_connections of every server
START_TIMEOUT = 15.0  # seconds for a server to listen
STOP_TIMEOUT = 10.0  # seconds for a server to exit on SIGTERM before SIGKILL
TOOL_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin"]
)

LABELS = {
    "nginx": "nginx",
    "ngxffi": "ngxffi serve",
    "asyncio": "asyncio Protocol",
    "uvloop": "uvloop Protocol",
    "selectors": "selectors loop",
    "ngxffi-asyncio": "asyncio Protocol on NgxSelector",
}


NGINX_CONF = """daemon off;
master_process {master};
worker_processes {workers};
worker_rlimit_nofile {limit};
error_log {tmp}/error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections {limit}; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    server {{ listen 127.0.0.1:{port}; location / {{ return 200 "hello"; }} }}
}}
"""

NGXFFI_TOML = """master_process = {master}
worker_processes = {workers}
worker_connections = {limit}
worker_rlimit_nofile = {limit}
keepalive_requests = 1000000000
return = [200, "hello"]
error_log = "{tmp}/error.log warn"
listen = {{ address = "127.0.0.1:{port}" }}
"""


def which(command: str) -> str | None:
    """``shutil.which`` that also looks in the sbin directories (nginx lives there)."""
    return shutil.which(command, path=TOOL_PATH)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile() -> None:
    """RLIMIT_NOFILE's soft limit up to the hard one (``LIMIT`` on the benchmark
    machine): the servers and the idle-connection client need thousands of fds."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def commands(kind: str, tmp: Path, port: int, workers: int) -> list[list[str]]:
    """The command line of each process to start: one for nginx and ngxffi (a single
    process, or a master that forks the workers); one per worker for the Python
    servers, which then share the port with SO_REUSEPORT."""
    fields = {"tmp": tmp, "port": port, "workers": workers, "limit": LIMIT}
    if kind == "nginx":
        conf = tmp / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(master="on" if workers > 1 else "off", **fields)
        )
        nginx = which("nginx") or "nginx"
        return [[nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]]
    if kind == "ngxffi":
        toml = tmp / "ngxffi.toml"
        toml.write_text(NGXFFI_TOML.format(master=str(workers > 1).lower(), **fields))
        return [[str(Path(sys.executable).parent / "ngxffi"), "serve", "-c", str(toml)]]
    script = str(Path(__file__).with_name("python_servers.py").resolve())
    reuse = ["reuseport"] if workers > 1 else []
    return [[sys.executable, "-P", script, kind, str(port), *reuse]] * workers


def preexec(cpus: set[int] | None) -> Callable[[], None]:
    """What a server's child runs before exec: the fd limit, the CPU pinning."""

    def setup() -> None:
        raise_nofile()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


@dataclass
class Server:
    """A started server: its port and the processes the benchmark started."""

    port: int
    popens: list[subprocess.Popen[bytes]]
    tmp: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def processes(self) -> list[psutil.Process]:
        """Every process of the server: those started and their children (workers)."""
        tops = [psutil.Process(p.pid) for p in self.popens]
        return [proc for top in tops for proc in (top, *top.children(recursive=True))]

    def worker(self) -> psutil.Process:
        """The one process that serves connections, for a single-worker server."""
        (proc,) = self.processes()
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.tmp.glob("*.log"))

    def wait_listening(self) -> None:
        """Poll until every started process listens on the port (or fail with the
        server's logs when one exits or the deadline passes)."""
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(self.popens)
        while waiting:
            if (
                any(p.poll() is not None for p in waiting)
                or time.monotonic() > deadline
            ):
                raise RuntimeError(f"server on port {self.port} failed:\n{self.logs()}")
            waiting = [p for p in waiting if not self.listens(p.pid)]
            time.sleep(0.02)

    def listens(self, pid: int) -> bool:
        try:
            sockets = psutil.Process(pid).net_connections("tcp")
        except psutil.NoSuchProcess:
            return False  # wait_listening's next poll reports it
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
            for c in sockets
        )


def stop(popen: subprocess.Popen[bytes]) -> None:
    """SIGTERM (nginx's and ngxffi's fast shutdown; the Python servers just die),
    SIGKILL after ``STOP_TIMEOUT``; then kill whichever child outlived its parent."""
    try:
        children = psutil.Process(popen.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    popen.terminate()
    try:
        popen.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()
    for child in psutil.wait_procs(children, timeout=STOP_TIMEOUT)[1]:
        child.kill()


@contextlib.contextmanager
def running(
    kind: str, workers: int = 1, cpus: set[int] | None = None
) -> Iterator[Server]:
    """Server ``kind`` started fresh on a free port with ``workers`` workers, pinned
    to ``cpus`` when given, listening; stopped on exit."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as name:
        tmp = Path(name)
        port = free_port()
        server = Server(port, [], tmp)
        with (tmp / "server.log").open("wb") as log:
            try:
                for argv in commands(kind, tmp, port, workers):
                    server.popens.append(
                        subprocess.Popen(
                            argv, stdout=log, stderr=log, preexec_fn=preexec(cpus)
                        )
                    )
                server.wait_listening()
                yield server
            finally:
                for popen in server.popens:
                    stop(popen)
