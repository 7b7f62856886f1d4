"""The HTTP servers the benchmarks compare, and how a benchmark starts and stops them.

Every server answers every request to ``/`` with a small ``200`` whose body is
``hello`` (the frameworks' ``Hello, world``):

* ``nginx``: nginx itself (``return 200 "hello"``), access log off;
* ``ngxffi``: ``ngxffi serve`` with ``return = [200, "hello"]`` (the C read handler);
* ``ngxffi-app``: ``ngxffi serve`` running a user's Python handler,
  ``app = "hello_app:app"`` (hello_app.py, found through PYTHONPATH);
* ``asyncio``, ``uvloop``, ``ngxffi-asyncio``, ``selectors``: the Python servers of
  python_servers.py;
* ``aiohttp-LOOP``, ``uvicorn-LOOP`` (LOOP ``asyncio``, ``ngxffi`` or ``uvloop``): the
  framework servers of framework_servers.py;
* ``ngxffi-nofaults``, ``ngxffi-armed``: ``ngxffi serve`` as ``ngxffi``, built without
  the fault-injection hooks (the package faults.py builds, through PYTHONPATH), or
  with a rule armed on a call the server does not make (faults.py);
* the kinds a benchmark adds to ``COMMANDS`` with their command lines
  (uring_completion.py: its C servers).

With a :class:`Content` of ``file_kib`` KiB, nginx and ngxffi serve a file of that
size instead, generated into the server's own temporary root: nginx with ``root``,
``sendfile on`` and ``open_file_cache off``, ngxffi with ``root``.

:func:`running` starts one server fresh on a free port, waits until it listens (bounded
polling) and stops it on exit, even on error: SIGTERM, then SIGKILL after a timeout,
and any child left over killed too. Each server gets ``LIMIT`` file descriptors
(RLIMIT_NOFILE, worker_connections). :meth:`Server.check` asks it once for what the
benchmark will ask, so that a wrong answer (a 404) is never measured.
"""

from __future__ import annotations

import contextlib
import os
import re
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

import framework_servers
import psutil
from python_servers import BODY

QUICK = os.environ.get("NGXFFI_BENCH_QUICK", "") not in ("", "0")
# NGXFFI_BENCH_ONLY=static_1k,app: only the runs named (HTTP scenarios, sections)
ONLY = frozenset(filter(None, os.environ.get("NGXFFI_BENCH_ONLY", "").split(",")))
LIMIT = 20_000  # RLIMIT_NOFILE and worker_connections of every server
START_TIMEOUT = 15.0  # seconds for a server to listen
CHECK_TIMEOUT = 5.0  # seconds for the answer of Server.check
STOP_TIMEOUT = 10.0  # seconds for a server to exit on SIGTERM before SIGKILL
TOOL_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin"]
)

LABELS = {
    "nginx": "nginx",
    "ngxffi": "ngxffi serve",
    "ngxffi-app": "ngxffi serve, Python app",
    "asyncio": "asyncio Protocol",
    "uvloop": "uvloop Protocol",
    "selectors": "selectors loop",
    "ngxffi-asyncio": "asyncio Protocol on NgxSelector",
    "ngxffi-nofaults": "ngxffi serve, built with NGXFFI_NO_FAULTS",
    "ngxffi-armed": "ngxffi serve, a rule armed elsewhere",
    "ngxffi-uring": "ngxffi serve, use io_uring",
    **framework_servers.LABELS,
}
NGXFFI_KINDS = (
    "ngxffi",
    "ngxffi-app",
    "ngxffi-nofaults",
    "ngxffi-armed",
    "ngxffi-uring",
)
# the event method of the ngxffi kinds that do not use epoll
NGXFFI_USE = {"ngxffi-uring": "io_uring"}
# A kind's environment beyond ours (faults.py sets the two fault kinds')
EXTRA_ENV: dict[str, dict[str, str]] = {}
# Servers a benchmark defines itself: kind -> its command line, given the server's
# temporary directory and port (uring_completion.py sets its kinds')
COMMANDS: dict[str, Callable[[Path, int], list[str]]] = {}


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
    server {{ listen 127.0.0.1:{port}; location / {{ {location} }} }}
}}
"""

NGXFFI_TOML = """master_process = {master}
worker_processes = {workers}
worker_connections = {limit}
worker_rlimit_nofile = {limit}
keepalive_requests = 1000000000
use = "{use}"
{content}
error_log = "{tmp}/error.log warn"
listen = {{ address = "127.0.0.1:{port}" }}
"""
APP = "hello_app:app"  # ngxffi-app's handler: benchmarks/hello_app.py
APP_TARGET_US = 2.5  # its target: user CPU µs per request


@dataclass(frozen=True)
class Content:
    """What the benchmark asks for: with ``file_kib``, a static file of that many KiB
    (nginx and ngxffi only), else ``body`` at ``/`` (the ``hello`` of every server
    but the frameworks')."""

    file_kib: int = 0
    body: bytes = BODY

    @property
    def path(self) -> str:
        return f"/{self.file_kib}k.bin" if self.file_kib else "/"

    @property
    def length(self) -> int:
        """The answer's body length, in bytes."""
        return self.file_kib * 1024 if self.file_kib else len(self.body)

    def make_root(self, tmp: Path) -> Path:
        """The server's document root, ``tmp/www``, holding the file (if any)."""
        root = tmp / "www"
        root.mkdir()
        if self.file_kib:
            (root / self.path.lstrip("/")).write_bytes(
                bytes(range(256)) * (4 * self.file_kib)
            )
        return root


HELLO = Content()


def selected(key: str) -> bool:
    """Whether run ``key`` runs: every one unless NGXFFI_BENCH_ONLY names some."""
    return not ONLY or key in ONLY


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


def commands(
    kind: str, tmp: Path, port: int, workers: int, content: Content
) -> list[list[str]]:
    """The command line of each process to start: one for nginx and ngxffi (a single
    process, or a master that forks the workers); one per worker for the Python
    servers, which then share the port with SO_REUSEPORT; COMMANDS' own."""
    if kind in COMMANDS:
        return [COMMANDS[kind](tmp, port)]
    fields = {"tmp": tmp, "port": port, "workers": workers, "limit": LIMIT}
    root = content.make_root(tmp)
    if kind == "nginx":
        location = (
            f"root {root}; sendfile on; open_file_cache off;"
            if content.file_kib
            else 'return 200 "hello";'
        )
        conf = tmp / "nginx.conf"
        master = "on" if workers > 1 else "off"
        conf.write_text(NGINX_CONF.format(master=master, location=location, **fields))
        nginx = which("nginx") or "nginx"
        return [[nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]]
    if kind in NGXFFI_KINDS:
        toml = tmp / "ngxffi.toml"
        master = str(workers > 1).lower()
        toml.write_text(
            NGXFFI_TOML.format(
                master=master,
                use=NGXFFI_USE.get(kind, "epoll"),
                content=ngxffi_content(kind, content, root),
                **fields,
            )
        )
        return [[str(Path(sys.executable).parent / "ngxffi"), "serve", "-c", str(toml)]]
    if content.file_kib:
        raise ValueError(f"the {kind} server serves no files")
    if kind in framework_servers.LABELS:
        app_dir = module_dir(tmp, framework_servers.__name__)
        return [framework_servers.command(kind, port, app_dir)]
    script = str(Path(__file__).with_name("python_servers.py").resolve())
    reuse = ["reuseport"] if workers > 1 else []
    return [[sys.executable, "-P", script, kind, str(port), *reuse]] * workers


def ngxffi_content(kind: str, content: Content, root: Path) -> str:
    """ngxffi's content directive: the Python app, the root, or ``return``."""
    if kind == "ngxffi-app":
        if content.file_kib:
            raise ValueError("the Python app serves no files")
        return f'app = "{APP}"'
    return f'root = "{root}"' if content.file_kib else 'return = [200, "hello"]'


def module_dir(tmp: Path, module: str) -> Path:
    """``tmp/app``, a directory holding only a link to this directory's ``module``:
    a server imports it from there, since this directory's http.py would shadow the
    standard library's ``http`` in the server."""
    path = tmp / "app"
    path.mkdir()
    name = f"{module}.py"
    (path / name).symlink_to(Path(__file__).with_name(name).resolve())
    return path


def environment(kind: str, tmp: Path) -> dict[str, str] | None:
    """The Python app's server finds hello_app through PYTHONPATH (module_dir). The
    kinds of EXTRA_ENV add theirs to ours; the other servers inherit ours (None)."""
    if kind in EXTRA_ENV:
        return {**os.environ, **EXTRA_ENV[kind]}
    if kind != "ngxffi-app":
        return None
    path = module_dir(tmp, APP.partition(":")[0])
    return {**os.environ, "PYTHONPATH": str(path)}


def preexec(cpus: set[int] | None) -> Callable[[], None]:
    """What a server's child runs before exec: the fd limit, the CPU pinning."""

    def setup() -> None:
        raise_nofile()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


class StartFailed(RuntimeError):
    """A server exited, or did not listen in time, instead of starting."""

    def __init__(self, port: int, logs: str, tmp: Path) -> None:
        super().__init__(f"server on port {port} failed:\n{logs}")
        self.logs = logs
        self.tmp = tmp

    @property
    def reason(self) -> str:
        """The last line the server logged (nginx and ngxffi name the cause there),
        without its temporary directory's name, which differs from run to run."""
        lines = [line for line in self.logs.splitlines() if line.strip()]
        last = lines[-1].strip() if lines else "nothing logged"
        return last.replace(f"{self.tmp}/", "")


@dataclass
class Server:
    """A started server: its port, what it is asked for, and the processes the
    benchmark started."""

    port: int
    content: Content
    popens: list[subprocess.Popen[bytes]]
    tmp: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.content.path}"

    def check(self) -> None:
        """Ask once for what the benchmark asks for (with ``Connection: close``) and
        raise unless the answer is a 200 with the expected body length, as
        Content-Length and as bytes."""
        request = f"GET {self.content.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        address = ("127.0.0.1", self.port)
        with socket.create_connection(address, timeout=CHECK_TIMEOUT) as sock:
            sock.sendall(f"{request}Connection: close\r\n\r\n".encode())
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
        head, _, body = answer.partition(b"\r\n\r\n")
        length = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", head, re.IGNORECASE)
        expected = self.content.length
        if not (
            head.startswith(b"HTTP/1.1 200 ")
            and length is not None
            and int(length.group(1)) == expected == len(body)
        ):
            raise RuntimeError(
                f"{self.url}: expected a 200 of {expected} bytes, got "
                f"{len(body)} bytes after:\n{head.decode(errors='replace')}"
            )

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
                raise StartFailed(self.port, self.logs(), self.tmp)
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
    kind: str,
    workers: int = 1,
    cpus: set[int] | None = None,
    content: Content = HELLO,
) -> Iterator[Server]:
    """Server ``kind`` started fresh on a free port with ``workers`` workers, pinned
    to ``cpus`` when given, serving ``content``, listening; stopped on exit."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as name:
        tmp = Path(name)
        port = free_port()
        server = Server(port, content, [], tmp)
        argvs = commands(kind, tmp, port, workers, content)
        env = environment(kind, tmp)
        with (tmp / "server.log").open("wb") as log:
            try:
                for argv in argvs:
                    server.popens.append(
                        subprocess.Popen(
                            argv,
                            stdout=log,
                            stderr=log,
                            env=env,
                            preexec_fn=preexec(cpus),
                        )
                    )
                server.wait_listening()
                yield server
            finally:
                for popen in server.popens:
                    stop(popen)
