"""Shared memory made before fork (≈ ngx_shm_alloc, src/os/unix/ngx_shmem.c)."""

from __future__ import annotations

import mmap

from ngxffi._ngx import ffi
from ngxffi.event.stats import Stats


class SharedStats(Stats):
    """stub_status counters in an anonymous shared mapping: made by the master before
    it forks, the same memory in every worker, changed by atomic adds."""

    def __init__(self) -> None:
        size = ffi.sizeof("ngxffi_stats_t")
        self.memory = mmap.mmap(-1, size, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        super().__init__(ffi.cast("ngxffi_stats_t *", ffi.from_buffer(self.memory)))
