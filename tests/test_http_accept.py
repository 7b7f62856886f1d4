"""The C accept handler (ngxffi.http.accept, src/ngx_http_accept.c): a new connection
whose first read is one plain request with ``Connection: close`` is accepted,
answered and closed in C, with the same bytes Python would send; anything else is
handed over to Python with what C read, and served as before."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from test_http_fast import PLAIN, Loop, undated
from test_serve import closed, read_response

from ngxffi.event.event import process_events_and_timers
from ngxffi.http.core import HttpCoreConf
from ngxffi.http.fast import READ_SIZE
from ngxffi.http.message import Response

CLOSE = b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def close_of(size: int) -> bytes:
    """CLOSE padded to size bytes by header lines of at most 6000 bytes (C and
    Python take lines up to 8000)."""
    pad = size - len(CLOSE)
    n = -(-pad // 6000)
    lines = b"".join(
        b"X-Pad: " + b"p" * (pad // n + (i < pad % n) - 9) + b"\r\n" for i in range(n)
    )
    return CLOSE[:26] + lines + CLOSE[26:]


@pytest.fixture
def loop() -> Iterator[Loop]:
    with Loop(HttpCoreConf(), c_accept=True) as lp:
        yield lp


def stats(loop: Loop) -> tuple[int, int, int]:
    s = loop.cycle.stats
    return s.accepted, s.handled, s.requests


def accept_one(loop: Loop) -> None:
    """One turn of the loop: the listening socket is readable once a client has
    connected, so the turn accepts it (and reads what it sent)."""
    process_events_and_timers(loop.cycle)
    assert loop.cycle.stats.accepted == 1


def answer_and_close(loop: Loop, s: socket.socket) -> bytes:
    """The whole answer, and the server's close after it."""
    loop.turn_until(s)
    head, body = read_response(s)
    loop.turn_until(s)
    assert closed(s)
    return undated(head + b"\r\n\r\n" + body)


def python_answer(request: bytes) -> bytes:
    with Loop(HttpCoreConf(), fast=False) as py:
        s = py.connect()
        s.sendall(request)
        return answer_and_close(py, s)


def test_a_close_request_is_answered_in_c_without_a_slot(loop: Loop) -> None:
    free = loop.cycle.free_connection_n
    expected = python_answer(CLOSE)
    for _ in range(5):
        s = loop.connect()
        s.sendall(CLOSE)  # there before the server accepts: C reads it at once
        assert answer_and_close(loop, s) == expected
        s.close()
    assert loop.server.fast.answered == 5
    assert loop.cycle.free_connection_n == free  # no slot was ever taken
    assert stats(loop) == (5, 5, 5)


def test_a_keepalive_first_request_is_handed_over(loop: Loop) -> None:
    s = loop.connect()
    s.sendall(PLAIN)
    assert loop.response(s).endswith(b"hello")  # Python's: from C's stash
    s.sendall(PLAIN)
    assert loop.response(s).endswith(b"hello")  # C's: the connection is idle
    assert loop.server.fast.answered == 1
    s.sendall(CLOSE)
    assert answer_and_close(loop, s) == python_answer(CLOSE)
    assert stats(loop) == (1, 1, 3)


@pytest.mark.parametrize("first", [b"", CLOSE[:30]], ids=["nothing", "half"])
def test_a_request_not_all_there_is_waited_for(loop: Loop, first: bytes) -> None:
    s = loop.connect()
    s.sendall(first)
    accept_one(loop)  # handed over with what there was
    s.sendall(CLOSE[len(first) :])
    assert answer_and_close(loop, s) == python_answer(CLOSE)
    assert loop.server.fast.answered == 0


@pytest.mark.parametrize(
    "request_",
    [
        CLOSE + PLAIN,  # pipelined behind a close: ignored, as nginx does
        close_of(READ_SIZE) + PLAIN,  # a full first read: there may be more
        b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\nab",
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",  # no Host: 400
    ],
    ids=["pipelined", "full-read", "http10", "post", "no-host"],
)
def test_what_c_does_not_answer_python_does(loop: Loop, request_: bytes) -> None:
    s = loop.connect()
    s.sendall(request_)
    assert answer_and_close(loop, s) == python_answer(request_)
    assert loop.server.fast.answered == 0


def test_an_answer_the_socket_does_not_take_is_finished_by_python() -> None:
    big = Response(200, b"x" * 100_000)
    with Loop(HttpCoreConf(), response=big, c_accept=True) as loop:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(5)
        s.connect(("127.0.0.1", loop.port))
        s.sendall(CLOSE)
        loop.turn_until(s)
        data = b""
        while True:
            loop.turn_until(s)
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"Connection: close" in head and body == big.body
        assert loop.server.fast.answered == 1  # answered in C, finished by Python
        assert stats(loop) == (1, 1, 1)
