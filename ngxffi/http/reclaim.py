"""Reclaiming slots from slow clients: a defence nginx does not have.

nginx's ngx_drain_connections frees slots from idle keep-alive connections only. A
client that sends its header a few bytes at a time (Slowloris), its body so (slow
POST), or takes a large answer so (slow read), holds its slot for
``client_header_timeout``, ``lingering_time`` or ``send_timeout``, and enough of
them take every slot: nobody else is served. Here, once drain_connections has done
what it can and free slots are still at or below connection_n/16 (drain's own
threshold), the server closes the connections whose clients are the slowest — still
reading a request header, discarding a body, taking an answer that waits for the
socket, or connected without sending anything — as long as they move less than
``client_min_rate`` bytes a second (Apache's mod_reqtimeout ``MinRate``, 500 by
default): of a request since it began, of an answer since it first waited for the
socket. A client at or above that rate is never reclaimed, however short the slots;
nor is one younger than GRACE, nor one idle and waiting for its next request
(drain's).

Each reclaim is logged at info level and counted (``reclaimed`` in the shared
counters, shown by ``/status?full``), as drain's are (``drained``).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from ngxffi.core.log import INFO, log_error
from ngxffi.core.times import msec_diff
from ngxffi.http.write import untaken

if TYPE_CHECKING:
    from ngxffi.event.cycle import Cycle
    from ngxffi.http.connection import HttpConnection

GRACE = 1000  # ms: a connection younger than this is never reclaimed
QUIET = 50  # ms: after a look that found none to reclaim, none is looked for


class Reclaimer:
    """The server's slow connections, and the cycle's ``reclaim`` hook that closes
    the slowest of them (see the module's docstring).

    ``watched`` holds the connections that entered a slow state, with when they
    did: entries are not removed when a connection moves on (that would cost every
    request), but checked when a reclaim looks at them. One entry per pool slot at
    most: it is keyed by the slot's HTTP connection."""

    __slots__ = ("count", "cycle", "min_rate", "quiet_until", "watched")

    def __init__(self, cycle: Cycle, min_rate: int) -> None:
        self.cycle = cycle
        self.min_rate = min_rate  # bytes a second; 0: off
        self.watched: dict[HttpConnection, int] = {}
        self.count = cycle.stats.adder("reclaimed")
        # while slots stay short, every accept asks: a look costs a pass over the
        # watched connections, and what it finds changes with time only slowly
        self.quiet_until = 0

    def watch(self, hc: HttpConnection) -> None:
        """``hc`` waits for its client to send (a header, a body, a first byte)."""
        if self.min_rate:
            self.watched[hc] = self.cycle.current_msec

    def __call__(self) -> int:
        """Close the slowest connections below ``client_min_rate``: up to
        connection_n/128 (1 to 32) of them, how many were closed. Fewer than drain
        closes: a slot freed here goes to whoever connects next, an attacker as
        likely as not, and one that has just connected cannot be reclaimed before
        GRACE; freeing a few at a time keeps older attackers in the pool, to be
        reclaimed for the next client."""
        now = self.cycle.current_msec
        if msec_diff(self.quiet_until, now) > 0:
            return 0
        slow = []
        for hc, since in list(self.watched.items()):
            progress = _progress(hc, since)
            if progress is None:
                del self.watched[hc]  # moved on, or closed
                continue
            got, started = progress
            age = msec_diff(now, started)  # the clock may wrap (cycle.clock_offset)
            if age >= GRACE and got * 1000 < self.min_rate * age:
                slow.append((got / max(age, 1), age, got, hc))
        n = max(min(32, self.cycle.connection_n // 128), 1)
        closed = 0
        for _, age, got, hc in heapq.nsmallest(n, slow, key=lambda s: s[0]):
            del self.watched[hc]
            log_error(
                INFO,
                f"client moved {got} bytes in {age / 1000:.1f}s, below "
                f"client_min_rate {self.min_rate}, "
                "reclaiming its connection for want of worker_connections",
            )
            hc.close()
            closed += 1
        if closed:
            self.count(closed)
        else:
            self.quiet_until = now + QUIET
        return closed


def _progress(hc: HttpConnection, since: int) -> tuple[int, int] | None:
    """How many bytes the client of ``hc`` moved, and since when (msec): of its
    request it sends, or of an answer it is slow to take (since the answer first
    waited for the socket); None when it waits for neither: idle, closed,
    lingering (which drain closes)."""
    if hc.closed:
        return None
    if hc.out is not None:
        left = untaken(hc)
        if hc.write_mark is None or left is None:
            return None
        return hc.write_mark[0] - left, hc.write_mark[1]
    r = hc.r
    if r is not None:
        if not r.begun:
            return None
        return r.unparsed + r.body_bytes, r.started
    if hc.state == "reading" and hc.lingering_until is None and not hc.c.raw.requests:
        return 0, since  # connected, and not a byte yet
    return None
