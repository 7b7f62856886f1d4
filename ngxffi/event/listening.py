"""Listening sockets (≈ ngx_create_listening / ngx_open_listening_sockets /
ngx_close_listening_sockets in src/core/ngx_connection.c).

A ``Listening`` describes one ``listen`` directive: the address (IPv4, IPv6 or a unix
socket path), the backlog (511, as nginx), ``reuseport``, deferred accept and buffer
sizes, and the handler that receives each accepted connection.
``open_listening_sockets`` opens them all as nginx does: SO_REUSEADDR (not for unix
sockets), non-blocking and close-on-exec, IPV6_V6ONLY for IPv6, bind retried 5 times
500 ms apart when the address is in use, with nginx's log lines; any other failure
closes what was opened and raises.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ngxffi import os as nos
from ngxffi import sockaddr
from ngxffi._ngx import lib
from ngxffi.core.log import EMERG, NOTICE, log_error

if TYPE_CHECKING:
    from ngxffi.event.connection import Connection

STREAM_FLAGS: int = lib.SOCK_STREAM | lib.SOCK_NONBLOCK | lib.SOCK_CLOEXEC
EMFILE_POLICIES = ("backoff", "reserve-fd", "both")
BIND_TRIES = 5
BIND_DELAY = 0.5  # seconds between tries, as nginx's ngx_msleep(500)


def _family(address: sockaddr.Address) -> int:
    if isinstance(address, tuple):
        return int(lib.AF_INET6 if ":" in address[0] else lib.AF_INET)
    return int(lib.AF_UNIX)


@dataclass(eq=False)
class Listening:
    """One listening socket and what to do with its connections (ngx_listening_t).

    ``handler(c)`` is called with each accepted connection (ls->handler). ``fd`` and
    ``connection`` are set by :func:`open_listening_sockets` and by the accept layer.
    """

    address: sockaddr.Address
    handler: Callable[[Connection], object]
    backlog: int = nos.LISTEN_BACKLOG
    reuseport: bool = False
    deferred_accept: bool = False
    rcvbuf: int = -1
    sndbuf: int = -1
    emfile_policy: str = "backoff"  # or "reserve-fd", or "both": see event.accept
    fd: int = -1
    connection: Connection | None = field(default=None, repr=False)
    family: int = field(init=False)

    def __post_init__(self) -> None:
        self.family = _family(self.address)
        if self.emfile_policy not in EMFILE_POLICIES:
            raise ValueError(
                f"emfile_policy must be one of {', '.join(EMFILE_POLICIES)}, "
                f"not {self.emfile_policy!r}"
            )

    @property
    def addr_text(self) -> str:
        """The address as nginx prints it: ``1.2.3.4:80``, ``[::1]:80``, ``unix:/p``."""
        return sockaddr.to_text(self.address)

    def _configure(self, s: int) -> None:
        if self.family != lib.AF_UNIX:
            nos.setsockopt(s, lib.SOL_SOCKET, lib.SO_REUSEADDR, 1)
        if self.reuseport:
            nos.setsockopt(s, lib.SOL_SOCKET, lib.SO_REUSEPORT, 1)
        if self.family == lib.AF_INET6:
            nos.setsockopt(s, lib.IPPROTO_IPV6, lib.IPV6_V6ONLY, 1)
        if self.rcvbuf != -1:
            nos.setsockopt(s, lib.SOL_SOCKET, lib.SO_RCVBUF, self.rcvbuf)
        if self.sndbuf != -1:
            nos.setsockopt(s, lib.SOL_SOCKET, lib.SO_SNDBUF, self.sndbuf)

    def _open(self) -> bool:
        """Open, bind and listen; False when the address is in use (try again)."""
        s = nos.socket(self.family, STREAM_FLAGS)
        try:
            self._configure(s)
            try:
                nos.bind(s, self.address, self.family)
            except OSError as e:
                log_error(EMERG, f"bind() to {self.addr_text} failed", e.errno or 0)
                if e.errno == lib.EADDRINUSE:
                    nos.close(s)
                    return False
                raise
            if self.family == lib.AF_UNIX and isinstance(self.address, str):
                os.chmod(self.address, 0o666)  # as nginx: any local user may connect
            nos.listen(s, self.backlog)
            if self.deferred:
                nos.setsockopt(s, lib.IPPROTO_TCP, lib.TCP_DEFER_ACCEPT, 1)
        except BaseException:
            nos.close(s)
            raise
        self.fd = s
        return True

    @property
    def deferred(self) -> bool:
        """Whether accepting waits for the first data: ``deferred_accept``, for TCP
        only (a unix socket has no TCP_DEFER_ACCEPT)."""
        return self.deferred_accept and self.family != lib.AF_UNIX

    def close(self) -> None:
        """Close the socket; a unix socket's file is removed, as nginx's master does."""
        if self.fd < 0:
            return
        nos.close(self.fd)
        self.fd = -1
        if self.family == lib.AF_UNIX and isinstance(self.address, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)


def open_listening_sockets(
    listening: Sequence[Listening], tries: int = BIND_TRIES, delay: float = BIND_DELAY
) -> None:
    """Open every listening socket not open yet. Imitates ngx_open_listening_sockets:
    an address in use is retried ``tries`` times ``delay`` seconds apart ("try again
    to bind() after 500ms", then "still could not bind()"); any other error closes the
    sockets this call opened and raises."""
    opened: list[Listening] = []
    try:
        for _ in range(tries):
            failed = False
            for ls in listening:
                if ls.fd >= 0:
                    continue
                if ls._open():
                    opened.append(ls)
                else:
                    failed = True
            if not failed:
                return
            log_error(NOTICE, f"try again to bind() after {int(delay * 1000)}ms")
            time.sleep(
                delay
            )  # nginx's ngx_msleep(500): a pause, not a wait for an event
        log_error(EMERG, "still could not bind()")
        raise OSError(lib.EADDRINUSE, "still could not bind()")
    except BaseException:
        for ls in opened:
            ls.close()
        raise
