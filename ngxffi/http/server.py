"""The HTTP server of one event loop: the handler, the configuration, an HTTP
connection for each pool slot, the parsers, the counters, the access log, and the
listening socket's handler (≈ ngx_http_init_connection of
src/http/ngx_http_request.c, with ngx_http_log_module's ``combined`` line).
"""

from __future__ import annotations

import time
import weakref
from typing import Any, TextIO

from ngxffi._ngx import ffi
from ngxffi.event.connection import Connection
from ngxffi.event.cycle import Cycle
from ngxffi.event.event import USE_GREEDY_EVENT, handle_read_event
from ngxffi.event.listening import Listening
from ngxffi.http.accept import CAccept
from ngxffi.http.connection import HttpConnection, on_write
from ngxffi.http.core import HttpCoreConf
from ngxffi.http.fast import READ_SIZE, fast_conf
from ngxffi.http.message import FileBody, Handler, Request, Response
from ngxffi.http.parse import HttpRequest, Limits, PlainParser
from ngxffi.http.reclaim import Reclaimer


def disarm_fast(
    read_events: Any, n: int, ctxs: tuple[Any, ...], keep: object = None
) -> None:
    """Clear the C handler of each of the ``n`` read events whose ``c_ctx`` is one of
    ``ctxs`` (the C read handler's configuration that
    :func:`ngxffi.http.fast.fast_conf` made, the C accept handler's), so that none
    recv()s into their buffers once they are freed. ``keep``: what those point
    into, held until then."""
    for i in range(n):
        ev = read_events[i]
        if ev.c_ctx != ffi.NULL and ev.c_ctx in ctxs:
            ev.c_handler = ffi.NULL
            ev.c_ctx = ffi.NULL


class HttpServer:
    """The server side of ``ngxffi serve``: configuration, handler and counters.

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
        conf: HttpCoreConf | None = None,
        access_log: TextIO | None = None,
        fixed: Response | None = None,
        fixed_except: str = "",
        files: Any = None,
    ) -> None:
        self.cycle = cycle
        self.handler = handler
        self.conf = conf = conf or HttpCoreConf()
        self.limits = Limits.of(conf)
        self.access_log = access_log
        self.short_read_drains = (
            not cycle.event_flags & USE_GREEDY_EVENT or cycle.module.use_epoll_rdhup
        )
        fast = (
            fast_conf(fixed, fixed_except, conf, cycle.stats.field("requests"), files)
            if access_log is None
            else None
        )
        self.fast: Any = fast[0] if fast else None  # the C handler's configuration
        self._fast_keep = fast  # with what it points into
        # C closes a connection only when nothing is left to read, which is not
        # what lingering_close always asks
        always = conf.lingering_close == "always"
        self.c_accept = (
            CAccept(cycle, self.fast, self.short_read_drains)
            if fast and not always
            else None
        )
        # The C handlers' c_ctx point into those buffers: before they are freed,
        # whether close() or the collector frees them, the read events are cleared
        # (the finalizer holds the buffers, the events' array, never the server).
        ctxs = (self.fast, self.c_accept.ctx) if self.c_accept else ()
        self._disarm = weakref.finalize(
            self, disarm_fast, cycle.read_events, cycle.connection_n, ctxs, fast
        )
        self._shutting_down = False
        # a connection's requests up to the last (keepalive_requests); 0 while
        # shutting down: every answer closes its connection then
        self.requests_max = conf.keepalive_requests
        self.plain = PlainParser(
            self.limits,
            READ_SIZE,
            self.short_read_drains,
            cycle.stats.field("requests"),
            cycle.raw,
            self.requests_max,
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
        self.http_connections = [HttpConnection(self, c) for c in cycle.connections]
        self.count_requests = cycle.stats.adder("requests")
        # beyond nginx: when drain cannot free enough slots, the slowest clients'
        self.reclaimer = Reclaimer(cycle, conf.client_min_rate)
        cycle.reclaim = self.reclaimer
        self.uncounted = 0  # requests answered since the counter was last updated

    def close(self) -> None:
        """The server goes away (a reload, or another server takes the cycle): no
        read event keeps the C handler with this server's configuration, whose
        buffers are freed then. Its connections are Python's from now on."""
        self.fast = None
        self._fast_keep = None
        if self.cycle.reclaim is self.reclaimer:  # its connections are no one's
            self.cycle.reclaim = None
        self._disarm()  # once: later calls do nothing
        if self.c_accept is not None:
            self.c_accept.close()

    @property
    def shutting_down(self) -> bool:
        """Set by a graceful shutdown: every answer closes its connection (so the
        C handler stands aside)."""
        return self._shutting_down

    @shutting_down.setter
    def shutting_down(self, value: bool) -> None:
        self._shutting_down = value
        self.requests_max = 0 if value else self.conf.keepalive_requests
        self.plain.ctx.requests_max = self.requests_max
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
        headers = request.headers
        self.access_log.write(
            f'{c.addr_text} - - [{when}] "{request.method} {request.uri} '
            f'HTTP/{request.version}" {response.status} {sent} '
            f'"{headers.get("referer", "-")}" "{headers.get("user-agent", "-")}"\n'
        )

    def init_listening(self, ls: Listening) -> None:
        """A listening socket is open in this worker: when C knows the answers, C
        accepts on it too (:mod:`ngxffi.http.accept`)."""
        if self.c_accept is not None:
            self.c_accept.install(ls)

    def init_connection(self, c: Connection) -> None:
        """The listening socket's handler. Imitates ngx_http_init_connection: read
        event edge-triggered, client_header_timeout armed, reading counted."""
        hc = c.data = self.http_connections[c.index].start()
        watched = self.reclaimer.watched
        if watched:  # the slot's last connection may be there, with its time
            watched.pop(hc, None)
        c.read.handler = hc.read
        c.write.handler = on_write
        self.cycle.stats.add("reading", 1)
        self.cycle.timers.add_timer(c.read, self.conf.client_header_timeout)
        handle_read_event(c.read)
        if c.read.raw.ready or c.raw.stash_len or c.raw.error:
            hc.read()  # deferred accept, or the C accept handler's stash
        else:  # connected, nothing sent yet: reclaimable if it stays so
            self.reclaimer.watch(hc)
