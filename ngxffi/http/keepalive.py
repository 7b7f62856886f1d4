"""An HTTP connection between requests (≈ ngx_http_set_keepalive and the timer of
ngx_http_keepalive_handler in src/http/ngx_http_request.c): where stub_status counts
it, whether it is reusable (drain_connections may close it) and idle under
``keepalive_timeout``, or busy reading or writing with the C handler kept off.

Differs from nginx: the keep-alive timer is armed when a connection first goes idle
and not again at every request (two timer-heap operations per request saved); it
still runs out ``keepalive_timeout`` after the connection last went idle, because
when it runs out early :meth:`KeepAlive.keepalive_left` re-arms it for the rest, as
it does for the answers of the C handler.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, cast

from ngxffi import os as nos
from ngxffi._ngx import lib
from ngxffi.core.log import INFO, log_error
from ngxffi.core.times import msec_diff
from ngxffi.event.event import handle_read_event
from ngxffi.http.fast import FAST_HANDLER
from ngxffi.http.linger import finalize

if TYPE_CHECKING:
    from ngxffi.event.connection import Connection
    from ngxffi.http.connection import HttpConnection, Server
    from ngxffi.http.parse import HttpRequest
    from ngxffi.http.write import Output

FREE_REQUESTS_MAX = 64  # parsers kept between requests: only reads in progress use one


class KeepAlive:
    """The keep-alive half of :class:`ngxffi.http.connection.HttpConnection`,
    whose slots hold what it uses."""

    __slots__ = (
        "counted",
        "keepalive_timer",
        "lingering_until",
        "nodelay",
        "r",
        "state",
    )

    state: str  # reading | writing | waiting
    counted: str  # the state the shared counters have
    r: HttpRequest | None  # the request being read, if any
    nodelay: bool  # TCP_NODELAY is set
    keepalive_timer: bool  # the read timer is the keep-alive one
    # the connection's (HttpConnection's slots)
    server: Server
    c: Connection
    out: Output | None
    lingering_until: int | None  # when lingering_time ends, once it began
    closed: bool

    if TYPE_CHECKING:

        def close(self) -> None: ...

    def commit(self) -> None:
        """Bring the shared counters up to date: the requests answered (by any
        connection) since the last commit, and this connection's state."""
        server = self.server
        server.count_answered()
        if self.state != self.counted:
            self.server.cycle.stats.move(self.counted, self.state)
            self.counted = self.state

    def settle(self) -> None:
        """The end of a handler call: keep-alive or not, timers, shared counters."""
        r = self.r
        if not self.c.read.raw.active:
            # accepted with its data there (deferred accept, the C accept handler),
            # the read event was not added: it is now that reading stops
            handle_read_event(self.c.read)
        if self.out is not None:
            self.state = "writing"
        elif r is not None and r.begun:
            # a slow client may be reclaimed
            self.server.reclaimer.watch(cast("HttpConnection", self))
            if r.request is not None:  # answered: its body is being discarded
                self.state = "writing"  # nginx's request lives on: "Writing"
                self._discarding()
                if self.closed:
                    return
            else:
                self.state = "reading"
                if not self.c.read.raw.timer_set:
                    # a header begun with no timer running (one ran out while
                    # writing, or a discarded body's was deleted at its end)
                    server = self.server
                    server.cycle.timers.add_timer(
                        self.c.read, server.conf.client_header_timeout
                    )
                    self.keepalive_timer = False
        elif self.state == "writing":  # answered, all sent, nothing begun
            # requests_max is 0 once shutting down (nginx's ngx_exiting): no
            # keep-alive then (an int, where the property would cost each answer)
            if not self.server.requests_max:
                finalize(cast("HttpConnection", self))
                return
            self._keepalive(r)
        if self.state != "waiting":
            self._busy()
        if self.server.uncounted or self.state != self.counted:
            self.commit()

    def _discarding(self) -> None:
        """An answered request's body is read and thrown away: each read re-arms
        ``lingering_timeout``, and after ``lingering_time`` from the first wait the
        connection closes. Imitates ngx_http_discarded_request_body_handler's
        timers (nginx arms them once the answer is sent: so is this, as the
        answer's writing comes first in :meth:`settle`)."""
        server = self.server
        conf = server.conf
        now = server.cycle.current_msec
        if self.lingering_until is None:
            self.lingering_until = now + conf.lingering_time
        left = msec_diff(self.lingering_until, now)
        if left <= 0:
            log_error(INFO, "client's body took longer than lingering_time")
            self.close()
            return
        server.cycle.timers.add_timer(self.c.read, min(left, conf.lingering_timeout))
        self.keepalive_timer = False

    def _busy(self) -> None:
        """Reading or writing: not drainable, and no C handler to cut in."""
        c = self.c
        if self.counted == "waiting":
            self.server.cycle.reusable_connection(c, False)
            c.raw.idle = 0
        if self.server.fast is not None:
            c.read.clear_c_handler()

    def _keepalive(self, r: HttpRequest | None) -> None:
        """Imitates ngx_http_set_keepalive: the parser goes back to the server; the
        connection is idle, reusable (the most recently used, last to be drained),
        under keepalive_timeout. Differs: the keep-alive timer runs from when the
        connection last went idle, but it is armed once, not at every request:
        when it runs out, :meth:`keepalive_left` re-arms it for the rest."""
        server = self.server
        if r is not None:  # back to the server, for any connection's next request
            self.r = None
            r.hc = None
            if len(server.free_requests) < FREE_REQUESTS_MAX:
                server.free_requests.append(r)
        self.state = "waiting"
        if self.counted != "waiting":  # back in the reusable queue (the read that
            self._idle()  # woke one still there made it the most recently used)
        if server.fast is not None:  # plain requests: the C handler answers them
            self.c.read.set_c_handler(FAST_HANDLER, server.fast)
        cycle = server.cycle
        # when it went idle, in the C slot (no Python int per idle connection),
        # where the C handler notes its answers too: the later of the two counts
        raw = self.c.raw
        raw.c_msec = cycle.current_msec
        raw.c_answered = 1
        rev = self.c.read
        if rev.timer_entry < 0 or not self.keepalive_timer:
            cycle.timers.add_timer(rev, server.conf.keepalive_timeout)
            self.keepalive_timer = True

    def _idle(self) -> None:
        """Idle after a request or an answer was under way: reusable again, the
        most recently used; TCP_NODELAY set the first time (nginx's tcp_nodelay
        on), so that the next small answer is not held back by Nagle's
        algorithm."""
        c = self.c
        c.raw.idle = 1
        self.server.cycle.reusable_connection(c, True)
        if not self.nodelay:
            self.nodelay = True
            if c.listening.family != lib.AF_UNIX:
                c.raw.tcp_nodelay = 1  # NGX_TCP_NODELAY_SET
                with contextlib.suppress(OSError):  # e.g. the peer is gone already
                    nos.setsockopt(c.raw.fd, lib.IPPROTO_TCP, lib.TCP_NODELAY, 1)

    def keepalive_left(self) -> bool:
        """The read timer ran out, but it was a keep-alive timer and the connection
        went idle again since it was set (by Python: a running one is not re-armed;
        or by the C handler's answers, which note their time in the same field):
        the timeout counts from then, so wait the rest of it."""
        server = self.server
        cycle = server.cycle
        raw = self.c.raw
        rest = 0
        if raw.c_answered and (self.keepalive_timer or self.state == "waiting"):
            timeout = server.conf.keepalive_timeout
            rest = msec_diff(raw.c_msec + timeout, cycle.current_msec)
        if rest <= 0:
            return False
        cycle.timers.add_timer(self.c.read, rest)
        return True
