"""The millisecond clock of the event loop (≈ src/core/ngx_times.c).

nginx caches the time in ``ngx_current_msec`` and refreshes it once per loop iteration
(``ngx_time_update``); timers are keyed on it. The clock is CLOCK_MONOTONIC, so wall
clock jumps never fire or delay timers. Keys live in an unsigned 64-bit word and are
compared by signed difference (``msec_diff``), so they stay ordered across a wrap;
``offset`` moves the clock, which lets tests start it just before the wrap.
"""

from __future__ import annotations

import time

MSEC_MASK = (1 << 64) - 1
_SIGN = 1 << 63


def msec_diff(a: int, b: int) -> int:
    """``(ngx_msec_int_t) (a - b)``: the signed distance from b to a, modulo 2**64."""
    return ((a - b + _SIGN) & MSEC_MASK) - _SIGN


def monotonic_msec(offset: int = 0) -> int:
    """CLOCK_MONOTONIC in milliseconds, plus ``offset``, as an unsigned 64-bit value.

    ``time.monotonic_ns`` reads CLOCK_MONOTONIC through the vDSO without a cffi call
    or a timespec allocation: this runs every turn."""
    return (time.monotonic_ns() // 1_000_000 + offset) & MSEC_MASK
