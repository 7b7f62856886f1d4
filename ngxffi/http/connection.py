"""An HTTP/1.1 connection's state machine (≈ src/http/ngx_http_request.c): read, parse,
answer, write, keep alive or close.

The life of a connection follows nginx's: accepted, its read event registered
edge-triggered with ``client_header_timeout``; requests read (until the socket is
empty, which a short read tells when EPOLLRDHUP is in use, as in ngx_unix_recv) and
parsed, each answered in order — pipelined ones too — by the server's handler, the
answers of one read sent in one write; then either closed (``Connection: close``,
HTTP/1.0 without keep-alive, an error, ``keepalive_requests`` reached, shutting down)
or kept alive: reusable (drain may close it), idle, under ``keepalive_timeout``. A
response the socket does not take at once waits for the write event under
``send_timeout``; reading resumes once it is sent, so responses never overtake each
other.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from typing import Any, Protocol, TextIO

import httptools

from ngxffi import os as nos
from ngxffi._ngx import lib
from ngxffi.core.log import ALERT, INFO, log_error
from ngxffi.core.times import msec_diff
from ngxffi.event.connection import Connection
from ngxffi.event.cycle import Cycle
from ngxffi.event.event import Event, handle_read_event, handle_write_event
from ngxffi.http.core import HttpCoreConf
from ngxffi.http.fast import FAST_HANDLER, READ_SIZE
from ngxffi.http.message import (
    HEADER_TOO_LARGE,
    REASONS,
    FileBody,
    Handler,
    Request,
    Response,
    error_page,
    queue_response,
)
from ngxffi.http.parse import PARSE_ERRORS, HttpRequest, Limits
from ngxffi.http.write import Output, coalesce, release, send_segment

FREE_REQUESTS_MAX = 64  # parsers kept between requests: only reads in progress use one


class Server(Protocol):
    """What a connection uses of its server (server.HttpServer): the configuration
    and what the worker's connections share."""

    cycle: Cycle
    conf: HttpCoreConf
    limits: Limits
    handler: Handler
    access_log: TextIO | None
    fast: Any  # the C handler's configuration, or None
    short_read_drains: bool
    free_requests: list[HttpRequest]
    pending: list[bytes | FileBody]
    current: HttpConnection | None
    uncounted: int

    @property
    def shutting_down(self) -> bool: ...

    def count_answered(self) -> None: ...

    def log_access(
        self, c: Connection, request: Request, response: Response
    ) -> None: ...


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

    def __init__(self, server: Server, c: Connection) -> None:
        self.server = server
        self.c = c
        self.start()

    def start(self) -> HttpConnection:
        """A new connection in this slot: reset, reading its first request."""
        self.r: HttpRequest | None = None
        self.out: Output | None = None  # waiting for the socket
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
        conf = server.conf
        last = (
            not request.keep_alive
            or server.shutting_down
            or raw.requests >= conf.keepalive_requests
        )
        if last:
            self.close_after = True
        queue_response(server.pending, response, request.method == "HEAD", last, conf)
        if server.access_log is not None:
            server.log_access(self.c, request, response)

    def error_response(self, status: int, title: str) -> None:
        """nginx's error page, then close (ngx_http_special_response_handler)."""
        self.state = "writing"
        self.close_after = True
        conf = self.server.conf
        page = error_page(status, title, conf.server_tokens)
        queue_response(self.server.pending, page, False, True, conf)

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
        if c.raw.error and not c.raw.stash_len:
            # the C handler took bytes (input, or answers it counted) and could
            # not keep them: the stream has a hole, so the connection ends here
            log_error(
                ALERT,
                "malloc() failed while keeping the C handler's bytes, "
                "closing connection",
                lib.ENOMEM,
            )
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
            self.c.raw.c_msec + self.server.conf.keepalive_timeout,
            cycle.current_msec,
        )
        if rest <= 0 or not self.c.raw.c_answered:  # c_msec 0 is a time too
            return False
        cycle.timers.add_timer(self.c.read, rest)
        return True

    def _take_stash(self) -> bytes | None:
        """What the C handler left: input to parse (returned), or answers it could
        not send at once (queued here, behind the write event)."""
        raw = self.c.raw
        error = raw.error  # only the rest of a cut answer was kept
        close = raw.stash_close  # the C accept handler's answer to a close
        data, output = self.c.take_stash()
        if not output:
            return data
        self.out = deque([bytearray(data)])
        self.close_after = bool(close)
        if error:
            log_error(
                ALERT,
                "malloc() failed while keeping the C handler's answers, "
                "closing connection after the one begun",
                lib.ENOMEM,
            )
            self.close_after = True
        self._wait_write()
        return None

    def _feed(self, data: bytes) -> None:
        """Parse ``data``; the requests it completes are answered into
        server.pending. The parser comes from the server's free ones."""
        r = self.r
        server = self.server
        if r is None:
            free = server.free_requests
            r = self.r = free.pop() if free else HttpRequest(server.limits)
            r.hc = self
            if self.state == "waiting":
                self.state = "reading"
        try:
            if r.request is None:
                # llhttp buffers a header line until it ends: bound what it may hold
                r.unparsed += len(data)
                if r.unparsed > r.unparsed_max:
                    raise r.reject(400, HEADER_TOO_LARGE)
            r.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade or CONNECT: the request was answered, but what follows is not
            # HTTP any more and this server does not tunnel: close after the answer.
            self.close_after = True
        except PARSE_ERRORS:
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
        self.out = coalesce(pending)
        pending.clear()
        return self.flush()

    def flush(self) -> bool:
        """Send the queued output; True when all is sent and reading may go on."""
        out = self.out
        assert out is not None
        fd = self.c.raw.fd
        while out:
            try:
                done = send_segment(fd, out[0])
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
        self.server.cycle.timers.add_timer(c.write, self.server.conf.send_timeout)
        handle_write_event(c.write)
        self._settle()
        return False

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
        if not c.read.raw.active:
            # accepted with its data there (deferred accept, the C accept handler),
            # the read event was not added: it is now that reading stops
            handle_read_event(c.read)
        if self.out is not None:
            self.state = "writing"
        elif r is not None and r.begun:
            self.state = "reading"
            if not r.request and not c.read.raw.timer_set:
                # a header begun with no timer running (one ran out while writing)
                server.cycle.timers.add_timer(c.read, server.conf.client_header_timeout)
        elif self.state == "writing":  # answered, all sent, nothing begun
            self._keepalive(r)
        if self.state != "waiting":
            if self.counted == "waiting":
                server.cycle.reusable_connection(c, False)  # busy: not drainable
                c.raw.idle = 0
            if server.fast is not None:  # a request or an answer under way: the
                c.read.clear_c_handler()  # C handler must not cut in
        self.commit()

    def _keepalive(self, r: HttpRequest | None) -> None:
        """Imitates ngx_http_set_keepalive: the parser goes back to the server; the
        connection is idle, reusable (the most recently used, last to be drained),
        under keepalive_timeout; TCP_NODELAY is set once (nginx's tcp_nodelay on), so
        that the next small response is not held back by Nagle's algorithm."""
        c = self.c
        server = self.server
        cycle = server.cycle
        if r is not None:  # back to the server, for any connection's next request
            self.r = None
            r.hc = None
            if len(server.free_requests) < FREE_REQUESTS_MAX:
                server.free_requests.append(r)
        self.state = "waiting"
        if not self.nodelay:
            self.nodelay = True
            if c.listening.family != lib.AF_UNIX:
                c.raw.tcp_nodelay = 1  # NGX_TCP_NODELAY_SET
                with contextlib.suppress(OSError):  # e.g. the peer is gone already
                    nos.setsockopt(c.raw.fd, lib.IPPROTO_TCP, lib.TCP_NODELAY, 1)
        if self.counted != "waiting":
            c.raw.idle = 1
        cycle.reusable_connection(c, True)  # the most recently used
        if server.fast is not None:  # plain requests: the C handler answers them
            c.read.set_c_handler(FAST_HANDLER, server.fast)
        cycle.timers.add_timer(c.read, server.conf.keepalive_timeout)

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
        if self.out is not None:
            release(self.out)
            self.out = None
        self.server.pending.clear()
        self.r = None  # mid-message or failed: not reusable
        self.commit()
        self.server.cycle.stats.add(self.counted, -1)
        self.server.cycle.close_connection(self.c)


def on_read(ev: Event) -> None:
    """A connection's read event handler (ngx_http_wait_request_handler and
    ngx_http_keepalive_handler in one)."""
    hc: HttpConnection = ev.data.data
    try:
        hc.read()
    except Exception as e:
        _failed(hc, e)


def on_write(ev: Event) -> None:
    """A connection's write event handler (ngx_http_writer)."""
    hc: HttpConnection = ev.data.data
    if ev.raw.timedout:
        log_error(INFO, "client timed out")
        hc.close()
        return
    try:
        hc.write_ready()
    except Exception as e:
        _failed(hc, e)


def _failed(hc: HttpConnection, e: Exception) -> None:
    """A bug in request handling closes that connection, not the server."""
    log_error(ALERT, f"request handling failed: {e!r}")
    hc.close()
