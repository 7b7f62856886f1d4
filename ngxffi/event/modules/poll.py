"""The poll event module (≈ src/event/modules/ngx_poll_module.c).

Level-triggered, with no kernel-side state: the interest list is a C ``struct pollfd``
array owned by the module. An event's ``index`` is its entry in that array (both events
of a connection share one); deleting the last interest of an entry moves the array's
last entry into the hole and fixes that connection's indexes. Results are found through
``cycle.files[fd]`` (there are no tags to decode, hence no stale events across a batch)
and always posted, never handled inline. No ``add_conn``, ``del_conn`` or ``notify``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ngxffi import os as nos
from ngxffi._ngx import ffi, lib
from ngxffi.core.log import ALERT, log_error
from ngxffi.event.event import (
    OK,
    READ_EVENT,
    TIMER_MAX,
    UPDATE_TIME,
    USE_FD_EVENT,
    USE_LEVEL_EVENT,
    Event,
    EventActions,
    wait_result,
)
from ngxffi.event.posted import post_event
from ngxffi.event.trace import TraceRecord

if TYPE_CHECKING:
    from ngxffi.event.cycle import Cycle

INVALID_INDEX: int = lib.NGXFFI_INVALID_INDEX
POLL_ERRORS: int = lib.POLLERR | lib.POLLHUP | lib.POLLNVAL
POLL_KNOWN: int = lib.POLLIN | lib.POLLOUT | POLL_ERRORS
FILES_MAX = 1 << 20  # cap for cycle.files when RLIMIT_NOFILE is unlimited


class PollModule:
    """ngx_poll_module for one cycle. ``events`` is unused: poll's list has a slot
    per connection, as in nginx."""

    name = "poll"
    flags = USE_LEVEL_EVENT | USE_FD_EVENT
    use_epoll_rdhup = False  # level-triggered: a short read always drains

    def __init__(self, cycle: Cycle, events: int) -> None:
        self.cycle = cycle
        self.nevents = 0

    def init(self, cycle: Cycle) -> None:
        """Allocate the pollfd list and ``cycle.files``, install the actions. Imitates
        ngx_poll_init and the USE_FD_EVENT part of ngx_event_process_init."""
        self.event_list = ffi.new("struct pollfd[]", cycle.connection_n)
        self.ready_list = ffi.new("int32_t[]", cycle.connection_n)
        soft, _ = nos.getrlimit(lib.RLIMIT_NOFILE)
        cycle.files = [None] * (FILES_MAX if soft < 0 else min(soft, FILES_MAX))
        cycle.event_flags = self.flags
        # no add_conn, del_conn or notify: NULL in nginx's table too
        self.actions = cycle.actions = EventActions.of(self)

    def done(self, cycle: Cycle) -> None:
        """Imitates ngx_poll_done: forget the list."""
        self.nevents = 0

    def add(self, ev: Event, event: int, flags: int) -> None:
        """Imitates ngx_poll_add_event: share the entry of the connection's other event
        if it has one, else append an entry."""
        c = ev.data
        raw = ev.raw
        raw.active = 1
        if raw.index != INVALID_INDEX:
            log_error(ALERT, f"poll event fd:{c.raw.fd} ev:{event} is already set")
            return
        if event == READ_EVENT:
            other, events = c.write, lib.POLLIN
        else:
            other, events = c.read, lib.POLLOUT
        if other.raw.index == INVALID_INDEX:
            entry = self.event_list[self.nevents]
            entry.fd = c.raw.fd
            entry.events = events
            entry.revents = 0
            raw.index = self.nevents
            self.nevents += 1
        else:
            self.event_list[other.raw.index].events |= events
            raw.index = other.raw.index

    def delete(self, ev: Event, event: int, flags: int) -> None:
        """Imitates ngx_poll_del_event, including moving the last entry into the hole.
        CLOSE_EVENT changes nothing here: poll has no kernel state to spare."""
        c = ev.data
        raw = ev.raw
        raw.active = 0
        if raw.index == INVALID_INDEX:
            log_error(ALERT, f"poll event fd:{c.raw.fd} ev:{event} is already deleted")
            return
        other, events = (
            (c.write, lib.POLLIN) if event == READ_EVENT else (c.read, lib.POLLOUT)
        )
        if other.raw.index == INVALID_INDEX:
            self.nevents -= 1
            last = self.nevents
            if raw.index < last:
                self.event_list[raw.index] = self.event_list[last]
                fd = self.event_list[last].fd
                files = self.cycle.files
                moved = files[fd] if files is not None and fd >= 0 else None
                if moved is None or moved.raw.fd == -1:
                    log_error(ALERT, f"unexpected last event on fd:{c.raw.fd}")
                else:
                    for e in (moved.read, moved.write):
                        if e.raw.index == last:
                            e.raw.index = raw.index
        else:
            self.event_list[other.raw.index].events &= ~events
        raw.index = INVALID_INDEX

    def process_events(self, cycle: Cycle, timer: int, flags: int) -> int:
        """poll(), then post every reported event: accept events to the accept queue,
        the rest to the posted queue. Imitates ngx_poll_process_events."""
        if timer > TIMER_MAX:
            timer = TIMER_MAX  # poll takes an int
        ready = lib.poll(self.event_list, self.nevents, timer)
        err = ffi.errno if ready == -1 else 0
        if flags & UPDATE_TIME or cycle.timer_alarm:
            cycle.time_update()
        if ready <= 0:
            return wait_result(cycle, "poll()", timer, err)

        k = lib.ngxffi_poll_ready(self.event_list, self.nevents, self.ready_list)
        for n, i in enumerate(ffi.unpack(self.ready_list, k)):
            if self._one(cycle, n, i):
                ready -= 1
        if ready != 0:
            log_error(ALERT, "poll ready != events")
        return OK

    def _one(self, cycle: Cycle, n: int, i: int) -> bool:
        """Handle entry ``i``; True when some active event took it."""
        entry = self.event_list[i]
        fd, revents = entry.fd, entry.revents
        if revents & lib.POLLNVAL:
            log_error(
                ALERT, f"poll() error fd:{fd} ev:{entry.events:04x} rev:{revents:04x}"
            )
        if revents & ~POLL_KNOWN:
            log_error(
                ALERT,
                f"strange poll() events fd:{fd} ev:{entry.events:04x} "
                f"rev:{revents:04x}",
            )
        if fd == -1:
            return False
        files = cycle.files
        assert files is not None
        c = files[fd]
        if c is None or c.raw.fd == -1:
            log_error(ALERT, "unexpected event")
            # nginx: certainly our fault; disable the entry to avoid a CPU spin
            if i == self.nevents - 1:
                self.nevents -= 1
            else:
                entry.fd = -1
            self._trace(cycle, n, fd, None, revents, "unexpected", "unexpected")
            return False
        reported = revents
        if revents & POLL_ERRORS:
            revents |= lib.POLLIN | lib.POLLOUT
        read = write = "-"
        rev, wev = c.read, c.write
        if revents & lib.POLLIN and rev.raw.active:
            rev.raw.ready = 1
            rev.raw.available = -1
            queue = (
                cycle.posted_accept_events if rev.raw.accept else cycle.posted_events
            )
            post_event(rev, queue)
            read = "posted"
        if revents & lib.POLLOUT and wev.raw.active:
            wev.raw.ready = 1
            post_event(wev, cycle.posted_events)
            write = "posted"
        self._trace(cycle, n, fd, c.index, reported, read, write)
        return read != "-" or write != "-"

    def _trace(
        self,
        cycle: Cycle,
        n: int,
        fd: int,
        slot: int | None,
        revents: int,
        read: str,
        write: str,
    ) -> None:
        if cycle.trace is not None:
            cycle.trace(TraceRecord(n, None, fd, slot, None, revents, read, write))
