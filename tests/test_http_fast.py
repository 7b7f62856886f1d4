"""The HTTP module's C read handler for fixed responses (``return``): it answers plain
keep-alive GETs on idle connections without Python, and must be indistinguishable
from the Python path (llhttp through httptools) in every byte it sends."""

from __future__ import annotations

import contextlib
import errno
import gc
import re
import select
import socket
import time
from collections.abc import Iterator

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ngxffi._ngx import ffi, lib
from test_serve import CORPUS, closed, read_response

from ngxffi import os as nos
from ngxffi.event.accept import add_listening
from ngxffi.event.cycle import Cycle
from ngxffi.event.event import POST_EVENTS, Event, process_events_and_timers
from ngxffi.event.listening import Listening, open_listening_sockets
from ngxffi.event.posted import event_process_posted
from ngxffi.http.core import HttpCoreConf
from ngxffi.http.fast import FAST_HANDLER
from ngxffi.http.message import Response
from ngxffi.http.server import HttpServer

RETURN = Response(200, b"hello")
PLAIN = b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n"
KEEP_ALIVE = b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nHost: x\r\n\r\n"


def simple(data: bytes, skip: bytes = b"/status") -> int:
    """ngxffi_http_simple on ``data``: the length of a plain request, or 0."""
    f = ffi.new("ngxffi_http_fast_t *")
    keep = ffi.from_buffer(skip)
    f.skip_path, f.skip_path_len = keep, len(skip)
    return int(lib.ngxffi_http_simple(f, ffi.from_buffer(data), len(data)))


class Seen:
    """What llhttp makes of some bytes."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_message_complete(self) -> None:
        self.complete += 1


TOKEN = st.text("abcXYZ019-_!#$%&'*+.^`|~", min_size=1, max_size=8)
NAMES = st.one_of(
    TOKEN,
    st.sampled_from(
        [
            "Host",
            "host",
            "HOST",
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "Proxy-Connection",
            "Upgrade",
            "Expect",
            "Keep-Alive",
            "Bad Name",
            "",
        ]
    ),
)
VALUES = st.one_of(
    st.text(st.characters(max_codepoint=0xFF), max_size=12),
    st.sampled_from(["keep-alive", " Keep-Alive ", "close", "keep-alive, close", "x"]),
)
TARGETS = st.one_of(
    st.text("/abc019-._~!$&'()*+,;=:@?%", min_size=1, max_size=20).map(
        lambda t: "/" + t
    ),
    st.text(st.characters(max_codepoint=0xFF), max_size=10),
)
METHODS = st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "get", "GET "])
VERSIONS = st.sampled_from(
    ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.10", "http/1.1"]
)
EOLS = st.sampled_from(["\r\n", "\r\n", "\r\n", "\n", "\r"])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    eol = draw(EOLS)
    line = f"{draw(METHODS)} {draw(TARGETS)} {draw(VERSIONS)}{eol}"
    headers = draw(
        st.lists(
            st.tuples(NAMES, st.sampled_from([": ", ":", " : "]), VALUES), max_size=4
        )
    )
    text = (
        line + "".join(f"{n}{sep}{v}{draw(EOLS)}" for n, sep, v in headers) + draw(EOLS)
    )
    tail = draw(st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"xyz"]))
    return text.encode("latin-1") + tail


@settings(max_examples=3000, deadline=None)
@given(requests())
def test_what_c_accepts_llhttp_reads_as_one_plain_keepalive_get(data: bytes) -> None:
    n = simple(data)
    if n == 0:
        return
    seen = Seen()
    parser = httptools.HttpRequestParser(seen)
    parser.feed_data(data[:n])  # raises if llhttp disagrees that it is a request
    assert seen.complete == 1
    assert parser.get_method() == b"GET" and parser.get_http_version() == "1.1"
    assert parser.should_keep_alive()
    names = [name for name, _ in seen.headers]
    assert names.count(b"host") == 1
    framing = {b"content-length", b"transfer-encoding", b"upgrade", b"expect"}
    assert not (framing | {b"proxy-connection"}) & set(names)
    for name, value in seen.headers:  # Connection only as keep-alive
        assert name != b"connection" or value.strip().lower() == b"keep-alive"
    assert seen.url.split(b"?")[0] != b"/status"


@pytest.mark.parametrize(
    ("data", "length"),
    [
        (PLAIN, len(PLAIN)),
        (PLAIN + PLAIN, len(PLAIN)),  # one at a time
        (b"GET / HTTP/1.1\r\nhost:x\r\n\r\n", 26),
        (PLAIN[:-1], 0),  # incomplete
        (b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n", 0),  # Python's (stub_status)
        (b"GET /status?x HTTP/1.1\r\nHost: x\r\n\r\n", 0),
        (b"GET /statusx HTTP/1.1\r\nHost: x\r\n\r\n", 34),
        (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", 0),
        (b"GET / HTTP/1.0\r\nHost: x\r\n\r\n", 0),
        (b"GET / HTTP/1.1\r\n\r\n", 0),  # no Host
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 0),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive \r\n\r\n", 52),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, x\r\n\r\n", 0),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n", 0),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 0),
        (b"GET / HTTP/1.1\r\nHost: x\r\n Folded: y\r\n\r\n", 0),
        (b"GET / HTTP/1.1\nHost: x\n\n", 0),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 0),  # long: Python's
    ],
)
def test_plain_requests_and_the_rest(data: bytes, length: int) -> None:
    assert simple(data) == length


def test_every_corpus_case_is_left_to_python() -> None:
    assert all(simple(case) == 0 for case in CORPUS)


# --- a server in this process, driven turn by turn ------------------------------------


class Loop:
    """A `return 200 hello` server on a cycle of this process; ``turn`` runs the loop
    until a client socket has something to read (or was closed)."""

    def __init__(
        self,
        conf: HttpCoreConf,
        fast: bool = True,
        clock_offset: int = 0,
        response: Response = RETURN,
        c_accept: bool = False,
    ) -> None:
        self.ls = Listening(("127.0.0.1", 0), print)
        open_listening_sockets([self.ls])
        self.cycle = Cycle(64, clock_offset=clock_offset)
        self.server = HttpServer(
            self.cycle,
            lambda request: response,
            conf,
            fixed=response if fast else None,
            fixed_except="/status",
        )
        self.ls.handler = self.server.init_connection
        add_listening(self.cycle, [self.ls])
        if c_accept:
            self.server.init_listening(self.ls)
        address = nos.getsockname(self.ls.fd)
        assert isinstance(address, tuple)
        self.port = address[1]

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return s

    def turn_until(self, s: socket.socket, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while not select.select([s], [], [], 0)[0]:
            assert time.monotonic() < deadline, "no answer"
            process_events_and_timers(self.cycle)

    def response(self, s: socket.socket) -> bytes:
        self.turn_until(s)
        head, body = read_response(s)
        return head + b"\r\n\r\n" + body

    def close(self) -> None:
        self.cycle.close()
        self.ls.close()

    def __enter__(self) -> Loop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def loops() -> Iterator[tuple[Loop, Loop]]:
    c, py = Loop(HttpCoreConf()), Loop(HttpCoreConf(), fast=False)
    yield c, py
    c.close()
    py.close()


def undated(response: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"", response)


def exchange(loop: Loop) -> list[bytes]:
    """A first request (Python's: the connection is new), three on the idle
    connection (the C handler's, when on), then three pipelined in one packet."""
    s = loop.connect()
    answers = []
    for request in (PLAIN, PLAIN, KEEP_ALIVE, PLAIN):
        s.sendall(request)
        answers.append(undated(loop.response(s)))
    s.sendall(PLAIN * 3)
    data = b""
    while data.count(b"hello") < 3:
        loop.turn_until(s)
        data += s.recv(65536)
    s.close()
    return [*answers, undated(data)]


def test_c_answers_byte_for_byte_as_python_does(loops: tuple[Loop, Loop]) -> None:
    c, py = loops
    assert exchange(c) == exchange(py)
    assert c.server.fast.answered == 6 and py.server.fast is None


def test_c_date_is_http_date(loops: tuple[Loop, Loop]) -> None:
    c = loops[0]
    s = c.connect()
    s.sendall(PLAIN)
    c.response(s)
    s.sendall(PLAIN)
    answer = c.response(s)
    assert c.server.fast.answered == 1
    date = re.search(rb"\r\nDate: ([^\r]*)\r\n", answer)
    assert date is not None
    parsed = time.strptime(date.group(1).decode(), "%a, %d %b %Y %H:%M:%S GMT")
    assert abs(time.mktime(parsed) - time.mktime(time.gmtime())) < 5
    s.close()


def idle(loop: Loop) -> socket.socket:
    """A connection past its first request: idle, its read event on the C handler."""
    s = loop.connect()
    s.sendall(PLAIN)
    loop.response(s)
    return s


def test_keepalive_requests_last_answer_closes() -> None:
    with Loop(HttpCoreConf(keepalive_requests=5)) as loop:
        s = idle(loop)
        heads = []
        for _ in range(4):
            s.sendall(PLAIN)
            heads.append(loop.response(s).split(b"\r\n\r\n")[0])
        assert [b"Connection: keep-alive" in h for h in heads] == [True] * 3 + [False]
        assert b"Connection: close" in heads[-1]
        loop.turn_until(s)
        assert closed(s)
        assert loop.server.fast.answered == 3  # requests 2 to 4; the 5th is Python's


@pytest.mark.parametrize("wrap", [False, True], ids=["clock", "clock-near-wrap"])
def test_keepalive_timeout_counts_from_the_last_c_answer(wrap: bool) -> None:
    offset = (1 << 64) - 800 - time.monotonic_ns() // 1_000_000 if wrap else 0
    with Loop(HttpCoreConf(keepalive_timeout=1000), clock_offset=offset) as loop:
        s = idle(loop)
        assert not select.select([s], [], [], 0.6)[0]  # 0.6 s of the 1 s go by
        s.sendall(PLAIN)
        loop.response(s)
        answered = time.monotonic()
        assert loop.server.fast.answered == 1
        loop.turn_until(s)  # the loop runs until the server closes the connection
        assert closed(s)
        assert 0.9 < time.monotonic() - answered < 2


@pytest.mark.parametrize("case", CORPUS, ids=range(len(CORPUS)))
def test_malformed_requests_on_idle_connections_get_400(case: bytes) -> None:
    with Loop(HttpCoreConf()) as loop:
        s = idle(loop)
        s.sendall(case)
        assert loop.response(s).startswith(b"HTTP/1.1 400 ")
        loop.turn_until(s)
        assert closed(s)
        assert loop.server.fast.answered == 0


def test_the_skipped_path_goes_to_python(loops: tuple[Loop, Loop]) -> None:
    c = loops[0]
    s = idle(c)
    s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.response(s).endswith(b"hello")
    s.sendall(PLAIN)
    assert c.response(s).endswith(b"hello")
    assert c.server.fast.answered == 1  # the second only: the C handler is back
    s.close()


def drain(s: socket.socket) -> bytes:
    """All a non-blocking socket has to read now."""
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := s.recv(1 << 16):
            data += chunk
    return data


def test_answers_the_socket_cannot_take_wait_for_the_write_event() -> None:
    with Loop(HttpCoreConf(keepalive_requests=10**6)) as c:
        tick = Event.standalone(c.cycle, lambda ev: c.cycle.timers.add_timer(ev, 5))
        c.cycle.timers.add_timer(tick, 5)  # no turn waits long for nothing
        s = idle(c)
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn = next(x for x in c.cycle.connections if x.fd != -1 and x.data)
        nos.setsockopt(conn.fd, socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        total, data = 1000, b""
        unsent = memoryview(PLAIN * total)
        while data.count(b"hello") < total:
            try:  # a client that reads only when it cannot write
                unsent = unsent[s.send(unsent[:4700]) :] if unsent else unsent
            except BlockingIOError:
                data += drain(s)
            if not unsent:
                data += drain(s)
            process_events_and_timers(c.cycle)
        assert data.count(b"HTTP/1.1 200 OK") == total  # every answer, whole
        assert c.server.fast.answered > 0
        assert conn.write.raw.active  # some answers did wait for the write event
        s.close()


def test_a_request_python_has_begun_is_not_cut_into(loops: tuple[Loop, Loop]) -> None:
    c = loops[0]
    s = idle(c)
    s.sendall(b"GET / HTTP/1.1\r\nX-A: ")
    # a turn that posts its events (as with the accept mutex held): Python reads
    # the half request itself, with the C handler still installed
    c.cycle.actions.process_events(c.cycle, 1000, POST_EVENTS)
    event_process_posted(c.cycle, c.cycle.posted_events)
    s.sendall(PLAIN)  # a plain request, as bytes: here the rest of a header value
    head, body = read_response_after(c, s)
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b"hello"
    s.setblocking(False)
    c.cycle.timers.add_timer(Event.standalone(c.cycle, lambda ev: None), 50)
    process_events_and_timers(c.cycle)
    with pytest.raises(BlockingIOError):
        s.recv(1)  # one request, one answer
    assert c.server.fast.answered == 0
    s.close()


def read_response_after(loop: Loop, s: socket.socket) -> tuple[bytes, bytes]:
    loop.turn_until(s)
    return read_response(s)


def test_fault_alloc_refuses_a_negative_count() -> None:
    assert lib.ngxffi_fault_alloc(-1) == -1
    assert ffi.errno == errno.EINVAL
    assert lib.ngxffi_fault_alloc(-(1 << 63)) == -1
    assert lib.ngxffi_fault_alloc(0) == 0


def until_closed(c: Loop, s: socket.socket, seconds: float = 5) -> tuple[bytes, bool]:
    """Run the loop and read ``s`` until the server closes it or ``seconds`` pass
    (a tick timer keeps every turn short): what came, and whether EOF came."""
    tick = Event.standalone(c.cycle, lambda ev: c.cycle.timers.add_timer(ev, 5))
    c.cycle.timers.add_timer(tick, 5)
    s.setblocking(False)
    data, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        process_events_and_timers(c.cycle)
        try:
            while chunk := s.recv(1 << 16):
                data += chunk
            return data, True
        except BlockingIOError:
            pass
    return data, False


@pytest.mark.parametrize("stash", ["input", "output"])
def test_a_stash_that_cannot_be_allocated_closes_the_connection(stash: str) -> None:
    # Issue 13, defect 1: the C handler took the bytes from the socket (input) or
    # counted answers it could not all send (output, a 4 KiB send buffer), then
    # malloc failed: the bytes were dropped and the client waited for ever, or got
    # a cut answer followed by the next one. Now: whole answers, then the close.
    with Loop(HttpCoreConf(keepalive_requests=10**6)) as c:
        s = c.connect()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(PLAIN)
        answer = undated(c.response(s))
        conn = next(x for x in c.cycle.connections if x.fd != -1 and x.data)
        nos.setsockopt(conn.fd, socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        assert lib.ngxffi_fault_alloc(1) == 0
        try:
            if stash == "input":
                s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")  # Python's
            else:
                s.sendall(PLAIN * 300)
            data, eof = until_closed(c, s)
        finally:
            lib.ngxffi_fault_alloc(0)
        assert eof, f"no close: {len(data)} bytes, {data.count(b'hello')} answers"
        if stash == "input":
            assert data == b""
        else:
            n = data.count(b"HTTP/1.1 200 OK")
            assert 0 < n < 300 and undated(data) == answer * n
        s.close()


def test_a_c_answer_at_msec_0_still_counts_for_the_keepalive_timeout() -> None:
    # c_msec == 0 doubled as "never answered in C": an answer the clock (with its
    # offset) put at 0 ms was forgotten and the connection closed early. The
    # c_answered bit says it now.
    with Loop(HttpCoreConf(keepalive_timeout=1000)) as c:
        s = idle(c)
        s.sendall(PLAIN)
        c.response(s)
        assert c.server.fast.answered == 1
        conn = next(x for x in c.cycle.connections if x.fd != -1 and x.data)
        assert conn.raw.c_answered
        conn.raw.c_msec = 0  # as if answered at 0 ms
        c.cycle.current_msec = 400
        conn.data.keepalive_timer = False  # only the C handler's answer counts
        assert conn.data.keepalive_left()  # 600 ms are left: wait them
        assert conn.read.raw.timer_set
        s.close()


def test_a_closed_server_leaves_no_c_handler_on_its_connections() -> None:
    # c_ctx points into the server's buffers: a server closed (a reload, a second
    # server on the cycle) left idle connections recv()ing into them once freed.
    with Loop(HttpCoreConf()) as c:
        s = idle(c)
        old = c.server.fast
        armed = [x for x in c.cycle.connections if x.read.raw.c_ctx == old]
        assert armed and all(x.read.raw.c_handler != ffi.NULL for x in armed)
        other = HttpServer(c.cycle, lambda request: RETURN, fixed=RETURN)  # a 2nd one
        c.server.close()
        assert c.server.fast is None
        for x in c.cycle.connections:
            assert x.read.raw.c_handler == ffi.NULL and x.read.raw.c_ctx == ffi.NULL
        s.sendall(PLAIN)  # Python answers on the idle connection
        assert c.response(s).endswith(b"hello")
        assert old.answered == 0 and other.fast.answered == 0
        c.server.close()  # again: nothing to do
        s.close()


def test_a_dropped_server_clears_the_c_handler_before_its_buffers_go() -> None:
    cycle = Cycle(4)
    try:
        server = HttpServer(cycle, lambda request: RETURN, fixed=RETURN)
        rev = cycle.connections[2].read
        rev.set_c_handler(FAST_HANDLER, server.fast)
        del server
        gc.collect()  # the server and its HTTP connections refer to each other
        assert rev.raw.c_handler == ffi.NULL and rev.raw.c_ctx == ffi.NULL
    finally:
        cycle.close()
