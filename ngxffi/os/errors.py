"""Errors and retries (≈ src/os/unix/ngx_errno.c): what every wrapper of
:mod:`ngxffi.os` shares — the descriptor of an argument, the OSError of a failed call,
and the one EINTR loop (PEP 475)."""

from __future__ import annotations

import math
import os as _os
import time
from collections.abc import Callable
from typing import Any, Protocol, Union

from ngxffi._ngx import ffi, lib


class HasFileno(Protocol):
    def fileno(self) -> int: ...


FileLike = Union[int, HasFileno]
Buffer = Any  # bytes, bytearray, memoryview, array, mmap: anything with the buffer API

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


def retry(call: str, fn: Callable[..., int], *args: Any) -> int:
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
    timeout: int,
    *more: Any,
    start: float | None = None,
    per_second: int = 1000,
) -> int:
    """:func:`retry` for a wait shaped like epoll_wait, ``fn(fd, events, maxevents,
    timeout, *more)``: after EINTR it waits for what remains of ``timeout`` (rounded
    up), not for all of it again. ``timeout`` is in milliseconds, epoll_wait's unit,
    unless ``per_second`` says otherwise (10**9 for ``ngxffi_epoll_select``'s
    nanoseconds). ``start`` is when the wait began (``time.monotonic()``), for a
    caller that already tried once itself, as ``ngxffi.selector`` does; by default,
    now."""
    if timeout <= 0:  # -1 (forever) and 0 (a poll) stay as they are
        return retry(call, fn, fd, events, maxevents, timeout, *more)
    deadline = (time.monotonic() if start is None else start) + timeout / per_second

    def wait() -> int:
        return fn(fd, events, maxevents, _remaining(deadline, per_second), *more)

    return retry(call, wait)


def _remaining(deadline: float, per_second: int) -> int:
    """What is left until ``deadline`` (monotonic s), in 1/per_second, rounded up.

    Called after EINTR: the pending signal handlers run as this call begins, so the
    time they took is not waited for again."""
    return max(0, math.ceil((deadline - time.monotonic()) * per_second))
