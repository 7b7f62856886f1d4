"""Events, the event-actions table and one turn of the loop (≈ src/event/ngx_event.c).

An ``Event`` is the Python face of one C ``ngx_event_t``. Its ``handler`` is a plain
Python callable called as ``ev.handler(ev)``, the way nginx code reads; the proxies are
made once per slot when the cycle starts, so dispatching allocates no wrapper objects.

``EventActions`` is ``ngx_event_actions_t``: the chosen event module's ``init`` installs
one on the cycle, and everything else calls through it (``cycle.actions.add(…)``), as
nginx's ``ngx_add_event`` and friends are macros over ``ngx_event_actions``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ngxffi._ngx import ffi, lib
from ngxffi.core.cfield import cfield
from ngxffi.core.log import ALERT, INFO, log_error
from ngxffi.event.posted import event_move_posted_next, event_process_posted
from ngxffi.event.timer import TIMER_INFINITE

if TYPE_CHECKING:
    from ngxffi.event.connection import Connection
    from ngxffi.event.cycle import Cycle

# ngx_add_event's `event` argument: the epoll masks, as nginx defines them when built
# with epoll; the poll module translates them to POLLIN/POLLOUT as nginx's does.
READ_EVENT: int = lib.EPOLLIN | lib.EPOLLRDHUP
WRITE_EVENT: int = lib.EPOLLOUT

# ngx_add_event's `flags` argument (src/event/ngx_event.h, epoll build).
LEVEL_EVENT = 0
CLEAR_EVENT: int = lib.EPOLLET
ONESHOT_EVENT: int = lib.EPOLLONESHOT
EXCLUSIVE_EVENT: int = lib.EPOLLEXCLUSIVE
CLOSE_EVENT = 1  # ngx_del_event: the fd is about to be closed, skip the syscall
DISABLE_EVENT = 2

# What an event module can do (ngx_event_flags).
USE_LEVEL_EVENT = 0x0001
USE_CLEAR_EVENT = 0x0004
USE_GREEDY_EVENT = 0x0020
USE_EPOLL_EVENT = 0x0040
USE_FD_EVENT = 0x0400

# process_events flags.
UPDATE_TIME = 1
POST_EVENTS = 2

TIMER_MAX = 0x7FFFFFFF  # the longest wait epoll_wait and poll take (an int of ms)
OK = 0
ERROR = -1

Handler = Callable[["Event"], object]


def no_handler(ev: Event) -> None:
    """Installed by get_connection: nginx zeroes the handler pointer, which would crash
    if called; here a missing handler is an alert instead."""
    log_error(ALERT, f"event without a handler on {ev.data!r}")


class Event:
    """One C ``ngx_event_t`` with its Python handler.

    ``data`` is the owning ``Connection`` for pool events (nginx's ``ev->data``);
    ``code`` is ``slot * 2 + write`` for pool events (and for the event module's
    static connection right after the pool), -1 for standalone ones. An event with a
    code is listed in ``cycle.events_by_code`` and its handler in ``cycle.handlers``,
    the two tables the dispatch loop indexes.
    """

    __slots__ = ("_handler", "code", "cycle", "data", "posted_in", "raw", "timer_entry")

    def __init__(
        self,
        cycle: Cycle,
        raw: Any,
        code: int = -1,
        data: Any = None,
        handler: Handler = no_handler,
    ) -> None:
        self.cycle = cycle
        self.raw = raw
        self.code = code
        self.data = data
        self.posted_in: Any = None  # the PostedQueue holding it, while posted
        self.timer_entry = -1  # identifies its live entry in the timer heap
        if code >= 0:
            cycle.events_by_code[code] = self
        self.handler = handler

    @property
    def handler(self) -> Handler:
        """The callable run as ``ev.handler(ev)`` (nginx's ``ev->handler``)."""
        return self._handler

    @handler.setter
    def handler(self, handler: Handler) -> None:
        self._handler = handler
        if self.code >= 0:
            self.cycle.handlers[self.code] = handler

    @classmethod
    def standalone(cls, cycle: Cycle, handler: Handler, data: Any = None) -> Event:
        """An event outside the pool, for timers and posting (nginx's static
        ``ngx_event_t`` variables). It owns its C struct."""
        return cls(cycle, ffi.new("ngx_event_t *"), data=data, handler=handler)

    def set_c_handler(self, handler: Any, ctx: Any) -> None:
        """Have the epoll module call ``handler`` (an ``ngxffi_c_handler_pt``) with
        ``ctx`` for this read event inside the batch, before the Python handler,
        which then runs only if it returns 0. Beyond nginx (see
        :mod:`ngxffi.event.modules.epoll`); ``ctx`` must stay alive while set."""
        raw = self.raw
        raw.c_handler = handler
        raw.c_ctx = ctx

    def clear_c_handler(self) -> None:
        """Only the Python handler from now on."""
        self.raw.c_handler = ffi.NULL

    def __repr__(self) -> str:
        side = "write" if self.raw.write else "read"
        return f"<Event {side} of {self.data!r}>"

    write = cfield("ngx_event_t", "write")
    accept = cfield("ngx_event_t", "accept")
    instance = cfield("ngx_event_t", "instance")
    active = cfield("ngx_event_t", "active")
    disabled = cfield("ngx_event_t", "disabled")
    ready = cfield("ngx_event_t", "ready")
    oneshot = cfield("ngx_event_t", "oneshot")
    eof = cfield("ngx_event_t", "eof")
    error = cfield("ngx_event_t", "error")
    timedout = cfield("ngx_event_t", "timedout")
    timer_set = cfield("ngx_event_t", "timer_set")
    delayed = cfield("ngx_event_t", "delayed")
    deferred_accept = cfield("ngx_event_t", "deferred_accept")
    pending_eof = cfield("ngx_event_t", "pending_eof")
    posted = cfield("ngx_event_t", "posted")
    closed = cfield("ngx_event_t", "closed")
    cancelable = cfield("ngx_event_t", "cancelable")
    available = cfield("ngx_event_t", "available")
    index = cfield("ngx_event_t", "index")


@dataclass(slots=True)
class EventActions:
    """``ngx_event_actions_t``. Failing actions log nginx's alert and raise OSError.

    ``add_conn``, ``del_conn`` and ``notify`` are None for methods without them (poll),
    as the C pointers are NULL in nginx.
    """

    add: Callable[[Event, int, int], None]
    delete: Callable[[Event, int, int], None]
    enable: Callable[[Event, int, int], None]
    disable: Callable[[Event, int, int], None]
    add_conn: Callable[[Connection], None] | None
    del_conn: Callable[[Connection, int], None] | None
    notify: Callable[[Handler], None] | None
    process_events: Callable[[Cycle, int, int], int]
    init: Callable[[Cycle], None]
    done: Callable[[Cycle], None]

    @property
    def del_(self) -> Callable[[Event, int, int], None]:
        """nginx's name (``del`` is a Python keyword)."""
        return self.delete

    @classmethod
    def of(
        cls,
        module: ModuleActions,
        add_conn: Callable[[Connection], None] | None = None,
        del_conn: Callable[[Connection, int], None] | None = None,
        notify: Callable[[Handler], None] | None = None,
    ) -> EventActions:
        """The table of ``module``'s methods, its add and delete doubling as enable
        and disable, as in both of nginx's Linux modules (ngx_epoll_module_ctx,
        ngx_poll_module_ctx)."""
        add, delete = module.add, module.delete
        return cls(
            add=add,
            delete=delete,
            enable=add,
            disable=delete,
            add_conn=add_conn,
            del_conn=del_conn,
            notify=notify,
            process_events=module.process_events,
            init=module.init,
            done=module.done,
        )


class ModuleActions(Protocol):
    """The actions every event module has (:meth:`EventActions.of`)."""

    def add(self, ev: Event, event: int, flags: int) -> None: ...
    def delete(self, ev: Event, event: int, flags: int) -> None: ...
    def process_events(self, cycle: Cycle, timer: int, flags: int) -> int: ...
    def init(self, cycle: Cycle) -> None: ...
    def done(self, cycle: Cycle) -> None: ...


class AcceptMutex(Protocol):
    """What process_events_and_timers needs of an accept mutex (ngx_accept_mutex and
    ngx_trylock_accept_mutex); the process layer provides the shared-memory one."""

    held: bool

    def trylock(self, cycle: Cycle) -> int:
        """Try to take the lock (and enable or disable accept events); OK or ERROR."""

    def unlock(self) -> None:
        """Release the lock."""


def handle_read_event(rev: Event, flags: int = 0) -> None:
    """Make sure a read event will be reported. Imitates ngx_handle_read_event:
    edge-triggered methods add it once (when neither active nor ready) and never remove
    it; level-triggered ones also remove it while it is ready, so that it does not
    fire again before the handler has consumed the data (or, with CLOSE_EVENT in
    ``flags``, because the connection is about to close)."""
    _handle_event(rev, READ_EVENT, flags & CLOSE_EVENT)


def handle_write_event(wev: Event) -> None:
    """The write-side twin of :func:`handle_read_event`. Imitates
    ngx_handle_write_event. Differs: no ``lowat`` (Linux cannot set SO_SNDLOWAT)."""
    _handle_event(wev, WRITE_EVENT, 0)


def _handle_event(ev: Event, event: int, close: int) -> None:
    cycle = ev.cycle
    raw = ev.raw
    if cycle.event_flags & USE_CLEAR_EVENT:
        if not raw.active and not raw.ready:
            cycle.actions.add(ev, event, CLEAR_EVENT)
        return
    if cycle.event_flags & USE_LEVEL_EVENT:
        if not raw.active and not raw.ready:
            cycle.actions.add(ev, event, LEVEL_EVENT)
        elif raw.active and (raw.ready or close):
            cycle.actions.delete(ev, event, LEVEL_EVENT | close)


def wait_result(cycle: Cycle, call: str, timer: int, err: int) -> int:
    """nginx's verdict on a wait (epoll_wait, poll) that failed or returned nothing:
    EINTR is INFO, or OK when it was the timer_resolution alarm; other errors ALERT;
    no events is OK after a timeout and an ALERT after an infinite wait. Shared by the
    event modules (ngx_epoll_process_events, ngx_poll_process_events)."""
    if err:
        if err == lib.EINTR:
            if cycle.timer_alarm:
                cycle.timer_alarm = False
                return OK
            level = INFO
        else:
            level = ALERT
        log_error(level, f"{call} failed", err)
        return ERROR
    if timer != TIMER_INFINITE:
        return OK
    log_error(ALERT, f"{call} returned no events without timeout")
    return ERROR


def process_events_and_timers(cycle: Cycle) -> None:
    """One turn of the event loop. Imitates ngx_process_events_and_timers, step by step:
    the wait is the time to the nearest timer (or infinite with timer_resolution);
    the accept mutex, when in use, either makes this turn post its events or caps the
    wait at accept_mutex_delay; posted_next events make the wait 0; then
    process_events, the posted accept events, the mutex released, the timers expired,
    and the posted events."""
    if cycle.timer_resolution:
        timer, flags = TIMER_INFINITE, 0
    else:
        timer, flags = cycle.timers.find_timer(), UPDATE_TIME

    if cycle.accept_mutex is not None:
        if cycle.accept_disabled > 0:
            cycle.accept_disabled -= 1
        else:
            if cycle.accept_mutex.trylock(cycle) == ERROR:
                return
            if cycle.accept_mutex.held:
                flags |= POST_EVENTS
            elif timer == TIMER_INFINITE or timer > cycle.accept_mutex_delay:
                timer = cycle.accept_mutex_delay

    if cycle.posted_next_events:
        event_move_posted_next(cycle)
        timer = 0

    cycle.actions.process_events(cycle, timer, flags)

    event_process_posted(cycle, cycle.posted_accept_events)

    if cycle.accept_mutex is not None and cycle.accept_mutex.held:
        cycle.accept_mutex.unlock()

    cycle.timers.expire_timers()

    event_process_posted(cycle, cycle.posted_events)
