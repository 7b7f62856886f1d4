"""The accept mutex (≈ src/core/ngx_shmtx.c and ngx_trylock_accept_mutex in
src/event/ngx_event_accept.c).

A word in the shared memory the master maps before fork: 0 when free, else the pid
of the worker holding it. ``trylock`` is ``*lock == 0 && CAS(lock, 0, pid)``,
``unlock`` is ``CAS(lock, pid, 0)``, and the master force-unlocks the word of a worker
that died holding it. The worker holding the mutex has the listening sockets in its
epoll set (and posts its events, so that it holds the lock only while accepting); the
others have them out and wait at most accept_mutex_delay before trying again.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ngxffi._ngx import ffi, lib
from ngxffi.event.accept import disable_accept_events, enable_accept_events
from ngxffi.event.event import ERROR, OK

if TYPE_CHECKING:
    from ngxffi.event.cycle import Cycle
    from ngxffi.event.stats import Stats


class AcceptMutex:
    """The cycle's ``accept_mutex`` (see ngxffi.event.event.AcceptMutex)."""

    def __init__(self, stats: Stats) -> None:
        self.lock = ffi.addressof(stats.raw[0], "accept_mutex")
        self.pid = os.getpid()  # taken in the worker, after fork
        self.held = False

    def trylock(self, cycle: Cycle) -> int:
        """Imitates ngx_trylock_accept_mutex."""
        if self.lock[0] == 0 and lib.ngxffi_atomic_cas(self.lock, 0, self.pid):
            if self.held:
                return OK
            if enable_accept_events(cycle) == ERROR:
                self.unlock()
                return ERROR
            self.held = True
            return OK
        if self.held:
            if disable_accept_events(cycle, False) == ERROR:
                return ERROR
            self.held = False
        return OK

    def unlock(self) -> None:
        lib.ngxffi_atomic_cas(self.lock, self.pid, 0)


def force_unlock(stats: Stats, pid: int) -> bool:
    """The master's part (ngx_shmtx_force_unlock): free the lock a dead worker held."""
    return bool(
        lib.ngxffi_atomic_cas(ffi.addressof(stats.raw[0], "accept_mutex"), pid, 0)
    )
