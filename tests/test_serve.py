"""``ngxffi serve`` as a real server in a subprocess, with real clients."""

from __future__ import annotations

import contextlib
import http.client
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EDGE_METHODS

H = b"POST / HTTP/1.1\r\nHost: a\r\n"
TE = b"Transfer-Encoding: chunked\r\n"
CORPUS = [  # each must be answered 400 and closed, and leave the server healthy
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # duplicate Host
    b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n",  # control character in the method
    b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n",  # unknown method
    b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",  # bad versions
    b"GET / HTTP/01.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.10\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.\r\nHost: a\r\n\r\n",
    b"GET / FOO/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n",
    b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",  # NUL in the target
    b"GET / HTTP/1.1\rHost: a\r\n\r\n",  # bare CR
    b"GET / HTTP/1.1\r\nHost: a\r\n Folded: x\r\n\r\n",  # obsolete line folding
    b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",  # space in a name
    b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",  # space before the colon
    b"GET / HTTP/1.1\r\nHost: a\r\n: empty-name\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",  # NUL in a value
    b"GET / HTTP/1.1\r\nHost: a\r\nX-\x7f: y\r\n\r\n",  # DEL in a name
    b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    # request smuggling shapes
    H + b"Content-Length: 5\r\n" + TE + b"\r\n",
    H + TE + b"Content-Length: 3\r\n\r\n",
    H + b"Transfer-Encoding: chunked, identity\r\n\r\n",
    # bad chunked encoding
    H + TE + b"\r\nzz\r\n",
    H + TE + b"\r\n-1\r\n\r\n",
    H + TE + b"\r\n5\r\nabcdefgh\r\n",
    H + TE + b"\r\n3;\x01=x\r\nabc\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS ClientHello
]


class Server:
    command: tuple[str, ...] = (sys.executable, "-m", "ngxffi")  # then "serve", args
    use: tuple[str, ...] = ()  # the event method, set for this file's tests

    def __init__(self, *args: str) -> None:
        use = () if "--use" in args else self.use
        self.proc = subprocess.Popen(
            [*self.command, "serve", "--listen", "127.0.0.1:0", *use, *args],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        self.port = int(match.group(1))

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return s

    def get(self, path: str = "/", method: str = "GET") -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request(method, path)
        response = conn.getresponse()
        response.read()
        conn.close()
        return response

    def status(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/status")
        body = conn.getresponse().read().decode()
        conn.close()
        return body

    def stop(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(timeout=10) == 0


@pytest.fixture(autouse=True, params=EDGE_METHODS)
def method(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on epoll and on io_uring (``--use``)."""
    Server.use = ("--use", request.param)
    yield request.param
    Server.use = ()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server("--return", "200", "hello")
    yield s
    s.stop()


def read_response(s: socket.socket) -> tuple[bytes, bytes]:
    """One response (head, body) off a raw socket, by Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    match = re.search(rb"Content-Length: (\d+)", head)
    length = int(match.group(1)) if match else 0  # none on a 304
    while len(rest) < length:
        rest += s.recv(65536)
    assert len(rest) == length, "more than one response"
    return head, rest


def closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_return_with_nginx_headers(server: Server) -> None:
    r = server.get()
    assert (r.status, r.reason) == (200, "OK")
    assert r.getheader("Server") == "ngxffi" and r.getheader("Content-Length") == "5"
    assert r.getheader("Date", "").endswith("GMT")
    assert r.getheader("Connection") == "keep-alive"


def test_keepalive_reuses_one_connection(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for _ in range(5):
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"hello"
    conn.close()
    # 1 keep-alive connection + this status request's own; 5 + 1 requests
    assert " 2 2 6 \n" in server.status()


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    s = server.connect()
    s.sendall(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n"
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    data = b""
    while data.count(b"HTTP/1.1 200") < 3 or not data.endswith(b"\r\n\r\n"):
        data += s.recv(65536)
    first, second, third = data.split(b"HTTP/1.1 200 OK")[1:]
    assert first.endswith(b"hello")
    assert b"Active connections" in second
    assert third.endswith(b"\r\n\r\n") and b"hello" not in third  # HEAD: no body
    s.close()


def test_head_has_a_length_but_no_body(server: Server) -> None:
    r = server.get(method="HEAD")
    assert r.status == 200 and r.getheader("Content-Length") == "5"


def test_connection_close_and_http_1_0(server: Server) -> None:
    for request in (
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ):
        s = server.connect()
        s.sendall(request)
        head, body = read_response(s)
        assert b"Connection: close" in head and body == b"hello"
        assert closed(s)
        s.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 9000 + b"\r\n\r\n", b"400"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\n"
            + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 4000) for i in range(10))
            + b"\r\n",
            b"400",
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", b"413"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-0: " + b"v" * 60000, b"400"),
    ],
    ids=["uri-414", "header-line-400", "headers-total-400", "body-413", "no-end-400"],
)
def test_limits(server: Server, request_bytes: bytes, status: bytes) -> None:
    s = server.connect()
    s.sendall(request_bytes)
    head, body = read_response(s)
    assert head.startswith(b"HTTP/1.1 " + status)
    if status == b"400":
        assert b"Request Header Or Cookie Too Large" in body
    assert closed(s)
    s.close()
    assert server.get().status == 200


@pytest.mark.parametrize("request_bytes", CORPUS)
def test_malformed_requests_get_400_and_close(
    server: Server, request_bytes: bytes
) -> None:
    s = server.connect()
    s.sendall(request_bytes)
    head, _ = read_response(s)
    assert head.startswith(b"HTTP/1.1 400 Bad Request")
    assert b"Connection: close" in head
    assert closed(s)
    s.close()
    assert server.get().status == 200  # still serving


def test_status_only_for_get_and_head(server: Server) -> None:
    assert server.get("/status", "POST").status == 405


def test_stub_status_counts_exactly(server: Server) -> None:
    """A known sequence, as nginx's own stub_status tests check it."""
    assert server.status().splitlines() == [
        "Active connections: 1 ",
        "server accepts handled requests",
        " 1 1 1 ",
        "Reading: 0 Writing: 1 Waiting: 0 ",
    ]
    idle = server.connect()
    idle.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    read_response(idle)  # now idle in keep-alive
    reading = server.connect()
    reading.sendall(b"GET / HTTP/1.1\r\n")  # a header half sent
    assert server.status().splitlines()[1:] == [
        "server accepts handled requests",
        " 4 4 3 ",
        "Reading: 1 Writing: 1 Waiting: 1 ",
    ]
    idle.close()
    reading.close()


def test_timeouts() -> None:
    server = Server(
        "--return",
        "200",
        "x",
        "--client-header-timeout",
        "0.2",
        "--keepalive-timeout",
        "0.3",
    )
    try:
        slow = server.connect()
        slow.sendall(b"GET / HTTP/1.1\r\n")  # never finishes its header
        idle = server.connect()
        idle.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        read_response(idle)
        assert closed(slow) and closed(idle)  # each closed by its timer
        slow.close()
        idle.close()
    finally:
        server.stop()


def test_many_concurrent_clients(server: Server) -> None:
    results: list[int] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
        for _ in range(5):
            conn.request("GET", "/")
            r = conn.getresponse()
            r.read()
            results.append(r.status)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 500


def test_bad_arguments() -> None:
    for args in (["--listen", "127.0.0.1:notaport"], ["--return", "99", "x"]):
        out = subprocess.run(
            [sys.executable, "-m", "ngxffi", "serve", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 1 and "ngxffi: [emerg] invalid" in out.stderr


def test_configured_by_file_with_logs_and_pid(tmp_path: Path) -> None:
    access, error, pid = (
        tmp_path / "access.log",
        tmp_path / "error.log",
        tmp_path / "pid",
    )
    config = tmp_path / "ngxffi.toml"
    config.write_text(
        'listen = "127.0.0.1:0"\n'
        'return = [200, "configured"]\n'
        'keepalive_timeout = "200ms"\n'
        f'access_log = "{access}"\n'
        f'error_log = "{error} info"\n'
        f'pid = "{pid}"\n'
    )
    server = Server("-c", str(config))
    try:
        assert pid.read_text().strip() == str(server.proc.pid)
        s = server.connect()
        s.sendall(b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: probe/1\r\n\r\n")
        assert read_response(s)[1] == b"configured"
        assert closed(s)  # keepalive_timeout 200ms from the file
        s.close()
        line = access.read_text().splitlines()[0]
        assert re.fullmatch(
            r"127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
            r'"GET /x\?y=1 HTTP/1\.1" 200 10 "-" "probe/1"',
            line,
        ), line
    finally:
        server.stop()
    assert not pid.exists()  # removed at exit
    assert re.search(
        r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[info\] \d+#0: client timed out",
        error.read_text(),
    )


def test_graceful_shutdown_on_sigquit() -> None:
    """Idle keep-alive connections close at once; a request in progress finishes
    with Connection: close; then the server exits by itself."""
    server = Server("--return", "200", "bye")
    idle = server.connect()
    idle.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    read_response(idle)
    busy = server.connect()
    busy.sendall(b"GET / HTTP/1.1\r\n")  # half a request
    server.get()  # the half request has reached the server before the signal
    server.proc.send_signal(signal.SIGQUIT)
    assert closed(idle)
    busy.sendall(b"Host: a\r\n\r\n")
    head, body = read_response(busy)
    assert body == b"bye" and b"Connection: close" in head
    assert closed(busy)
    assert server.proc.wait(timeout=10) == 0
    with pytest.raises(OSError):
        server.connect()  # no longer listening
    idle.close()
    busy.close()


def test_sigterm_ends_a_graceful_shutdown_at_once() -> None:
    """SIGTERM during a graceful shutdown stops the worker without waiting for the
    request in progress (nginx's ngx_terminate beats ngx_quit)."""
    server = Server("--return", "200", "bye")
    idle = server.connect()
    idle.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    read_response(idle)
    busy = server.connect()
    busy.sendall(b"GET / HTTP/1.1\r\n")  # half a request: 60 s of header timeout
    server.get()
    server.proc.send_signal(signal.SIGQUIT)
    assert closed(idle)  # the graceful shutdown has begun
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0
    idle.close()
    busy.close()


def test_send_timeout_closes_a_reader_that_stalls(tmp_path: Path) -> None:
    stall = threading.Event()
    (tmp_path / "big.bin").write_bytes(b"x" * (8 << 20))
    server = Server("--root", str(tmp_path), "--send-timeout", "300ms")
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", server.port))
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        # not reading: the server's send blocks, then send_timeout closes it
        received = 0
        s.settimeout(10)
        stall.wait(1)  # the stall itself is what is tested: there is nothing to await
        with contextlib.suppress(ConnectionResetError):  # closed with data unsent
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        assert received < 8 << 20  # cut short by the server
        s.close()
    finally:
        server.stop()


def test_curl_sees_keepalive_and_head(server: Server) -> None:
    curl = shutil.which("curl")
    url = f"http://127.0.0.1:{server.port}/"
    if curl is None:  # curl is optional: http.client checks the same
        assert server.get(method="HEAD").getheader("Content-Length") == "5"
        return
    out = subprocess.run(
        [curl, "-sv", url, url, "-I", "--http1.1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    assert "Re-using existing connection" in out.stderr or "Reusing" in out.stderr
    assert (
        out.stdout.count("HTTP/1.1 200 OK") == 2 and "Content-Length: 5" in out.stdout
    )


def test_the_poll_module_serves_too() -> None:
    server = Server("--return", "200", "polled", "--use", "poll")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for _ in range(3):
            conn.request("GET", "/")
            assert conn.getresponse().read() == b"polled"
        conn.close()
        s = server.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 2)
        data = b""
        while data.count(b"polled") < 2:
            data += s.recv(65536)
        s.close()
        assert " 3 3 6 \n" in server.status()
    finally:
        server.stop()


def test_mixed_traffic_on_a_kept_alive_connection(server: Server) -> None:
    """On an idle connection the C handler answers plain GETs; anything else in the
    same stream goes to Python. In any order, every request gets its own answer, in
    order, and stub_status counts each exactly once."""
    s = server.connect()
    plain = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    s.sendall(plain)
    read_response(s)  # the first request: Python's; now idle
    head_request = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
    shapes = [
        plain,  # C
        head_request,  # Python
        plain * 3,  # C, pipelined
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",  # Python
        plain + b"GET /x HTTP/1.1\r\nHost: a\r\nExpect: y\r\n\r\n",  # Python
        b"GET /?q HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",  # C
    ]
    for data in shapes:
        s.sendall(data)
        wanted = data.count(b"HTTP/1.1\r\n")
        body = b"" if data == head_request else b"hello"
        answers = b""
        while answers.count(b"HTTP/1.1 200 OK") < wanted or not answers.endswith(body):
            answers += s.recv(65536)
        for answer in answers.split(b"HTTP/1.1 200 OK")[1:]:
            assert b"Connection: keep-alive" in answer
            assert answer.endswith(b"\r\n\r\n" + body)
    # 1 + 9 requests here, and the status request itself
    assert " 2 2 11 \n" in server.status()
    s.close()


def unread_by_server(port: int, client: socket.socket) -> int:
    """The bytes the server side of ``client``'s connection (local port ``port``)
    has not read yet, from /proc/net/tcp's rx_queue (-1: no such socket)."""
    peer = client.getsockname()[1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if (
            int(local.split(":")[1], 16) == port
            and int(remote.split(":")[1], 16) == peer
        ):
            return int(fields[4].split(":")[1], 16)
    return -1


@pytest.mark.parametrize(
    "args", [("--return", "200", "hello"), ()], ids=["return", "root"]
)
def test_a_request_in_two_reads_is_answered(args: tuple[str, ...]) -> None:
    """A connection accepted with data there (deferred accept) must be registered for
    reads once that data is read: the rest of a split request comes as an event."""
    server = Server(*args)
    s = server.connect()
    try:
        for _ in range(2):  # a new connection, then the same kept alive
            s.sendall(b"GET / HTTP/1.1\r\n")
            deadline = time.monotonic() + 5
            while unread_by_server(server.port, s) != 0:  # the server read it
                assert time.monotonic() < deadline
                time.sleep(0.01)
            s.sendall(b"Host: x\r\n\r\n")
            head, _body = read_response(s)
            assert head.startswith(b"HTTP/1.1 200 ")
    finally:
        s.close()
        server.stop()
