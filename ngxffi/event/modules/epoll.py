"""The epoll event module (≈ src/event/modules/ngx_epoll_module.c).

A table of small actions over one epoll instance (written once for epoll and
io_uring, in :mod:`ngxffi.event.modules.tagged` and :mod:`~ngxffi.event.modules.batch`):

* ``add``: ``EPOLL_CTL_MOD`` with both masks when the connection's other event is
  already active, else ``EPOLL_CTL_ADD``; ``data.u64`` is the tagged pointer
  ``address(c) | ev.instance``. ``delete`` mirrors it (MOD down to the other mask, or
  DEL); with CLOSE_EVENT it only clears ``active``, because closing the fd removes the
  registration — unless the file description is shared (the dup trap, explained at
  :func:`ngxffi.event.accept.close_listening_sockets`), which is why listening
  sockets are deleted for real.
* ``add_conn``: one ``EPOLL_CTL_ADD`` of ``EPOLLIN|EPOLLOUT|EPOLLET|EPOLLRDHUP``.
* ``notify``: an eventfd registered edge-triggered with a static connection outside the
  pool, so another thread can wake the loop.
* ``process_events``: ``epoll_wait`` (``epoll_pwait2``, the same wait with a
  timespec, where the kernel has it: a deliberate difference that changes nothing
  for nginx's millisecond timers, kept so that one C wait serves the selector too),
  then nginx's loop body per event. The wait and
  the decoding and stale checks of the whole batch run in one C call
  (``ngxffi_epoll_process``), which also refuses any ``data.u64`` that is not exactly
  one of this cycle's slots (or the notify connection): such a value is counted,
  logged at alert level, and never dereferenced. Python then calls the handlers in
  order. When a handler changes the pool or a registration (a close, a reuse, an add
  or a delete: ``cycle.on_change``), the rest of the batch is decided again after it
  returns, so the stale checks happen exactly where nginx makes them — including the
  write side's re-check after the read handler.

A handler that raises does not lose the rest of its batch: those events, already
marked ready and edge-triggered, are posted to ``posted_next`` before the exception
propagates, so the next turn runs them without waiting. ``process_events`` refuses to
run on a closed cycle (ValueError) or from inside a handler (RuntimeError), and caps
the wait at INT_MAX ms.

Deliberate differences: ``ready``, ``available`` and ``pending_eof`` of the events later
in a batch are set when the batch is decided, before the earlier handlers run; nginx
sets them just before each handler. A handler that clears another connection's
``ready`` in the same batch therefore sees it stay cleared (nginx would set it again
and the handler would read EAGAIN). ``strong_tags`` (off by default) adds the
connection's 16-bit generation above the 48 address bits, which closes the hole of
nginx's single instance bit: a slot closed and reused twice within one batch flips the
bit back and passes nginx's check, but not the generation's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ngxffi import os as nos
from ngxffi import probe
from ngxffi._ngx import lib
from ngxffi.event.event import USE_CLEAR_EVENT, USE_EPOLL_EVENT, USE_GREEDY_EVENT
from ngxffi.event.modules.tagged import TaggedModule

if TYPE_CHECKING:
    from ngxffi.event.cycle import Cycle


class EpollModule(TaggedModule):
    """ngx_epoll_module for one cycle; ``events`` is the size of the event list."""

    name = "epoll"
    flags = USE_CLEAR_EVENT | USE_GREEDY_EVENT | USE_EPOLL_EVENT
    _process = lib.ngxffi_epoll_process

    def __init__(self, cycle: Cycle, events: int) -> None:
        super().__init__(cycle, events)
        self.ep = -1

    def _open(self, cycle: Cycle) -> None:
        """Imitates ngx_epoll_init: the epoll instance, and the EPOLLRDHUP probe."""
        self.ep = cycle.raw.ep = nos.epoll_create1()
        self.use_epoll_rdhup = probe.epoll_rdhup()

    def done(self, cycle: Cycle) -> None:
        """Close the epoll instance and the eventfd. Imitates ngx_epoll_done."""
        cycle.raw.ep = -1
        if self.ep >= 0:
            nos.close(self.ep)
        self.ep = -1
        super().done(cycle)

    def _ctl_raw(self, op: int, c: Any, events: int, instance: int) -> None:
        if lib.ngxffi_epoll_ctl(self.cycle.raw, self.ep, op, c, events, instance) == -1:
            raise self._fail(f"epoll_ctl({op}, {c.fd})")
