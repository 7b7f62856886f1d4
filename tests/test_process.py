"""``ngxffi serve --workers N``: a master and its workers, as real processes."""

from __future__ import annotations

import contextlib
import http.client
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from test_serve import Server, closed, read_response


def workers_of(server: Server, count: int, timeout: float = 10) -> list[psutil.Process]:
    """The master's children once there are ``count`` of them (spawning is async)."""
    master = psutil.Process(server.proc.pid)
    deadline = time.monotonic() + timeout
    while True:
        children = master.children()
        if len(children) == count or time.monotonic() > deadline:
            return children
        psutil.wait_procs(children, timeout=0.05)  # a short, bounded wait to poll


def processes(pids: set[int]) -> list[psutil.Process]:
    """The processes of ``pids`` that still exist (one may exit while we look)."""
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            found.append(psutil.Process(pid))
    return found


def started(process: psutil.Process, holding: str = "anon_inode:[eventpoll]") -> bool:
    """The worker holds an fd on ``holding``: by default its epoll instance (its
    configuration is read), or a path such as its root (its service is made,
    which comes after the epoll instance)."""
    fds = Path(f"/proc/{process.pid}/fd")
    try:
        return any(str(fd.readlink()) == holding for fd in fds.iterdir())
    except OSError:  # gone, or an fd closed while we looked
        return False


def listening(process: psutil.Process) -> int:
    """How many listening TCP sockets the process holds (0 once it is gone)."""
    try:
        connections = process.net_connections("tcp")
    except psutil.NoSuchProcess:
        return 0
    return sum(c.status == psutil.CONN_LISTEN for c in connections)


def title(process: psutil.Process) -> str:
    """What ps shows: the title overwrites argv, whose old space reads as padding.
    A process that is gone, a zombie (any on the machine, not only ours) or not ours
    to read has none."""
    try:
        return " ".join(" ".join(process.cmdline()).split())
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess included
        return ""


@pytest.fixture
def pool() -> Iterator[Server]:
    s = Server("--return", "200", "hi", "--workers", "2")
    children = workers_of(s, 2)
    yield s
    if s.proc.poll() is None:
        s.stop()
    # no orphans, whatever the test did: every worker the master ever had is gone
    everyone = children + [
        p
        for p in psutil.process_iter()
        if title(p) == "ngxffi: worker process" and p.ppid() in (1, s.proc.pid)
    ]
    _, alive = psutil.wait_procs(everyone, timeout=10)
    assert not alive


class Load:
    """A client thread making one request per connection until stopped."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.ok = 0
        self.failed: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                assert self.server.get().status == 200
                self.ok += 1
            except (OSError, http.client.HTTPException, AssertionError) as e:
                self.failed.append(e)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def test_two_workers_share_one_listener_and_global_counters(pool: Server) -> None:
    assert len(workers_of(pool, 2)) == 2
    for _ in range(20):  # separate connections: the workers take turns
        assert pool.get().status == 200
    assert " 21 21 21 \n" in pool.status()  # one set of counters for all workers


def test_a_dead_worker_is_replaced_in_its_slot_under_load(pool: Server) -> None:
    first = workers_of(pool, 2)
    load = Load(pool)
    while load.ok < 20:  # under way
        load.thread.join(0.01)
    victim = first[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    start = time.monotonic()
    after = workers_of(pool, 2)
    pids = {p.pid for p in after}
    assert len(pids) == 2 and victim.pid not in pids
    assert time.monotonic() - start < 2  # promptly
    served = load.ok
    while load.ok < served + 50:  # and the service goes on
        load.thread.join(0.01)
    load.finish()
    # a request that was on the killed worker may fail; nothing else may
    assert len(load.failed) <= 1, load.failed
    assert pool.proc.poll() is None  # the master survived


@pytest.mark.parametrize("stuck", [False, True])
def test_sigterm_stops_master_and_workers(pool: Server, stuck: bool) -> None:
    """Within ~2 s, even with a worker that cannot handle TERM (stopped): the master
    insists with a doubling delay and ends with KILL."""
    workers = workers_of(pool, 2)
    if stuck:
        workers[0].send_signal(signal.SIGSTOP)
    start = time.monotonic()
    pool.proc.send_signal(signal.SIGTERM)
    assert pool.proc.wait(timeout=10) == 0
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    assert time.monotonic() - start < 2.5


def test_sigquit_is_graceful_in_every_worker(pool: Server) -> None:
    workers_of(pool, 2)
    idle = pool.connect()
    idle.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    read_response(idle)
    busy = pool.connect()
    busy.sendall(b"GET / HTTP/1.1\r\n")
    # another worker may answer us first: wait until some worker is reading busy's
    # header (counters are global), or it could still sit in the backlog at SIGQUIT
    deadline = time.monotonic() + 10
    while "Reading: 1 " not in pool.status() and time.monotonic() < deadline:
        pass
    workers = workers_of(pool, 2)
    pool.proc.send_signal(signal.SIGQUIT)
    assert closed(idle)
    # the master relays QUIT: wait until every worker has stopped listening
    deadline = time.monotonic() + 10
    while any(listening(w) for w in workers) and time.monotonic() < deadline:
        pass
    busy.sendall(b"Host: a\r\n\r\n")
    head, body = read_response(busy)
    assert body == b"hi" and b"Connection: close" in head
    assert pool.proc.wait(timeout=10) == 0
    idle.close()
    busy.close()


def test_workers_do_not_outlive_their_master(pool: Server) -> None:
    workers = workers_of(pool, 2)
    pool.proc.send_signal(signal.SIGKILL)
    pool.proc.wait(timeout=10)
    _, alive = psutil.wait_procs(workers, timeout=10)  # PR_SET_PDEATHSIG
    assert not alive


def test_titles_are_nginx_s(pool: Server) -> None:
    workers = workers_of(pool, 2)
    master = psutil.Process(pool.proc.pid)
    assert title(master).startswith("ngxffi: master process ")
    deadline = (
        time.monotonic() + 10
    )  # a child has the master's title until it sets its own
    while [title(w) for w in workers] != ["ngxffi: worker process"] * 2:
        assert time.monotonic() < deadline, [title(w) for w in workers]


def test_sigwinch_stops_the_workers_but_not_the_master(pool: Server) -> None:
    workers = workers_of(pool, 2)
    pool.proc.send_signal(signal.SIGWINCH)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    assert workers_of(pool, 0) == [] and pool.proc.poll() is None  # not respawned
    pool.proc.send_signal(signal.SIGTERM)
    assert pool.proc.wait(timeout=10) == 0


def test_master_process_off_serves_in_one_process(
    tmp_path: Path, launch: Callable[[Path], Server]
) -> None:
    config = tmp_path / "single.toml"
    config.write_text(
        "master_process = false\nworker_processes = 4\n"
        'listen = "127.0.0.1:0"\nreturn = [200, "one"]\n'
    )
    server = launch(config)
    assert server.get().status == 200
    assert psutil.Process(server.proc.pid).children() == []


def test_reuseport_gives_each_worker_its_own_socket(
    tmp_path: Path, launch: Callable[[Path], Server]
) -> None:
    config = tmp_path / "reuseport.toml"
    config.write_text(
        'worker_processes = 2\nreturn = [200, "own"]\n'
        'listen = { address = "127.0.0.1:0", reuseport = true }\n'
    )
    server = launch(config)
    workers = workers_of(server, 2)
    # each worker closes the other's socket as it starts: wait for that
    deadline = time.monotonic() + 10
    while [listening(w) for w in workers] != [1, 1]:
        assert time.monotonic() < deadline, [listening(w) for w in workers]
    assert listening(psutil.Process(server.proc.pid)) == 2
    for _ in range(10):
        assert server.get().status == 200


def test_sigusr1_reopens_the_access_log(
    tmp_path: Path, launch: Callable[[Path], Server]
) -> None:
    log = tmp_path / "access.log"
    config = tmp_path / "logs.toml"
    config.write_text(
        f'worker_processes = 2\nreturn = [200, "x"]\n'
        f'listen = "127.0.0.1:0"\naccess_log = "{log}"\n'
    )
    server = launch(config)
    workers_of(server, 2)
    assert server.get().status == 200
    log.rename(tmp_path / "access.log.1")  # rotated away
    server.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
        server.get()  # each worker reopens when its wait is interrupted
    assert log.exists() and "GET / HTTP/1.1" in log.read_text()
    assert "GET / HTTP/1.1" in (tmp_path / "access.log.1").read_text()


def test_accept_mutex_serves_and_survives_a_dead_holder(
    tmp_path: Path, launch: Callable[[Path], Server]
) -> None:
    config = tmp_path / "mutex.toml"
    config.write_text(
        "worker_processes = 2\naccept_mutex = true\n"
        'accept_mutex_delay = "50ms"\nlisten = "127.0.0.1:0"\n'
        'return = [200, "locked"]\n'
    )
    server = launch(config)
    workers = workers_of(server, 2)
    for _ in range(20):
        assert server.get().status == 200
    for w in workers:  # whoever held the lock dies with it: it is forced free
        w.send_signal(signal.SIGKILL)
    psutil.wait_procs(workers, timeout=10)
    workers_of(server, 2)
    for _ in range(20):
        assert server.get().status == 200
    assert " 41 41 41 \n" in server.status()


@pytest.fixture
def launch() -> Iterator[Callable[[Path], Server]]:
    """Start ``ngxffi serve -c CONFIG``; whatever is still running at the end stops."""
    started: list[Server] = []

    def start(config: Path) -> Server:
        started.append(Server("-c", str(config)))
        return started[-1]

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.stop()


def body(server: Server) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/")
    data = conn.getresponse().read()
    conn.close()
    return data


def test_sighup_reloads_or_keeps_the_old_workers(
    tmp_path: Path, launch: Callable[[Path], Server]
) -> None:
    errors = tmp_path / "error.log"
    config = tmp_path / "reload.toml"
    head = (
        f'worker_processes = 2\nlisten = "127.0.0.1:0"\nerror_log = "{errors} notice"\n'
    )
    config.write_text(head + 'return = [200, "one"]\n')
    server = launch(config)
    old = {p.pid for p in workers_of(server, 2)}
    assert body(server) == b"one"
    load = Load(server)  # no connection refused or lost during the switch
    config.write_text(head + 'return = [200, "two"]\n')
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while body(server) != b"two" and time.monotonic() < deadline:
        pass  # each request is a round trip: the new workers take over
    assert body(server) == b"two"
    load.finish()
    assert load.ok > 0 and load.failed == []
    _, alive = psutil.wait_procs(processes(old), timeout=10)
    assert not alive  # the old workers finished and left
    new = {p.pid for p in workers_of(server, 2)}
    assert len(new) == 2 and not new & old
    config.write_text(head + "return = [200]\n")  # broken
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reconfiguring failed" not in errors.read_text():
        assert time.monotonic() < deadline
        assert body(server) == b"two"
    assert {p.pid for p in workers_of(server, 2)} == new  # kept
    assert body(server) == b"two"


def test_worker_shutdown_timeout_bounds_a_graceful_shutdown(
    tmp_path: Path, launch: Callable[[Path], Server]
) -> None:
    errors = tmp_path / "error.log"
    config = tmp_path / "bounded.toml"
    config.write_text(  # a worker's behaviour: shown in one process, no master
        'listen = "127.0.0.1:0"\nreturn = [200, "x"]\n'
        f'worker_shutdown_timeout = "300ms"\nerror_log = "{errors} info"\n'
    )
    server = launch(config)
    stuck = server.connect()
    stuck.sendall(b"GET / HTTP/1.1\r\n")  # never finishes
    deadline = time.monotonic() + 10
    while "Reading: 1 " not in server.status():
        assert time.monotonic() < deadline
    start = time.monotonic()
    server.proc.send_signal(signal.SIGQUIT)
    try:
        assert server.proc.wait(timeout=10) == 0
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running; its error log:\n{errors.read_text()}")
    assert time.monotonic() - start < 5  # not the 60 s client_header_timeout
    assert closed(stuck)
    stuck.close()


def test_a_worker_that_fails_to_start_is_not_respawned(
    tmp_path: Path, launch: Callable[[Path], Server]
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    errors = tmp_path / "error.log"
    config = tmp_path / "fatal.toml"
    config.write_text(
        f'worker_processes = 2\nlisten = "127.0.0.1:0"\nroot = "{root}"\n'
        f'error_log = "{errors} notice"\n'
    )
    server = launch(config)
    first, second = workers_of(server, 2)
    deadline = time.monotonic() + 10
    # both past opening the root (a worker opens it after its epoll instance)
    while not (started(first, str(root)) and started(second, str(root))):
        assert time.monotonic() < deadline
        psutil.wait_procs([first], timeout=0.02)  # a short, bounded wait to poll
    root.rmdir()  # a new worker cannot open its root: it exits with code 2
    first.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while "cannot be respawned" not in errors.read_text():
        assert time.monotonic() < deadline
    assert [p.pid for p in workers_of(server, 1)] == [second.pid]
