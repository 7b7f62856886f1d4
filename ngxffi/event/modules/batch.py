"""Handling a batch decided in C: shared by the modules whose events are epoll records.

The epoll module's wait and the io_uring module's completions both end in
``cy->event_list``, decided by ``ngxffi_epoll_decide`` (the body of
ngx_epoll_process_events' loop). What follows the decision is the same for both, and
lives here: calling the handlers in order and re-deciding the rest of the batch after
one that changed the pool or a registration, posting (POST_EVENTS), logging events
that were not ours, and the trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import length_hint
from typing import TYPE_CHECKING, Any

from ngxffi._ngx import ffi, lib
from ngxffi.core.log import ALERT, log_error
from ngxffi.event.posted import post_event
from ngxffi.event.trace import VERDICTS, TraceRecord

if TYPE_CHECKING:
    from ngxffi.event.cycle import Cycle

ACCEPT_QUEUE: int = lib.NGXFFI_ACCEPT_QUEUE
decide = lib.ngxffi_epoll_decide
unpack = ffi.unpack


class BatchDispatch:
    """What a module needs: ``cycle``, and the arrays ``event_list``, ``out`` and
    ``out_half`` that its init wired into the C cycle; ``WAIT_CALL`` and ``TAG_FIELD``
    name the call and the field for the log."""

    WAIT_CALL = "epoll_wait()"
    TAG_FIELD = "data.u64"
    cycle: Cycle
    event_list: Any  # struct epoll_event[]
    out: Any  # int32_t[]
    out_half: Any
    verdicts: Any  # uint8_t[]
    _on_change: Callable[[], None]  # self._changed, bound once
    resume: int
    codes: list[int]
    iterator: Iterator[int]

    def _dispatch(self, cycle: Cycle, k: int) -> None:
        """Call the handlers of a decided batch, in order.

        The loop does no per-event bookkeeping. Instead, whatever may change a
        verdict (get, free or close a connection, add or delete an event) calls
        ``cycle.on_change``, which is :meth:`_changed` while this runs: it cuts the
        rest of the list off, so that the loop ends when the current handler returns,
        and the rest of the batch is decided again from the next half-event.
        """
        handlers, events, out = cycle.handlers, cycle.events_by_code, self.out
        cycle.on_change = self._on_change
        try:
            while True:
                self.resume = -1
                self.codes = codes = unpack(out, k)
                self.iterator = iterator = iter(codes)
                for code in iterator:
                    handlers[code](events[code])
                if self.resume < 0:
                    return
                k = decide(cycle.raw, self.resume, 0, cycle.trace is not None)
        except BaseException:
            self._post_rest(cycle)
            raise
        finally:
            cycle.on_change = None

    def _next_half(self) -> int:
        """The half-event after the one whose handler is running (the list iterator
        knows how far it got: ``length_hint`` is what is left)."""
        position = len(self.codes) - length_hint(self.iterator)
        return int(self.out_half[position - 1]) + 1 if position else 0

    def _changed(self) -> None:
        """A handler changed the pool or a registration: stop the loop after it and
        resume deciding from the half-event after the current one."""
        if self.resume >= 0:
            return  # already cut; one re-decision after the handler is enough
        resume = self._next_half()
        if resume < 2 * self.cycle.raw.batch_n:
            del self.codes[len(self.codes) - length_hint(self.iterator) :]
            self.resume = resume

    def _post_rest(self, cycle: Cycle) -> None:
        """A handler raised: the events after it were already marked ready and, being
        edge-triggered, will not be reported again, so post them to posted_next (the
        next turn runs them without waiting) before the exception propagates."""
        resume = self.resume if self.resume >= 0 else self._next_half()
        if resume < 2 * cycle.raw.batch_n:
            k = decide(cycle.raw, resume, 0, cycle.trace is not None)
            events = cycle.events_by_code
            for code in unpack(self.out, k):
                post_event(events[code], cycle.posted_next_events)

    def _post(self, cycle: Cycle, k: int) -> None:
        """POST_EVENTS: no handler runs during the batch, so one decision stands."""
        events = cycle.events_by_code
        for code in unpack(self.out, k):
            if code & ACCEPT_QUEUE:
                post_event(events[code & ~ACCEPT_QUEUE], cycle.posted_accept_events)
            else:
                post_event(events[code], cycle.posted_events)

    def _log_invalid(self, cycle: Cycle) -> None:
        for i in range(cycle.raw.batch_n):
            tag = self.event_list[i].data.u64
            if lib.ngxffi_tag_slot(cycle.raw, tag) < 0:
                log_error(
                    ALERT,
                    f"{self.WAIT_CALL} returned an event with an invalid "
                    f"{self.TAG_FIELD} {tag:#x} "
                    f"(events {self.event_list[i].events:#x}), skipped",
                )

    def _report(self, cycle: Cycle) -> None:
        assert cycle.trace is not None
        for i in range(cycle.raw.batch_n):
            tag = int(self.event_list[i].data.u64)
            slot = lib.ngxffi_tag_slot(cycle.raw, tag)
            cycle.trace(
                TraceRecord(
                    position=i,
                    data=tag,
                    fd=None,
                    slot=slot if slot >= 0 else None,
                    instance=tag & 1 if slot >= 0 else None,
                    revents=int(self.event_list[i].events),
                    read=VERDICTS[self.verdicts[2 * i]],
                    write=VERDICTS[self.verdicts[2 * i + 1]],
                )
            )
