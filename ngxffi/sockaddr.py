"""Socket addresses between Python's forms and C ``struct sockaddr``.

Python's forms are the ones the ``socket`` module uses, so the two interoperate:
``(host, port)`` for AF_INET, ``(host, port, flowinfo, scope_id)`` for AF_INET6 (a
2-tuple is accepted), and ``str``/``bytes`` paths for AF_UNIX, where a leading NUL byte
names an abstract socket. Imitates what nginx keeps in ``c->sockaddr``/``c->socklen``
and prints with ``ngx_sock_ntop`` (src/core/ngx_inet.c).
"""

from __future__ import annotations

import socket
from typing import Any, Union

from ngxffi._ngx import ffi, lib

Address = Union[tuple[str, int], tuple[str, int, int, int], str, bytes]

SOCKADDR_STORAGE_SIZE: int = ffi.sizeof("struct sockaddr_storage")
_SUN_PATH_MAX: int = ffi.sizeof(ffi.new("struct sockaddr_un *").sun_path)


def new_storage() -> tuple[Any, Any]:
    """A ``struct sockaddr_storage`` and a ``socklen_t`` holding its size, for the
    calls that fill in an address (accept, getsockname, getpeername)."""
    storage = ffi.new("struct sockaddr_storage *")
    length = ffi.new("socklen_t *", SOCKADDR_STORAGE_SIZE)
    return storage, length


def _host_bytes(family: int, host: str) -> bytes:
    """The binary address for a numeric host or a name (resolved like socket.bind)."""
    if host == "":
        host = "0.0.0.0" if family == socket.AF_INET else "::"
    try:
        return socket.inet_pton(family, host)
    except OSError:
        pass
    infos = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    return socket.inet_pton(family, str(infos[0][4][0]))


def _check_port(port: object) -> int:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise OverflowError(f"port must be 0-65535, not {port!r}")
    return port


def encode(family: int, address: Address) -> tuple[Any, int]:
    """Build the C address for ``address``; return (``struct sockaddr *``, length).

    The returned pointer owns its memory: keep it referenced while the kernel reads it.
    """
    if family == lib.AF_INET:
        if not isinstance(address, tuple) or len(address) != 2:
            raise TypeError(f"AF_INET address must be (host, port), not {address!r}")
        sin = ffi.new("struct sockaddr_in *")
        sin.sin_family = lib.AF_INET
        sin.sin_port = socket.htons(_check_port(address[1]))
        ffi.memmove(ffi.addressof(sin.sin_addr), _host_bytes(family, address[0]), 4)
        return ffi.cast("struct sockaddr *", sin), ffi.sizeof(sin[0])
    if family == lib.AF_INET6:
        if not isinstance(address, tuple) or len(address) not in (2, 4):
            raise TypeError(
                f"AF_INET6 address must be (host, port[, flowinfo, scope_id]), "
                f"not {address!r}"
            )
        sin6 = ffi.new("struct sockaddr_in6 *")
        sin6.sin6_family = lib.AF_INET6
        sin6.sin6_port = socket.htons(_check_port(address[1]))
        if len(address) == 4:
            sin6.sin6_flowinfo = socket.htonl(address[2])
            sin6.sin6_scope_id = address[3]
        ffi.memmove(sin6.sin6_addr.s6_addr, _host_bytes(family, address[0]), 16)
        return ffi.cast("struct sockaddr *", sin6), ffi.sizeof(sin6[0])
    if family == lib.AF_UNIX:
        path = address.encode() if isinstance(address, str) else address
        if not isinstance(path, bytes):
            raise TypeError(f"AF_UNIX address must be str or bytes, not {address!r}")
        if len(path) >= _SUN_PATH_MAX + (path[:1] == b"\0"):
            raise OSError(f"AF_UNIX path too long ({len(path)} bytes)")
        sun = ffi.new("struct sockaddr_un *")
        sun.sun_family = lib.AF_UNIX
        ffi.memmove(sun.sun_path, path, len(path))
        length = ffi.offsetof("struct sockaddr_un", "sun_path") + len(path)
        # A filesystem path carries its NUL in the length; an abstract name does not.
        return ffi.cast("struct sockaddr *", sun), length + (path[:1] != b"\0")
    raise ValueError(f"unsupported address family {family}")


def decode(sa: Any, length: int) -> Address:
    """Python's form of a kernel-filled ``struct sockaddr *`` of ``length`` bytes."""
    family = sa.sa_family
    if family == lib.AF_INET:
        sin = ffi.cast("struct sockaddr_in *", sa)
        raw = bytes(ffi.buffer(ffi.addressof(sin.sin_addr), 4))
        return socket.inet_ntop(socket.AF_INET, raw), socket.ntohs(sin.sin_port)
    if family == lib.AF_INET6:
        sin6 = ffi.cast("struct sockaddr_in6 *", sa)
        raw = bytes(ffi.buffer(sin6.sin6_addr.s6_addr, 16))
        return (
            socket.inet_ntop(socket.AF_INET6, raw),
            socket.ntohs(sin6.sin6_port),
            socket.ntohl(sin6.sin6_flowinfo),
            sin6.sin6_scope_id,
        )
    if family == lib.AF_UNIX:
        sun = ffi.cast("struct sockaddr_un *", sa)
        size = length - ffi.offsetof("struct sockaddr_un", "sun_path")
        path = bytes(ffi.buffer(sun.sun_path, max(size, 0)))
        if path[:1] == b"\0":
            return path  # abstract: every byte counts, as in the socket module
        return path.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    if family == lib.AF_UNSPEC:
        return ""  # e.g. the peer of an unnamed socketpair end
    raise ValueError(f"unsupported address family {family}")


def to_text(address: Address, port: bool = True) -> str:
    """The address as nginx's ngx_sock_ntop prints it: ``1.2.3.4:80``, ``[::1]:80``,
    ``unix:/path``; without the port (``$remote_addr``): ``1.2.3.4``, ``::1``."""
    if isinstance(address, tuple):
        host = address[0]
        if not port:
            return host
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    if isinstance(address, bytes):
        address = address.decode("utf-8", "backslashreplace")
    return f"unix:{address}"
