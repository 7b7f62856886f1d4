"""Resource limits and clocks (≈ the RLIMIT_NOFILE part of src/os/unix/ngx_posix_init.c
and src/core/ngx_times.c's clock)."""

from __future__ import annotations

from ngxffi._ngx import ffi, lib
from ngxffi.os.errors import error

_RLIM_INFINITY: int = lib.RLIM_INFINITY


def _from_rlim(value: int) -> int:
    # The stdlib's resource module reports RLIM_INFINITY as -1; so do we.
    return -1 if value == _RLIM_INFINITY else value


def getrlimit(resource: int) -> tuple[int, int]:
    """(soft, hard) for ``resource``, like ``resource.getrlimit`` (-1 = unlimited)."""
    rl = ffi.new("struct rlimit *")
    if lib.getrlimit(resource, rl) < 0:
        raise error("getrlimit")
    return _from_rlim(rl.rlim_cur), _from_rlim(rl.rlim_max)


def setrlimit(resource: int, limits: tuple[int, int]) -> None:
    """Set (soft, hard) for ``resource``; -1 means unlimited. Raising the hard limit
    needs privilege (``PermissionError``); a soft limit above it is ``ValueError``."""
    soft, hard = (_RLIM_INFINITY if v == -1 else v for v in limits)
    if soft > hard:
        raise ValueError(f"soft limit {limits[0]} exceeds hard limit {limits[1]}")
    rl = ffi.new("struct rlimit *")
    rl.rlim_cur, rl.rlim_max = soft, hard
    if lib.setrlimit(resource, rl) < 0:
        raise error("setrlimit")


def clock_gettime_ns(clock: int = lib.CLOCK_MONOTONIC) -> int:
    """The clock's time in nanoseconds (CLOCK_MONOTONIC by default)."""
    ts = ffi.new("struct timespec *")
    if lib.clock_gettime(clock, ts) < 0:
        raise error("clock_gettime")
    return int(ts.tv_sec) * 1_000_000_000 + int(ts.tv_nsec)
