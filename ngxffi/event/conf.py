"""The event core's directives (≈ ngx_event_core_module's commands in
src/event/ngx_event.c): the pool size, the event method, how accepting goes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ngxffi.core.conf import Command, enum, flag, msec, positive
from ngxffi.event.modules import MODULES


@dataclass
class EventConf:
    """``ngx_event_conf_t``, with nginx's defaults."""

    worker_connections: int = 512
    use: str = "epoll"
    multi_accept: bool = False
    accept_mutex: bool = False
    accept_mutex_delay: int = 500  # ms

    commands: ClassVar[tuple[Command, ...]] = (
        Command("worker_connections", positive),
        Command("use", enum(*MODULES)),
        Command("multi_accept", flag),
        Command("accept_mutex", flag),
        Command("accept_mutex_delay", msec),
    )
