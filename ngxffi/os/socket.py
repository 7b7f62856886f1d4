"""Sockets (≈ src/os/unix/ngx_socket.c, ngx_recv.c, ngx_send.c): addresses in the
socket module's form, through :mod:`ngxffi.sockaddr`."""

from __future__ import annotations

from typing import Any, Literal, overload

from ngxffi import sockaddr
from ngxffi._ngx import ffi, lib
from ngxffi.os.errors import Buffer, FileLike, error, fileno, retry
from ngxffi.os.files import pin


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
    retry("connect", lib.connect, fd, sa, length)


LISTEN_BACKLOG = 511  # nginx's NGX_LISTEN_BACKLOG on Linux


def listen(fd: FileLike, backlog: int = LISTEN_BACKLOG) -> None:
    """Listen, by default with nginx's backlog of 511."""
    if lib.listen(fileno(fd), backlog) < 0:
        raise error("listen")


def _accept(call: str, fd: FileLike, flags: int | None) -> tuple[int, sockaddr.Address]:
    fd = fileno(fd)
    storage, length = sockaddr.new_storage()
    sa = ffi.cast("struct sockaddr *", storage)
    if flags is None:
        s = retry(call, lib.ngxffi_sys_accept, fd, sa, length)
    else:
        s = retry(call, lib.ngxffi_sys_accept4, fd, sa, length, flags)
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


def outq(fd: FileLike) -> int:
    """The bytes in the socket's send queue its peer has not taken yet: unsent, or
    unacknowledged (ioctl SIOCOUTQ)."""
    n = lib.ngxffi_outq(fileno(fd))
    if n < 0:
        raise error("ioctl(SIOCOUTQ)")
    return int(n)


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
    return bytes(
        ffi.unpack(buf, retry("recv", lib.ngxffi_sys_recv, fd, buf, bufsize, flags))
    )


def recv_into(fd: FileLike, buffer: Buffer, nbytes: int = 0, flags: int = 0) -> int:
    """Receive into a writable buffer without allocating; return the byte count."""
    fd = fileno(fd)
    buf = pin(buffer, writable=True)
    n = len(buf) if nbytes == 0 else min(nbytes, len(buf))
    return retry("recv", lib.ngxffi_sys_recv, fd, buf, n, flags)


def send(fd: FileLike, data: Buffer, flags: int = 0) -> int:
    """Send from a bytes-like object without copying it; return the bytes sent."""
    fd = fileno(fd)
    buf = ffi.from_buffer(data)
    return retry("send", lib.ngxffi_sys_send, fd, buf, len(buf), flags)


def shutdown(fd: FileLike, how: int) -> None:
    """Shut down reading (``SHUT_RD``), writing (``SHUT_WR``) or both."""
    if lib.shutdown(fileno(fd), how) < 0:
        raise error("shutdown")
