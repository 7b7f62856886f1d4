"""The io_uring event module: readiness from poll requests, nginx's loop unchanged.

nginx has no io_uring module; this one is the epoll module with the ring in place of
the epoll instance (src/ngx_uring.c, src/ngx_uring_events.c):

* ``add``, ``delete``, ``add_conn``, ``del_conn`` and ``notify`` are epoll's
  (:mod:`ngxffi.event.modules.tagged`): the registrations keep epoll_ctl's contract,
  but are only recorded, without a syscall. Just before the next wait, C writes a
  ``IORING_OP_POLL_ADD`` for each new or changed one, whose ``user_data`` is the tag
  epoll would put in ``data.u64`` (strong tags too): multishot, and so
  edge-triggered, for EPOLLET registrations; oneshot, armed again before every wait,
  for level ones (listeners), because Linux refuses ``IORING_POLL_ADD_LEVEL``.
* ``process_events`` is one ``io_uring_enter`` a turn: it submits, waits up to the
  timer (EXT_ARG's timespec) and returns the completions, which C turns into epoll's
  event records for ``ngxffi_epoll_decide``: the same stale rules, the same refusal
  of any ``user_data`` that is not one of this cycle's slots (never dereferenced),
  the same C fast path and dispatch. A poll request that fails reaches its handler as
  EPOLLERR|EPOLLHUP and is logged at alert.
* The ring is made ``SINGLE_ISSUER|DEFER_TASKRUN`` where the kernel has it (6.1), so
  completions are posted only inside the enter, merged: one per connection however
  many wake-ups. Its one issuer is the thread of the first turn; another thread's
  turn fails with EEXIST. ``NGXFFI_URING_SETUP=coop`` or ``plain`` chooses older
  setups.

Deliberate differences from epoll, all from the kernel:

* Closing an fd does not end a poll request on it: the request holds the file, and
  the socket would stay open. So CLOSE_EVENT cancels the request (queued, no
  syscall), and the socket is let go inside the next enter: a closed connection's FIN
  leaves up to one loop turn late.
* Stale events can come from an earlier turn (a completion queued before the
  cancel); the stale rules drop them as they drop epoll's within a batch, so
  nginx's double-flip hole spans a turn (``strong_tags`` closes it, as for epoll).
* A changed mask is a cancel and a new request, which reports again what is ready: a
  handler may be woken once more than with epoll, and finds EAGAIN, as nginx's do.
* Registration errors epoll_ctl gives at once (EBADF, EPERM for a regular file)
  come with the request's completion, a turn later, as EPOLLERR|EPOLLHUP and an
  alert; the request is not armed again until the connection is added again.
* The actions are for the loop's thread only (they write the submission queue
  without a lock); ``notify`` is for any thread. A child that inherited the cycle
  across ``fork`` gets EEXIST, and its close leaves the parent's ring alone.
* A poll request always reports EPOLLRDHUP (and ERR, HUP) when the socket has it,
  asked for or not (the kernel's IO_POLL_UNMASK); epoll reports RDHUP only when
  registered for it. The decision reads RDHUP only beside IN, so nothing changes.
* Closing the cycle waits, 100 ms at most (15-60 ms here), for the kernel to tear
  the ring down: its last step interrupts the threads that used the ring with task
  work flagged like a signal, which would fail the next epoll_wait with EINTR.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ngxffi import os as nos
from ngxffi import probe
from ngxffi._ngx import ffi, lib
from ngxffi.core.log import ALERT, log_error
from ngxffi.event.event import USE_CLEAR_EVENT, USE_EPOLL_EVENT, USE_GREEDY_EVENT
from ngxffi.event.modules.tagged import TaggedModule

if TYPE_CHECKING:
    from ngxffi.event.connection import Connection
    from ngxffi.event.cycle import Cycle

BATCH_ERRORS: int = lib.NGXFFI_BATCH_ERRORS
CTL_CLOSE: int = lib.NGXFFI_URING_CTL_CLOSE
SETUPS = {
    lib.NGXFFI_URING_DEFER: "SINGLE_ISSUER|DEFER_TASKRUN",
    lib.NGXFFI_URING_COOP: "COOP_TASKRUN",
    lib.NGXFFI_URING_PLAIN: "plain",
}


class IoUringUnavailable(OSError):
    """io_uring cannot run the module here: missing, disabled, refused or too old."""


class IoUringModule(TaggedModule):
    """The io_uring module for one cycle; ``events`` is the size of the event list."""

    name = "io_uring"
    flags = USE_CLEAR_EVENT | USE_GREEDY_EVENT | USE_EPOLL_EVENT
    WAIT_CALL = "io_uring_enter()"
    TAG_FIELD = "user_data"
    CTL_CALL = "io_uring poll"
    _process = lib.ngxffi_uring_process

    def _open(self, cycle: Cycle) -> None:
        """The ring (sized from the event list and the pool) and its registrations;
        :class:`IoUringUnavailable` names the cause when the kernel will not."""
        cycle.raw.nevents = self.nevents
        if lib.ngxffi_uring_open(cycle.raw, lib.NGXFFI_URING_AUTO) == -1:
            err = ffi.errno
            raise IoUringUnavailable(
                err, f"io_uring is not available: {probe.io_uring_reason(err)}"
            )
        self.setup = SETUPS[lib.ngxffi_uring_setup(cycle.raw)]
        # the same poll callbacks as epoll's decide what the kernel reports
        self.use_epoll_rdhup = probe.epoll_rdhup()
        self._errors_fd = ffi.new("int[]", lib.NGXFFI_URING_ERRORS_MAX)
        self._errors_res = ffi.new("int[]", lib.NGXFFI_URING_ERRORS_MAX)

    def done(self, cycle: Cycle) -> None:
        """Cancel every request (so that closed sockets are let go now), close the
        ring, then the eventfd."""
        lib.ngxffi_uring_close(cycle.raw)
        super().done(cycle)

    def _ctl_raw(self, op: int, c: Any, events: int, instance: int) -> None:
        if lib.ngxffi_uring_ctl(self.cycle.raw, op, c, events, instance) == -1:
            raise self._fail(f"{self.CTL_CALL}({op}, {c.fd})")

    def _closing(self, c: Connection) -> None:
        if lib.ngxffi_uring_ctl(self.cycle.raw, CTL_CLOSE, c.raw, 0, 0) == -1:
            raise self._fail(f"io_uring cancel({c.raw.fd})")

    def _batch_flags(self, cycle: Cycle, k: int) -> int:
        if k & BATCH_ERRORS:
            self._log_errors(cycle)
        return super()._batch_flags(cycle, k & ~BATCH_ERRORS)

    def _log_errors(self, cycle: Cycle) -> None:
        n = lib.ngxffi_uring_errors(
            cycle.raw, self._errors_fd, self._errors_res, lib.NGXFFI_URING_ERRORS_MAX
        )
        for i in range(n):
            fd, err = self._errors_fd[i], -self._errors_res[i]
            call = f"io_uring poll on fd {fd}" if fd >= 0 else "io_uring cancel"
            log_error(ALERT, f"{call} failed", err)

    def stats(self) -> dict[str, int]:
        """The ring's counters: turns, enters, requests, completions, re-arms, …"""
        s = ffi.new("ngxffi_uring_stats_t *")
        if lib.ngxffi_uring_stats(self.cycle.raw, s) == -1:
            raise nos.error("ngxffi_uring_stats", ffi.errno)
        return {name: int(getattr(s, name)) for name, _ in ffi.typeof(s[0]).fields}
