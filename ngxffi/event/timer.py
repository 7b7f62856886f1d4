"""Event timers (≈ src/event/ngx_event_timer.c and .h).

nginx keeps timers in a red-black tree keyed by ``ngx_current_msec + timer``. Here they
are a binary heap, which gives the same order (earliest key first, equal keys in the
order they were added) with the stdlib's C ``heapq``. Deleting a timer only forgets its
entry (``ev.timer_seq``); forgotten entries are skipped when they reach the top, and
the heap is rebuilt when they outnumber the live ones, so memory stays bounded however
often keep-alive connections re-arm their timers.

Keys are unsigned 64-bit milliseconds compared by signed difference, as nginx compares
``ngx_msec_t``; the heap orders them by their distance from the cycle's start.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING

from ngxffi.core.times import MSEC_MASK, msec_diff

if TYPE_CHECKING:
    from ngxffi.core.cycle import Cycle
    from ngxffi.event.event import Event

TIMER_LAZY_DELAY = 300  # NGX_TIMER_LAZY_DELAY, ms
TIMER_INFINITE = -1


class EventTimers:
    """The timer set of one cycle."""

    def __init__(self, cycle: Cycle) -> None:
        self.cycle = cycle
        self.base = cycle.current_msec  # heap order: signed distance from here
        self.heap: list[tuple[int, int, Event]] = []
        self.live = 0
        self._seq = itertools.count()

    def __len__(self) -> int:
        return self.live

    def add_timer(self, ev: Event, timer: int) -> None:
        """Fire ``ev`` in ``timer`` ms. Imitates ngx_event_add_timer, including its
        lazy delay: re-arming within 300 ms of the current key keeps the old key."""
        key = (self.cycle.current_msec + timer) & MSEC_MASK
        raw = ev.raw
        if raw.timer_set:
            if abs(msec_diff(key, raw.timer_key)) < TIMER_LAZY_DELAY:
                return
            self.del_timer(ev)
        raw.timer_key = key
        ev.timer_seq = seq = next(self._seq)
        heapq.heappush(self.heap, (msec_diff(key, self.base), seq, ev))
        raw.timer_set = 1
        self.live += 1

    def del_timer(self, ev: Event) -> None:
        """Cancel ``ev``'s timer. Imitates ngx_event_del_timer."""
        if ev.timer_seq < 0:
            return
        ev.timer_seq = -1
        ev.raw.timer_set = 0
        self.live -= 1
        if len(self.heap) > 2 * self.live + 64:
            self._compact()

    def _compact(self) -> None:
        self.heap = [entry for entry in self.heap if entry[2].timer_seq == entry[1]]
        heapq.heapify(self.heap)

    def _first(self) -> tuple[int, int, Event] | None:
        """The earliest live entry, dropping forgotten ones on the way."""
        heap = self.heap
        while heap:
            entry = heap[0]
            if entry[2].timer_seq == entry[1]:
                return entry
            heapq.heappop(heap)
        return None

    def find_timer(self) -> int:
        """Milliseconds until the earliest timer, 0 if due, TIMER_INFINITE if none.
        Imitates ngx_event_find_timer."""
        first = self._first()
        if first is None:
            return TIMER_INFINITE
        return max(0, msec_diff(first[2].raw.timer_key, self.cycle.current_msec))

    def expire_timers(self) -> None:
        """Run the handlers of every timer due now (``timedout`` set, ``timer_set``
        cleared), earliest first. Imitates ngx_event_expire_timers."""
        while (first := self._first()) is not None:
            ev = first[2]
            if msec_diff(ev.raw.timer_key, self.cycle.current_msec) > 0:
                return
            heapq.heappop(self.heap)
            ev.timer_seq = -1
            self.live -= 1
            ev.raw.timer_set = 0
            ev.raw.timedout = 1
            ev.handler(ev)

    def no_timers_left(self) -> bool:
        """True when every remaining timer is cancelable (graceful shutdown may end).
        Imitates ngx_event_no_timers_left."""
        return all(ev.raw.cancelable for _, seq, ev in self.heap if ev.timer_seq == seq)
