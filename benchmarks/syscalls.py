"""Per-call cost of ngxffi's binding against the stdlib and against cffi's slow paths.

Each case is timed in interleaved rounds (A B C, A B C, …) so that a noisy moment hurts
all of them alike; the table gives the median ns per call and the ratio to the first
case of its group. Run through ``make bench`` or ``python benchmarks/syscalls.py``.
"""

from __future__ import annotations

import fcntl as std_fcntl
import os
import select
import statistics
import timeit
from collections.abc import Callable

from cffi import FFI

from ngxffi import lib
from ngxffi import os as nos

ROUNDS = 7
READY_FDS = 100


def _variadic_fcntl() -> Callable[[int, int], int]:
    """fcntl declared as the variadic function it is, the way a careless binding
    would: cffi then calls through libffi. For comparison only; ngxffi never does."""
    ffi = FFI()
    ffi.cdef("int fcntl(int fd, int cmd, ...);")
    libc = ffi.dlopen(None)
    return lambda fd, cmd: int(libc.fcntl(fd, cmd))


def fcntl_cases(fd: int) -> dict[str, Callable[[], object]]:
    variadic = _variadic_fcntl()
    F_GETFL = std_fcntl.F_GETFL
    return {
        "fcntl(F_GETFL): ngxffi helper (lib)": lambda: lib.ngxffi_get_status_flags(fd),
        "fcntl(F_GETFL): ngxffi.os wrapper": lambda: nos.get_status_flags(fd),
        "fcntl(F_GETFL): stdlib fcntl.fcntl": lambda: std_fcntl.fcntl(fd, F_GETFL),
        "fcntl(F_GETFL): cffi variadic (libffi)": lambda: variadic(fd, F_GETFL),
    }


def epoll_cases(n: int) -> tuple[dict[str, Callable[[], object]], list[int]]:
    """epoll_wait with ``n`` ready eventfds, reading every event's data."""
    fds = [nos.eventfd(1) for _ in range(n)]
    ep = nos.epoll_create1()
    std = select.epoll()
    for fd in fds:
        nos.epoll_ctl(ep, lib.EPOLL_CTL_ADD, fd, lib.EPOLLIN)
        std.register(fd, select.EPOLLIN)
    events = nos.new_events(n)

    def raw() -> object:
        k = lib.epoll_wait(ep, events, n, 0)
        return [events[i].data.u64 for i in range(k)]

    def wrapper() -> object:
        k = nos.epoll_wait(ep, events, 0)
        return [events[i].data.u64 for i in range(k)]

    def stdlib() -> object:
        return [fd for fd, _ in std.poll(0)]

    cases = {
        f"epoll_wait, {n} ready: ngxffi lib (raw)": raw,
        f"epoll_wait, {n} ready: ngxffi.os wrapper": wrapper,
        f"epoll_wait, {n} ready: stdlib select.epoll": stdlib,
    }
    return cases, [*fds, ep, std.fileno()]


def measure(cases: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median ns per call over interleaved rounds."""
    numbers = {name: timeit.Timer(fn).autorange()[0] for name, fn in cases.items()}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, fn in cases.items():
            seconds = timeit.Timer(fn).timeit(numbers[name])
            samples[name].append(seconds / numbers[name] * 1e9)
    return {name: statistics.median(s) for name, s in samples.items()}


def table(groups: list[dict[str, float]]) -> str:
    lines = ["| case | median ns/call | ratio to first of group |", "|---|---:|---:|"]
    for group in groups:
        base = next(iter(group.values()))
        lines += [f"| {n} | {v:,.0f} | {v / base:.2f} |" for n, v in group.items()]
    return "\n".join(lines)


def main() -> str:
    r, w = nos.pipe2()
    epoll, opened = epoll_cases(READY_FDS)
    try:
        groups = [measure(fcntl_cases(r)), measure(epoll)]
    finally:
        for fd in (r, w, *opened):
            os.close(fd)
    return table(groups)


if __name__ == "__main__":
    print(main())
