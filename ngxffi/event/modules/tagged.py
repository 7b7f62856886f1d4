"""What the epoll and io_uring modules share: epoll_ctl's contract, tags, notify.

Both modules register a connection's two events with one request whose mask holds
both sides (``EPOLLIN|EPOLLRDHUP`` for reading, ``EPOLLOUT`` for writing) and whose
tag is the tagged pointer ``address(c) | ev.instance``; both wake the loop through an
eventfd watched like a connection. So ngx_epoll_add_event, ngx_epoll_del_event,
ngx_epoll_add_connection, ngx_epoll_del_connection, ngx_epoll_notify and
ngx_epoll_process_events are written once, here, over a ``_ctl`` with epoll_ctl's
contract (EEXIST, ENOENT, EINVAL) and a C ``_process`` that waits and decides; each
module supplies those and what closing an fd needs (``_closing``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ngxffi import os as nos
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
    Event,
    EventActions,
    Handler,
    no_handler,
    wait_result,
)
from ngxffi.event.modules.batch import BatchDispatch

if TYPE_CHECKING:
    from ngxffi.event.connection import Connection
    from ngxffi.event.cycle import Cycle

EPOLLIN_RDHUP: int = lib.EPOLLIN | lib.EPOLLRDHUP
BATCH_INVALID: int = lib.NGXFFI_BATCH_INVALID
_MAX_UINT32 = 0xFFFFFFFF


class TaggedModule(BatchDispatch):
    """The shared actions; ``events`` is the size of the event list."""

    name: str
    flags: int
    CTL_CALL = "epoll_ctl"
    _process: Callable[[Any, int, int, int], int]  # ngxffi_epoll_process's shape

    def __init__(self, cycle: Cycle, events: int) -> None:
        if not 1 <= events <= lib.NGXFFI_EVENTS_MAX:  # counts stay below the flags
            raise ValueError(
                f"{self.name} events must be from 1 to {lib.NGXFFI_EVENTS_MAX}, "
                f"not {events}"
            )
        self.cycle = cycle
        self.nevents = events
        self.notify_fd = -1
        self.opened = False
        self.use_epoll_rdhup = False
        self.notify_handler: Handler = no_handler
        self._on_change = self._changed  # bound once: installed on every batch

    # --- init / done: the module's kernel object around these ------------------------

    def init(self, cycle: Cycle) -> None:
        """Open the kernel objects, the event list, notify; install the actions.
        Nothing is left behind when one of them fails."""
        try:
            self._open(cycle)
            self._arrays(cycle)
            self._notify_init(cycle)
        except BaseException:
            self.done(cycle)
            raise
        self.opened = True
        cycle.event_flags = self.flags
        self.actions = cycle.actions = EventActions.of(
            self, self.add_conn, self.del_conn, self.notify
        )

    def _open(self, cycle: Cycle) -> None:
        raise NotImplementedError

    def _arrays(self, cycle: Cycle) -> None:
        """The event list and the decision's outputs, owned here and pointed to by
        the C cycle state for the per-batch calls."""
        n = self.nevents
        self.event_list = ffi.new("struct epoll_event[]", n)
        self.out = ffi.new("int32_t[]", 2 * n)
        self.out_half = ffi.new("int32_t[]", 2 * n)
        self.verdicts = ffi.new("uint8_t[]", 2 * n)
        raw = cycle.raw
        raw.nevents = n
        raw.event_list, raw.out, raw.out_half = self.event_list, self.out, self.out_half
        raw.verdicts = self.verdicts

    def done(self, cycle: Cycle) -> None:
        """Forget the notify connection and close the eventfd (the module closes
        its own object first)."""
        self.opened = False
        cycle.raw.notify = ffi.NULL
        cycle.raw.batch_n = 0
        if self.notify_fd >= 0:
            nos.close(self.notify_fd)
        self.notify_fd = -1

    # --- notify ---------------------------------------------------------------------

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
        self._ctl_raw(lib.EPOLL_CTL_ADD, conn, lib.EPOLLIN | lib.EPOLLET, 0)

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

    def _ctl_raw(self, op: int, c: Any, events: int, instance: int) -> None:
        """The module's epoll_ctl on a C connection; -1 and errno on failure."""
        raise NotImplementedError

    def _ctl(self, op: int, c: Connection, events: int, instance: int) -> None:
        self._ctl_raw(op, c.raw, events, instance)

    def _closing(self, c: Connection) -> None:
        """c's fd is about to be closed (CLOSE_EVENT)."""

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
        c = ev.data
        if flags & CLOSE_EVENT:
            self._closing(c)
            ev.raw.active = 0
            self._touch()
            return
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
        if flags & CLOSE_EVENT:
            self._closing(c)
        else:
            self._ctl(lib.EPOLL_CTL_DEL, c, 0, 0)
        c.read.raw.active = 0
        c.write.raw.active = 0
        self._touch()

    # --- process_events -------------------------------------------------------------

    def process_events(self, cycle: Cycle, timer: int, flags: int) -> int:
        """Wait up to ``timer`` ms and handle what the kernel returns: call the handlers
        inline, or post them (accept events to their own queue) with POST_EVENTS.
        Imitates ngx_epoll_process_events; see the module docstrings for how."""
        if not self.opened:
            raise ValueError("process_events() on a closed cycle")
        if cycle.on_change is not None:
            raise RuntimeError("process_events() called from a handler")
        if timer > TIMER_MAX:
            timer = TIMER_MAX  # the waits take an int
        raw = cycle.raw
        post = flags & POST_EVENTS
        k = self._process(raw, timer, post, cycle.trace is not None)
        err = ffi.errno if k == -1 else 0
        if flags & UPDATE_TIME or cycle.timer_alarm:
            cycle.time_update()
        if k > 0:
            k = self._batch_flags(cycle, k)
        if k <= 0 and raw.batch_n == 0:
            return wait_result(cycle, self.WAIT_CALL, timer, err)
        if post:
            self._post(cycle, k)
        elif k:
            self._dispatch(cycle, k)
        if cycle.trace is not None:
            self._report(cycle)
        return OK

    def _batch_flags(self, cycle: Cycle, k: int) -> int:
        """Act on the flags the C call adds to the count, and strip them."""
        if k & BATCH_INVALID:
            self._log_invalid(cycle)
        return k & ~BATCH_INVALID
