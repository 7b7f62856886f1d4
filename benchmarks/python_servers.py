"""The Python servers the benchmarks compare with nginx and ngxffi (servers.py starts
them): each answers every request with the same small ``200 hello`` as the others.

* ``asyncio``, ``uvloop``, ``ngxffi-asyncio``: a raw :class:`asyncio.Protocol` on the
  default loop, on uvloop and on ngxffi's NgxSelector;
* ``selectors``: a plain non-blocking loop on :class:`selectors.DefaultSelector`.

Each runs as ``python -P python_servers.py KIND PORT [reuseport]`` (``-P``: this
directory's ``http.py`` must not shadow the standard library's). They count requests
by their blank line (the benchmarks send GETs only) and honour ``Connection: close``
by answering with it and closing, as HTTP/1.1 wants and as wrk needs to count the
response rather than a read error.
"""

from __future__ import annotations

import asyncio
import re
import selectors
import socket
import sys
from typing import cast

BACKLOG = 511  # nginx's default
BODY = b"hello"  # every server's answer, nginx's and ngxffi's too
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n" + BODY
)
CLOSING = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Connection: close\r\n\r\n" + BODY
)
CLOSE_HEADER = re.compile(rb"\r\nconnection:[ \t]*close\b", re.IGNORECASE)


def answer(buffer: bytes) -> tuple[bytes, bytes, bool]:
    """The responses to the complete requests in ``buffer``, the rest of it, and
    whether to close after them (a request among them said ``Connection: close``)."""
    end = buffer.rfind(b"\r\n\r\n") + 4
    if end < 4:
        return b"", buffer, False
    heads = buffer[:end]
    count = heads.count(b"\r\n\r\n")
    if CLOSE_HEADER.search(heads):
        return RESPONSE * (count - 1) + CLOSING, b"", True
    return RESPONSE * count, buffer[end:], False


class HttpProtocol(asyncio.Protocol):
    """The asyncio server: one write per batch of complete requests."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        out, self.buffer, close = answer(self.buffer + data)
        if out:
            self.transport.write(out)
        if close:
            self.transport.close()  # after the buffered response is sent


async def serve_protocol(port: int, reuse_port: bool) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(
        HttpProtocol, "127.0.0.1", port, backlog=BACKLOG, reuse_port=reuse_port
    )
    await asyncio.Event().wait()


class Peer:
    """A connection of the selectors server: unparsed input, unsent output."""

    __slots__ = ("closing", "inbox", "outbox", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = b""
        self.outbox = b""
        self.closing = False


def serve_selectors(port: int) -> None:
    """Accept, receive, answer, and close on EOF, on one level-triggered selector."""
    listener = socket.create_server(("127.0.0.1", port), backlog=BACKLOG)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                accept(selector, listener)
            elif key.events & selectors.EVENT_WRITE:
                flush(selector, key.data, waiting=True)
            else:
                receive(selector, key.data)


def accept(selector: selectors.BaseSelector, listener: socket.socket) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's
        selector.register(sock, selectors.EVENT_READ, Peer(sock))


def receive(selector: selectors.BaseSelector, peer: Peer) -> None:
    try:
        data = peer.sock.recv(65536)
    except BlockingIOError:
        return
    except ConnectionError:
        data = b""
    if not data:
        close(selector, peer)
        return
    peer.outbox, peer.inbox, peer.closing = answer(peer.inbox + data)
    if peer.outbox:
        flush(selector, peer, waiting=False)


def flush(selector: selectors.BaseSelector, peer: Peer, waiting: bool) -> None:
    """Send what is pending; when the socket is full, wait for it to be writable
    (and stop reading meanwhile)."""
    try:
        sent = peer.sock.send(peer.outbox)
    except BlockingIOError:
        sent = 0
    except ConnectionError:
        close(selector, peer)
        return
    peer.outbox = peer.outbox[sent:]
    if peer.outbox:
        selector.modify(peer.sock, selectors.EVENT_WRITE, peer)
    elif peer.closing:
        close(selector, peer)
    elif waiting:
        selector.modify(peer.sock, selectors.EVENT_READ, peer)


def close(selector: selectors.BaseSelector, peer: Peer) -> None:
    selector.unregister(peer.sock)
    peer.sock.close()


def serve(kind: str, port: int, reuse_port: bool) -> None:
    """Run the Python server ``kind`` on ``port`` until killed."""
    if kind == "selectors":
        serve_selectors(port)
    elif kind == "uvloop":
        import uvloop

        uvloop.run(serve_protocol(port, reuse_port))
    elif kind == "ngxffi-asyncio":
        from ngxffi.selector import run

        run(serve_protocol(port, reuse_port))
    elif kind == "asyncio":
        asyncio.run(serve_protocol(port, reuse_port))
    else:
        raise SystemExit(f"unknown server {kind!r}")


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), reuse_port=sys.argv[3:] == ["reuseport"])
