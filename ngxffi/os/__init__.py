"""Errno-checked, EINTR-safe wrappers over the raw syscalls in ``ngxffi._ngx``.

The counterpart of nginx's ``src/os/unix/``: thin functions that take file descriptors
as ints or as objects with ``fileno()``, return Python values, and turn a failing call
into ``OSError``. The exception is the errno subclass (``BlockingIOError``,
``FileNotFoundError``, ``PermissionError``, …) and its message names the call, e.g.
``[Errno 17] epoll_ctl(EPOLL_CTL_ADD): File exists``.

EINTR follows PEP 475, in one place (:func:`ngxffi.os.errors.retry`): the
wrapper lets Python run the pending signal handlers (an exception raised by one
propagates), then retries; a call with a timeout is retried with the time that remains.
``close`` is the exception: on Linux the descriptor is gone even when close reports
EINTR, so retrying could close somebody else's new fd.

The raw ``ffi``/``lib`` stay public (``ngxffi.ffi``, ``ngxffi.lib``) for experiments;
the event core calls ``lib`` directly on its hot paths and uses these for the rest.

One module per area, as nginx's ``src/os/unix`` has files; every name is re-exported
here, so ``from ngxffi import os as nos`` then ``nos.epoll_wait(...)`` is the way in.

Every wrapper here calls the raw syscall through its ``ngxffi_sys_*`` inline function
(``src/ngx_fault.h``), as the event core's C does, so that :mod:`ngxffi.os.faults`
(also ``ngxffi.faults``) can make it fail or come up short.
"""

from __future__ import annotations

from ngxffi.os import faults
from ngxffi.os.beneath import (
    RESOLVE_BENEATH,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    RESOLVE_NO_XDEV,
    open_beneath,
    openat,
    openat2,
    walk_beneath,
)
from ngxffi.os.epoll import (
    epoll_create1,
    epoll_ctl,
    epoll_pwait,
    epoll_wait,
    new_events,
    sigset,
)
from ngxffi.os.errors import (
    Buffer,
    FileLike,
    HasFileno,
    error,
    fileno,
    retry_wait,
)
from ngxffi.os.files import (
    close,
    dup,
    eventfd,
    get_cloexec,
    get_status_flags,
    pipe2,
    read,
    readv,
    sendfile,
    set_cloexec,
    set_nonblocking,
    set_status_flags,
    write,
    writev,
)
from ngxffi.os.inotify import (
    InotifyEvent,
    inotify_add_watch,
    inotify_events,
    inotify_init1,
    inotify_rm_watch,
)
from ngxffi.os.limits import (
    clock_gettime_ns,
    getrlimit,
    setrlimit,
)
from ngxffi.os.socket import (
    LISTEN_BACKLOG,
    accept,
    accept4,
    bind,
    connect,
    getpeername,
    getsockname,
    getsockopt,
    listen,
    outq,
    recv,
    recv_into,
    send,
    setsockopt,
    shutdown,
    socket,
    socketpair,
)

__all__ = [
    "LISTEN_BACKLOG",
    "RESOLVE_BENEATH",
    "RESOLVE_IN_ROOT",
    "RESOLVE_NO_MAGICLINKS",
    "RESOLVE_NO_SYMLINKS",
    "RESOLVE_NO_XDEV",
    "Buffer",
    "FileLike",
    "HasFileno",
    "InotifyEvent",
    "accept",
    "accept4",
    "bind",
    "clock_gettime_ns",
    "close",
    "connect",
    "dup",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_wait",
    "error",
    "eventfd",
    "faults",
    "fileno",
    "get_cloexec",
    "get_status_flags",
    "getpeername",
    "getrlimit",
    "getsockname",
    "getsockopt",
    "inotify_add_watch",
    "inotify_events",
    "inotify_init1",
    "inotify_rm_watch",
    "listen",
    "new_events",
    "open_beneath",
    "openat",
    "openat2",
    "outq",
    "pipe2",
    "read",
    "readv",
    "recv",
    "recv_into",
    "retry_wait",
    "send",
    "sendfile",
    "set_cloexec",
    "set_nonblocking",
    "set_status_flags",
    "setrlimit",
    "setsockopt",
    "shutdown",
    "sigset",
    "socket",
    "socketpair",
    "walk_beneath",
    "write",
    "writev",
]
