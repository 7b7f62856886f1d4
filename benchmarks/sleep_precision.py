"""How long ``asyncio.sleep(t)`` really takes, for t below and at a millisecond, on
the default loop (EpollSelector), on NgxSelector with ``epoll_pwait2`` and with its
epoll_wait fall-back (``selector.precise(False)``), and on uvloop (libuv's timers).

Each loop runs 1,000 sleeps of each length in one process, in 5 interleaved rounds
of 200 (each round a fresh loop per kind, the kinds in turn), the machine otherwise
idle; the table gives, over all 1,000, the median duration and the median and 99th
percentile of the lateness (duration minus t). The timer slack of the thread is the
kernel's default (50 µs), as every server here has it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable

import uvloop

from ngxffi import selector

LENGTHS = (0.0001, 0.0005, 0.001)
ROUNDS = 5
SLEEPS = 200  # per round, so 1,000 per kind and length


def _ngxffi_epoll_wait() -> asyncio.AbstractEventLoop:
    selector.precise(False)
    return selector.new_event_loop()


def _ngxffi_pwait2() -> asyncio.AbstractEventLoop:
    selector.precise(True)
    return selector.new_event_loop()


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio default (EpollSelector)": asyncio.new_event_loop,
    "ngxffi NgxSelector, epoll_pwait2": _ngxffi_pwait2,
    "ngxffi NgxSelector, epoll_wait (fall-back)": _ngxffi_epoll_wait,
    "uvloop": uvloop.new_event_loop,
}


async def _sleeps(length: float) -> list[float]:
    took = []
    for _ in range(SLEEPS):
        start = time.perf_counter()
        await asyncio.sleep(length)
        took.append(time.perf_counter() - start)
    return took


def measure() -> dict[tuple[str, float], list[float]]:
    """Every sleep's duration, by (loop, length)."""
    took: dict[tuple[str, float], list[float]] = {}
    for _ in range(ROUNDS):
        for kind, factory in LOOPS.items():
            with asyncio.Runner(loop_factory=factory) as runner:
                for length in LENGTHS:
                    took.setdefault((kind, length), []).extend(
                        runner.run(_sleeps(length))
                    )
    selector.precise(True)
    return took


def main() -> str:
    took = measure()
    lines = [
        "| loop | sleep | median duration | median late | p99 late |",
        "|---|---:|---:|---:|---:|",
    ]
    for length in LENGTHS:
        for kind in LOOPS:
            lines.append(_row(kind, length, took[kind, length]))
    lines += [
        "",
        f"{ROUNDS} interleaved rounds of {SLEEPS} sleeps per loop and length "
        f"({ROUNDS * SLEEPS} each); late = duration - requested.",
    ]
    return "\n".join(lines)


def _row(kind: str, length: float, durations: list[float]) -> str:
    late = sorted(d - length for d in durations)
    p99 = late[int(len(late) * 0.99)]
    return (
        f"| {kind} | {length * 1e3:g} ms | "
        f"{statistics.median(durations) * 1e3:.3f} ms | "
        f"{statistics.median(late) * 1e3:.3f} ms | {p99 * 1e3:.3f} ms |"
    )


if __name__ == "__main__":
    print(main())
