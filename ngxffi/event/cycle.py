"""The cycle: one event loop's connection pool, clock, timers, queues and event module.

≈ the parts of nginx's ``ngx_cycle_t`` the event core uses, with the pool functions of
src/core/ngx_connection.c (get/free/close/reusable connection, drain) and the set-up of
``ngx_event_process_init``. The pool is three C arrays, one allocation each, kept alive
by the cycle: ``connections``, ``read_events``, ``write_events``; slot ``i`` of each
belongs together for the cycle's whole life. The free list is threaded through the C
``data`` field of free connections, in nginx's order.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ngxffi._ngx import ffi, lib
from ngxffi.core.log import ALERT, CRIT, ERR, INFO, WARN, log_error
from ngxffi.core.times import MSEC_MASK, monotonic_msec
from ngxffi.event.conf import EventConf
from ngxffi.event.connection import Connection
from ngxffi.event.event import (
    CLOSE_EVENT,
    READ_EVENT,
    WRITE_EVENT,
    AcceptMutex,
    Event,
    EventActions,
    no_handler,
)
from ngxffi.event.listening import Listening
from ngxffi.event.modules import MODULES, EventModule
from ngxffi.event.posted import PostedQueue, delete_posted_event
from ngxffi.event.stats import Stats
from ngxffi.event.timer import EventTimers
from ngxffi.event.trace import Trace, log_trace

# c->log_error values (ngx_connection_log_error_e) that ngx_close_connection reads.
ERROR_ERR, ERROR_INFO = 1, 2


def check_tag_address(raw: Any) -> None:
    """Refuse strong tags when the connections of cycle state ``raw`` lie above the
    address bits a tag leaves below the generation (NGXFFI_TAG_ADDRESS_BITS): with
    pointer tagging or 5-level paging every event would be dropped as not ours."""
    if not lib.ngxffi_tag_fits(raw):
        address = int(ffi.cast("uintptr_t", raw.connections))
        raise ValueError(
            f"strong_tags: the connections at {address:#x} do not fit in the "
            f"{lib.NGXFFI_TAG_ADDRESS_BITS} address bits a tag leaves below the "
            "generation (pointer tagging or 5-level paging?); run without strong_tags"
        )


class Cycle:
    """An event loop's world. ``Cycle(connection_n=512, use="epoll")``.

    ``use`` picks the event module (``"epoll"`` or ``"poll"``), whose ``init``
    installs ``self.actions``. ``strong_tags`` adds a generation counter to epoll's
    tagged pointers (see :mod:`ngxffi.event.modules.epoll`). ``timer_resolution``
    (ms, main thread only) updates the clock from a SIGALRM interval timer instead of
    after every wait, as nginx's directive does. ``trace`` is True (log) or a callable
    receiving :class:`~ngxffi.event.trace.TraceRecord`. ``clock_offset`` shifts the
    millisecond clock (tests start it just before the 64-bit wrap).
    """

    def __init__(
        self,
        connection_n: int = EventConf.worker_connections,
        use: str = EventConf.use,
        *,
        events: int = 512,
        strong_tags: bool = False,
        timer_resolution: int = 0,
        trace: bool | Trace | None = None,
        clock_offset: int = 0,
        stats: Stats | None = None,
    ) -> None:
        if not 1 <= connection_n <= lib.NGXFFI_CONNECTIONS_MAX:
            raise ValueError(
                f"connection_n must be from 1 to {lib.NGXFFI_CONNECTIONS_MAX} "
                f"(the epoll module's codes and flags share 31 bits), "
                f"not {connection_n}"
            )
        if use not in MODULES:
            raise ValueError(
                f"unknown event method {use!r}; use one of {sorted(MODULES)}"
            )
        self.connection_n = connection_n
        self.clock_offset = clock_offset
        self.current_msec = monotonic_msec(clock_offset)
        self._allocate(connection_n, strong_tags)

        # Set by an event module while it calls handlers inline; called whenever a
        # slot's fd, instance or active bits change (see EpollModule._dispatch).
        self.on_change: Callable[[], None] | None = None
        self.files: list[Connection | None] | None = None  # fd -> connection (poll)
        self.connections_reuse_time = 0
        self.timers = EventTimers(self)
        self.posted_accept_events = PostedQueue("posted_accept_events")
        self.posted_events = PostedQueue("posted_events")
        self.posted_next_events = PostedQueue("posted_next_events")
        self.trace: Trace | None = log_trace if trace is True else (trace or None)
        self.accept_mutex: AcceptMutex | None = None
        self.accept_disabled = 0
        self.accept_mutex_delay = EventConf.accept_mutex_delay  # ms
        self.multi_accept = EventConf.multi_accept
        self.use_exclusive_accept = False  # listeners shared with EPOLLEXCLUSIVE
        self.listening: list[Listening] = []  # registered by event.accept.add_listening
        self.connection_counter = 0  # ngx_connection_counter: c.number of each accept
        self.stats = Stats() if stats is None else stats  # shared by workers
        # Beyond nginx: set by the accept layer while it backs off from EMFILE, called
        # by close_connection once a socket is closed (an fd is free again).
        self.on_fd_freed: Callable[[], None] | None = None
        self.resume_accept = True
        # Beyond nginx: what drain_connections calls when closing idle connections
        # left free slots at connection_n/16 or below (ngxffi.http.reclaim).
        self.reclaim: Callable[[], object] | None = None
        self.reserve_fd = -1  # the spare fd of the reserve-fd EMFILE policy
        self.timer_resolution = timer_resolution
        self.timer_alarm = False
        self.event_flags = 0
        self.closed = False

        self.actions: EventActions
        self.module: EventModule = MODULES[use](self, events)
        self.module.init(self)  # installs self.actions and self.event_flags
        if timer_resolution:
            try:
                self._start_timer_resolution(timer_resolution)
            except BaseException:
                self.actions.done(self)
                raise

    def _allocate(self, n: int, strong_tags: bool) -> None:
        """The three arrays, the C cycle state and one proxy per slot and event."""
        self._connections = ffi.new("ngx_connection_t[]", n)
        self._read_events = ffi.new("ngx_event_t[]", n)
        self._write_events = ffi.new("ngx_event_t[]", n)
        raw = self.raw = ffi.new("ngxffi_cycle_t *")
        raw.connections = self._connections
        raw.read_events = self._read_events
        raw.write_events = self._write_events
        raw.connection_n = n
        raw.strong_tags = int(strong_tags)
        raw.clock_offset = self.clock_offset & MSEC_MASK  # C reads the same clock
        check_tag_address(raw)
        if lib.ngxffi_init_connections(raw) < 0:  # refused: bounds checked above
            raise ValueError(f"cannot make a pool of {n} connections")

        self.connections: list[Connection] = []
        # Indexed by slot * 2 + write; the two entries after the pool's belong to the
        # event module's static connection (epoll's notify). Events fill them in;
        # until then an entry is a standalone event without a handler.
        codes = 2 * n + 2
        self.handlers: list[Callable[[Event], object]] = [no_handler] * codes
        self.events_by_code: list[Event] = [Event.standalone(self, no_handler)] * codes
        for i in range(n):
            rev = Event(self, self._read_events + i, 2 * i)
            wev = Event(self, self._write_events + i, 2 * i + 1)
            c = Connection(self, self._connections + i, i, rev, wev)
            rev.data = wev.data = c
            self.connections.append(c)

    # --- the pool --------------------------------------------------------------------

    @property
    def read_events(self) -> Any:
        """The pool's C array of read events (slot ``i``'s is ``[i]``), for code that
        must reach every slot's event in C, such as clearing C handlers."""
        return self._read_events

    @property
    def free_connection_n(self) -> int:
        """How many slots are free (cycle->free_connection_n)."""
        return int(self.raw.free_connection_n)

    def get_connection(self, s: int) -> Connection | None:
        """Take a free slot for socket ``s``; None (and nginx's alert) when there is
        none. Imitates ngx_get_connection: drain first, then pop the free list head,
        zero the connection and both events, flip their instance bit."""
        if s < 0:
            raise ValueError(f"invalid file descriptor: {s}")
        files = self.files
        if files is not None and s >= len(files):
            log_error(
                ALERT,
                f"the new socket has number {s}, "
                f"but only {len(files)} files are available",
            )
            return None
        self.drain_connections()
        slot = lib.ngxffi_get_connection(self.raw, s)
        if slot < 0:
            log_error(ALERT, f"{self.connection_n} worker_connections are not enough")
            return None
        c: Connection = self.connections[slot]
        self._forget(c)
        if files is not None and files[s] is None:
            files[s] = c
        if self.on_change is not None:
            self.on_change()
        return c

    def _forget(self, c: Connection) -> None:
        """Clear the Python side of a slot that get_connection just zeroed in C: a
        slot freed without close_connection may still sit in the timer heap, a
        posted queue or the reusable queue, and must not take that into its new life
        (nginx would corrupt its rbtree and queues there)."""
        c.reset()
        for ev in (c.read, c.write):
            if ev.timer_entry >= 0:
                self.timers.del_timer(ev)
            if ev.posted_in is not None:
                delete_posted_event(ev)
            ev.handler = no_handler

    def free_connection(self, c: Connection) -> None:
        """Return ``c`` to the free list head (LIFO). Imitates ngx_free_connection;
        like it, leaves ``fd`` and the instance bits alone."""
        if lib.ngxffi_free_connection(self.raw, c.index) < 0:
            raise ValueError(f"connection {c.index} is free already")
        files = self.files
        fd = c.raw.fd
        if files is not None and 0 <= fd < len(files) and files[fd] is c:
            files[fd] = None
        if self.on_change is not None:
            self.on_change()

    def close_connection(self, c: Connection) -> None:
        """Close ``c`` and free its slot. Imitates ngx_close_connection, in its order:
        timers deleted; events deleted with CLOSE_EVENT (epoll skips the syscall, the
        close removes the registration); posted events removed; both events marked
        closed; out of the reusable queue; slot freed; fd set to -1; the socket closed.
        Closing twice logs "connection already closed" and does nothing else."""
        raw = c.raw
        if raw.fd == -1:
            log_error(ALERT, "connection already closed")
            return
        rev, wev = c.read, c.write
        if rev.raw.timer_set:
            self.timers.del_timer(rev)
        if wev.raw.timer_set:
            self.timers.del_timer(wev)
        if not raw.shared:
            actions = self.actions
            if actions.del_conn is not None:
                actions.del_conn(c, CLOSE_EVENT)
            else:
                if rev.raw.active or rev.raw.disabled:
                    actions.delete(rev, READ_EVENT, CLOSE_EVENT)
                if wev.raw.active or wev.raw.disabled:
                    actions.delete(wev, WRITE_EVENT, CLOSE_EVENT)
        if rev.raw.posted:
            delete_posted_event(rev)
        if wev.raw.posted:
            delete_posted_event(wev)
        rev.raw.closed = 1
        wev.raw.closed = 1
        if c.listening is not None and not rev.raw.accept:
            self.stats.add("active", -1)  # an accepted one (nginx: protocol's close)
        self.reusable_connection(c, False)
        log_error_level = raw.log_error
        self.free_connection(c)
        fd = raw.fd
        raw.fd = -1
        if self.on_change is not None:
            self.on_change()
        if raw.shared:
            return
        if lib.close(fd) == -1:
            err = ffi.errno
            level = CRIT
            if err in (lib.ECONNRESET, lib.ENOTCONN):
                level = {ERROR_INFO: INFO, ERROR_ERR: ERR}.get(log_error_level, CRIT)
            log_error(level, f"close() socket {fd} failed", err)
        if self.on_fd_freed is not None:
            self.on_fd_freed()

    def reusable_connection(self, c: Connection, reusable: bool) -> None:
        """Put ``c`` in (or take it out of) the queue of idle connections that
        drain_connections may close, as the most recently used. Imitates
        ngx_reusable_connection; the queue is linked through the C slots."""
        lib.ngxffi_reusable_connection(self.raw, c.raw, reusable)

    @property
    def reusable_connections_queue(self) -> list[Connection]:
        """The reusable connections, oldest (the first drained) first."""
        n = self.raw.reusable_n
        slots = ffi.new("int32_t[]", n)
        got = lib.ngxffi_reusable_slots(self.raw, slots, n)
        return [self.connections[slot] for slot in slots[0:got]]

    def drain_connections(self) -> None:
        """When free slots fall to connection_n/16, close the oldest reusable (idle
        keep-alive) connections: set ``close`` and call their read handler, which is
        expected to close them. Imitates ngx_drain_connections; then, beyond nginx,
        when free slots are still that low, calls ``reclaim`` if set."""
        raw = self.raw
        low = self.connection_n // 16
        if raw.free_connection_n > low:
            return
        if raw.reusable_n:
            self._drain()
        if self.reclaim is not None and raw.free_connection_n <= low:
            self.reclaim()

    def _drain(self) -> None:
        raw = self.raw
        now = int(time.time())
        if self.connections_reuse_time != now:
            self.connections_reuse_time = now
            log_error(
                WARN,
                f"{self.connection_n} worker_connections are not enough, "
                "reusing connections",
            )
        c = None
        drained = 0
        for _ in range(max(min(32, raw.reusable_n // 8), 1)):
            if not raw.reusable_n:
                break
            c = self.connections[raw.reusable_oldest - raw.connections]
            c.raw.close = 1
            c.read.handler(c.read)
            drained += 1
        self.stats.add("drained", drained)  # beyond nginx: an operator sees them
        if self.raw.free_connection_n == 0 and c is not None and c.raw.reusable:
            # nothing freed: the last one may have moved to lingering close; try again
            c.raw.close = 1
            c.read.handler(c.read)

    def close_idle_connections(self) -> None:
        """Set ``close`` on every idle (keep-alive) connection and call its read
        handler, which closes it. Imitates ngx_close_idle_connections."""
        for c in self.connections:
            if c.raw.fd != -1 and c.raw.idle:
                c.raw.close = 1
                c.read.handler(c.read)

    # --- time ------------------------------------------------------------------------

    def time_update(self) -> None:
        """Refresh ``current_msec``. Imitates ngx_time_update (monotonic part)."""
        self.current_msec = monotonic_msec(self.clock_offset)

    def _start_timer_resolution(self, msec: int) -> None:
        """ngx_event_process_init's SIGALRM interval timer for timer_resolution."""

        def on_alarm(signum: int, frame: Any) -> None:
            self.timer_alarm = True

        self._old_alarm = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, msec / 1000, msec / 1000)

    # --- life ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the event module (closing its kernel objects) and the interval timer.
        Connections still open are left to their owner. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.timer_resolution:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old_alarm)
        if self.reserve_fd >= 0:
            lib.close(self.reserve_fd)
            self.reserve_fd = -1
        self.actions.done(self)

    def __enter__(self) -> Cycle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<Cycle {type(self.module).__name__} "
            f"{self.connection_n - self.free_connection_n}/{self.connection_n} used>"
        )
