"""Event modules, one file per method, by the name ``Cycle(use=…)`` takes.

≈ nginx's ``ngx_event_module_t``: a module has a name and an actions table, which its
``init`` installs on the cycle together with the flags saying what the method can do
(``cycle.actions``, ``cycle.event_flags``, as ngx_epoll_init sets ``ngx_event_actions``
and ``ngx_event_flags``); ``done`` releases its kernel objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ngxffi.event.modules.epoll import EpollModule
from ngxffi.event.modules.io_uring import IoUringModule
from ngxffi.event.modules.poll import PollModule

if TYPE_CHECKING:
    from ngxffi.event.cycle import Cycle
    from ngxffi.event.event import EventActions


class EventModule(Protocol):
    """What the cycle and the layers above may rely on in an event module."""

    name: str
    flags: int  # what the method can do: USE_CLEAR_EVENT, USE_LEVEL_EVENT, …
    actions: EventActions  # set by init
    # True when the kernel reports EPOLLRDHUP for this module's registrations: a
    # read shorter than asked for then means the socket is empty (ngx_use_epoll_rdhup)
    use_epoll_rdhup: bool

    def init(self, cycle: Cycle) -> None:
        """Open the method's kernel objects; make ``actions`` and install it and
        ``flags`` on the cycle (ngx_event_actions, ngx_event_flags)."""

    def done(self, cycle: Cycle) -> None:
        """Close what ``init`` opened."""


MODULES: dict[str, Callable[[Cycle, int], EventModule]] = {
    "epoll": EpollModule,
    "poll": PollModule,
    "io_uring": IoUringModule,
}
