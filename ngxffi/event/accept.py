"""Accepting connections (≈ src/event/ngx_event_accept.c and the listening part of
ngx_event_process_init).

:func:`add_listening` gives each open listening socket a pool slot and registers it
level-triggered with :func:`event_accept` as its read handler. :func:`event_accept`
is nginx's: ``accept4(SOCK_NONBLOCK|SOCK_CLOEXEC)`` (plain ``accept`` plus
``fcntl`` for good after an ENOSYS), ``multi_accept``, EAGAIN ends the loop,
ECONNABORTED is logged and skipped, EMFILE/ENFILE back off — every listener leaves the
kernel set and a timer of ``accept_mutex_delay`` on the listening event re-enables
them all when it fires — and each accepted socket gets a slot (or is closed when there
is none), the stub_status counters, its peer address as text, and the listening
socket's handler. Differs from nginx: the accepted fd is also close-on-exec.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ngxffi import sockaddr
from ngxffi._ngx import ffi, lib
from ngxffi.core.log import ALERT, CRIT, ERR, log_error
from ngxffi.event.event import (
    DISABLE_EVENT,
    ERROR,
    LEVEL_EVENT,
    OK,
    READ_EVENT,
    Event,
)

if TYPE_CHECKING:
    from ngxffi.core.cycle import Cycle
    from ngxffi.core.listening import Listening

ACCEPT4_FLAGS: int = lib.SOCK_NONBLOCK | lib.SOCK_CLOEXEC


class AcceptState:
    """What ngx_event_accept keeps in statics: whether accept4 works, and the peer
    address buffer every accept reuses."""

    use_accept4 = True

    def __init__(self) -> None:
        self.storage, self.length = sockaddr.new_storage()
        self.sa = ffi.cast("struct sockaddr *", self.storage)


_state = AcceptState()


def add_listening(cycle: Cycle, listening: Sequence[Listening]) -> None:
    """Give each listening socket a slot and register it level-triggered for reads,
    with :func:`event_accept` as the handler. Imitates the listening loop of
    ngx_event_process_init. Fails clearly when worker_connections cannot hold them."""
    for ls in listening:
        c = cycle.get_connection(ls.fd)
        if c is None:
            raise RuntimeError(
                f"{cycle.connection_n} worker_connections are not enough for "
                f"{len(listening)} listening sockets"
            )
        c.listening = ls
        ls.connection = c
        rev = c.read
        rev.raw.accept = 1
        rev.raw.deferred_accept = int(ls.deferred_accept)
        rev.handler = event_accept
        cycle.actions.add(rev, READ_EVENT, LEVEL_EVENT)
        cycle.listening.append(ls)


def event_accept(ev: Event) -> None:
    """Accept what the listening socket has. Imitates ngx_event_accept."""
    cycle = ev.cycle
    raw = ev.raw
    if raw.timedout:
        if enable_accept_events(cycle) != OK:
            return
        raw.timedout = 0
    raw.available = int(cycle.multi_accept)
    lc = ev.data
    ls = lc.listening
    raw.ready = 0
    state = _state
    while True:
        state.length[0] = sockaddr.SOCKADDR_STORAGE_SIZE
        if state.use_accept4:
            s = lib.accept4(lc.raw.fd, state.sa, state.length, ACCEPT4_FLAGS)
        else:
            s = lib.accept(lc.raw.fd, state.sa, state.length)
        if s == -1:
            err = ffi.errno
            if err == lib.EAGAIN:
                return
            if _accept_failed(cycle, ev, err):
                continue
            return
        _accepted(cycle, ev, ls, s)
        if not raw.available:
            return


def _accept_failed(cycle: Cycle, ev: Event, err: int) -> bool:
    """Log a failed accept as nginx does; True when the loop should go on."""
    level = ALERT
    if err == lib.ECONNABORTED:
        level = ERR
    elif err in (lib.EMFILE, lib.ENFILE):
        level = CRIT
    log_error(
        level, "accept4() failed" if _state.use_accept4 else "accept() failed", err
    )
    if _state.use_accept4 and err == lib.ENOSYS:
        _state.use_accept4 = False
        return True
    if err == lib.ECONNABORTED:
        return bool(ev.raw.available)
    if err in (lib.EMFILE, lib.ENFILE):
        if disable_accept_events(cycle, True) != OK:
            return False
        if cycle.accept_mutex is not None:
            if cycle.accept_mutex.held:
                cycle.accept_mutex.unlock()
            cycle.accept_disabled = 1
        else:
            cycle.timers.add_timer(ev, cycle.accept_mutex_delay)
    return False


def _accepted(cycle: Cycle, ev: Event, ls: Listening, s: int) -> None:
    """The part of ngx_event_accept after a successful accept."""
    stats = cycle.stats
    stats.accepted += 1
    cycle.accept_disabled = cycle.connection_n // 8 - cycle.raw.free_connection_n
    c = cycle.get_connection(s)
    if c is None:
        if lib.close(s) == -1:
            log_error(ALERT, "close() socket failed", ffi.errno)
        return
    stats.active += 1
    if not _state.use_accept4 and (
        lib.ngxffi_nonblocking(s) == -1 or lib.ngxffi_set_cloexec(s, 1) == -1
    ):
        log_error(ALERT, "fcntl(O_NONBLOCK) failed", ffi.errno)
        cycle.close_connection(c)
        return
    c.listening = ls
    c.write.raw.ready = 1
    if ev.raw.deferred_accept:
        c.read.raw.ready = 1
        c.read.raw.available = 1
    c.raw.number = cycle.connection_counter
    cycle.connection_counter += 1
    stats.handled += 1
    c.addr_text = sockaddr.to_text(
        sockaddr.decode(_state.sa, _state.length[0]), port=False
    )
    ls.handler(c)


def enable_accept_events(cycle: Cycle) -> int:
    """Register every listener that is not. Imitates ngx_enable_accept_events."""
    for ls in cycle.listening:
        c = ls.connection
        if c is None or c.read.raw.active:
            continue
        try:
            cycle.actions.add(c.read, READ_EVENT, 0)
        except OSError:
            return ERROR
    return OK


def disable_accept_events(cycle: Cycle, all_: bool) -> int:
    """Take every listener out of the kernel set (a real EPOLL_CTL_DEL: listening
    fds may be shared). Imitates ngx_disable_accept_events: with ``all_`` false, a
    worker's own reuseport sockets stay."""
    for ls in cycle.listening:
        c = ls.connection
        if c is None or not c.read.raw.active:
            continue
        if ls.reuseport and not all_:
            continue
        try:
            cycle.actions.delete(c.read, READ_EVENT, DISABLE_EVENT)
        except OSError:
            return ERROR
    return OK
