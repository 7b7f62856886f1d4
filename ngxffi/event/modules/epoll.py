"""The epoll event module (≈ src/event/modules/ngx_epoll_module.c).

A table of small actions over one epoll instance:

* ``add``: ``EPOLL_CTL_MOD`` with both masks when the connection's other event is
  already active, else ``EPOLL_CTL_ADD``; ``data.u64`` is the tagged pointer
  ``address(c) | ev.instance``. ``delete`` mirrors it (MOD down to the other mask, or
  DEL); with CLOSE_EVENT it only clears ``active``, because closing the fd removes the
  registration — unless the file description is shared (the dup trap, explained at
  :func:`ngxffi.event.accept.close_listening_sockets`), which is why listening
  sockets are deleted for real.
* ``add_conn``: one ``EPOLL_CTL_ADD`` of ``EPOLLIN|EPOLLOUT|EPOLLET|EPOLLRDHUP``.
* ``notify``: an eventfd registered edge-triggered with a static connection outside the
  pool, so another thread can wake the loop.
* ``process_events``: ``epoll_wait`` (``epoll_pwait2``, the same wait with a
  timespec, where the kernel has it: a deliberate difference that changes nothing
  for nginx's millisecond timers, kept so that one C wait serves the selector too),
  then nginx's loop body per event. The wait and
  the decoding and stale checks of the whole batch run in one C call
  (``ngxffi_epoll_process``), which also refuses any ``data.u64`` that is not exactly
  one of this cycle's slots (or the notify connection): such a value is counted,
  logged at alert level, and never dereferenced. Python then calls the handlers in
  order. When a handler changes the pool or a registration (a close, a reuse, an add
  or a delete: ``cycle.on_change``), the rest of the batch is decided again after it
  returns, so the stale checks happen exactly where nginx makes them — including the
  write side's re-check after the read handler.

A handler that raises does not lose the rest of its batch: those events, already
marked ready and edge-triggered, are posted to ``posted_next`` before the exception
propagates, so the next turn runs them without waiting. ``process_events`` refuses to
run on a closed cycle (ValueError) or from inside a handler (RuntimeError), and caps
the wait at INT_MAX ms.

Deliberate differences: ``ready``, ``available`` and ``pending_eof`` of the events later
in a batch are set when the batch is decided, before the earlier handlers run; nginx
sets them just before each handler. A handler that clears another connection's
``ready`` in the same batch therefore sees it stay cleared (nginx would set it again
and the handler would read EAGAIN). ``strong_tags`` (off by default) adds the
connection's 16-bit generation above the 48 address bits, which closes the hole of
nginx's single instance bit: a slot closed and reused twice within one batch flips the
bit back and passes nginx's check, but not the generation's.
"""

from __future__ import annotations

from operator import length_hint
from typing import TYPE_CHECKING

from ngxffi import os as nos
from ngxffi import probe
from ngxffi._ngx import ffi, lib
from ngxffi.core.log import ALERT, log_error
from ngxffi.event.event import (
    CLOSE_EVENT,
    EXCLUSIVE_EVENT,
    OK,
    POST_EVENTS,
    READ_EVENT,
    TIMER_MAX,
    UPDATE_TIME,
    USE_CLEAR_EVENT,
    USE_EPOLL_EVENT,
    USE_GREEDY_EVENT,
    Event,
    EventActions,
    Handler,
    no_handler,
    wait_result,
)
from ngxffi.event.posted import post_event
from ngxffi.event.trace import VERDICTS, TraceRecord

if TYPE_CHECKING:
    from ngxffi.event.connection import Connection
    from ngxffi.event.cycle import Cycle

EPOLLIN_RDHUP: int = lib.EPOLLIN | lib.EPOLLRDHUP
ACCEPT_QUEUE: int = lib.NGXFFI_ACCEPT_QUEUE
BATCH_INVALID: int = lib.NGXFFI_BATCH_INVALID
decide = lib.ngxffi_epoll_decide
unpack = ffi.unpack
_MAX_UINT32 = 0xFFFFFFFF


class EpollModule:
    """ngx_epoll_module for one cycle; ``events`` is the size of the event list."""

    name = "epoll"
    flags = USE_CLEAR_EVENT | USE_GREEDY_EVENT | USE_EPOLL_EVENT

    def __init__(self, cycle: Cycle, events: int) -> None:
        if not 1 <= events <= lib.NGXFFI_EVENTS_MAX:  # counts stay below the flags
            raise ValueError(
                f"epoll events must be from 1 to {lib.NGXFFI_EVENTS_MAX}, not {events}"
            )
        self.cycle = cycle
        self.nevents = events
        self.ep = -1
        self.notify_fd = -1
        self.use_epoll_rdhup = False
        self.notify_handler: Handler = no_handler
        self._on_change = self._changed  # bound once: installed on every batch

    # --- init / done ------------------------------------------------------------------

    def init(self, cycle: Cycle) -> None:
        """Create the epoll instance and event list, probe EPOLLRDHUP, set up notify,
        install the actions. Imitates ngx_epoll_init."""
        try:
            self._init(cycle)
        except BaseException:
            self.done(cycle)  # no epoll fd or eventfd left behind
            raise

    def _init(self, cycle: Cycle) -> None:
        self.ep = nos.epoll_create1()
        n = self.nevents
        # owned here, pointed to by the C cycle state for the per-batch calls
        self.event_list = ffi.new("struct epoll_event[]", n)
        self.out = ffi.new("int32_t[]", 2 * n)
        self.out_half = ffi.new("int32_t[]", 2 * n)
        self.verdicts = ffi.new("uint8_t[]", 2 * n)
        raw = cycle.raw
        raw.ep, raw.nevents = self.ep, n
        raw.event_list, raw.out, raw.out_half = self.event_list, self.out, self.out_half
        raw.verdicts = self.verdicts
        self.use_epoll_rdhup = probe.epoll_rdhup()
        self._notify_init(cycle)
        cycle.event_flags = self.flags
        self.actions = cycle.actions = EventActions.of(
            self, self.add_conn, self.del_conn, self.notify
        )

    def _notify_init(self, cycle: Cycle) -> None:
        """Imitates ngx_epoll_notify_init: an eventfd, a static connection and its read
        event outside the pool, registered EPOLLIN|EPOLLET. The static structs get the
        codes after the pool's, so the dispatch table finds them."""
        self.notify_fd = nos.eventfd(0, lib.EFD_NONBLOCK | lib.EFD_CLOEXEC)
        conn = self._notify_conn = ffi.new("ngx_connection_t *")
        rev = self._notify_rev = ffi.new("ngx_event_t *")
        wev = self._notify_wev = ffi.new(
            "ngx_event_t *"
        )  # nginx has none; never active
        conn.fd = self.notify_fd
        conn.read, conn.write = rev, wev
        rev.data = wev.data = conn
        rev.active = 1
        wev.write = 1
        cycle.raw.notify = conn
        if not lib.ngxffi_tag_fits(cycle.raw):
            cycle.raw.notify = ffi.NULL
            raise ValueError(
                "strong_tags: the notify connection's address does not fit in the "
                f"{lib.NGXFFI_TAG_ADDRESS_BITS} address bits a tag leaves"
            )
        code = 2 * cycle.connection_n
        self.notify_event = Event(cycle, rev, code, None, self._notify_handler)
        Event(cycle, wev, code + 1)  # listed in cycle.events_by_code; never active
        self._one = ffi.new("uint64_t *", 1)
        self._count = ffi.new("uint64_t *")
        if (
            lib.ngxffi_epoll_ctl(
                cycle.raw,
                self.ep,
                lib.EPOLL_CTL_ADD,
                conn,
                lib.EPOLLIN | lib.EPOLLET,
                0,
            )
            == -1
        ):
            raise self._fail(f"epoll_ctl(EPOLL_CTL_ADD, {self.notify_fd})")

    def done(self, cycle: Cycle) -> None:
        """Close the epoll instance and the eventfd. Imitates ngx_epoll_done."""
        cycle.raw.notify = ffi.NULL
        cycle.raw.ep = -1
        cycle.raw.batch_n = 0
        for fd in (self.ep, self.notify_fd):
            if fd >= 0:
                nos.close(fd)
        self.ep = self.notify_fd = -1

    # --- notify ---------------------------------------------------------------------

    # The eventfd is written and read with the raw calls, not the fault-injection
    # wrappers: an eventfd takes 8 bytes or nothing (a short write is EINVAL), so a
    # write or read rule meant for connections would only break the wake-up, and
    # notify runs in signal handlers (worker.py), where nothing may raise.

    def notify(self, handler: Handler) -> None:
        """Wake the loop from any thread; it then calls ``handler(notify_event)``.
        Imitates ngx_epoll_notify: a failed write is logged at alert (nginx returns
        NGX_ERROR, which its callers do not act on), never raised."""
        self.notify_handler = handler
        if lib.write(self.notify_fd, self._one, 8) != 8:
            log_error(ALERT, f"write() to eventfd {self.notify_fd} failed", ffi.errno)

    def _notify_handler(self, ev: Event) -> None:
        """Imitates ngx_epoll_notify_handler: the eventfd is edge-triggered, so its
        counter is read (reset) only every 2**32 notifications, not every time."""
        ev.raw.index += 1
        if ev.raw.index == _MAX_UINT32:
            ev.raw.index = 0
            if lib.read(self.notify_fd, self._count, 8) != 8:
                log_error(ALERT, f"read() eventfd {self.notify_fd} failed", ffi.errno)
        self.notify_handler(ev)

    # --- actions --------------------------------------------------------------------

    def _touch(self) -> None:
        if self.cycle.on_change is not None:
            self.cycle.on_change()

    def _fail(self, call: str) -> OSError:
        err = ffi.errno
        log_error(ALERT, f"{call} failed", err)
        return nos.error(call, err)

    def _ctl(self, op: int, c: Connection, events: int, instance: int) -> None:
        if (
            lib.ngxffi_epoll_ctl(self.cycle.raw, self.ep, op, c.raw, events, instance)
            == -1
        ):
            raise self._fail(f"epoll_ctl({op}, {c.raw.fd})")

    def add(self, ev: Event, event: int, flags: int) -> None:
        """Register ``ev``'s interest. Imitates ngx_epoll_add_event.

        EPOLLEXCLUSIVE (``EXCLUSIVE_EVENT``, for listeners shared by workers): the
        kernel takes it only with EPOLL_CTL_ADD and only beside EPOLLIN, EPOLLOUT,
        EPOLLET and EPOLLWAKEUP (EINVAL otherwise, and for a MOD of an exclusive
        registration). So it goes without EPOLLRDHUP, and moving a listener behind
        the others is a DEL and a new ADD (event.accept._reorder_accept_events)."""
        c = ev.data
        if event == READ_EVENT:
            other, prev, events = c.write, lib.EPOLLOUT, EPOLLIN_RDHUP
        else:
            other, prev, events = c.read, EPOLLIN_RDHUP, lib.EPOLLOUT
        if other.raw.active:
            op = lib.EPOLL_CTL_MOD
            events |= prev
        else:
            op = lib.EPOLL_CTL_ADD
        if flags & EXCLUSIVE_EVENT:
            events &= ~lib.EPOLLRDHUP  # EPOLLEXCLUSIVE's rule: see the docstring
        self._ctl(op, c, events | flags, ev.raw.instance)
        ev.raw.active = 1
        self._touch()

    def delete(self, ev: Event, event: int, flags: int) -> None:
        """Drop ``ev``'s interest. Imitates ngx_epoll_del_event: CLOSE_EVENT only clears
        ``active`` (the close removes the registration)."""
        if flags & CLOSE_EVENT:
            ev.raw.active = 0
            self._touch()
            return
        c = ev.data
        if event == READ_EVENT:
            other, prev = c.write, lib.EPOLLOUT
        else:
            other, prev = c.read, EPOLLIN_RDHUP
        if other.raw.active:
            self._ctl(lib.EPOLL_CTL_MOD, c, prev | flags, ev.raw.instance)
        else:
            self._ctl(lib.EPOLL_CTL_DEL, c, 0, 0)
        ev.raw.active = 0
        self._touch()

    def add_conn(self, c: Connection) -> None:
        """Register both events edge-triggered in one call. Imitates
        ngx_epoll_add_connection."""
        events = lib.EPOLLIN | lib.EPOLLOUT | lib.EPOLLET | lib.EPOLLRDHUP
        self._ctl(lib.EPOLL_CTL_ADD, c, events, c.read.raw.instance)
        c.read.raw.active = 1
        c.write.raw.active = 1
        self._touch()

    def del_conn(self, c: Connection, flags: int) -> None:
        """Imitates ngx_epoll_del_connection (CLOSE_EVENT: no syscall)."""
        if not flags & CLOSE_EVENT:
            self._ctl(lib.EPOLL_CTL_DEL, c, 0, 0)
        c.read.raw.active = 0
        c.write.raw.active = 0
        self._touch()

    # --- process_events -------------------------------------------------------------

    def process_events(self, cycle: Cycle, timer: int, flags: int) -> int:
        """Wait up to ``timer`` ms and handle what the kernel returns: call the handlers
        inline, or post them (accept events to their own queue) with POST_EVENTS.
        Imitates ngx_epoll_process_events; see the module docstring for how."""
        if self.ep < 0:
            raise ValueError("process_events() on a closed cycle")
        if cycle.on_change is not None:
            raise RuntimeError("process_events() called from a handler")
        if timer > TIMER_MAX:
            timer = TIMER_MAX  # epoll_wait takes an int
        raw = cycle.raw
        post = flags & POST_EVENTS
        k = lib.ngxffi_epoll_process(raw, timer, post, cycle.trace is not None)
        err = ffi.errno if k == -1 else 0
        if flags & UPDATE_TIME or cycle.timer_alarm:
            cycle.time_update()
        if k <= 0 and raw.batch_n == 0:
            return wait_result(cycle, "epoll_wait()", timer, err)
        if k & BATCH_INVALID:
            k &= ~BATCH_INVALID
            self._log_invalid(cycle)
        if post:
            self._post(cycle, k)
        elif k:
            self._dispatch(cycle, k)
        if cycle.trace is not None:
            self._report(cycle)
        return OK

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
        for code in ffi.unpack(self.out, k):
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
                    f"epoll_wait() returned an event with an invalid "
                    f"data.u64 {tag:#x} (events {self.event_list[i].events:#x}), "
                    "skipped",
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
