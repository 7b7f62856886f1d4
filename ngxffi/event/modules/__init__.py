"""Event modules, one file per method, by the name ``Cycle(use=…)`` takes."""

from ngxffi.event.modules.epoll import EpollModule
from ngxffi.event.modules.poll import PollModule

MODULES: dict[str, type[EpollModule] | type[PollModule]] = {
    "epoll": EpollModule,
    "poll": PollModule,
}
