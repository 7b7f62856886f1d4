"""HTTP/1.1 connections and requests on the event core (≈ src/http/ngx_http_request.c).

The life of a connection follows nginx's: accepted, its read event registered
edge-triggered with ``client_header_timeout``; requests read and parsed (llhttp,
through httptools) until EAGAIN, each answered in order — pipelined ones too — by the
server's handler; then either closed (``Connection: close``, HTTP/1.0 without
keep-alive, an error, ``keepalive_requests`` reached, shutting down) or kept alive:
reusable (drain may close it), idle, under ``keepalive_timeout``. A response the socket
does not take at once waits for the write event under ``send_timeout``; reading
resumes once it is sent, so responses never overtake each other.

Limits and statuses are nginx's: a request line longer than a large header buffer
(8k) is 414; a header line longer than that, or headers beyond 4 x 8k, 400 "Request
Header Or Cookie Too Large"; a body over ``client_max_body_size`` 413; anything llhttp
refuses, a duplicate Host or an HTTP/1.1 request without one, 400. Every error
response closes the connection.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING, TextIO

import httptools

from ngxffi import os as nos
from ngxffi._ngx import ffi, lib
from ngxffi.core.log import ALERT, INFO, log_error
from ngxffi.event.event import Event, handle_read_event, handle_write_event

if TYPE_CHECKING:
    from ngxffi.core.connection import Connection
    from ngxffi.core.cycle import Cycle

REASONS = {
    200: "OK",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Not Allowed",
    408: "Request Time-out",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    500: "Internal Server Error",
    503: "Service Temporarily Unavailable",
}
HEADER_TOO_LARGE = "Request Header Or Cookie Too Large"
READ_SIZE = 16384


@dataclass
class HttpConfig:
    """The directives of the http core this server uses, with nginx's defaults."""

    client_header_timeout: int = 60_000  # ms
    keepalive_timeout: int = 75_000
    keepalive_requests: int = 1000
    send_timeout: int = 60_000
    large_client_header_buffer: int = 8192  # large_client_header_buffers 4 8k
    large_client_header_buffers: int = 4
    client_max_body_size: int = 1 << 20
    server_tokens: str = "ngxffi"


@dataclass
class Request:
    """What a handler sees of one request."""

    method: str
    uri: str
    version: str
    headers: dict[str, str]
    keep_alive: bool


@dataclass
class Response:
    """A handler's answer: a body in memory, or ``file`` (an open fd, sent with
    sendfile and then closed) of ``length`` bytes."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()
    file: int = -1
    length: int = -1
    fixed_head: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def content_length(self) -> int:
        return self.length if self.file >= 0 else len(self.body)


class FileBody:
    """A file still to send: sendfile from ``offset``, ``left`` bytes to go."""

    __slots__ = ("fd", "left", "offset")

    def __init__(self, fd: int, length: int) -> None:
        self.fd, self.offset, self.left = fd, 0, length


Handler = Callable[[Request], Response]


class _Date:
    """The Date header, formatted once a second (nginx caches ngx_cached_http_time)."""

    second = -1
    line = b""

    @classmethod
    def header(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            date = formatdate(second, usegmt=True)
            cls.second, cls.line = second, f"Date: {date}\r\n".encode()
        return cls.line


KEEP_ALIVE = b"Connection: keep-alive\r\n\r\n"
CLOSE = b"Connection: close\r\n\r\n"


def _fixed_head(response: Response, server_tokens: str) -> bytes:
    """The response head but for Date and Connection, which change."""
    lines = [
        f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}",
        f"Server: {server_tokens}",
    ]
    if response.status != 304:
        lines += [
            f"Content-Type: {response.content_type}",
            f"Content-Length: {response.content_length}",
        ]
    lines += [f"{name}: {value}" for name, value in response.headers]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


class HttpServer:
    """The server side of ``ngxffi serve``: config, handler and counters."""

    def __init__(
        self,
        cycle: Cycle,
        handler: Handler,
        config: HttpConfig | None = None,
        access_log: TextIO | None = None,
    ) -> None:
        self.cycle = cycle
        self.handler = handler
        self.config = config or HttpConfig()
        self.access_log = access_log
        self.shutting_down = False
        self.read_buffer = ffi.new("char[]", READ_SIZE)  # one for all: one thread

    def log_access(self, c: Connection, request: Request, response: Response) -> None:
        """One line in nginx's ``combined`` format."""
        assert self.access_log is not None
        head = request.method == "HEAD" or response.status == 304
        sent = 0 if head else response.content_length
        when = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        h = request.headers
        self.access_log.write(
            f'{c.addr_text} - - [{when}] "{request.method} {request.uri} '
            f'HTTP/{request.version}" {response.status} {sent} '
            f'"{h.get("referer", "-")}" "{h.get("user-agent", "-")}"\n'
        )

    def init_connection(self, c: Connection) -> None:
        """The listening socket's handler. Imitates ngx_http_init_connection: read
        event edge-triggered, client_header_timeout armed, reading counted."""
        c.data = HttpConnection(self, c)
        c.read.handler = _on_read
        c.write.handler = _on_write
        self.cycle.stats.add("reading", 1)
        self.cycle.timers.add_timer(c.read, self.config.client_header_timeout)
        handle_read_event(c.read)
        if c.read.raw.ready:  # deferred accept: data is already there
            _on_read(c.read)


class HttpConnection:
    """Per-connection state: the parser, the request being read, pending output."""

    def __init__(self, server: HttpServer, c: Connection) -> None:
        self.server = server
        self.c = c
        self.parser = httptools.HttpRequestParser(self)
        self.out: deque[bytearray | FileBody] = deque()  # responses, in order
        self.state = "reading"  # reading | writing | waiting (stub_status)
        self.close_after = False
        self.closed = False
        self._new_request()

    # --- the parser's callbacks (httptools calls them during feed_data) -------------

    def _new_request(self) -> None:
        self.url = bytearray()
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body_bytes = 0
        self.error: tuple[int, str] | None = None
        self.request: Request | None = None
        self.unparsed = 0  # bytes fed since the request began, until its header ends

    def _reject(self, status: int, title: str) -> _Rejected:
        self.error = (status, title)
        return _Rejected(status, title)

    def on_message_begin(self) -> None:
        self._new_request()
        if self.state == "waiting":
            self._set_state("reading")

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.server.config.large_client_header_buffer:
            raise self._reject(414, REASONS[414])

    def on_header(self, name: bytes, value: bytes) -> None:
        config = self.server.config
        size = len(name) + len(value) + 4
        self.header_bytes += size
        if size > config.large_client_header_buffer or self.header_bytes > (
            config.large_client_header_buffer * config.large_client_header_buffers
        ):
            raise self._reject(400, HEADER_TOO_LARGE)
        key = name.decode("latin-1").lower()
        if key == "host" and key in self.headers:
            raise self._reject(400, REASONS[400])  # client sent duplicate host header
        self.headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        parser = self.parser
        version = parser.get_http_version()
        if version == "1.1" and "host" not in self.headers:
            raise self._reject(400, REASONS[400])  # HTTP/1.1 request without "Host"
        length = self.headers.get("content-length")
        if length is not None and int(length) > self.server.config.client_max_body_size:
            raise self._reject(413, REASONS[413])
        self.request = Request(
            method=parser.get_method().decode("latin-1"),
            uri=self.url.decode("latin-1"),
            version=version,
            headers=self.headers,
            keep_alive=parser.should_keep_alive(),
        )

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)  # discarded, as nginx does for handlers that
        if self.body_bytes > self.server.config.client_max_body_size:  # ignore it
            raise self._reject(413, REASONS[413])

    def on_message_complete(self) -> None:
        request = self.request
        assert request is not None
        self.unparsed = 0
        self.c.raw.requests += 1
        self.server.cycle.stats.add("requests", 1)
        self._set_state("writing")
        response = self.server.handler(request)
        last = (
            not request.keep_alive
            or self.server.shutting_down
            or self.c.raw.requests >= self.server.config.keepalive_requests
        )
        self._respond(response, request.method == "HEAD", close=last)
        if self.server.access_log is not None:
            self.server.log_access(self.c, request, response)
        self.request = None  # what comes next is a new header, bounded in _feed

    # --- responses ------------------------------------------------------------------

    def _respond(self, response: Response, head: bool, close: bool) -> None:
        fixed = response.fixed_head
        if fixed is None:  # built once per Response: `return` answers reuse one
            fixed = response.fixed_head = _fixed_head(
                response, self.server.config.server_tokens
            )
        self._queue(fixed + _Date.header() + (CLOSE if close else KEEP_ALIVE))
        if response.file >= 0:
            if head or response.status == 304:
                nos.close(response.file)
            else:
                self.out.append(FileBody(response.file, response.length))
        elif not head and response.status != 304:
            self._queue(response.body)
        if close:
            self.close_after = True

    def _queue(self, data: bytes) -> None:
        if self.out and isinstance(self.out[-1], bytearray):
            self.out[-1] += data
        else:
            self.out.append(bytearray(data))

    def error_response(self, status: int, title: str) -> None:
        """nginx's error page, then close (ngx_http_special_response_handler)."""
        body = (
            f"<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {title}</h1></center>\r\n"
            f"<hr><center>{self.server.config.server_tokens}</center>\r\n"
            "</body>\r\n</html>\r\n"
        ).encode()
        self._set_state("writing")
        self._respond(Response(status, body, "text/html"), head=False, close=True)

    def _set_state(self, state: str) -> None:
        """Move this connection between stub_status's reading/writing/waiting."""
        if state != self.state:
            self.server.cycle.stats.move(self.state, state)
            self.state = state

    # --- the event handlers' work -----------------------------------------------------

    def read(self) -> None:
        """Read until EAGAIN, feeding the parser and sending what it answered; reading
        pauses while a response waits for the socket, so responses stay in order."""
        c = self.c
        if c.read.raw.timedout:
            c.read.raw.timedout = 0
            if self.state == "writing":
                # A header or keep-alive timer that ran out while a response is
                # being sent: send_timeout governs that. (nginx deletes the read
                # timer when a header is complete; not deleting it saves two heap
                # operations per request, and _keepalive re-arms it lazily.)
                return
            log_error(INFO, "client timed out")
            self.close()
            return
        if c.raw.close:  # drained by drain_connections, or shutting down
            self.close()
            return
        buf = self.server.read_buffer
        while True:
            while not self.out:
                # the raw call: EAGAIN ends every read, and an exception per request
                # would cost more than the rest of the read
                n = lib.recv(c.raw.fd, buf, READ_SIZE, 0)
                if n <= 0:
                    if n < 0 and ffi.errno == lib.EAGAIN:
                        c.read.raw.ready = 0
                        break
                    self.close()  # EOF, or an error such as ECONNRESET
                    return
                if self.state == "waiting":
                    self._wake()
                self._feed(ffi.buffer(buf, n)[:])
            if self.request is None and self.unparsed and not c.read.raw.timer_set:
                # a header begun with no timer running (one ran out while writing)
                self.server.cycle.timers.add_timer(
                    c.read, self.server.config.client_header_timeout
                )
            if not self.flush() or not c.read.raw.ready:
                return

    def _wake(self) -> None:
        """Data on an idle keep-alive connection: a request is starting. Its timer
        stays the keep-alive one, as in nginx (client_header_timeout is armed only
        for a header that has no timer at all)."""
        self.server.cycle.reusable_connection(self.c, False)
        self.c.raw.idle = 0

    def _feed(self, data: bytes) -> None:
        if self.request is None:
            # llhttp buffers a header line until it ends: bound what it may hold
            config = self.server.config
            self.unparsed += len(data)
            if self.unparsed > config.large_client_header_buffer * (
                config.large_client_header_buffers + 1
            ):
                self.error_response(400, HEADER_TOO_LARGE)
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade or CONNECT: the request was answered, but what follows is not
            # HTTP any more and this server does not tunnel: close after the answer.
            self.close_after = True
        except (httptools.HttpParserError, ValueError):
            # After a last request, what follows is ignored: nginx stops reading a
            # connection it is going to close.
            if not self.close_after:
                # a callback's rejection arrives wrapped in HttpParserCallbackError
                self.error_response(*(self.error or (400, REASONS[400])))

    def flush(self) -> bool:
        """Send pending output; then close, or keep alive. True when all is sent and
        the connection stays open; False when it waits for the write event or closed."""
        c = self.c
        cycle = self.server.cycle
        while self.out:
            try:
                done = self._send(self.out[0])
            except BlockingIOError:
                c.write.raw.ready = 0
                cycle.timers.add_timer(c.write, self.server.config.send_timeout)
                handle_write_event(c.write)
                return False
            except OSError:
                self.close()
                return False
            if done:
                self.out.popleft()
        if c.write.raw.timer_set:
            cycle.timers.del_timer(c.write)
        if self.close_after:
            self.close()
            return False
        if self.state == "writing":
            self._keepalive()
        return True

    def _send(self, segment: bytearray | FileBody) -> bool:
        """Send some of a segment; True when it is all sent."""
        fd = self.c.raw.fd
        if isinstance(segment, bytearray):
            sent = lib.send(
                fd, ffi.from_buffer(segment), len(segment), lib.MSG_NOSIGNAL
            )
            if sent < 0:
                raise nos.error("send")  # BlockingIOError for EAGAIN
            del segment[:sent]
            return not segment
        sent = nos.sendfile(fd, segment.fd, segment.offset, segment.left)
        if sent == 0:  # the file shrank under us: the length sent was a lie
            raise OSError(lib.EIO, "sendfile: file truncated")
        segment.offset += sent
        segment.left -= sent
        if segment.left:
            return False
        nos.close(segment.fd)
        return True

    def _keepalive(self) -> None:
        """Imitates ngx_http_set_keepalive: idle, reusable, keepalive_timeout, and
        TCP_NODELAY once (nginx's tcp_nodelay on), so that the next small response
        is not held back by Nagle's algorithm waiting for an ACK."""
        c = self.c
        cycle = self.server.cycle
        self._set_state("waiting")
        if not c.raw.tcp_nodelay and c.listening.family != lib.AF_UNIX:
            c.raw.tcp_nodelay = 1  # NGX_TCP_NODELAY_SET
            with contextlib.suppress(OSError):  # e.g. the peer is gone already
                nos.setsockopt(c.raw.fd, lib.IPPROTO_TCP, lib.TCP_NODELAY, 1)
        c.raw.idle = 1
        cycle.reusable_connection(c, True)
        cycle.timers.add_timer(c.read, self.server.config.keepalive_timeout)

    def write_ready(self) -> None:
        """The write event: send the rest, then read what waited behind it."""
        if self.flush() and self.c.read.raw.ready:
            self.read()

    def close(self) -> None:
        """Imitates ngx_http_close_connection."""
        if self.closed:
            return
        self.closed = True
        for segment in self.out:
            if isinstance(segment, FileBody):
                nos.close(segment.fd)
        self.out.clear()
        self.server.cycle.stats.add(self.state, -1)
        self.server.cycle.close_connection(self.c)


class _Rejected(Exception):
    """Raised by a parser callback to stop parsing; the status is in ``error``."""


def _on_read(ev: Event) -> None:
    _guarded(ev.data.data, ev.data.data.read)


def _on_write(ev: Event) -> None:
    h: HttpConnection = ev.data.data
    if ev.raw.timedout:
        log_error(INFO, "client timed out")
        h.close()
        return
    _guarded(h, h.write_ready)


def _guarded(h: HttpConnection, work: Callable[[], object]) -> None:
    """A bug in request handling closes that connection, not the server."""
    try:
        work()
    except Exception as e:
        log_error(ALERT, f"request handling failed: {e!r}")
        h.close()
