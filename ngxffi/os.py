"""Errno-checked, EINTR-safe wrappers over the raw syscalls in ``ngxffi._ngx``.

The counterpart of nginx's ``src/os/unix/``: thin functions that take file descriptors
as ints or as objects with ``fileno()``, return Python values, and turn a failing call
into ``OSError``. The exception is the errno subclass (``BlockingIOError``,
``FileNotFoundError``, ``PermissionError``, …) and its message names the call, e.g.
``[Errno 17] epoll_ctl(EPOLL_CTL_ADD): File exists``.

EINTR follows PEP 475, in one place (``_retry``, and ``retry_wait`` for the waits): the
wrapper lets Python run the pending signal handlers (an exception raised by one
propagates), then retries; a call with a timeout is retried with the time that remains.
``close`` is the exception: on Linux the descriptor is gone even when close reports
EINTR, so retrying could close somebody else's new fd.

The raw ``ffi``/``lib`` stay public (``ngxffi.ffi``, ``ngxffi.lib``) for experiments;
the event core calls ``lib`` directly on its hot paths and uses these for the rest.
"""

from __future__ import annotations

import math
import os as _os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol, Union, overload

from ngxffi import sockaddr
from ngxffi._ngx import ffi, lib


class HasFileno(Protocol):
    def fileno(self) -> int: ...


FileLike = Union[int, HasFileno]
Buffer = Any  # bytes, bytearray, memoryview, array, mmap: anything with the buffer API

_EPOLL_OPS = {
    lib.EPOLL_CTL_ADD: "EPOLL_CTL_ADD",
    lib.EPOLL_CTL_MOD: "EPOLL_CTL_MOD",
    lib.EPOLL_CTL_DEL: "EPOLL_CTL_DEL",
}
_RLIM_INFINITY: int = lib.RLIM_INFINITY
_EINTR: int = lib.EINTR


def fileno(obj: FileLike) -> int:
    """The descriptor of ``obj``: an int, or anything with a ``fileno()`` method."""
    fd = obj if isinstance(obj, int) else obj.fileno()
    if not isinstance(fd, int):
        raise TypeError(f"fileno() returned {type(fd).__name__}, not int")
    if fd < 0:
        raise ValueError(f"invalid file descriptor: {fd}")
    return fd


def error(call: str, err: int | None = None) -> OSError:
    """The ``OSError`` for a failed ``call``: errno from cffi unless given.

    ``OSError(errno, msg)`` builds the errno subclass by itself.
    """
    if err is None:
        err = ffi.errno
    return OSError(err, f"{call}: {_os.strerror(err)}")


def _retry(call: str, fn: Callable[..., int], *args: Any) -> int:
    """``fn(*args)``, made again after EINTR; its result, or the OSError of ``call``.

    ``fn`` is a raw syscall: a result below zero is a failure with errno set, which is
    read at once (a signal handler making cffi calls of its own would overwrite it).
    Going round the loop again is where the interpreter runs the pending signal
    handlers (a backward jump checks for them, as a function call does): that is what
    makes a handler's exception propagate out of a blocking call, and what lets a
    handler's side effects (a flag) be seen before the syscall is made again.
    """
    while True:
        r = fn(*args)
        if r >= 0:
            return r
        err = ffi.errno
        if err != _EINTR:
            raise error(call, err)


def retry_wait(
    call: str,
    fn: Callable[..., int],
    fd: int,
    events: Any,
    maxevents: int,
    timeout_ms: int,
    *more: Any,
) -> int:
    """:func:`_retry` for a wait shaped like epoll_wait, ``fn(fd, events, maxevents,
    timeout_ms, *more)``: after EINTR it waits for what remains of ``timeout_ms``
    (rounded up), not for all of it again. ``ngxffi.selector`` uses it too."""
    if timeout_ms <= 0:  # -1 (forever) and 0 (a poll) stay as they are
        return _retry(call, fn, fd, events, maxevents, timeout_ms, *more)
    deadline = time.monotonic() + timeout_ms / 1000

    def wait() -> int:
        return fn(fd, events, maxevents, _remaining_ms(deadline), *more)

    return _retry(call, wait)


def _remaining_ms(deadline: float) -> int:
    """Milliseconds left until ``deadline`` (monotonic s), rounded up.

    Called after EINTR: the pending signal handlers run as this call begins, so the
    time they took is not waited for again."""
    return max(0, math.ceil((deadline - time.monotonic()) * 1000))


# --- epoll -------------------------------------------------------------------------


def epoll_create1(flags: int = lib.EPOLL_CLOEXEC) -> int:
    """Create an epoll instance (close-on-exec by default, like ``select.epoll``)."""
    fd: int = lib.epoll_create1(flags)
    if fd < 0:
        raise error("epoll_create1")
    return fd


def new_events(n: int) -> Any:
    """A caller-owned ``struct epoll_event[n]`` to pass to :func:`epoll_wait` again and
    again. Read results as ``events[i].events`` and ``events[i].data.u64``."""
    if n <= 0:
        raise ValueError(f"an event array needs at least one entry, not {n}")
    return ffi.new("struct epoll_event[]", n)


def epoll_ctl(
    epfd: FileLike, op: int, fd: FileLike, events: int = 0, data: int | None = None
) -> None:
    """Add, modify or delete ``fd`` in the interest list of ``epfd``.

    ``data`` is the 64-bit value the kernel hands back in ``data.u64`` (default: the fd
    number). The kernel copies the struct during the call, so a short-lived one is fine.
    """
    fdn = fileno(fd)
    ev = ffi.new("struct epoll_event *")
    ev.events = events
    ev.data.u64 = fdn if data is None else data
    if lib.epoll_ctl(fileno(epfd), op, fdn, ev) < 0:
        raise error(f"epoll_ctl({_EPOLL_OPS.get(op, op)})")


def epoll_wait(
    epfd: FileLike, events: Any, timeout_ms: int = -1, maxevents: int | None = None
) -> int:
    """Wait for events into ``events`` (from :func:`new_events`); return how many.

    ``timeout_ms`` is in milliseconds as in the syscall: -1 waits forever, 0 polls.
    Nothing is allocated per call. EINTR is retried with the remaining timeout.
    """
    epfd = fileno(epfd)
    n = len(events) if maxevents is None else maxevents
    if not 0 < n <= len(events):
        raise ValueError(f"maxevents must be 1..{len(events)}, not {n}")
    return retry_wait("epoll_wait", lib.epoll_wait, epfd, events, n, timeout_ms)


def sigset(signals: Iterable[int]) -> Any:
    """A ``sigset_t *`` holding ``signals``."""
    mask = ffi.new("sigset_t *")
    lib.sigemptyset(mask)
    for signum in signals:
        if lib.sigaddset(mask, signum) < 0:
            raise error("sigaddset")
    return mask


def epoll_pwait(
    epfd: FileLike,
    events: Any,
    timeout_ms: int = -1,
    sigmask: Iterable[int] | None = None,
    maxevents: int | None = None,
) -> int:
    """:func:`epoll_wait` with ``sigmask`` (signal numbers) blocked during the wait;
    ``None`` keeps the current mask."""
    epfd = fileno(epfd)
    n = len(events) if maxevents is None else maxevents
    if not 0 < n <= len(events):
        raise ValueError(f"maxevents must be 1..{len(events)}, not {n}")
    mask = ffi.NULL if sigmask is None else sigset(sigmask)
    return retry_wait("epoll_pwait", lib.epoll_pwait, epfd, events, n, timeout_ms, mask)


# --- sockets -----------------------------------------------------------------------


def socket(family: int, type: int, proto: int = 0) -> int:
    """Create a socket; add ``SOCK_NONBLOCK``/``SOCK_CLOEXEC`` to ``type`` as wanted."""
    fd: int = lib.socket(family, type, proto)
    if fd < 0:
        raise error("socket")
    return fd


def socketpair(
    family: int = lib.AF_UNIX,
    type: int = lib.SOCK_STREAM | lib.SOCK_CLOEXEC,
    proto: int = 0,
) -> tuple[int, int]:
    """A connected pair of sockets (close-on-exec by default)."""
    sv = ffi.new("int[2]")
    if lib.socketpair(family, type, proto, sv) < 0:
        raise error("socketpair")
    return sv[0], sv[1]


def _family(fd: int) -> int:
    storage, length = sockaddr.new_storage()
    if lib.getsockname(fd, ffi.cast("struct sockaddr *", storage), length) < 0:
        raise error("getsockname")
    return int(storage.ss_family)


def bind(fd: FileLike, address: sockaddr.Address, family: int | None = None) -> None:
    """Bind to ``address`` (socket-module form); the family is the socket's own."""
    fd = fileno(fd)
    sa, length = sockaddr.encode(_family(fd) if family is None else family, address)
    if lib.bind(fd, sa, length) < 0:
        raise error("bind")


def connect(fd: FileLike, address: sockaddr.Address, family: int | None = None) -> None:
    """Connect to ``address``; a non-blocking socket raises ``BlockingIOError``
    (EINPROGRESS) and completes in the background, as ``socket.connect`` does."""
    fd = fileno(fd)
    sa, length = sockaddr.encode(_family(fd) if family is None else family, address)
    _retry("connect", lib.connect, fd, sa, length)


def listen(fd: FileLike, backlog: int = 511) -> None:
    """Listen with nginx's default backlog of 511."""
    if lib.listen(fileno(fd), backlog) < 0:
        raise error("listen")


def _accept(call: str, fd: FileLike, flags: int | None) -> tuple[int, sockaddr.Address]:
    fd = fileno(fd)
    storage, length = sockaddr.new_storage()
    sa = ffi.cast("struct sockaddr *", storage)
    if flags is None:
        s = _retry(call, lib.accept, fd, sa, length)
    else:
        s = _retry(call, lib.accept4, fd, sa, length, flags)
    return s, sockaddr.decode(sa, length[0])


def accept4(
    fd: FileLike, flags: int = lib.SOCK_NONBLOCK | lib.SOCK_CLOEXEC
) -> tuple[int, sockaddr.Address]:
    """Accept a connection; return (new fd, peer address). By default the new fd is
    non-blocking and close-on-exec in the same syscall, as nginx asks for."""
    return _accept("accept4", fd, flags)


def accept(fd: FileLike) -> tuple[int, sockaddr.Address]:
    """Plain accept(2): the new fd is blocking and inheritable (nginx's fallback when
    accept4 gives ENOSYS)."""
    return _accept("accept", fd, None)


def setsockopt(fd: FileLike, level: int, option: int, value: int | Buffer) -> None:
    """Set a socket option from an int (as a C int) or a bytes-like value."""
    if isinstance(value, int):
        buf = ffi.new("int *", value)
        size = ffi.sizeof("int")
    else:
        buf = ffi.from_buffer(value)
        size = len(buf)
    if lib.setsockopt(fileno(fd), level, option, buf, size) < 0:
        raise error("setsockopt")


@overload
def getsockopt(
    fd: FileLike, level: int, option: int, buflen: Literal[0] = 0
) -> int: ...
@overload
def getsockopt(fd: FileLike, level: int, option: int, buflen: int) -> int | bytes: ...
def getsockopt(fd: FileLike, level: int, option: int, buflen: int = 0) -> int | bytes:
    """Get a socket option: an int when ``buflen`` is 0, else up to ``buflen`` bytes."""
    size = ffi.sizeof("int") if buflen == 0 else buflen
    buf = ffi.new("char[]", size)
    length = ffi.new("socklen_t *", size)
    if lib.getsockopt(fileno(fd), level, option, buf, length) < 0:
        raise error("getsockopt")
    if buflen == 0:
        return int(ffi.cast("int *", buf)[0])
    return bytes(ffi.unpack(buf, length[0]))


def _name(call: str, fn: Any, fd: FileLike) -> sockaddr.Address:
    storage, length = sockaddr.new_storage()
    sa = ffi.cast("struct sockaddr *", storage)
    if fn(fileno(fd), sa, length) < 0:
        raise error(call)
    return sockaddr.decode(sa, length[0])


def getsockname(fd: FileLike) -> sockaddr.Address:
    """The socket's own address, in the socket module's form."""
    return _name("getsockname", lib.getsockname, fd)


def getpeername(fd: FileLike) -> sockaddr.Address:
    """The peer's address, in the socket module's form."""
    return _name("getpeername", lib.getpeername, fd)


def recv(fd: FileLike, bufsize: int, flags: int = 0) -> bytes:
    """Receive up to ``bufsize`` bytes; ``b""`` means the peer closed."""
    fd = fileno(fd)
    buf = ffi.new("char[]", bufsize)
    return bytes(ffi.unpack(buf, _retry("recv", lib.recv, fd, buf, bufsize, flags)))


def recv_into(fd: FileLike, buffer: Buffer, nbytes: int = 0, flags: int = 0) -> int:
    """Receive into a writable buffer without allocating; return the byte count."""
    fd = fileno(fd)
    buf = _pin(buffer, writable=True)
    n = len(buf) if nbytes == 0 else min(nbytes, len(buf))
    return _retry("recv", lib.recv, fd, buf, n, flags)


def send(fd: FileLike, data: Buffer, flags: int = 0) -> int:
    """Send from a bytes-like object without copying it; return the bytes sent."""
    fd = fileno(fd)
    buf = ffi.from_buffer(data)
    return _retry("send", lib.send, fd, buf, len(buf), flags)


def shutdown(fd: FileLike, how: int) -> None:
    """Shut down reading (``SHUT_RD``), writing (``SHUT_WR``) or both."""
    if lib.shutdown(fileno(fd), how) < 0:
        raise error("shutdown")


# --- plain descriptors ---------------------------------------------------------------


def read(fd: FileLike, n: int) -> bytes:
    """Read up to ``n`` bytes; ``b""`` at end of file."""
    fd = fileno(fd)
    buf = ffi.new("char[]", n)
    return bytes(ffi.unpack(buf, _retry("read", lib.read, fd, buf, n)))


def write(fd: FileLike, data: Buffer) -> int:
    """Write from a bytes-like object without copying it; return the bytes written."""
    fd = fileno(fd)
    buf = ffi.from_buffer(data)
    return _retry("write", lib.write, fd, buf, len(buf))


def _pin(buffer: Buffer, writable: bool) -> Any:
    """cffi's view of a buffer, with the stdlib's TypeError for a read-only one."""
    try:
        return ffi.from_buffer(buffer, require_writable=writable)
    except BufferError:
        raise TypeError(
            f"a writable buffer is required, not {type(buffer).__name__}"
        ) from None


def _iovec(buffers: Sequence[Buffer], writable: bool) -> tuple[Any, list[Any]]:
    """An ``struct iovec[]`` over ``buffers`` and the cdata keeping them pinned."""
    iov = ffi.new("struct iovec[]", len(buffers))
    pins = [_pin(b, writable) for b in buffers]
    for slot, pin in zip(iov, pins, strict=True):
        slot.iov_base = pin
        slot.iov_len = len(pin)
    return iov, pins


def readv(fd: FileLike, buffers: Sequence[Buffer]) -> int:
    """Scatter-read into writable buffers; return the total byte count."""
    fd = fileno(fd)
    iov, _pins = _iovec(buffers, writable=True)
    return _retry("readv", lib.readv, fd, iov, len(buffers))


def writev(fd: FileLike, buffers: Sequence[Buffer]) -> int:
    """Gather-write from bytes-like objects in one syscall; return the bytes written."""
    fd = fileno(fd)
    iov, _pins = _iovec(buffers, writable=False)
    return _retry("writev", lib.writev, fd, iov, len(buffers))


def sendfile(out_fd: FileLike, in_fd: FileLike, offset: int | None, count: int) -> int:
    """Copy ``count`` bytes of ``in_fd`` from ``offset`` (``None``: its file position)
    to ``out_fd`` in the kernel; return the bytes sent."""
    out, src = fileno(out_fd), fileno(in_fd)
    off = ffi.NULL if offset is None else ffi.new("off_t *", offset)
    return _retry("sendfile", lib.sendfile, out, src, off, count)


def close(fd: FileLike) -> None:
    """Close ``fd``. EINTR is not retried: Linux has released the fd already."""
    if lib.close(fileno(fd)) < 0 and ffi.errno != lib.EINTR:
        raise error("close")


def dup(fd: FileLike) -> int:
    """A new descriptor for the same open file description (epoll registrations
    follow the description, not the number: the dup trap, explained at
    :func:`ngxffi.event.accept.close_listening_sockets`)."""
    new: int = lib.dup(fileno(fd))
    if new < 0:
        raise error("dup")
    return new


def pipe2(flags: int = lib.O_CLOEXEC) -> tuple[int, int]:
    """A pipe as (read end, write end); close-on-exec by default."""
    fds = ffi.new("int[2]")
    if lib.pipe2(fds, flags) < 0:
        raise error("pipe2")
    return fds[0], fds[1]


def eventfd(initval: int = 0, flags: int = lib.EFD_CLOEXEC) -> int:
    """An eventfd counter (close-on-exec by default, like ``os.eventfd``)."""
    fd: int = lib.eventfd(initval, flags)
    if fd < 0:
        raise error("eventfd")
    return fd


# --- fcntl (non-variadic helpers) ----------------------------------------------------


def _fcntl_result(call: str, r: int) -> int:
    if r < 0:
        raise error(call)
    return r


def set_nonblocking(fd: FileLike, on: bool = True) -> None:
    """Turn O_NONBLOCK on or off. Imitates ngx_nonblocking / ngx_blocking."""
    if on:
        _fcntl_result("fcntl(F_SETFL, O_NONBLOCK)", lib.ngxffi_nonblocking(fileno(fd)))
    else:
        _fcntl_result("fcntl(F_SETFL, ~O_NONBLOCK)", lib.ngxffi_blocking(fileno(fd)))


def get_status_flags(fd: FileLike) -> int:
    """The file status flags (``O_NONBLOCK``, ``O_APPEND``, access mode …)."""
    return _fcntl_result("fcntl(F_GETFL)", lib.ngxffi_get_status_flags(fileno(fd)))


def set_status_flags(fd: FileLike, flags: int) -> None:
    """Replace the file status flags (the kernel only changes the settable ones)."""
    _fcntl_result("fcntl(F_SETFL)", lib.ngxffi_set_status_flags(fileno(fd), flags))


def get_cloexec(fd: FileLike) -> bool:
    """Whether ``fd`` is closed across exec (``FD_CLOEXEC``)."""
    flags = _fcntl_result("fcntl(F_GETFD)", lib.ngxffi_get_fd_flags(fileno(fd)))
    return bool(flags & lib.FD_CLOEXEC)


def set_cloexec(fd: FileLike, on: bool = True) -> None:
    """Set or clear ``FD_CLOEXEC``."""
    _fcntl_result("fcntl(F_SETFD)", lib.ngxffi_set_cloexec(fileno(fd), int(on)))


# --- limits and time -----------------------------------------------------------------


def _from_rlim(value: int) -> int:
    # The stdlib's resource module reports RLIM_INFINITY as -1; so do we.
    return -1 if value == _RLIM_INFINITY else value


def getrlimit(resource: int) -> tuple[int, int]:
    """(soft, hard) for ``resource``, like ``resource.getrlimit`` (-1 = unlimited)."""
    rl = ffi.new("struct rlimit *")
    if lib.getrlimit(resource, rl) < 0:
        raise error("getrlimit")
    return _from_rlim(rl.rlim_cur), _from_rlim(rl.rlim_max)


def setrlimit(resource: int, limits: tuple[int, int]) -> None:
    """Set (soft, hard) for ``resource``; -1 means unlimited. Raising the hard limit
    needs privilege (``PermissionError``); a soft limit above it is ``ValueError``."""
    soft, hard = (_RLIM_INFINITY if v == -1 else v for v in limits)
    if soft > hard:
        raise ValueError(f"soft limit {limits[0]} exceeds hard limit {limits[1]}")
    rl = ffi.new("struct rlimit *")
    rl.rlim_cur, rl.rlim_max = soft, hard
    if lib.setrlimit(resource, rl) < 0:
        raise error("setrlimit")


def clock_gettime_ns(clock: int = lib.CLOCK_MONOTONIC) -> int:
    """The clock's time in nanoseconds (CLOCK_MONOTONIC by default)."""
    ts = ffi.new("struct timespec *")
    if lib.clock_gettime(clock, ts) < 0:
        raise error("clock_gettime")
    return int(ts.tv_sec) * 1_000_000_000 + int(ts.tv_nsec)
