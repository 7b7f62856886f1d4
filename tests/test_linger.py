"""Lingering close and discarded bodies, in real servers with raw sockets: an answer
given before all of the request was read reaches the client (no RST throws it
away), a body no handler reads is discarded with keep-alive kept, and the waits are
bounded by ``lingering_timeout`` and ``lingering_time``."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_serve import Server, read_response

HEAD = b"GET / HTTP/1.1\r\nHost: a\r\n"
BIG_HEADER = HEAD + b"X-Big: " + b"x" * 70_000 + b"\r\n\r\n"
FIVE_MB = 5 << 20
# the C read handler (return), Python alone (an access log turns C off), and
# static files (C answers cached ones)
KINDS = {
    "return": ("--return", "200", "hello"),
    "python": ("--return", "200", "hello", "--access-log", "/dev/null"),
    "static": (),
}


def start(tmp_path: Path, kind: str = "return", conf: str = "") -> Server:
    path = tmp_path / "ngxffi.toml"
    path.write_text(conf)
    return Server("-c", str(path), *KINDS[kind])


@pytest.fixture(params=list(KINDS))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    s = start(tmp_path, request.param)
    yield s
    s.stop()


def read_to_eof(s: socket.socket) -> bytes:
    """All the server sends until its FIN: an RST instead raises
    ConnectionResetError, which is what a lingering close prevents."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


class Reader:
    """Responses off a raw socket, with what was read beyond one kept for the next."""

    def __init__(self, s: socket.socket) -> None:
        self.s, self.data = s, b""

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.data:
            chunk = self.s.recv(65536)
            assert chunk, f"closed after {self.data!r}"
            self.data += chunk
        head, _, self.data = self.data.partition(b"\r\n\r\n")
        return head

    def response(self) -> bytes:
        head = self.head()
        match = re.search(rb"Content-Length: (\d+)", head)
        length = int(match.group(1)) if match else 0
        while len(self.data) < length:
            self.data += self.s.recv(65536)
        self.data = self.data[length:]
        return head


def active(server: Server) -> int:
    match = re.search(r"Active connections: (\d+)", server.status())
    assert match
    return int(match.group(1))


def wait_active(server: Server, n: int, timeout: float = 10.0) -> float:
    """Wait until stub_status counts ``n`` connections (its own included)."""
    start = time.monotonic()
    while active(server) != n:
        assert time.monotonic() - start < timeout, f"never {n} active"
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.mark.timeout(60)
def test_a_70kb_header_gets_its_400(server: Server) -> None:
    """The regression of issue 15: the 400 was written, then reset away."""
    for _ in range(5):
        s = server.connect()
        s.sendall(BIG_HEADER)
        answer = read_to_eof(s)
        s.close()
        assert answer.startswith(b"HTTP/1.1 400 Bad Request"), answer[:80]
        assert b"Request Header Or Cookie Too Large" in answer


@pytest.mark.timeout(60)
def test_a_5mb_body_sent_at_once_gets_its_413(server: Server) -> None:
    """Content-Length over client_max_body_size (1m): 413 at once, and what the
    client goes on sending is read and discarded, so that its sendall ends and the
    413 is there to read."""
    for _ in range(3):
        s = server.connect()
        head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % FIVE_MB
        s.sendall(head + b"b" * FIVE_MB)
        answer = read_to_eof(s)
        s.close()
        assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large"), answer
        assert b"Connection: close" in answer


@pytest.mark.timeout(60)
def test_requests_behind_a_connection_close_do_not_reset_its_answer(
    server: Server,
) -> None:
    s = server.connect()
    last = HEAD + b"Connection: close\r\n\r\n"
    s.sendall(last + (HEAD + b"\r\n") * 200)
    answer = read_to_eof(s)
    s.close()
    assert answer.count(b"HTTP/1.1 200 OK") == 1
    assert b"Connection: close" in answer


@pytest.mark.timeout(60)
def test_keepalive_requests_reached_with_more_pipelined(tmp_path: Path) -> None:
    for kind in ("return", "python"):
        server = start(tmp_path, kind, "keepalive_requests = 3\n")
        try:
            s = server.connect()
            s.sendall((HEAD + b"\r\n") * 300)
            answer = read_to_eof(s)
            s.close()
            assert answer.count(b"HTTP/1.1 200 OK") == 3, kind
            assert answer.count(b"Connection: close") == 1
        finally:
            server.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_no_handler_reads_is_discarded_and_keepalive_kept(
    server: Server, chunked: bool
) -> None:
    s = server.connect()
    body = b"p" * 300_000
    if chunked:
        framing = b"Transfer-Encoding: chunked\r\n\r\n"
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:1000], body))
        body += b"0\r\n\r\n"
    else:
        framing = b"Content-Length: %d\r\n\r\n" % len(body)
    s.sendall(b"PUT / HTTP/1.1\r\nHost: a\r\n" + framing + body + HEAD + b"\r\n")
    reader = Reader(s)
    first, second = reader.response(), reader.response()
    assert b"Connection: keep-alive" in first
    assert second.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: keep-alive" in second
    s.sendall(HEAD + b"\r\n")  # and the connection is still in use
    assert reader.response().startswith(b"HTTP/1.1 200 OK")
    s.close()


@pytest.mark.timeout(30)
def test_a_client_that_expects_100_continue_gets_it(server: Server) -> None:
    s = server.connect()
    s.sendall(
        b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
        b"Content-Length: 5\r\n\r\n"
    )
    reader = Reader(s)
    assert reader.head() == b"HTTP/1.1 100 Continue"
    assert reader.response().startswith(b"HTTP/1.1 ")
    s.sendall(b"12345" + HEAD + b"\r\n")  # the body, then a request behind it
    assert reader.response().startswith(b"HTTP/1.1 200 OK")
    s.close()


@pytest.mark.timeout(30)
def test_a_broken_chunked_body_read_with_its_header_is_a_400(server: Server) -> None:
    """nginx parses the body that came with the header before answering."""
    s = server.connect()
    s.sendall(b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    answer = read_to_eof(s)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")


@pytest.mark.timeout(30)
def test_a_body_broken_after_the_answer_closes_at_once(tmp_path: Path) -> None:
    server = start(tmp_path, "python")
    try:
        s = server.connect()
        s.sendall(b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        head, _ = read_response(s)
        assert head.startswith(b"HTTP/1.1 200 OK")
        s.sendall(b"zz\r\n")  # not a chunk size: the server closes, no answer
        assert read_to_eof(s) == b""
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_a_body_that_stops_is_closed_after_lingering_timeout(tmp_path: Path) -> None:
    server = start(tmp_path, "python", 'lingering_timeout = "300ms"\n')
    try:
        s = server.connect()
        s.sendall(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nabc")
        head, _ = read_response(s)
        assert b"keep-alive" in head
        begun = time.monotonic()
        assert read_to_eof(s) == b""  # then nothing: closed
        assert 0.25 < time.monotonic() - begun < 5
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_a_body_that_trickles_is_closed_after_lingering_time(tmp_path: Path) -> None:
    conf = 'lingering_time = "600ms"\nlingering_timeout = "5s"\n'
    server = start(tmp_path, "python", conf)
    try:
        s = server.connect()
        s.sendall(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
        read_response(s)
        begun = time.monotonic()
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.05):
                try:
                    s.send(b"x")
                except OSError:
                    return

        t = threading.Thread(target=trickle)
        t.start()
        try:
            with pytest.raises(ConnectionResetError):  # closed with input unread
                while s.recv(100):
                    pass
                raise ConnectionResetError  # a FIN is as good
        finally:
            stop.set()
            t.join()
        assert 0.5 < time.monotonic() - begun < 5
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_a_lingering_connection_waits_for_lingering_timeout(tmp_path: Path) -> None:
    """The client read its 400 and EOF, and neither sends nor closes: the server
    keeps the connection lingering_timeout, then closes it."""
    conf = 'lingering_timeout = "400ms"\n'
    server = start(tmp_path, "return", conf)
    try:
        s = server.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")  # 400
        assert read_to_eof(s).startswith(b"HTTP/1.1 400")
        waited = wait_active(server, 1)
        assert waited > 0.2
        s.close()
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_lingering_close_always_and_off(tmp_path: Path) -> None:
    """always: even a request read whole lingers until the client closes; off: a
    connection closes at once, even with input unread."""
    server = start(tmp_path, "return", 'lingering_close = "always"\n')
    try:
        s = server.connect()
        s.sendall(HEAD + b"Connection: close\r\n\r\n")
        assert read_to_eof(s).startswith(b"HTTP/1.1 200 OK")
        assert active(server) == 2  # still lingering, with the status request
        s.close()
        wait_active(server, 1)
    finally:
        server.stop()
    server = start(tmp_path, "return", 'lingering_close = "off"\n')
    try:
        s = server.connect()
        s.sendall(HEAD + b"Connection: close\r\n\r\n" + HEAD)  # a header begun
        with pytest.raises(ConnectionResetError):
            read_to_eof(s)
            raise ConnectionResetError  # or a FIN
        assert active(server) == 1
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_lingering_directives_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('lingering_close = "sometimes"\n')
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "ngxffi", "serve", "-t", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 1
    assert "lingering_close" in done.stderr and "sometimes" in done.stderr


@pytest.mark.timeout(60)
def test_a_body_sent_before_its_large_answer_is_read_is_still_discarded(
    tmp_path: Path,
) -> None:
    """The client sends all of its body before it reads the answer: the body must
    be read while the answer waits for the socket, or both sides wait for ever."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "big.bin").write_bytes(b"f" * (8 << 20))
    server = start(tmp_path, "static", f'root = "{root}"\n')
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.settimeout(20)
        s.connect(("127.0.0.1", server.port))
        body = b"b" * 900_000
        head = b"GET /big.bin HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
        s.sendall(head % len(body) + body + HEAD + b"\r\n")
        reader = Reader(s)
        assert reader.response().startswith(b"HTTP/1.1 200 OK")
        assert reader.response().startswith(b"HTTP/1.1 403")  # / has no index.html
        s.close()
    finally:
        server.stop()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", list(KINDS))
def test_keepalive_after_a_body_that_ends_in_a_later_read(
    tmp_path: Path, kind: str
) -> None:
    """The connection is idle in keep-alive once its discarded body ends (nginx's
    Waiting), under keepalive_timeout, not the discard's lingering_timeout."""
    server = start(tmp_path, kind, 'lingering_timeout = "300ms"\n')
    try:
        s = server.connect()
        s.sendall(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n123")
        reader = Reader(s)
        assert b"keep-alive" in reader.response()
        s.sendall(b"4567890")
        deadline = time.monotonic() + 10
        while "Waiting: 1 " not in server.status():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.6)  # past lingering_timeout: the discard's timer is gone
        s.sendall(HEAD + b"\r\n")
        assert reader.response().startswith(b"HTTP/1.1 200 OK")
        s.close()
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_the_header_after_a_discarded_body_has_client_header_timeout(
    tmp_path: Path,
) -> None:
    conf = 'lingering_timeout = "300ms"\nclient_header_timeout = "10s"\n'
    server = start(tmp_path, "python", conf)
    try:
        s = server.connect()
        s.sendall(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n12")
        reader = Reader(s)
        reader.response()
        s.sendall(b"34GET / HTTP/1.1\r\n")  # the body's end, half a header
        time.sleep(0.6)  # past lingering_timeout, far from client_header_timeout
        s.sendall(b"Host: a\r\n\r\n")
        assert reader.response().startswith(b"HTTP/1.1 200 OK")
        s.close()
    finally:
        server.stop()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_last_request_read_whole_closes_at_once(tmp_path: Path, kind: str) -> None:
    """lingering_close on: nothing was left to read (an HTTP/1.0 request, read
    whole by one short read, C's or Python's), so no lingering: the server closes
    while the client still holds its end."""
    server = start(tmp_path, kind)
    try:
        s = server.connect()
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert read_to_eof(s).startswith(b"HTTP/1.1 ")
        assert wait_active(server, 1) < 2  # lingering_timeout is 5 s
        s.close()
    finally:
        server.stop()
