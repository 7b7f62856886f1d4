"""The plain-request path of Python handlers (src/ngx_http_parse.c, PlainParser in
ngxffi/http/parse.py): a request the C recognises is the Request llhttp's callbacks
make, within the same limits; its read and its send; and, on a server, the
keep-alive bookkeeping that path shortens."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator
from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ngxffi._ngx import ffi, lib
from test_c_preconditions import run
from test_http_fast import PLAIN, Loop, requests

from ngxffi.http.core import HttpCoreConf
from ngxffi.http.fast import READ_SIZE
from ngxffi.http.message import (
    CachedDate,
    FileBody,
    Request,
    Response,
    build_fixed_head,
    queue_response,
)
from ngxffi.http.parse import DRAINED, END, KEEP, LAST, TEXT, HttpRequest, Limits
from ngxffi.http.parse import PlainParser as Plain

DEFAULT = Limits.of(HttpCoreConf())
SMALL = Limits(line=40, headers=80, unparsed=200, body=100)  # limits reached soon
AGAIN, CLOSED, UNUSUAL = (
    lib.NGXFFI_PLAIN_AGAIN,
    lib.NGXFFI_PLAIN_CLOSED,
    lib.NGXFFI_PLAIN_UNUSUAL,
)


def parser(limits: Limits = DEFAULT, requests_max: int = 100) -> Plain:
    return Plain(limits, READ_SIZE, True, ffi.NULL, ffi.NULL, requests_max)


def plain(data: bytes, limits: Limits = DEFAULT) -> tuple[Request, int] | None:
    """What the C recognises at the start of ``data``: the Request, where it ends."""
    p = parser(limits)
    if not lib.ngxffi_http_plain(p.ctx, ffi.NULL, data, len(data), 0):
        return None
    assert p.out[LAST] == (not p.out[KEEP])  # no connection: only keep-alive counts
    return p.request(), p.out[END]


class Answers:
    """An HttpRequest's connection that keeps what it is given."""

    close_after = False
    clock = 42

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.discarded = 0

    def answer(self, request: Request) -> None:
        self.requests.append(request)

    def now(self) -> int:
        return self.clock

    def body_discarded(self) -> None:
        self.discarded += 1


def llhttp(data: bytes, limits: Limits = DEFAULT) -> list[Request]:
    """The Requests parse.py's llhttp callbacks make of ``data`` (raises as they
    do on what they refuse)."""
    r = HttpRequest(limits)
    answers = Answers()
    r.hc = answers
    r.parser.feed_data(data)
    r.answer_pending()  # a body begun: answered at the end of the read
    assert r.error is None
    return answers.requests


NAMES = st.sampled_from(
    [
        *("Host", "host", "HOST", "Connection", "connection", "X-A", "x-a"),
        *("Content-Length", "Transfer-Encoding", "Upgrade", "Proxy-Connection", "A b"),
    ]
)
VALUES = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
    st.sampled_from(
        [
            *("keep-alive", "Keep-Alive ", "close", " Close\t", "keep-alive, close"),
            *("upgrade", "x\ty", "\t", "", "\xe9", "5", "chunked"),
        ]
    ),
)
METHODS = st.sampled_from(
    [
        *("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "GET", "GET"),
        *("TRACE", "get", "CONNECT", "GET  "),
    ]
)


BENIGN = st.sampled_from(["X-A", "x-a", "Accept", "User-Agent", "Cookie"])
PLAIN_TARGETS = ["/", "/a?b=c&d", "/%41/~x"]
PLAIN_VERSIONS = ["HTTP/1.1", "HTTP/1.0"]


@st.composite
def shaped(draw: st.DrawFn) -> bytes:
    """Requests near the plain shape, on either side of it (most of them plain)."""
    target = draw(st.sampled_from([*PLAIN_TARGETS * 4, "*", "http://h/"]))
    version = draw(st.sampled_from([*PLAIN_VERSIONS * 4, "HTTP/1.2"]))
    lines = [f"{draw(METHODS)} {target} {version}"]
    if draw(st.sampled_from([True, True, True, False])):
        lines.append(f"Host: {draw(VALUES)}")
    for name, sep, value in draw(
        st.lists(
            st.tuples(
                st.one_of(BENIGN, BENIGN, BENIGN, NAMES),
                st.sampled_from([": ", ":", ":  "]),
                VALUES,
            ),
            max_size=6,
        )
    ):
        lines.append(f"{name}{sep}{value}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    tail = draw(st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"\r\n", b"x"]))
    return head.encode("latin-1") + tail


@settings(max_examples=4000, deadline=None)
@given(
    st.one_of(shaped(), shaped(), shaped(), requests()),
    st.sampled_from([DEFAULT, DEFAULT, SMALL]),
)
def test_what_c_recognises_llhttp_reads_as_the_same_request(
    data: bytes, limits: Limits
) -> None:
    found = plain(data, limits)
    if found is None:
        return
    request, end = found
    assert data[end - 4 : end] == b"\r\n\r\n"
    # llhttp, within parse.py's limits, reads exactly one request there
    assert llhttp(data[:end], limits) == [request]
    assert plain(data[:end], limits) == found  # what follows does not matter


@pytest.mark.parametrize(
    ("data", "method", "uri", "version", "headers", "keep_alive"),
    [
        (
            b"GET / HTTP/1.1\r\nHost: h:80\r\n\r\n",
            "GET",
            "/",
            "1.1",
            {"host": "h:80"},
            1,
        ),
        (b"GET /a?b HTTP/1.0\r\n\r\n", "GET", "/a?b", "1.0", {}, 0),
        (
            b"PATCH /x HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            "PATCH",
            "/x",
            "1.0",
            {"connection": "Keep-Alive"},
            1,
        ),
        (
            b"OPTIONS / HTTP/1.1\r\nHOST:x\r\nX-A:  a \t\r\nx-a: b\r\nE:\r\n"
            b"Connection: close\r\n\r\n",
            "OPTIONS",
            "/",
            "1.1",
            {"host": "x", "x-a": "b", "e": "", "connection": "close"},
            0,
        ),
    ],
)
def test_plain_requests(
    data: bytes,
    method: str,
    uri: str,
    version: str,
    headers: dict[str, str],
    keep_alive: int,
) -> None:
    expected = Request(method, uri, version, headers, bool(keep_alive))
    assert plain(data) == (expected, len(data))
    assert llhttp(data) == [expected]


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host: 400
        b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",  # two: 400
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: close\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",  # absolute form
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \xe9\r\n\r\n",  # obs-text
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r",  # incomplete
        b"GET /" + b"a" * 8192 + b" HTTP/1.1\r\nHost: a\r\n\r\n",  # 414
        b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 8190 + b"\r\n\r\n",  # 400
    ],
)
def test_what_llhttp_or_the_limits_must_decide_is_left_to_them(data: bytes) -> None:
    assert plain(data) is None


def test_a_text_buffer_too_small_recognises_nothing() -> None:
    p = parser()
    p.ctx.text_size = 10  # "GET\0/\x001.1\0host\0a" does not fit
    data = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert lib.ngxffi_http_plain(p.ctx, ffi.NULL, data, len(data), 0) == 0
    p.ctx.text_size = 16
    assert lib.ngxffi_http_plain(p.ctx, ffi.NULL, data, len(data), 0) == 16


def test_requests_are_counted_on_their_connection_up_to_the_last() -> None:
    p = parser(requests_max=3)
    c = ffi.new("ngx_connection_t *")
    data = PLAIN * 3
    start, last = 0, []
    while start < len(data):
        assert lib.ngxffi_http_plain(p.ctx, c, data, len(data), start)
        last.append(p.out[LAST])
        start = p.out[END]
    assert (c.requests, last) == (3, [0, 0, 1])
    p.ctx.requests_max = 0  # shutting down: every answer is the last
    assert lib.ngxffi_http_plain(p.ctx, c, PLAIN, len(PLAIN), 0)
    assert p.out[LAST] == 1


def test_plain_functions_refuse_what_they_cannot_use() -> None:
    out = run(
        """
        from ngxffi._ngx import ffi, lib
        from ngxffi.http.core import HttpCoreConf
        from ngxffi.http.parse import Limits, PlainParser
        p = PlainParser(Limits.of(HttpCoreConf()), 64, True, ffi.NULL, ffi.NULL, 9)
        data = b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n"
        print(lib.ngxffi_http_plain(ffi.NULL, ffi.NULL, data, len(data), 0))
        print(lib.ngxffi_http_plain(p.ctx, ffi.NULL, ffi.NULL, 100, 0))
        print(lib.ngxffi_http_plain(p.ctx, ffi.NULL, data, len(data), len(data)))
        print(lib.ngxffi_http_plain(p.ctx, ffi.NULL, data, len(data), 1 << 62))
        print(lib.ngxffi_http_plain(p.ctx, ffi.NULL, data, 0, 0))
        empty = ffi.new("ngxffi_http_plain_t *")
        print(lib.ngxffi_http_plain(empty, ffi.NULL, data, len(data), 0))
        print(lib.ngxffi_http_plain_read(ffi.NULL, ffi.NULL, 1))
        print(lib.ngxffi_http_plain_read(p.ctx, ffi.new("ngx_event_t *"), 1))
        print(lib.ngxffi_http_plain_read(empty, ffi.new("ngx_event_t *"), 1))
        for args in ((ffi.NULL, 1, data, 3, 0), (p.ctx, 1, ffi.NULL, 3, 0),
                     (p.ctx, 1, data, 3, -1)):
            print(lib.ngxffi_http_plain_send(*args), ffi.errno)
        print("ok")
        """
    )
    einval = f"-1 {errno.EINVAL}"
    assert out.splitlines() == ["0"] * 6 + ["-2"] * 3 + [einval] * 3 + ["ok"]


# --- the read and the send ------------------------------------------------------------


class Reader:
    """A connection and its read event in C over one end of a socketpair."""

    def __init__(self, size: int = 64) -> None:
        self.peer, self.sock = socket.socketpair()
        self.sock.setblocking(False)
        self.plain = Plain(DEFAULT, size, True, ffi.NULL, ffi.NULL, 100)
        self.c = ffi.new("ngx_connection_t *")
        self.rev = ffi.new("ngx_event_t *")
        self.c.fd, self.c.read, self.rev.data = self.sock.fileno(), self.rev, self.c
        self.rev.ready = 1

    def read(self, recognise: bool = True) -> int:
        return int(lib.ngxffi_http_plain_read(self.plain.ctx, self.rev, recognise))


@pytest.fixture
def reader() -> Iterator[Reader]:
    r = Reader()
    yield r
    r.peer.close()
    r.sock.close()


def test_plain_read_reads_drains_and_recognises(reader: Reader) -> None:
    assert reader.read() == AGAIN and reader.rev.ready == 0
    reader.rev.ready = 1
    reader.peer.sendall(PLAIN)
    assert reader.read() == len(PLAIN)
    out = reader.plain.out
    assert (out[DRAINED], reader.rev.ready, out[END]) == (1, 0, len(PLAIN))
    assert reader.plain.request().headers == {"host": "x", "user-agent": "t"}
    assert reader.c.requests == 1
    reader.peer.sendall(PLAIN)
    assert reader.read(recognise=False) == len(PLAIN)  # a request begun: llhttp's
    assert (out[TEXT], reader.c.requests) == (0, 1)
    assert bytes(reader.plain.buf[: len(PLAIN)]) == PLAIN


def test_a_full_read_does_not_drain(reader: Reader) -> None:
    reader.peer.sendall(b"x" * 100)
    assert reader.read() == 64
    assert (reader.plain.out[DRAINED], reader.rev.ready) == (0, 1)


@pytest.mark.parametrize("flag", ["timedout", "close", "error", "stash_len"])
def test_what_python_must_look_at_is_left_unread(reader: Reader, flag: str) -> None:
    reader.peer.sendall(PLAIN)
    target = reader.rev if flag == "timedout" else reader.c
    setattr(target, flag, 1)
    assert reader.read() == UNUSUAL
    setattr(target, flag, 0)
    assert reader.read() == len(PLAIN)  # nothing was taken


def test_eof_and_errors_close(reader: Reader) -> None:
    reader.peer.close()
    assert reader.read() == CLOSED
    reader.c.fd = -1
    assert reader.read() == CLOSED


def test_plain_send_counts_then_sends(reader: Reader) -> None:
    counter = ffi.new("int64_t *")
    reader.plain.ctx.requests = counter
    fd = reader.sock.fileno()
    assert lib.ngxffi_http_plain_send(reader.plain.ctx, fd, b"abc", 3, 2) == 3
    assert (counter[0], reader.peer.recv(10)) == (2, b"abc")
    assert lib.ngxffi_http_plain_send(reader.plain.ctx, -1, b"abc", 3, 1) == -1
    assert ffi.errno == errno.EBADF and counter[0] == 3


# --- on a server, Python answering (no C handler) -------------------------------------


@pytest.fixture
def loop() -> Iterator[Loop]:
    with Loop(HttpCoreConf(keepalive_requests=4), fast=False) as lp:
        yield lp


def test_keepalive_requests_and_the_last_answer(loop: Loop) -> None:
    s = loop.connect()
    heads = []
    for _ in range(4):
        s.sendall(PLAIN)
        heads.append(loop.response(s).split(b"\r\n\r\n")[0])
    assert [b"Connection: keep-alive" in h for h in heads] == [True] * 3 + [False]
    loop.turn_until(s)
    assert s.recv(10) == b""  # closed after the last


def test_a_request_is_answered_as_llhttp_reads_it(loop: Loop) -> None:
    seen: list[Request] = []
    answer = Response(200, b"hello")

    def handler(request: Request) -> Response:
        seen.append(request)
        return answer

    loop.server.handler = handler
    post = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    data = PLAIN + post + PLAIN  # plain, llhttp's, then plain again (llhttp's too)
    s = loop.connect()
    s.sendall(data)
    got = b""
    while got.count(b"hello") < 3:
        loop.turn_until(s)
        got += s.recv(65536)
    assert seen == llhttp(data)
    assert seen[1].method == "POST"
    s.close()


def test_an_idle_connection_is_the_most_recently_used(loop: Loop) -> None:
    a, b = loop.connect(), loop.connect()
    for s in (a, b):
        s.sendall(PLAIN)
        loop.response(s)

    def order() -> list[int]:
        return [c.index for c in loop.cycle.reusable_connections_queue]

    first = order()
    assert len(first) == 2
    a.sendall(PLAIN)  # a's request: a becomes the newest
    loop.response(a)
    assert order() == first[::-1]
    a.close()
    b.close()


def test_shutting_down_closes_after_the_next_answer(loop: Loop) -> None:
    s = loop.connect()
    s.sendall(PLAIN)
    loop.response(s)
    loop.server.shutting_down = True
    s.sendall(PLAIN)
    assert b"Connection: close" in loop.response(s)


def test_the_keepalive_timeout_counts_from_the_last_request() -> None:
    # The timer is armed when the connection first goes idle and not re-armed at
    # each request: when it runs out, what is left since the last one is waited.
    timeout = 0.3
    with Loop(HttpCoreConf(keepalive_timeout=int(timeout * 1000)), fast=False) as lp:
        s = lp.connect()
        start = last = time.monotonic()
        while last - start < 2 * timeout:  # past the first timer
            s.sendall(PLAIN)
            assert b"keep-alive" in lp.response(s)
            last = time.monotonic()
            time.sleep(timeout / 3)  # the client's pause between two requests
        lp.turn_until(s, timeout=10 * timeout)
        assert s.recv(10) == b""  # closed, but not before its time
        assert time.monotonic() - last >= timeout - 0.05


# --- the answers ----------------------------------------------------------------------


def answer(response: Response, close: bool = False) -> bytes:
    out: list[bytes | FileBody] = []
    queue_response(out, response, False, close, HttpCoreConf())
    assert len(out) == 1 and isinstance(out[0], bytes)
    return out[0]


def test_responses_of_one_shape_share_their_head() -> None:
    first, second = Response(200, b"hello"), Response(200, b"world")
    assert answer(first)[-5:] == b"hello" and answer(second)[-5:] == b"world"
    assert first.fixed_head is second.fixed_head  # kept, not built again
    listed = Response(200, b"x", headers=[("X-A", "1")])  # type: ignore[arg-type]
    assert b"\r\nX-A: 1\r\n" in answer(listed)  # not a key: built, not kept
    assert first.fixed_head == build_fixed_head(first, "ngxffi")


def test_the_date_follows_the_clock_set_back() -> None:
    CachedDate.refresh(time.time() + 3600)  # a line made an hour ahead
    before = int(time.time())
    data = answer(Response(200, b"x"), close=True)
    seconds = range(before, int(time.time()) + 1)  # a second may end meanwhile
    assert any(formatdate(t, usegmt=True).encode() in data for t in seconds)


def test_each_request_notes_when_it_began() -> None:
    """Also one behind a body on the same parser (reclaiming slow clients measures
    from there: a request at time 0 would look the slowest of all)."""
    r = HttpRequest(DEFAULT)
    answers = Answers()
    r.hc = answers
    r.parser.feed_data(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
    assert r.started == 42
    answers.clock = 99
    r.parser.feed_data(b"abcGET / HTTP/1.1\r\n")
    assert answers.discarded == 1 and len(answers.requests) == 1
    assert r.begun and r.started == 99
