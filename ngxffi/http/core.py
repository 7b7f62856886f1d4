"""The http core's directives (≈ ngx_http_core_module's commands, with ``return`` of
ngx_http_rewrite_module and ``access_log`` of ngx_http_log_module): where to listen,
the timeouts, the limits on what a client may send."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from ngxffi.core.conf import (
    Command,
    enum,
    flag,
    msec,
    number,
    positive,
    size,
    string,
    table,
)
from ngxffi.event.connection import Connection
from ngxffi.event.listening import EMFILE_POLICIES, Listening

# lingering_close: never; when the client may still be sending; after every answer
LINGERING_CLOSE = ("off", "on", "always")


@dataclass
class Listen:
    """The ``listen`` directive: an address and its socket's parameters."""

    address: str = "127.0.0.1:8080"
    backlog: int = Listening.backlog
    reuseport: bool = Listening.reuseport
    # On, where nginx's is off: a connection is accepted once its request is there,
    # so that the C accept handler can answer it at once (ngxffi.http.accept).
    deferred: bool = True
    emfile_policy: str = Listening.emfile_policy  # see ngxffi.event.accept

    def listening(self, handler: Callable[[Connection], object]) -> Listening:
        """The listening socket this directive asks for (not open yet)."""
        return Listening(
            self.sockaddr,
            handler,
            backlog=self.backlog,
            reuseport=self.reuseport,
            deferred_accept=self.deferred,
            emfile_policy=self.emfile_policy,
        )

    @property
    def sockaddr(self) -> tuple[str, int]:
        """``ADDR:PORT``, ``[V6]:PORT`` or ``PORT`` (all addresses), as nginx's listen;
        port 0 takes any free port."""
        host, sep, port = self.address.rpartition(":")
        if not sep:
            host, port = "0.0.0.0", self.address
        if not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"invalid port in {self.address!r}")
        return host.strip("[]") or "0.0.0.0", int(port)


_listen_table = table(
    Listen,
    {
        "address": string,
        "backlog": positive,
        "reuseport": flag,
        "deferred": flag,
        "emfile_policy": enum(*EMFILE_POLICIES),
    },
)


def parse_listen(value: object) -> Listen:
    """``"ADDR:PORT"``, or a table of the address and parameters."""
    conf = Listen(value) if isinstance(value, str) else _listen_table(value)
    conf.sockaddr  # noqa: B018  (refused now, not when the socket opens)
    return conf


def parse_return(value: object) -> tuple[int, str]:
    """``[STATUS, "body"]``: answer every request with it (nginx's ``return``)."""
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], int)
        or not 100 <= value[0] <= 599
        or not isinstance(value[1], str)
    ):
        raise ValueError(f'expected [STATUS, "body"], not {value!r}')
    return value[0], value[1]


def parse_header_buffers(value: object) -> tuple[int, int]:
    """nginx's ``"NUMBER SIZE"``, e.g. ``"4 8k"``."""
    parts = string(value).split()
    if len(parts) != 2 or not parts[0].isdigit():
        raise ValueError(f'expected "NUMBER SIZE", such as "4 8k", not {value!r}')
    return positive(int(parts[0])), positive(size(parts[1]))


@dataclass
class HttpCoreConf:
    """What the HTTP layer reads (≈ ngx_http_core_srv_conf_t and _loc_conf_t), with
    nginx's defaults."""

    listen: Listen = field(default_factory=Listen)
    client_header_timeout: int = 60_000  # ms
    keepalive_timeout: int = 75_000
    keepalive_requests: int = 1000
    send_timeout: int = 60_000
    large_client_header_buffers: tuple[int, int] = (4, 8192)  # number, size
    client_max_body_size: int = 1 << 20
    lingering_close: str = "on"  # off | on | always
    lingering_time: int = 30_000
    lingering_timeout: int = 5_000
    # beyond nginx (ngxffi.http.reclaim): bytes a second; 0: no reclaiming
    client_min_rate: int = 500
    return_: tuple[int, str] | None = None
    access_log: str | None = None  # nginx's combined format; None: off
    server_tokens: str = "ngxffi"  # the Server header (not a directive here)

    commands: ClassVar[tuple[Command, ...]] = (
        Command("listen", parse_listen),
        Command("client_header_timeout", msec),
        Command("keepalive_timeout", msec),
        Command("keepalive_requests", positive),
        Command("send_timeout", msec),
        Command("large_client_header_buffers", parse_header_buffers),
        Command("client_max_body_size", size),
        Command("lingering_close", enum(*LINGERING_CLOSE)),
        Command("lingering_time", msec),
        Command("lingering_timeout", msec),
        Command("client_min_rate", number),
        Command("return", parse_return, field="return_"),
        Command("access_log", string),
    )
