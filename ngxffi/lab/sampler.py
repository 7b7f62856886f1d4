"""The server seen from outside, every 100 ms, with psutil: its whole process tree's
CPU time, open fds and voluntary context switches.

A voluntary context switch is a wait that blocked and woke ("wake-ups": a server that
sleeps while exhausted has few, one that spins on EMFILE has none but burns CPU).
The counters are per process and cumulative, so each interval adds each process's
growth since the previous sample (a process new in the tree counts from its start).
"Exhausted" is per process, as RLIMIT_NOFILE is: some process of the tree has its
open fds within 2 of the limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

SAMPLE_S = 0.1


@dataclass(frozen=True)
class Sample:
    """One point of the timeline: seconds since the start, the most fds one process
    held, the tree's total, CPU % and wake-ups per second over the last interval."""

    t: float
    fds: int
    fds_total: int
    cpu_percent: float
    wakeups_per_s: float


@dataclass
class Samples:
    """The timeline, and the totals over the exhausted intervals."""

    nofile: int
    start: float = field(default_factory=time.monotonic)
    timeline: list[Sample] = field(default_factory=list)
    cpu_s: float = 0.0  # the tree's CPU seconds while exhausted
    wakeups: int = 0
    exhausted_s: float = 0.0
    peak_fds: int = 0
    exited: int | None = None  # the exit status, once the server has died
    exited_at: float | None = None  # monotonic


def _counters(
    tree: list[psutil.Process],
) -> tuple[dict[int, tuple[float, int]], list[int]]:
    """Per pid: (CPU seconds, voluntary switches); and each process's open fds."""
    counters, fds = {}, []
    for p in tree:
        try:
            with p.oneshot():
                cpu = p.cpu_times()
                counters[p.pid] = (
                    cpu.user + cpu.system,
                    p.num_ctx_switches().voluntary,
                )
                fds.append(p.num_fds())
        except psutil.Error:  # exited (or a zombie) since the tree was listed
            continue
    return counters, fds


async def sample(
    tree: Callable[[], list[psutil.Process]],
    poll: Callable[[], int | None],
    samples: Samples,
    on_sample: Callable[[Sample], None] | None = None,
) -> None:
    """Sample until cancelled; ``poll`` is the server's exit status or None."""
    last: dict[int, tuple[float, int]] = {}
    last_t, was_exhausted = time.monotonic(), False
    while True:
        counters, fds = _counters(tree())
        now = time.monotonic()
        cpu = sum(c - last.get(pid, (0.0, 0))[0] for pid, (c, _) in counters.items())
        woke = sum(w - last.get(pid, (0.0, 0))[1] for pid, (_, w) in counters.items())
        cpu, woke = max(cpu, 0.0), max(woke, 0)
        dt = now - last_t
        exhausted = any(n >= samples.nofile - 2 for n in fds)
        if last and exhausted and was_exhausted:
            samples.cpu_s += cpu
            samples.wakeups += woke
            samples.exhausted_s += dt
        point = Sample(
            round(now - samples.start, 3),
            max(fds, default=0),
            sum(fds),
            100 * cpu / dt if last and dt > 0 else 0.0,
            woke / dt if last and dt > 0 else 0.0,
        )
        samples.timeline.append(point)
        samples.peak_fds = max(samples.peak_fds, point.fds)
        if samples.exited is None and (status := poll()) is not None:
            samples.exited, samples.exited_at = status, now
        if on_sample is not None:
            on_sample(point)
        last, last_t, was_exhausted = counters, now, exhausted
        await asyncio.sleep(SAMPLE_S)
