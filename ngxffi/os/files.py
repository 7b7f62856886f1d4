"""Plain descriptors (≈ src/os/unix/ngx_files.c, ngx_readv_chain.c,
ngx_linux_sendfile_chain.c): read and write, scatter and gather, sendfile, close and
dup, pipes and eventfds, and fcntl through non-variadic C helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ngxffi._ngx import ffi, lib
from ngxffi.os.errors import Buffer, FileLike, error, fileno, retry


def read(fd: FileLike, n: int) -> bytes:
    """Read up to ``n`` bytes; ``b""`` at end of file."""
    fd = fileno(fd)
    buf = ffi.new("char[]", n)
    return bytes(ffi.unpack(buf, retry("read", lib.ngxffi_sys_read, fd, buf, n)))


def write(fd: FileLike, data: Buffer) -> int:
    """Write from a bytes-like object without copying it; return the bytes written."""
    fd = fileno(fd)
    buf = ffi.from_buffer(data)
    return retry("write", lib.ngxffi_sys_write, fd, buf, len(buf))


def pin(buffer: Buffer, writable: bool) -> Any:
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
    pins = [pin(b, writable) for b in buffers]
    for slot, pinned in zip(iov, pins, strict=True):
        slot.iov_base = pinned
        slot.iov_len = len(pinned)
    return iov, pins


def readv(fd: FileLike, buffers: Sequence[Buffer]) -> int:
    """Scatter-read into writable buffers; return the total byte count."""
    fd = fileno(fd)
    iov, _pins = _iovec(buffers, writable=True)
    return retry("readv", lib.ngxffi_sys_readv, fd, iov, len(buffers))


def writev(fd: FileLike, buffers: Sequence[Buffer]) -> int:
    """Gather-write from bytes-like objects in one syscall; return the bytes written."""
    fd = fileno(fd)
    iov, _pins = _iovec(buffers, writable=False)
    return retry("writev", lib.ngxffi_sys_writev, fd, iov, len(buffers))


def sendfile(out_fd: FileLike, in_fd: FileLike, offset: int | None, count: int) -> int:
    """Copy ``count`` bytes of ``in_fd`` from ``offset`` (``None``: its file position)
    to ``out_fd`` in the kernel; return the bytes sent."""
    out, src = fileno(out_fd), fileno(in_fd)
    off = ffi.NULL if offset is None else ffi.new("off_t *", offset)
    return retry("sendfile", lib.ngxffi_sys_sendfile, out, src, off, count)


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
    fd: int = lib.ngxffi_sys_eventfd(initval, flags)
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
