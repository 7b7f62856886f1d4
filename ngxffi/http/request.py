"""HTTP/1.1 connections and requests on the event core (≈ src/http/ngx_http_request.c).

The life of a connection follows nginx's: accepted, its read event registered
edge-triggered with ``client_header_timeout``; requests read (until the socket is
empty, which a short read tells when EPOLLRDHUP is in use, as in ngx_unix_recv) and
parsed (llhttp, through httptools), each answered in order — pipelined ones too — by
the server's handler, the answers of one read sent in one write; then either closed
(``Connection: close``, HTTP/1.0 without keep-alive, an error, ``keepalive_requests``
reached, shutting down) or kept alive: reusable (drain may close it), idle, under
``keepalive_timeout``. A response the socket does not take at once waits for the write
event under ``send_timeout``; reading resumes once it is sent, so responses never
overtake each other.

When the handler answers everything with one fixed response (``return``), an idle
connection's read event also carries the C handler ``ngxffi_http_fast_read``
(build_ffi.py), which answers plain GETs inside the epoll batch and stashes anything
else on the connection for this module (``_take_stash``).

Limits and statuses are nginx's: a request line longer than a large header buffer
(8k) is 414; a header line longer than that, or headers beyond 4 x 8k, 400 "Request
Header Or Cookie Too Large"; a body over ``client_max_body_size`` 413; anything llhttp
refuses, a duplicate Host or an HTTP/1.1 request without one, 400. Every error
response closes the connection.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, TextIO

import httptools

from ngxffi import os as nos
from ngxffi._ngx import ffi, lib
from ngxffi.core.log import ALERT, INFO, log_error
from ngxffi.core.times import msec_diff
from ngxffi.event.event import (
    USE_GREEDY_EVENT,
    Event,
    handle_read_event,
    handle_write_event,
)

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
FAST_OUTPUT = 1 << 17  # the C handler's answers to one read; more go to Python
FAST_HANDLER = ffi.cast(
    "ngxffi_c_handler_pt", ffi.addressof(lib, "ngxffi_http_fast_read")
)
FREE_REQUESTS_MAX = 64  # parsers kept between requests: only reads in progress use one
METHODS = {m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE")}


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


@dataclass(slots=True)
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
    # built on first use: the head but for Date and Connection; the whole keep-alive
    # answer for the second of ``cached_date``
    fixed_head: bytes | None = field(default=None, repr=False, compare=False)
    cached_date: bytes | None = field(default=None, repr=False, compare=False)
    cached: bytes = field(default=b"", repr=False, compare=False)

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
    """The server side of ``ngxffi serve``: config, handler and counters.

    ``short_read_drains`` is nginx's rule (ngx_unix_recv) for when a read shorter than
    asked for means the socket is empty, so that no second recv is needed to see
    EAGAIN: always with level-triggered methods, and with epoll when the kernel reports
    EPOLLRDHUP (a FIN arriving later is an edge of its own). Without EPOLLRDHUP an
    edge-triggered read goes on until EAGAIN.
    """

    def __init__(
        self,
        cycle: Cycle,
        handler: Handler,
        config: HttpConfig | None = None,
        access_log: TextIO | None = None,
        fixed: Response | None = None,
        fixed_except: str = "",
    ) -> None:
        self.cycle = cycle
        self.handler = handler
        self.config = config or HttpConfig()
        self.access_log = access_log
        # the C handler's configuration (a cdata), or None
        self.fast: Any = self._fast(fixed, fixed_except) if access_log is None else None
        self._shutting_down = False
        self.short_read_drains = not cycle.event_flags & USE_GREEDY_EVENT or bool(
            getattr(cycle.module, "use_epoll_rdhup", False)
        )
        self.header_limit = self.config.large_client_header_buffer * (
            self.config.large_client_header_buffers + 1
        )
        # Parsers at a message boundary, ready for the next request on any
        # connection: an idle keep-alive connection holds none (nginx frees its
        # request and buffers in ngx_http_set_keepalive).
        self.free_requests: list[HttpRequest] = []
        # What one read's requests answered, sent in one write (one thread: shared).
        self.pending: list[bytes | FileBody] = []
        self.current: HttpConnection | None = None  # whose request is being answered
        # One per pool slot, made now, as the pool itself is: a connection, idle or
        # not, allocates nothing of its own but its timer.
        self.slots = [HttpConnection(self, c) for c in cycle.connections]
        self.count_requests = cycle.stats.adder("requests")
        self.uncounted = 0  # requests answered since the counter was last updated

    def _fast(self, fixed: Response | None, fixed_except: str) -> Any:
        """The C read handler's configuration when ``handler`` answers every request
        but ``fixed_except`` with ``fixed`` (nginx's ``return``), else None."""
        if fixed is None or fixed.file >= 0 or fixed.status in (204, 304):
            return None
        f = ffi.new("ngxffi_http_fast_t *")
        head = _fixed_head(fixed, self.config.server_tokens)
        skip = fixed_except.encode("latin-1")
        buf = ffi.new("char[]", READ_SIZE)
        out = ffi.new("char[]", FAST_OUTPUT)
        f.head, f.head_len = ffi.from_buffer(head), len(head)
        f.body, f.body_len = ffi.from_buffer(fixed.body), len(fixed.body)
        f.skip_path, f.skip_path_len = ffi.from_buffer(skip), len(skip)
        f.keepalive_requests = self.config.keepalive_requests
        f.requests = self.cycle.stats.field("requests")
        f.buf, f.size, f.out, f.out_size = buf, READ_SIZE, out, FAST_OUTPUT
        f.enabled = 1
        self._fast_keep = (head, fixed.body, skip, buf, out)  # what f points into
        return f

    @property
    def shutting_down(self) -> bool:
        """Set by a graceful shutdown: every answer closes its connection (so the
        C handler stands aside)."""
        return self._shutting_down

    @shutting_down.setter
    def shutting_down(self, value: bool) -> None:
        self._shutting_down = value
        if self.fast is not None:
            self.fast.enabled = int(not value)

    def commit_stats(self) -> None:
        """Make the shared counters exact now, the current request included
        (connections update them once per handler call; stub_status calls this)."""
        current = self.current
        if current is not None and not current.closed:
            current.commit()
        else:
            self.count_answered()

    def count_answered(self) -> None:
        """Add the requests answered since the last call to the shared counter."""
        if self.uncounted:
            self.count_requests(self.uncounted)
            self.uncounted = 0

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
        c.data = self.slots[c.index].start()
        c.read.handler = _on_read
        c.write.handler = _on_write
        self.cycle.stats.add("reading", 1)
        self.cycle.timers.add_timer(c.read, self.config.client_header_timeout)
        handle_read_event(c.read)
        if c.read.raw.ready:  # deferred accept: data is already there
            _on_read(c.read)


class HttpRequest:
    """The parse of one connection's current request: the llhttp parser and what it
    has seen so far (≈ ngx_http_request_t). Held only while a request is being read;
    an idle keep-alive connection gives it back to the server, as nginx frees its
    request when a connection goes idle. httptools calls the ``on_*`` methods during
    ``feed_data``."""

    __slots__ = (
        "begun",
        "body_bytes",
        "error",
        "h",
        "header_bytes",
        "headers",
        "parser",
        "request",
        "server",
        "unparsed",
        "url",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.h: HttpConnection | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.error: tuple[int, str] | None = None
        self._reset()

    def _reset(self) -> None:
        self.begun = False
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body_bytes = 0
        self.request: Request | None = None
        self.unparsed = 0  # bytes fed since the request began, until its header ends

    def reject(self, status: int, title: str) -> _Rejected:
        self.error = (status, title)
        return _Rejected(status, title)

    def on_message_begin(self) -> None:
        if self.h is not None and self.h.close_after:
            raise _Stop  # after a last request nothing more is read (nginx's lingering)
        self.begun = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.server.config.large_client_header_buffer:
            raise self.reject(414, REASONS[414])

    def on_header(self, name: bytes, value: bytes) -> None:
        config = self.server.config
        size = len(name) + len(value) + 4
        self.header_bytes += size
        if size > config.large_client_header_buffer or self.header_bytes > (
            config.large_client_header_buffer * config.large_client_header_buffers
        ):
            raise self.reject(400, HEADER_TOO_LARGE)
        key = name.decode("latin-1").lower()
        if key == "host" and key in self.headers:
            raise self.reject(400, REASONS[400])  # client sent duplicate host header
        self.headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        parser = self.parser
        version = parser.get_http_version()
        if version == "1.1" and "host" not in self.headers:
            raise self.reject(400, REASONS[400])  # HTTP/1.1 request without "Host"
        length = self.headers.get("content-length")
        if length is not None and int(length) > self.server.config.client_max_body_size:
            raise self.reject(413, REASONS[413])
        method = parser.get_method()
        self.request = Request(
            METHODS.get(method) or method.decode("latin-1"),
            self.url.decode("latin-1"),
            version,
            self.headers,
            parser.should_keep_alive(),
        )

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)  # discarded, as nginx does for handlers that
        if self.body_bytes > self.server.config.client_max_body_size:  # ignore it
            raise self.reject(413, REASONS[413])

    def on_message_complete(self) -> None:
        request, h = self.request, self.h
        assert request is not None and h is not None
        self._reset()
        h.answer(request)


class HttpConnection:
    """Per-connection state (≈ ngx_http_connection_t): kept small, because idle
    keep-alive connections are the many. The parser is borrowed per request.

    ``state`` is where stub_status counts the connection (reading, writing, waiting);
    the shared counters follow it once per handler call (``counted``), not at every
    step of a request: nothing else runs in between to see the difference.
    """

    __slots__ = (
        "c",
        "close_after",
        "closed",
        "counted",
        "nodelay",
        "out",
        "r",
        "server",
        "state",
    )

    def __init__(self, server: HttpServer, c: Connection) -> None:
        self.server = server
        self.c = c
        self.start()

    def start(self) -> HttpConnection:
        """A new connection in this slot: reset, reading its first request."""
        self.r: HttpRequest | None = None
        self.out: deque[bytearray | FileBody] | None = None  # waiting for the socket
        self.state = self.counted = "reading"  # reading | writing | waiting
        self.close_after = False
        self.closed = False
        self.nodelay = False
        return self

    # --- requests and responses -----------------------------------------------------

    def answer(self, request: Request) -> None:
        """A complete request: run the handler, queue its response in order."""
        server = self.server
        server.current = self
        server.uncounted += 1
        raw = self.c.raw
        raw.requests += 1
        self.state = "writing"
        response = server.handler(request)
        last = (
            not request.keep_alive
            or server.shutting_down
            or raw.requests >= server.config.keepalive_requests
        )
        self._respond(response, request.method == "HEAD", last)
        if server.access_log is not None:
            server.log_access(self.c, request, response)

    def _respond(self, response: Response, head: bool, close: bool) -> None:
        pending = self.server.pending
        if close:
            self.close_after = True
        date = _Date.header()
        if response.cached_date is date and not close and not head:
            pending.append(response.cached)  # the common case, built once a second
            return
        fixed = response.fixed_head
        if fixed is None:  # built once per Response: `return` answers reuse one
            fixed = response.fixed_head = _fixed_head(
                response, self.server.config.server_tokens
            )
        data = fixed + date + (CLOSE if close else KEEP_ALIVE)
        if response.file >= 0:
            pending.append(data)
            if head or response.status == 304:
                nos.close(response.file)
            else:
                pending.append(FileBody(response.file, response.length))
            return
        if not head and response.status != 304:
            data += response.body
            if not close:
                response.cached_date, response.cached = date, data
        pending.append(data)

    def error_response(self, status: int, title: str) -> None:
        """nginx's error page, then close (ngx_http_special_response_handler)."""
        body = (
            f"<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {title}</h1></center>\r\n"
            f"<hr><center>{self.server.config.server_tokens}</center>\r\n"
            "</body>\r\n</html>\r\n"
        ).encode()
        self.state = "writing"
        self._respond(Response(status, body, "text/html"), head=False, close=True)

    # --- the event handlers' work -----------------------------------------------------

    def read(self) -> None:
        """Read, parse, answer, write: each read's responses go out in one write.
        Reading pauses while a response waits for the socket (responses stay in
        order) and stops after a last request."""
        c = self.c
        rev = c.read.raw
        if rev.timedout:
            rev.timedout = 0
            if self.out is not None:
                # A header or keep-alive timer that ran out while a response is
                # being sent: send_timeout governs that. (nginx deletes the read
                # timer when a header is complete; not deleting it saves two heap
                # operations per request, and _settle re-arms it lazily.)
                return
            if self.state == "waiting" and self._answered_in_c():
                return
            log_error(INFO, "client timed out")
            self.close()
            return
        if c.raw.close:  # drained by drain_connections, or shutting down
            self.close()
            return
        server = self.server
        fd = c.raw.fd
        data = self._take_stash() if c.raw.stash_len else None
        while self.out is None and not self.close_after:
            if data is not None:  # what the C handler read
                drained = not rev.ready
            else:
                try:
                    data = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    rev.ready = 0
                    break
                except OSError:  # such as ECONNRESET
                    self.close()
                    return
                if not data:
                    self.close()
                    return
                drained = (
                    len(data) < READ_SIZE
                    and server.short_read_drains
                    and not rev.pending_eof
                )
                if drained:
                    rev.ready = 0
            self._feed(data)
            data = None
            if server.pending and not self._send_pending():
                return
            if drained:
                break
        if self.close_after and self.out is None:
            self.close()
            return
        self._settle()

    def _answered_in_c(self) -> bool:
        """The keep-alive timer ran out, but the C handler answered requests since
        it was set: the timeout counts from then, so wait the rest of it."""
        cycle = self.server.cycle
        rest = msec_diff(
            self.c.raw.c_msec + self.server.config.keepalive_timeout,
            cycle.current_msec,
        )
        if rest <= 0 or not self.c.raw.c_msec:
            return False
        cycle.timers.add_timer(self.c.read, rest)
        return True

    def _take_stash(self) -> bytes | None:
        """What the C handler left: input to parse (returned), or answers it could
        not send at once (queued here, behind the write event)."""
        raw = self.c.raw
        data: bytes = ffi.buffer(raw.stash, raw.stash_len)[:]
        output = raw.stash_out
        lib.ngxffi_stash_free(raw)
        if not output:
            return data
        self.out = deque([bytearray(data)])
        self._wait_write()
        return None

    def _feed(self, data: bytes) -> None:
        """Parse ``data``; the requests it completes are answered into
        server.pending. The parser comes from the server's free ones."""
        r = self.r
        server = self.server
        if r is None:
            free = server.free_requests
            r = self.r = free.pop() if free else HttpRequest(server)
            r.h = self
            if self.state == "waiting":
                self.state = "reading"
        try:
            if r.request is None:
                # llhttp buffers a header line until it ends: bound what it may hold
                r.unparsed += len(data)
                if r.unparsed > server.header_limit:
                    raise r.reject(400, HEADER_TOO_LARGE)
            r.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade or CONNECT: the request was answered, but what follows is not
            # HTTP any more and this server does not tunnel: close after the answer.
            self.close_after = True
        except (httptools.HttpParserError, ValueError, _Rejected, _Stop):
            # After a last request, what follows is ignored: nginx stops reading a
            # connection it is going to close.
            if not self.close_after:
                # a callback's rejection arrives wrapped in HttpParserCallbackError
                self.error_response(*(r.error or (400, REASONS[400])))

    def _send_pending(self) -> bool:
        """Write what this read answered; False when the connection closed or waits
        for the write event. The requests are counted first: once a client has its
        answer, stub_status (in any worker) counts its request, as in nginx."""
        server = self.server
        server.count_answered()
        pending = server.pending
        data = pending[0]
        if len(pending) == 1 and isinstance(data, bytes):
            pending.clear()
            try:
                sent = os.write(self.c.raw.fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close()
                return False
            if sent == len(data):
                return True
            self.out = deque([bytearray(memoryview(data)[sent:])])
            return self._wait_write()
        self.out = _coalesce(pending)
        pending.clear()
        return self.flush()

    def flush(self) -> bool:
        """Send the queued output; True when all is sent and reading may go on."""
        out = self.out
        assert out is not None
        while out:
            try:
                done = self._send(out[0])
            except BlockingIOError:
                return self._wait_write()
            except OSError:
                self.close()
                return False
            if done:
                out.popleft()
        self.out = None
        c = self.c
        if c.write.raw.timer_set:
            self.server.cycle.timers.del_timer(c.write)
        return True

    def _wait_write(self) -> bool:
        c = self.c
        c.write.raw.ready = 0
        self.server.cycle.timers.add_timer(c.write, self.server.config.send_timeout)
        handle_write_event(c.write)
        self._settle()
        return False

    def _send(self, segment: bytearray | FileBody) -> bool:
        """Send some of a segment; True when it is all sent."""
        fd = self.c.raw.fd
        if isinstance(segment, bytearray):
            sent = os.write(fd, segment)
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

    def commit(self) -> None:
        """Bring the shared counters up to date: the requests answered (by any
        connection) since the last commit, and this connection's state."""
        server = self.server
        server.count_answered()
        if self.state != self.counted:
            self.server.cycle.stats.move(self.counted, self.state)
            self.counted = self.state

    def _settle(self) -> None:
        """The end of a handler call: keep-alive or not, timers, shared counters."""
        c = self.c
        server = self.server
        r = self.r
        if self.out is not None:
            self.state = "writing"
        elif r is not None and r.begun:
            self.state = "reading"
            if not r.request and not c.read.raw.timer_set:
                # a header begun with no timer running (one ran out while writing)
                server.cycle.timers.add_timer(
                    c.read, server.config.client_header_timeout
                )
        elif self.state == "writing":  # answered, all sent, nothing begun
            self._keepalive(r)
        if self.state != "waiting":
            if self.counted == "waiting":
                server.cycle.reusable_connection(c, False)  # busy: not drainable
                c.raw.idle = 0
            if server.fast is not None:  # a request or an answer under way: the
                c.read.raw.c_handler = ffi.NULL  # C handler must not cut in
        self.commit()

    def _keepalive(self, r: HttpRequest | None) -> None:
        """Imitates ngx_http_set_keepalive: the parser goes back to the server; the
        connection is idle, reusable (the most recently used, last to be drained),
        under keepalive_timeout; TCP_NODELAY is set once (nginx's tcp_nodelay on), so
        that the next small response is not held back by Nagle's algorithm."""
        c = self.c
        cycle = self.server.cycle
        if r is not None:  # back to the server, for any connection's next request
            self.r = None
            r.h = None
            if len(self.server.free_requests) < FREE_REQUESTS_MAX:
                self.server.free_requests.append(r)
        self.state = "waiting"
        if not self.nodelay:
            self.nodelay = True
            if c.listening.family != lib.AF_UNIX:
                c.raw.tcp_nodelay = 1  # NGX_TCP_NODELAY_SET
                with contextlib.suppress(OSError):  # e.g. the peer is gone already
                    nos.setsockopt(c.raw.fd, lib.IPPROTO_TCP, lib.TCP_NODELAY, 1)
        if self.counted != "waiting":
            c.raw.idle = 1
        lib.ngxffi_reusable_connection(cycle.raw, c.raw, 1)  # the most recently used
        server = self.server
        if server.fast is not None:  # plain requests: the C handler answers them
            rev = c.read.raw
            rev.c_handler = FAST_HANDLER
            rev.c_ctx = server.fast
        cycle.timers.add_timer(c.read, self.server.config.keepalive_timeout)

    def write_ready(self) -> None:
        """The write event: send the rest, then read what waited behind it."""
        if self.out is not None and self.flush():
            if self.close_after:
                self.close()
            elif self.c.read.raw.ready:
                self.read()
            else:
                self._settle()

    def close(self) -> None:
        """Imitates ngx_http_close_connection."""
        if self.closed:
            return
        self.closed = True
        for segment in self.out or ():
            if isinstance(segment, FileBody):
                nos.close(segment.fd)
        self.out = None
        self.server.pending.clear()
        self.r = None  # mid-message or failed: not reusable
        self.commit()
        self.server.cycle.stats.add(self.counted, -1)
        self.server.cycle.close_connection(self.c)


def _coalesce(items: list[bytes | FileBody]) -> deque[bytearray | FileBody]:
    """Queue ``items`` with neighbouring bytes joined: one send for each run."""
    out: deque[bytearray | FileBody] = deque()
    for item in items:
        if isinstance(item, FileBody):
            out.append(item)
        elif out and isinstance(out[-1], bytearray):
            out[-1] += item
        else:
            out.append(bytearray(item))
    return out


class _Stop(Exception):
    """Raised by a parser callback: no more requests on a connection that closes."""


class _Rejected(Exception):
    """Raised by a parser callback to stop parsing; the status is in ``error``."""


def _on_read(ev: Event) -> None:
    h: HttpConnection = ev.data.data
    try:
        h.read()
    except Exception as e:
        _failed(h, e)


def _on_write(ev: Event) -> None:
    h: HttpConnection = ev.data.data
    if ev.raw.timedout:
        log_error(INFO, "client timed out")
        h.close()
        return
    try:
        h.write_ready()
    except Exception as e:
        _failed(h, e)


def _failed(h: HttpConnection, e: Exception) -> None:
    """A bug in request handling closes that connection, not the server."""
    log_error(ALERT, f"request handling failed: {e!r}")
    h.close()
