"""The server seen from outside, every 100 ms: its whole process tree's CPU time,
open fds against each process's own limit, and voluntary context switches.

A voluntary context switch is a wait that blocked and woke ("wake-ups": a server that
sleeps while exhausted has few, one that spins on EMFILE has none but burns CPU).
psutil's count is the main thread's only (``/proc/PID/status``), so each thread's
``/proc/PID/task/TID/status`` is read instead: a thread-per-connection server waits
in its threads.

The counters are cumulative per process; each interval adds each process's growth
(a process new in the tree counts from its start). CPU includes the reaped children's
(``children_user``/``children_system``), so that a fork-per-connection server's
short-lived children count even if no sample ever saw them; what a reaped child
already counted while it was sampled is taken back from that growth, not counted
twice.

"Exhausted" is per process, as RLIMIT_NOFILE is, against each process's own soft
limit (a server may raise its own, up to the hard one): some process of the tree has
its open fds within 2 of it (within 1 below a limit of 64). A server that reaches
its limit and dies within one interval is not seen at it: the peak is sampled, not
traced.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

SAMPLE_S = 0.1


@dataclass(frozen=True)
class Sample:
    """One point of the timeline: seconds since the start; the fds of the process
    nearest its limit, and that limit; the tree's CPU % and wake-ups per second over
    the last interval."""

    t: float
    fds: int
    limit: int
    cpu_percent: float
    wakeups_per_s: float


@dataclass
class Samples:
    """The timeline, and the totals over the exhausted intervals."""

    nofile: int  # the limit the server started under (each process's may differ)
    start: float = field(default_factory=time.monotonic)
    timeline: list[Sample] = field(default_factory=list)
    cpu_s: float = 0.0  # the tree's CPU seconds while exhausted
    wakeups: int = 0
    exhausted_s: float = 0.0
    peak_fds: int = 0
    exited: int | None = None  # the exit status, once the server has died


@dataclass(frozen=True)
class _Counters:
    """One process at one sample."""

    own: float  # CPU seconds, its own
    reaped: float  # CPU seconds of its reaped children
    switches: int
    fds: int
    limit: int


def _switches(pid: int) -> int:
    """Voluntary context switches of every thread of ``pid``."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # exited
        return 0
    return sum(_thread_switches(f"/proc/{pid}/task/{tid}/status") for tid in tids)


def _thread_switches(path: str) -> int:
    try:
        with open(path) as status:
            for line in status:
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except OSError:  # the thread has exited since the listing
        pass
    return 0


def _soft_nofile(pid: int, default: int) -> int:
    """The soft RLIMIT_NOFILE of ``pid``, from ``/proc/PID/limits``: readable for any
    process, where prlimit(2) on another user's (nginx's workers run as nobody)
    needs CAP_SYS_RESOURCE, which a container may not grant even to root."""
    try:
        with open(f"/proc/{pid}/limits") as limits:
            for line in limits:
                if line.startswith("Max open files"):
                    soft = line.split()[3]
                    return int(soft) if soft.isdigit() else default
    except OSError:  # exited
        pass
    return default


def _read(p: psutil.Process, default_limit: int) -> _Counters | None:
    try:
        with p.oneshot():
            cpu = p.cpu_times()
            fds = p.num_fds()
    except psutil.Error:  # exited (or a zombie) since the tree was listed
        return None
    own, reaped = cpu.user + cpu.system, cpu.children_user + cpu.children_system
    limit = _soft_nofile(p.pid, default_limit)
    return _Counters(own, reaped, _switches(p.pid), fds, limit)


def exhausted(fds: int, limit: int) -> bool:
    """Whether a process holding ``fds`` is at its ``limit``, as near as sampling
    tells."""
    return fds >= limit - (1 if limit < 64 else 2)


class _Growth:
    """Per interval, the tree's CPU and wake-up growth (see the module docstring)."""

    def __init__(self) -> None:
        self.last: dict[int, _Counters] = {}
        self.credit = 0.0  # CPU that vanished processes had counted

    def step(self, now: dict[int, _Counters]) -> tuple[float, int]:
        gone = set(self.last) - set(now)
        self.credit += sum(self.last[pid].own + self.last[pid].reaped for pid in gone)
        zero = _Counters(0.0, 0.0, 0, 0, 0)
        own = reaped = 0.0
        woke = 0
        for pid, c in now.items():
            before = self.last.get(pid, zero)
            own += max(c.own - before.own, 0.0)
            reaped += max(c.reaped - before.reaped, 0.0)
            woke += max(c.switches - before.switches, 0)
        taken = min(self.credit, reaped)  # counted before, as a live child
        self.credit -= taken
        self.last = now
        return own + reaped - taken, woke


async def sample(
    tree: Callable[[], list[psutil.Process]],
    poll: Callable[[], int | None],
    samples: Samples,
    on_sample: Callable[[Sample], None] | None = None,
) -> None:
    """Sample until cancelled; ``poll`` is the server's exit status or None."""
    growth = _Growth()
    last_t, was_exhausted, first = time.monotonic(), False, True
    while True:
        counters = {p.pid: c for p in tree() if (c := _read(p, samples.nofile))}
        now = time.monotonic()
        cpu, woke = growth.step(counters)
        dt = now - last_t
        exhausted_now = any(exhausted(c.fds, c.limit) for c in counters.values())
        if not first and exhausted_now and was_exhausted:
            samples.cpu_s += cpu
            samples.wakeups += woke
            samples.exhausted_s += dt
        nearest = max(counters.values(), key=lambda c: c.fds / c.limit, default=None)
        point = Sample(
            round(now - samples.start, 3),
            nearest.fds if nearest else 0,
            nearest.limit if nearest else samples.nofile,
            100 * cpu / dt if not first and dt > 0 else 0.0,
            woke / dt if not first and dt > 0 else 0.0,
        )
        samples.timeline.append(point)
        samples.peak_fds = max([samples.peak_fds, *(c.fds for c in counters.values())])
        if samples.exited is None:
            samples.exited = poll()
        if on_sample is not None:
            on_sample(point)
        last_t, was_exhausted, first = now, exhausted_now, False
        await asyncio.sleep(SAMPLE_S)
