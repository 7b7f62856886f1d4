"""An HTTP/1.1 connection's state machine (≈ src/http/ngx_http_request.c): read, parse,
answer, write, keep alive or close.

The life of a connection follows nginx's: accepted, its read event registered
edge-triggered with ``client_header_timeout``; requests read (until the socket is
empty, which a short read tells when EPOLLRDHUP is in use, as in ngx_unix_recv) and
parsed — the plain ones from what the C that reads them copies out
(:class:`~ngxffi.http.parse.PlainParser`), the others by llhttp — each answered in
order, pipelined ones too, by the server's handler, the answers of one read sent in
one write (:mod:`ngxffi.http.write`); then either closed (``Connection: close``,
HTTP/1.0 without keep-alive, an error, ``keepalive_requests`` reached, shutting down)
or kept alive (:mod:`ngxffi.http.keepalive`): reusable (drain may close it), idle,
under ``keepalive_timeout``. A
response the socket does not take at once waits for the write event under
``send_timeout``; reading resumes once it is sent, so responses never overtake each
other.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol, TextIO

import httptools

from ngxffi._ngx import lib
from ngxffi.core.log import ALERT, INFO, log_error
from ngxffi.event.connection import Connection
from ngxffi.event.cycle import Cycle
from ngxffi.event.event import Event
from ngxffi.event.posted import post_event
from ngxffi.http.core import HttpCoreConf
from ngxffi.http.keepalive import KeepAlive
from ngxffi.http.linger import BROKEN, UNREAD, finalize
from ngxffi.http.message import (
    CONTINUE,
    HEADER_TOO_LARGE,
    REASONS,
    FileBody,
    Handler,
    Request,
    Response,
    error_page,
    expects_continue,
    queue_response,
)
from ngxffi.http.parse import (
    DRAINED,
    END,
    LAST,
    PARSE_ERRORS,
    TEXT,
    HttpRequest,
    Limits,
    PlainParser,
)
from ngxffi.http.reclaim import Reclaimer
from ngxffi.http.write import (
    flush,
    queue_behind,
    release,
    send_pending,
    wait_write,
)

PLAIN_AGAIN: int = lib.NGXFFI_PLAIN_AGAIN
PLAIN_UNUSUAL: int = lib.NGXFFI_PLAIN_UNUSUAL
plain_read = lib.ngxffi_http_plain_read
recognise = lib.ngxffi_http_plain


class Server(Protocol):
    """What a connection uses of its server (server.HttpServer): the configuration
    and what the worker's connections share."""

    cycle: Cycle
    conf: HttpCoreConf
    limits: Limits
    plain: PlainParser
    requests_max: int
    handler: Handler
    access_log: TextIO | None
    fast: Any  # the C handler's configuration, or None
    free_requests: list[HttpRequest]
    reclaimer: Reclaimer
    pending: list[bytes | FileBody]
    current: HttpConnection | None
    uncounted: int

    def count_answered(self) -> None: ...

    def log_access(
        self, c: Connection, request: Request, response: Response
    ) -> None: ...


class HttpConnection(KeepAlive):
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
        "out",
        "server",
        "unread",
        "write_mark",
    )

    def __init__(self, server: Server, c: Connection) -> None:
        self.server = server
        self.c = c
        self.start()

    def start(self) -> HttpConnection:
        """A new connection in this slot: reset, reading its first request."""
        self.r = None
        self.out = None  # waiting for the socket
        self.state = self.counted = "reading"  # reading | writing | waiting
        self.close_after = False
        self.closed = False
        self.unread = 0  # UNREAD: the client may still be sending; BROKEN: not HTTP
        self.lingering_until = None
        # what was left to send when the answer first waited for the socket, and when
        self.write_mark: tuple[int, int] | None = None
        self.nodelay = False
        self.keepalive_timer = False
        return self

    # --- requests and responses -----------------------------------------------------

    def answer(self, request: Request) -> None:
        """A request header llhttp read: counted on the connection (as
        ngxffi_http_plain counts the plain ones), then answered; a body behind it
        is discarded (ngx_http_discard_request_body), after ``100 Continue`` if
        the client waits for one."""
        raw = self.c.raw
        requests = raw.requests = raw.requests + 1
        last = not request.keep_alive or requests >= self.server.requests_max
        r = self.r
        if r is not None and r.discarding and expects_continue(request):
            self.server.pending.append(CONTINUE)
        self.respond(request, last)

    def respond(self, request: Request, last: bool) -> None:
        """Run the handler, queue its response in order; ``last``: the connection
        closes after it (not keep-alive, keepalive_requests, shutting down)."""
        server = self.server
        server.current = self
        server.uncounted += 1
        self.state = "writing"
        response = server.handler(request)
        if last:
            self.close_after = True
        head = request.method == "HEAD"
        queue_response(server.pending, response, head, last, server.conf)
        if server.access_log is not None:
            server.log_access(self.c, request, response)

    def error_response(self, status: int, title: str) -> None:
        """nginx's error page, then close (ngx_http_special_response_handler)."""
        self.state = "writing"
        self.close_after = True
        self.unread = UNREAD  # what follows the error was not read
        conf = self.server.conf
        page = error_page(status, title, conf.server_tokens)
        queue_response(self.server.pending, page, False, True, conf)

    # --- the event handlers' work -----------------------------------------------------

    def read(self, ev: Event | None = None) -> None:
        """The read event's handler (ngx_http_wait_request_handler and
        ngx_http_keepalive_handler in one; ``ev`` is the event, unused): read, parse,
        answer, write, each read's answers in one write. Reading pauses while an
        answer waits for the socket (answers stay in order) and stops after a last
        request. Reading and recognising a plain request at the start of what was
        read are one C call, which leaves anything unusual to :meth:`_unusual`.
        A failure here closes the connection, not the server."""
        try:
            server = self.server
            plain = server.plain
            ctx, out, buf = plain.ctx, plain.out, plain.buf
            c = self.c.raw
            rev = self.c.read.raw
            # an answer waiting for the socket holds reading back (answers stay in
            # order) but for the body it did not read: nginx reads that on
            while not self.close_after and (self.out is None or self.discarding()):
                n = plain_read(ctx, rev, self.r is None)
                if n > 0:
                    drained = out[DRAINED]
                elif n == PLAIN_AGAIN:
                    if rev.ready:  # interrupted, not drained: the next turn reads
                        post_event(self.c.read, server.cycle.posted_next_events)
                    break
                elif n != PLAIN_UNUSUAL:  # EOF, or an error such as ECONNRESET
                    self.close()
                    return
                else:
                    n = self._unusual()
                    if not n:
                        return
                    drained = not rev.ready
                start = 0
                while out[TEXT]:  # a plain request at start: made of its text
                    self.respond(plain.request(), out[LAST] == 1)
                    start = out[END]
                    if self.close_after or start == n:
                        if start != n:  # pipelined behind a last request
                            self.unread = UNREAD
                        break
                    recognise(ctx, c, plain.bufp, n, start)
                else:  # llhttp's, from the first request that is not plain
                    self._feed(buf[start:n], start == 0)
                if server.pending:
                    if self.out is not None:  # behind the answer that waits
                        queue_behind(self)
                    elif not send_pending(self) and (
                        self.closed or not self.discarding()
                    ):
                        return
                if drained:
                    break
            if self.close_after and self.out is None:
                finalize(self)
                return
            self.settle()
        except Exception as e:
            failed(self, e)

    def _unusual(self) -> int:
        """What ngxffi_http_plain_read left to Python: a timer that ran out, a
        connection to close, the C handler's stash. The length of the input to
        parse, put in the read buffer, or 0 when the handler is done."""
        c = self.c
        rev = c.read.raw
        if rev.timedout:
            rev.timedout = 0
            if self.out is not None:
                # A header or keep-alive timer that ran out while a response is
                # being sent: send_timeout governs that. (nginx deletes the read
                # timer when a header is complete; not deleting it saves two heap
                # operations per request, and settle re-arms it lazily.)
                return 0
            if self.keepalive_left():
                return 0
            log_error(INFO, "client timed out")
            self.close()
            return 0
        if c.raw.close:  # drained by drain_connections, or shutting down
            self.close()
            return 0
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
            return 0
        data = self._take_stash()
        if data is None:
            return 0
        if c.raw.reusable:  # the most recently used, as ngxffi_http_plain_read does
            self.server.cycle.reusable_connection(c, True)
        plain = self.server.plain
        n = len(data)
        plain.buf[:n] = data  # one read of the C handler's: READ_SIZE at most
        plain.out[TEXT] = 0
        if self.r is None and n <= plain.unparsed_max:
            recognise(plain.ctx, c.raw, plain.bufp, n, 0)
        return n

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
        wait_write(self)
        return None

    def _feed(self, data: bytes | bytearray, first: bool) -> None:
        """Parse ``data`` with llhttp; the requests it completes are answered into
        server.pending. The parser comes from the server's free ones. ``first``:
        ``data`` begins the read, whose length counts against the limits (bytes
        after a request llhttp answered in the same read never did)."""
        r = self.r
        server = self.server
        if r is None:
            free = server.free_requests
            r = self.r = free.pop() if free else HttpRequest(server.limits)
            r.hc = self
            if self.state == "waiting":
                self.state = "reading"
        try:
            if r.request is None and first:
                # llhttp buffers a header line until it ends: bound what it may hold
                r.unparsed += len(data)
                if r.unparsed > r.unparsed_max:
                    raise r.reject(400, HEADER_TOO_LARGE)
            r.parser.feed_data(data)
            if r.unanswered is not None:
                r.answer_pending()
        except httptools.HttpParserUpgrade:
            # Upgrade or CONNECT: the request is answered, but what follows is not
            # HTTP any more and this server does not tunnel: close after the answer.
            r.answer_pending()
            self.close_after = True
        except PARSE_ERRORS:
            if self.close_after:
                # After a last request, what follows is ignored: nginx stops reading
                # a connection it is going to close (and lingers).
                self.unread = UNREAD
            elif r.request is not None and r.unanswered is None:
                # a body that is not what its header said, after the answer: the
                # connection ends, without lingering (nginx's c->error)
                self.close_after = True
                self.unread = BROKEN
            else:  # the header, or the body in the header's read (nginx's 400)
                r.unanswered = None
                # a callback's rejection arrives wrapped in HttpParserCallbackError
                self.error_response(*(r.error or (400, REASONS[400])))

    def write_ready(self) -> None:
        """The write event: send the rest, then read what waited behind it."""
        if self.out is not None and flush(self):
            if self.close_after:
                finalize(self)
            elif self.c.read.raw.ready:
                self.read()
            else:
                self.settle()

    def now(self) -> int:
        return self.server.cycle.current_msec

    def discarding(self) -> bool:
        """An answered request's body is being read and thrown away."""
        r = self.r
        return r is not None and r.discarding and r.request is not None

    def body_discarded(self) -> None:
        """The body was read to its end (ngx_http_discarded_request_body_handler's
        NGX_OK): its timer and lingering_time end; the connection is between
        requests again, as after an answer (settle: keep-alive, or the next
        request's client_header_timeout)."""
        self.lingering_until = None
        self.state = "writing"
        rev = self.c.read
        if rev.raw.timer_set:
            self.server.cycle.timers.del_timer(rev)
        self.keepalive_timer = False

    def unread_input(self) -> bool:
        """Whether the client may still be sending (lingering_close on):
        ngx_http_finalize_connection's test of r->lingering_close, the buffer's
        unparsed bytes and rev->ready, with a request or body begun and not read
        to its end."""
        if self.unread:
            return self.unread == UNREAD
        r = self.r
        return (r is not None and r.begun) or bool(self.c.read.raw.ready)

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
        failed(hc, e)


def failed(hc: HttpConnection, e: Exception) -> None:
    """A bug in request handling closes that connection, not the server."""
    log_error(ALERT, f"request handling failed: {e!r}")
    hc.close()
