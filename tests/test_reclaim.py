"""Slow clients reclaimed when slots run out (ngxffi.http.reclaim), in real servers:
Slowloris connections give their slots to normal clients; clients at or above
``client_min_rate`` keep theirs however short the slots, below it they lose them."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_linger import Reader
from test_serve import Server

SLOTS = 48  # worker_connections: reclaims begin at 3 free
PARTIAL = b"GET / HTTP/1.1\r\nHost: a\r\n"


class Slowloris:
    """``n`` connections, made at once, that each send a partial header, then a
    header line every ``interval`` s, as slowhttptest -H does; those the server
    closes are not made again (slowhttptest's are not). ``closed``: how many the
    server closed."""

    def __init__(self, port: int, n: int, interval: float = 0.5) -> None:
        self.port, self.n, self.interval = port, n, interval
        self.socks: list[socket.socket] = []
        self.closed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.ready = threading.Event()
        self.r, self.w = socket.socketpair()  # select()'s when no socket is left

    def connect(self) -> None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            s.sendall(PARTIAL)
        except OSError:
            return
        s.setblocking(False)
        self.socks.append(s)

    def run(self) -> None:
        last = time.monotonic()
        for _ in range(self.n):
            self.connect()
        self.ready.set()
        while not self.stop.is_set():
            readable, _, _ = select.select(self.socks or [self.r], [], [], 0.05)
            for s in readable:  # only a close (EOF or RST) comes from the server
                self.socks.remove(s)
                s.close()
                self.closed += 1
            if time.monotonic() - last > self.interval:
                last = time.monotonic()
                for s in self.socks:
                    with contextlib.suppress(OSError):  # closed: select tells
                        s.send(b"X-a: b\r\n")

    def __enter__(self) -> Slowloris:
        self.thread.start()
        self.ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        for s in (*self.socks, self.r, self.w):
            s.close()


def start(tmp_path: Path, conf: str = "", fixed: bool = True) -> tuple[Server, Path]:
    """A server of SLOTS worker_connections, its error log at info level, that
    answers with ``return`` if ``fixed``, else as ``conf`` says."""
    log = tmp_path / "error.log"
    path = tmp_path / "ngxffi.toml"
    path.write_text(
        f'worker_connections = {SLOTS}\nerror_log = "{log} info"\n'
        + ('return = [200, "hello"]\n' if fixed else "")
        + conf
    )
    return Server("-c", str(path)), log


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    s, log = start(tmp_path)
    yield s, log
    s.stop()


def get(port: int, timeout: float = 3.0) -> bytes | None:
    """A normal client's keep-alive GET on a new connection: the answer's head, or
    None when the connection closed (no slot) or no answer came in ``timeout``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(PARTIAL + b"\r\n")
            return Reader(s).response()
    except (OSError, AssertionError):
        return None


def counters(server: Server) -> tuple[int, int]:
    match = re.search(r"Drained: (\d+) Reclaimed: (\d+)", status_full(server))
    assert match
    return int(match.group(1)), int(match.group(2))


def status_full(server: Server) -> str:
    """/status?full; asked again while the server turns it away (the slots that
    clients just closed are free only once the server has read their FIN)."""
    deadline = time.monotonic() + 10
    while True:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(
                b"GET /status?full HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
            try:
                text = b"".join(iter(lambda: s.recv(65536), b"")).decode()
            except ConnectionResetError:
                text = ""
        if "Active connections" in text or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


@pytest.mark.timeout(60)
def test_slowloris_gives_its_slots_to_normal_clients(
    server: tuple[Server, Path],
) -> None:
    srv, log = server
    with Slowloris(srv.port, 2 * SLOTS) as attack:
        time.sleep(1.5)  # the rule's own time: slower than 500 B/s for over 1 s
        answers = [get(srv.port) for _ in range(20)]
    assert all(a is not None and a.startswith(b"HTTP/1.1 200 OK") for a in answers)
    assert attack.closed >= SLOTS  # refused, then reclaimed
    assert counters(srv)[1] >= 1
    text = log.read_text()
    assert "below client_min_rate 500, reclaiming its connection" in text
    assert "[info]" in text


@pytest.mark.timeout(60)
def test_without_the_defence_slowloris_takes_every_slot(tmp_path: Path) -> None:
    """client_min_rate = 0: nginx's behaviour, the probe is turned away."""
    srv, _ = start(tmp_path, "client_min_rate = 0\n")
    try:
        with Slowloris(srv.port, 2 * SLOTS):
            time.sleep(1.5)
            assert get(srv.port, timeout=1.0) is None  # no slot for it
    finally:
        srv.stop()


class Trickle:
    """``n`` clients that each send at ``rate`` bytes a second, in a piece every
    20 ms: a header that never ends (``body`` False), or a header at once and then a
    body of a megabyte. ``closed``: how many the server closed."""

    def __init__(self, port: int, n: int, rate: int, body: bool) -> None:
        self.piece = rate // 50
        self.stop = threading.Event()
        self.socks: list[socket.socket] = []
        self.closed = 0
        head = b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n"
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(head if body else PARTIAL)
            self.socks.append(s)
        # a header goes on in lines of 25 bytes; a body's bytes are anything
        self.data = b"X-p: " + b"v" * 18 + b"\r\n" if not body else b"b" * 25
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self) -> None:
        sent = 0
        begun = time.monotonic()
        while not self.stop.wait(0.02):
            due = int((time.monotonic() - begun) / 0.02) * self.piece
            chunk = (self.data * (1 + (due - sent) // 25))[: max(due - sent, 0)]
            sent = due
            for s in list(self.socks):
                try:
                    s.send(chunk)
                except OSError:
                    self.socks.remove(s)
                    self.closed += 1

    def close(self) -> None:
        """Stop; count those the server closed that no send has noticed yet."""
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.setblocking(False)
            try:
                while s.recv(65536):  # an answer to an upload, then its end
                    pass
                self.closed += 1
            except BlockingIOError:  # open
                pass
            except OSError:  # ECONNRESET
                self.closed += 1
            s.close()


class Download(Trickle):
    """``n`` clients that each ask for a big file and read it at ``rate`` bytes a
    second (a small receive buffer: the server's socket fills up at once)."""

    def __init__(self, port: int, n: int, rate: int) -> None:
        self.piece = rate // 50
        self.stop = threading.Event()
        self.socks = []
        self.closed = 0
        for _ in range(n):
            s = socket.socket()
            # the smallest buffer: what it holds unread counts as taken
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
            s.setblocking(False)
            self.socks.append(s)
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            for s in list(self.socks):
                try:
                    if not s.recv(self.piece):
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                except OSError:
                    self.socks.remove(s)
                    self.closed += 1


def header(port: int, n: int, rate: int) -> Trickle:
    return Trickle(port, n, rate, body=False)


def upload(port: int, n: int, rate: int) -> Trickle:
    return Trickle(port, n, rate, body=True)


CLIENTS: dict[str, tuple[Callable[[int, int, int], Trickle], int]] = {
    # how to make them, and the rate at which they are reclaimed
    "slow link": (header, 300),
    "slow upload": (upload, 300),
    # a TCP receive window's worth (about 1 KB) is taken before the client reads
    "slow download": (Download, 300),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(CLIENTS))
def test_where_the_rule_stops(tmp_path: Path, kind: str) -> None:
    """client_min_rate 1000, every slot held by clients that move 3,000 B/s (a
    header on a slow link, an upload, a download): none is reclaimed, even though
    new clients are turned away for want of slots; at 300 B/s they are reclaimed
    for the new clients."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "big.bin").write_bytes(b"f" * (8 << 20))
    (root / "index.html").write_bytes(b"hello")
    srv, _ = start(tmp_path, f'client_min_rate = 1000\nroot = "{root}"\n', False)
    try:
        before = 0
        make, slow = CLIENTS[kind]
        # three times the rule's rate: a client thread that falls behind for a
        # while, on a loaded machine, stays above it
        for rate, kept in ((3000, True), (slow, False)):
            # every slot (the listening socket and the inotify fd have one
            # each: the client too many is turned away)
            clients = make(srv.port, SLOTS - 1, rate)
            try:
                time.sleep(2.0)  # the rule's own time: 1 s before any reclaim
                answers = [get(srv.port, timeout=1.0) for _ in range(8)]
            finally:
                clients.close()
            answered = sum(a is not None for a in answers)
            reclaimed = counters(srv)[1] - before
            before += reclaimed
            if kept:
                assert reclaimed == 0, rate
                assert answered == 0, rate  # no slot for them
            else:
                assert reclaimed >= 1, rate
                assert answered == 8, rate
            wait_idle(srv)
    finally:
        srv.stop()


def wait_idle(server: Server) -> None:
    """Until only stub_status's own connection is open."""
    deadline = time.monotonic() + 10
    while "Active connections: 1 " not in status_full(server):
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.timeout(60)
def test_idle_connections_are_drained_first_and_counted(
    server: tuple[Server, Path],
) -> None:
    """Idle keep-alive connections are drain's (nginx's rule), and counted."""
    srv, _ = server
    idle = []
    for _ in range(SLOTS):
        try:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(PARTIAL + b"\r\n")
            Reader(s).response()
        except OSError:
            break
        idle.append(s)
    try:
        answer = get(srv.port)
        assert answer is not None and answer.startswith(b"HTTP/1.1 200 OK")
        drained, reclaimed = counters(srv)
        assert drained >= 1 and reclaimed == 0
    finally:
        for s in idle:
            s.close()
