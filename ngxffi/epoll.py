"""``Epoll``: a plain epoll object on ngxffi's binding, with select.epoll's interface.

An instance owns one epoll descriptor, made by :func:`ngxffi.os.epoll_create1`
(close-on-exec), and talks to the kernel through :mod:`ngxffi.os`. It takes the
arguments ``select.epoll`` takes and raises the exceptions it raises — ``ValueError``
on a closed object, ``FileExistsError`` for a second ``register``,
``FileNotFoundError`` for an fd that is not registered, ``ValueError``/``TypeError``/
``OverflowError`` for what is not an fd, the kernel's errno class (``PermissionError``
for a regular file, ``OSError`` EBADF for a closed fd) otherwise — so it can stand in
for ``select.epoll`` wherever one is used on its own. Timeouts are converted as
``select.epoll.poll`` converts them (seconds rounded away from zero to nanoseconds,
then up to milliseconds; a result below zero waits forever), and EINTR is retried with
what remains of the timeout (PEP 475).

The ``struct epoll_event`` array the kernel fills belongs to the object (from
:func:`ngxffi.os.new_events`): allocated at the first ``poll``, grown when a larger
``maxevents`` is asked for, kept until ``close``. A ``poll`` allocates only the list it
returns. ``ngxffi.selector.NgxSelector`` is built on this object and waits into the
same array through its C helper.

This is not the event core's epoll module (``ngxffi/event/modules/epoll.py``): that one
is shaped like nginx's ``ngx_epoll_module.c`` — tagged pointers in ``data.u64``,
edge-triggered connections, a C call deciding a whole batch — and calls ``lib``
directly. This one is the plain object, with no notion of connections.

Deliberate differences from ``select.epoll``:

* error messages name the call, as everywhere in :mod:`ngxffi.os`
  (``[Errno 17] epoll_ctl(EPOLL_CTL_ADD): File exists``); the class and the errno are
  those ``select.epoll`` gives. The OverflowErrors for out-of-range timeouts all say
  ``timeout is too large``.
* ``fromfd`` refuses a negative fd (``ValueError``), where ``select.epoll.fromfd(-1)``
  makes a new instance and other negative numbers give ``OSError`` with errno 0.
* a wait interrupted by a signal after its time is up is made once more with a zero
  timeout (and may report what became ready meanwhile); ``select.epoll`` returns ``[]``.
"""

from __future__ import annotations

import contextlib
import math
import operator
from typing import Any, Self

from ngxffi import os as nos
from ngxffi._ngx import ffi, lib

_INT_MAX = 2**31 - 1
_FD_SETSIZE = 1024  # glibc's, fixed by its ABI; select.epoll's maxevents=-1 is 1023
_MIN_ROOM = 64  # the smallest event array worth allocating
_CTL_ADD: int = lib.EPOLL_CTL_ADD
_CTL_MOD: int = lib.EPOLL_CTL_MOD
_CTL_DEL: int = lib.EPOLL_CTL_DEL
_unpack = ffi.unpack


def _closed() -> ValueError:
    return ValueError("I/O operation on closed epoll object")


def _fd_arg(obj: Any) -> int:
    """An fd as ``select.epoll`` accepts one: an int, or an object whose ``fileno()``
    returns one; not negative, and within a C int. Same exceptions, same messages."""
    if isinstance(obj, int):
        fd = int(obj)
    else:
        try:
            method = obj.fileno
        except AttributeError:
            raise TypeError(
                "argument must be an int, or have a fileno() method."
            ) from None
        fd = method()
        if not isinstance(fd, int):
            raise TypeError("fileno() returned a non-integer")
    if not -_INT_MAX - 1 <= fd <= _INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    if fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    return int(fd)


def _mask_arg(eventmask: Any) -> int:
    """An event mask as ``select.epoll`` takes one: any integer, cut to 32 bits."""
    return operator.index(eventmask) & 0xFFFF_FFFF


def _timeout_ms(timeout: float | None) -> int:
    """``select.epoll.poll``'s timeout in milliseconds: ``None`` is -1 (forever); a
    number of seconds is rounded away from zero to nanoseconds, then up to
    milliseconds, and a negative result waits forever (so -0.0001 does not wait, -0.5
    waits forever, 0.0001 waits 1 ms)."""
    if timeout is None:
        return -1
    if isinstance(timeout, float):
        if math.isnan(timeout):
            raise ValueError("Invalid value NaN (not a number)")
        if math.isinf(timeout):
            raise OverflowError("timeout is too large")
        scaled = timeout * 1e9
        ns = math.ceil(scaled) if scaled >= 0 else math.floor(scaled)
    else:
        try:
            ns = operator.index(timeout) * 1_000_000_000
        except TypeError:
            raise TypeError("timeout must be an integer or None") from None
    ms = -(-ns // 1_000_000)
    if not -_INT_MAX - 1 <= ms <= _INT_MAX:
        raise OverflowError("timeout is too large")
    return ms if ms >= 0 else -1


def _maxevents_arg(maxevents: Any) -> int:
    """``select.epoll.poll``'s maxevents: -1 is FD_SETSIZE - 1, otherwise at least 1."""
    n = operator.index(maxevents)
    if n == -1:
        return _FD_SETSIZE - 1
    if n < 1:
        raise ValueError(f"maxevents must be greater than 0, got {n}")
    if n > _INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    return n


class Epoll:
    """An epoll instance; imitates ``select.epoll(sizehint=-1, flags=0)``.

    ``sizehint`` (a positive int, or -1) and ``flags`` (0 or ``EPOLL_CLOEXEC``) are
    checked as ``select.epoll`` checks them and otherwise ignored: the instance is
    always close-on-exec.
    """

    __slots__ = ("_epfd", "_events")

    def __init__(self, sizehint: int = -1, flags: int = 0) -> None:
        self._epfd = -1
        self._events: Any = None
        hint = operator.index(sizehint)
        if hint != -1 and hint <= 0:
            raise ValueError("negative sizehint")
        flags = operator.index(flags)
        if flags and flags != lib.EPOLL_CLOEXEC:
            raise OSError("invalid flags")
        self._epfd = nos.epoll_create1()

    @classmethod
    def fromfd(cls, fd: int) -> Self:
        """An object owning the existing epoll descriptor ``fd`` (closed by
        ``close``); imitates ``select.epoll.fromfd``, refusing negative numbers."""
        fd = operator.index(fd)
        if fd < 0:
            raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
        self = cls.__new__(cls)
        self._epfd = fd
        self._events = None
        return self

    # --- the interest list --------------------------------------------------------

    def register(
        self,
        fd: Any,
        eventmask: int = lib.EPOLLIN | lib.EPOLLPRI | lib.EPOLLOUT,
    ) -> None:
        """Add ``fd`` (an int or an object with ``fileno()``) with ``eventmask``;
        imitates ``select.epoll.register`` (``FileExistsError`` if already there)."""
        fdn, mask = _fd_arg(fd), _mask_arg(eventmask)
        if self._epfd < 0:
            raise _closed()
        nos.epoll_ctl(self._epfd, _CTL_ADD, fdn, mask)

    def modify(self, fd: Any, eventmask: int) -> None:
        """Replace the mask of a registered ``fd``; imitates ``select.epoll.modify``
        (``FileNotFoundError`` if it is not registered)."""
        fdn, mask = _fd_arg(fd), _mask_arg(eventmask)
        if self._epfd < 0:
            raise _closed()
        nos.epoll_ctl(self._epfd, _CTL_MOD, fdn, mask)

    def unregister(self, fd: Any) -> None:
        """Remove ``fd``; imitates ``select.epoll.unregister`` (``FileNotFoundError``
        if it is not registered, ``OSError`` EBADF if it is closed)."""
        fdn = _fd_arg(fd)
        if self._epfd < 0:
            raise _closed()
        nos.epoll_ctl(self._epfd, _CTL_DEL, fdn)

    # --- waiting ------------------------------------------------------------------

    def poll(
        self, timeout: float | None = None, maxevents: int = -1
    ) -> list[tuple[int, int]]:
        """Wait up to ``timeout`` seconds (``None`` or negative: forever) for at most
        ``maxevents`` events (-1: FD_SETSIZE - 1); return ``[(fd, eventmask), ...]``.
        Imitates ``select.epoll.poll``, EINTR retried with the remaining time."""
        if self._epfd < 0:
            raise _closed()
        timeout_ms = _timeout_ms(timeout)
        n = _maxevents_arg(maxevents)
        events = self.event_array(n)
        count = nos.epoll_wait(self._epfd, events, timeout_ms, n)
        # data.u64 holds the fd (ngxffi.os.epoll_ctl puts it there); its low 32 bits
        # are data.fd as well, which is what select.epoll's own registrations set
        return [(ev.data.u64 & 0xFFFF_FFFF, ev.events) for ev in _unpack(events, count)]

    def event_array(self, n: int) -> Any:
        """The owned ``struct epoll_event`` array, grown to hold at least ``n`` events
        (doubling, so a slowly rising demand reallocates rarely). It stays referenced
        here, alive while the kernel may write into it."""
        events = self._events
        if events is None or len(events) < n:
            size = max(n, _MIN_ROOM, 2 * len(events) if events is not None else 0)
            events = self._events = nos.new_events(size)
        return events

    # --- the descriptor -----------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called (``select.epoll.closed``)."""
        return self._epfd < 0

    def fileno(self) -> int:
        """The epoll descriptor; ``ValueError`` once closed (select.epoll.fileno)."""
        if self._epfd < 0:
            raise _closed()
        return self._epfd

    def close(self) -> None:
        """Close the descriptor and drop the event array; again is a no-op. Like
        ``select.epoll.close`` it never raises (the descriptor is gone either way)."""
        fd, self._epfd, self._events = self._epfd, -1, None
        if fd >= 0:
            with contextlib.suppress(OSError):
                nos.close(fd)

    def __enter__(self) -> Self:
        if self._epfd < 0:
            raise _closed()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # select.epoll closes its descriptor when collected, silently; so does this
        if getattr(self, "_epfd", -1) >= 0:
            self.close()
