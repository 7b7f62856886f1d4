"""Event timers (≈ src/event/ngx_event_timer.c and .h).

nginx keeps timers in a red-black tree keyed by ``ngx_current_msec + timer``. Here they
are a binary heap, which gives the same order (earliest key first, equal keys in the
order they were added) with the stdlib's C ``heapq``. Deleting a timer only forgets its
entry (``ev.timer_entry``); forgotten entries are skipped when they reach the top, and
the heap is rebuilt when they outnumber the live ones, so memory stays bounded however
often keep-alive connections re-arm their timers.

A heap entry is a single int: the key's distance from the cycle's start, then a
sequence number (the order of equal keys), then which event — its code for a pool
event, a number of its own for a standalone one. Every idle keep-alive connection
has a timer, and one int costs about a third of a (distance, seq, event) tuple.

Keys are unsigned 64-bit milliseconds compared by signed difference, as nginx compares
``ngx_msec_t``; the heap orders them by their distance from the cycle's start.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING

from ngxffi.core.times import MSEC_MASK, msec_diff

if TYPE_CHECKING:
    from ngxffi.event.cycle import Cycle
    from ngxffi.event.event import Event

TIMER_LAZY_DELAY = 300  # NGX_TIMER_LAZY_DELAY, ms
TIMER_INFINITE = -1  # NGX_TIMER_INFINITE: epoll_wait and poll read it as "forever"


# The fields of a heap entry, from the most significant.
DIST_SHIFT = 96  # the key's signed distance from ``base``, biased to be non-negative
DIST_BIAS = 1 << 63
SEQ_SHIFT = 32  # a 64-bit sequence number: equal keys fire in the order added
ID_MASK = (1 << 32) - 1  # an event code, or OTHERS + n for a standalone event
OTHERS = 1 << 31


class EventTimers:
    """The timer set of one cycle."""

    def __init__(self, cycle: Cycle) -> None:
        self.cycle = cycle
        self.base = cycle.current_msec  # heap order: signed distance from here
        self.heap: list[int] = []
        self.live = 0
        self.others: dict[int, Event] = {}  # armed standalone events, by entry id
        self._seq = itertools.count()
        self._other_ids = itertools.count(OTHERS)

    def __len__(self) -> int:
        return self.live

    def add_timer(self, ev: Event, timer: int) -> None:
        """Fire ``ev`` in ``timer`` ms. Imitates ngx_event_add_timer, including its
        lazy delay: re-arming within 300 ms of the current key keeps the old key."""
        key = (self.cycle.current_msec + timer) & MSEC_MASK
        dist = msec_diff(key, self.base) + DIST_BIAS
        entry = ev.timer_entry
        if entry >= 0:
            if abs(dist - (entry >> DIST_SHIFT)) < TIMER_LAZY_DELAY:
                return
            self.del_timer(ev)
        if ev.code >= 0:
            ident = ev.code
        else:
            ident = next(self._other_ids) & ID_MASK | OTHERS
            self.others[ident] = ev
        entry = (dist << DIST_SHIFT) | (next(self._seq) << SEQ_SHIFT) | ident
        ev.timer_entry = entry
        heapq.heappush(self.heap, entry)
        raw = ev.raw
        raw.timer_key = key
        raw.timer_set = 1
        self.live += 1

    def del_timer(self, ev: Event) -> None:
        """Cancel ``ev``'s timer. Imitates ngx_event_del_timer."""
        entry = ev.timer_entry
        if entry < 0:
            return
        self._disarm(ev, entry)
        if len(self.heap) > 2 * self.live + 64:
            self._compact()

    def _disarm(self, ev: Event, entry: int) -> None:
        ev.timer_entry = -1
        ev.raw.timer_set = 0
        self.live -= 1
        if entry & OTHERS:
            del self.others[entry & ID_MASK]

    def _event(self, entry: int) -> Event | None:
        """The event of a live entry; None for a forgotten one."""
        ident = entry & ID_MASK
        if ident & OTHERS:
            ev = self.others.get(ident)
        else:
            ev = self.cycle.events_by_code[ident]
        return ev if ev is not None and ev.timer_entry == entry else None

    def _compact(self) -> None:
        self.heap = [entry for entry in self.heap if self._event(entry) is not None]
        heapq.heapify(self.heap)

    def _first(self) -> Event | None:
        """The event of the earliest live entry, dropping forgotten ones on the way."""
        heap = self.heap
        while heap:
            ev = self._event(heap[0])
            if ev is not None:
                return ev
            heapq.heappop(heap)
        return None

    def find_timer(self) -> int:
        """Milliseconds until the earliest timer, 0 if due, TIMER_INFINITE if none.
        Imitates ngx_event_find_timer."""
        first = self._first()
        if first is None:
            return TIMER_INFINITE
        return max(0, msec_diff(first.raw.timer_key, self.cycle.current_msec))

    def expire_timers(self) -> None:
        """Run the handlers of every timer due now (``timedout`` set, ``timer_set``
        cleared), earliest first. Imitates ngx_event_expire_timers."""
        while (ev := self._first()) is not None:
            if msec_diff(ev.raw.timer_key, self.cycle.current_msec) > 0:
                return
            self._disarm(ev, heapq.heappop(self.heap))
            ev.raw.timedout = 1
            ev.handler(ev)
