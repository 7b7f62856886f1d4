"""epoll, unwrapped only as far as errors and EINTR (≈ the syscalls under
src/event/modules/ngx_epoll_module.c)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ngxffi._ngx import ffi, lib
from ngxffi.os.errors import FileLike, error, fileno, retry_wait

_EPOLL_OPS = {
    lib.EPOLL_CTL_ADD: "EPOLL_CTL_ADD",
    lib.EPOLL_CTL_MOD: "EPOLL_CTL_MOD",
    lib.EPOLL_CTL_DEL: "EPOLL_CTL_DEL",
}


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
    if lib.ngxffi_sys_epoll_ctl(fileno(epfd), op, fdn, ev) < 0:
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
    return retry_wait(
        "epoll_wait", lib.ngxffi_sys_epoll_wait, epfd, events, n, timeout_ms
    )


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
    return retry_wait(
        "epoll_pwait", lib.ngxffi_sys_epoll_pwait, epfd, events, n, timeout_ms, mask
    )
