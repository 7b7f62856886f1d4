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

Beyond nginx, when descriptors run out:

* **resume as soon as an fd is free** (``cycle.resume_accept``, on by default): while
  backing off, closing any connection re-enables the listeners at once instead of
  waiting for the timer, which stays as the fallback for fds freed elsewhere. Under
  sustained exhaustion nginx makes every wave of clients wait up to 500 ms more.
* **a choice of policy per listener** (``Listening.emfile_policy``): ``backoff``
  (nginx's, the default); ``reserve-fd`` (libuv's trick: keep a spare fd; on EMFILE
  close it, accept and at once close every pending connection, so that clients get a
  quick close instead of waiting in the backlog, then reopen the spare; the listener
  stays registered); ``both`` (shed the pending clients, then back off). Backing off
  keeps clients waiting and serves them all eventually; shedding answers them at once
  with a closed connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ngxffi import sockaddr
from ngxffi._ngx import ffi, lib
from ngxffi.core.log import ALERT, CRIT, ERR, WARN, log_error
from ngxffi.event.event import (
    DISABLE_EVENT,
    ERROR,
    EXCLUSIVE_EVENT,
    LEVEL_EVENT,
    OK,
    READ_EVENT,
    Event,
)

if TYPE_CHECKING:
    from ngxffi.event.connection import Connection
    from ngxffi.event.cycle import Cycle
    from ngxffi.event.listening import Listening

ACCEPT4_FLAGS: int = lib.SOCK_NONBLOCK | lib.SOCK_CLOEXEC


class AcceptState:
    """What ngx_event_accept keeps in statics: whether accept4 works, and the peer
    address buffer every accept reuses."""

    use_accept4 = True

    def __init__(self) -> None:
        self.storage, self.length = sockaddr.new_storage()
        self.sa = ffi.cast("struct sockaddr *", self.storage)


_state = AcceptState()


def add_listening(
    cycle: Cycle,
    listening: Sequence[Listening],
    flags: int = LEVEL_EVENT,
    register: bool = True,
) -> None:
    """Give each listening socket a slot and register it level-triggered for reads
    (``flags``: EXCLUSIVE_EVENT when workers share it), with :func:`event_accept` as
    the handler. Imitates the listening loop of ngx_event_process_init; like it, with
    an accept mutex (``register`` false) leaves the registering to the mutex holder.
    Fails clearly when worker_connections cannot hold them."""
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
        rev.raw.deferred_accept = int(ls.deferred)
        rev.handler = event_accept
        cycle.use_exclusive_accept = bool(flags & EXCLUSIVE_EVENT)
        if register:
            cycle.actions.add(rev, READ_EVENT, flags)
        cycle.listening.append(ls)
        if ls.emfile_policy != "backoff":
            open_reserve(cycle)


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
            s = lib.ngxffi_sys_accept4(lc.raw.fd, state.sa, state.length, ACCEPT4_FLAGS)
        else:
            s = lib.ngxffi_sys_accept(lc.raw.fd, state.sa, state.length)
        if s == -1:
            err = ffi.errno
            if err == lib.EAGAIN:
                return
            if _accept_failed(cycle, ev, err):
                continue
            return
        c = accepted(cycle, ev, ls, s)
        if c is not None:
            init_connection(cycle, ls, c)
        if not raw.available:
            _reorder_accept_events(cycle, ls)
            return


def _reorder_accept_events(cycle: Cycle, ls: Listening) -> None:
    """Imitates ngx_reorder_accept_events: with EPOLLEXCLUSIVE, Linux mostly wakes the
    process that registered the listener first, so every 16th accept (or while this
    worker is too busy to accept) it is registered again, behind the others."""
    c = ls.connection
    if not cycle.use_exclusive_accept or ls.reuseport or c is None:
        return
    requests = c.raw.requests
    c.raw.requests = requests + 1
    if requests % 16 != 0 and cycle.accept_disabled <= 0:
        return
    try:
        cycle.actions.delete(c.read, READ_EVENT, DISABLE_EVENT)
        cycle.actions.add(c.read, READ_EVENT, EXCLUSIVE_EVENT)
    except OSError:
        pass  # logged by the action; accepting goes on as it can


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
        policy = ev.data.listening.emfile_policy
        # Without its spare fd, shedding cannot drain the backlog: the listener
        # would stay readable and the loop spin, so back off instead.
        shed = shed_pending(cycle, ev.data.raw.fd) if policy != "backoff" else -1
        if policy != "reserve-fd" or shed < 0:
            _back_off(cycle, ev)
    return False


def _back_off(cycle: Cycle, ev: Event) -> None:
    """nginx's EMFILE branch: no listener in the kernel set until the timer fires (or
    the accept mutex comes round again); plus, beyond nginx, until an fd is freed."""
    if disable_accept_events(cycle, True) != OK:
        return
    if cycle.accept_mutex is not None:
        if cycle.accept_mutex.held:
            cycle.accept_mutex.unlock()
        cycle.accept_disabled = 1
        return
    cycle.timers.add_timer(ev, cycle.accept_mutex_delay)
    if cycle.resume_accept:
        cycle.on_fd_freed = lambda: _resume(cycle)


def _resume(cycle: Cycle) -> None:
    """An fd was freed while backing off: listen again now, drop the timers."""
    cycle.on_fd_freed = None
    if enable_accept_events(cycle) != OK:
        return
    for ls in cycle.listening:
        if ls.connection is not None and ls.connection.read.raw.timer_set:
            cycle.timers.del_timer(ls.connection.read)


def open_reserve(cycle: Cycle) -> None:
    """Hold the spare descriptor of the reserve-fd policy (if not held already)."""
    if cycle.reserve_fd < 0:
        cycle.reserve_fd = lib.open(b"/dev/null", lib.O_RDONLY | lib.O_CLOEXEC)


def shed_pending(cycle: Cycle, fd: int) -> int:
    """The reserve-fd policy: give up the spare fd, accept and close at once every
    connection waiting on listening socket ``fd``, take the spare back. Imitates
    libuv's uv__emfile_trick. Returns how many were shed, -1 without a spare fd."""
    if cycle.reserve_fd < 0:
        open_reserve(cycle)  # lost the last time; maybe there is room now
        return -1
    lib.close(cycle.reserve_fd)
    cycle.reserve_fd = -1
    shed = 0
    while True:
        s = lib.ngxffi_sys_accept4(fd, ffi.NULL, ffi.NULL, ACCEPT4_FLAGS)
        if s == -1:
            break
        lib.close(s)
        shed += 1
    cycle.stats.add("accepted", shed)  # accepted, never handled: accepts - handled
    open_reserve(cycle)
    if shed:
        log_error(WARN, f"{shed} pending connections closed: out of file descriptors")
    return shed


def init_connection(cycle: Cycle, ls: Listening, c: Connection) -> None:
    """The listening socket's handler on the new connection ``c``. One that fails to
    register it with the event module (epoll_ctl: ENOMEM, or ENOSPC past
    max_user_watches) raises OSError: the connection is closed then, as
    ngx_http_init_connection closes one that ngx_handle_read_event failed, and the
    accept loop goes on."""
    try:
        ls.handler(c)
    except OSError as e:
        log_error(ALERT, f"the new connection's handler failed: {e}", e.errno or 0)
        if c.raw.fd != -1:  # the handler has not closed it itself
            cycle.close_connection(c)


def accepted(cycle: Cycle, ev: Event, ls: Listening, s: int) -> Connection | None:
    """The part of ngx_event_accept after a successful accept of socket ``s`` on
    listening event ``ev``, but for calling the listening socket's handler: the new
    connection, or None when it could not be had (``s`` is closed then). Public for
    C accept handlers' sockets (ngxffi.http.accept)."""
    stats = cycle.stats
    stats.add("accepted", 1)
    cycle.accept_disabled = cycle.connection_n // 8 - cycle.raw.free_connection_n
    c = cycle.get_connection(s)
    if c is None:
        if lib.close(s) == -1:
            log_error(ALERT, "close() socket failed", ffi.errno)
        return None
    stats.add("active", 1)
    if not _state.use_accept4 and (
        lib.ngxffi_nonblocking(s) == -1 or lib.ngxffi_set_cloexec(s, 1) == -1
    ):
        log_error(ALERT, "fcntl(O_NONBLOCK) failed", ffi.errno)
        cycle.close_connection(c)
        return None
    c.listening = ls
    c.write.raw.ready = 1
    if ev.raw.deferred_accept:
        c.read.raw.ready = 1
        c.read.raw.available = 1
    c.raw.number = cycle.connection_counter
    cycle.connection_counter += 1
    stats.add("handled", 1)
    return c


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


def close_listening_sockets(cycle: Cycle) -> None:
    """Stop listening in this process. Imitates ngx_close_listening_sockets: a real
    EPOLL_CTL_DEL first, then the close.

    The dup trap: an epoll registration belongs to the open file description, not to
    the fd number, and close() removes it only when the last fd of that description
    closes. A listening socket inherited across fork (or dup'ed) is one description
    with fds in several processes: closing ours alone would leave it in our epoll set,
    and its connections would keep waking this worker, reported under a tag whose
    slot is now free. Hence the DEL, and why CLOSE_EVENT's shortcut (skip the syscall,
    let the close deregister) is only for sockets this process alone holds
    (``examples/dup_trap.py`` shows it)."""
    for ls in cycle.listening:
        c = ls.connection
        if c is None:
            continue
        if c.read.raw.active:
            cycle.actions.delete(c.read, READ_EVENT, 0)
        cycle.close_connection(c)
        ls.connection = None
        ls.fd = -1  # closed by close_connection
    cycle.listening.clear()
