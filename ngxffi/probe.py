"""What this kernel and this build support, found by trying, as nginx does at start-up.

Each probe makes its own short-lived kernel objects and closes them; none raises for a
missing feature (that is the answer), only for an unexpected failure.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from ngxffi import os as nos
from ngxffi._ngx import ffi, lib


def epoll_rdhup() -> bool:
    """Whether epoll reports EPOLLRDHUP when the peer closes.

    Imitates ngx_epoll_test_rdhup (src/event/modules/ngx_epoll_module.c): register one
    end of a socketpair edge-triggered for EPOLLIN|EPOLLRDHUP, close the other end and
    look at what comes back. Differs: uses a throw-away epoll instance of its own.
    """
    fds: list[int] = []  # whatever is open, closed whatever happens
    try:
        ep = nos.epoll_create1()
        fds.append(ep)
        a, b = nos.socketpair()
        fds += (a, b)
        nos.epoll_ctl(
            ep, lib.EPOLL_CTL_ADD, a, lib.EPOLLET | lib.EPOLLIN | lib.EPOLLRDHUP
        )
        fds.remove(b)
        nos.close(b)
        events = nos.new_events(1)
        n = nos.epoll_wait(ep, events, 0)
        return n == 1 and bool(events[0].events & lib.EPOLLRDHUP)
    finally:
        for fd in fds:
            nos.close(fd)


def epoll_exclusive() -> bool:
    """Whether EPOLLEXCLUSIVE is accepted (Linux 4.5+); older kernels say EINVAL."""
    fds: list[int] = []
    try:
        ep = nos.epoll_create1()
        fds.append(ep)
        efd = nos.eventfd()
        fds.append(efd)
        nos.epoll_ctl(ep, lib.EPOLL_CTL_ADD, efd, lib.EPOLLIN | lib.EPOLLEXCLUSIVE)
        return True
    except OSError as e:
        if e.errno == lib.EINVAL:
            return False
        raise
    finally:
        for fd in fds:
            nos.close(fd)


def accept4() -> bool:
    """Whether the accept4 syscall exists: on a bad fd it says EBADF, if absent ENOSYS.

    nginx finds out on its first accept instead (ngx_event_accept's ENOSYS fallback).
    """
    lib.accept4(-1, ffi.NULL, ffi.NULL, lib.SOCK_NONBLOCK)
    return bool(ffi.errno != lib.ENOSYS)


def epoll_pwait2() -> bool:
    """Whether the kernel has epoll_pwait2 (Linux 5.11+), the wait with a timespec
    timeout that lets :mod:`ngxffi.selector` wait less than a millisecond: asked with
    a bad fd and no events to take, it fails at once, EBADF where it exists, ENOSYS
    (or EPERM, from a seccomp filter older than it) where not. No without trying when
    ``NGXFFI_EPOLL_PWAIT2=0`` is in the environment, which is for filters that kill
    on a call they do not know. nginx has only epoll_wait."""
    if os.environ.get("NGXFFI_EPOLL_PWAIT2") == "0":
        return False
    return bool(lib.ngxffi_epoll_pwait2_probe())


def openat2() -> bool:
    """Whether openat2 (Linux 5.6+) opens beneath a directory: ``.`` under ``/``
    with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS. No when the
    kernel has no such call (ENOSYS), when a seccomp filter that predates it refuses
    it (EPERM) or when it knows none of these flags (EINVAL). nginx has no openat2."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    resolve = nos.RESOLVE_BENEATH | nos.RESOLVE_NO_SYMLINKS | nos.RESOLVE_NO_MAGICLINKS
    try:
        nos.close(nos.openat2(root, ".", os.O_PATH | os.O_CLOEXEC, resolve))
        return True
    except OSError as e:
        if e.errno in (lib.ENOSYS, lib.EPERM, lib.EINVAL):
            return False
        raise
    finally:
        nos.close(root)


def io_uring() -> dict[str, Any]:
    """What io_uring offers here, found on a small ring of its own, as the io_uring
    module needs it (``ngxffi_uring_probe``): ``usable`` (every feature the module
    builds on: Linux 5.19), ``multishot_poll`` (a poll request that stays armed), and
    the rest for the record. When io_uring_setup fails, ``reason`` says why
    (the errno and, where the kernel has the switch, ``kernel.io_uring_disabled``);
    ``NGXFFI_IO_URING=0`` answers no without trying, for seccomp filters that kill.
    nginx has no io_uring event module."""
    p = ffi.new("ngxffi_uring_probe_t *")
    lib.ngxffi_uring_probe(p)
    answer: dict[str, Any] = {
        name: bool(getattr(p, name))
        for name in (
            "usable",
            "multishot_poll",
            "cancel_all",
            "defer_taskrun",
            "coop_taskrun",
            "msg_ring",
            "recv",
            "provide_buffers",
        )
    }
    answer["features"] = int(p.features)
    answer["reason"] = io_uring_reason(p.setup_errno) if not p.usable else ""
    return answer


def io_uring_reason(err: int) -> str:
    """Why the io_uring module cannot run, for an errno from setting it up."""
    if os.environ.get("NGXFFI_IO_URING") == "0":
        return "io_uring is turned off (NGXFFI_IO_URING=0)"
    if not err or err == errno.ENOTSUP:
        return "io_uring on this kernel lacks what ngxffi needs (Linux 5.19 or later)"
    reason = (
        f"io_uring_setup() failed ({errno.errorcode.get(err, err)}: {os.strerror(err)})"
    )
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            reason += f"; kernel.io_uring_disabled = {f.read().strip()}"
    except OSError:
        pass
    return reason


def layout(ctype: str) -> dict[str, Any]:
    """Size, alignment and the offset (and bit position) of every field of ``ctype``."""
    t = ffi.typeof(ctype)
    fields = {}
    for name, field in t.fields:
        entry: dict[str, int] = {"offset": field.offset}
        if field.bitsize >= 0:
            entry["bit"] = field.bitshift
            entry["bits"] = field.bitsize
        else:
            entry["size"] = ffi.sizeof(field.type)
        fields[name] = entry
    return {"size": ffi.sizeof(t), "align": ffi.alignof(t), "fields": fields}
