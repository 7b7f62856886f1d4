"""Dispatch cost per loop iteration: 100 ready fds, trivial handlers.

Each contender waits with a zero timeout on the same 100 socketpairs (data left unread,
level-triggered, so every iteration sees all 100 ready) and calls a no-op handler per
event:

* ngxffi: ``cycle.actions.process_events(cycle, 0, UPDATE_TIME)`` — nginx's loop body
  with tag decoding, bounds and stale checks, ready marking and handler calls;
* ``selectors.EpollSelector.select(0)`` then ``key.data(key, mask)``;
* raw ``select.epoll.poll(0)`` then a dict lookup ``handlers[fd](fd, mask)``.

Then the same with 10,000 extra idle registered connections (eventfds that never
fire) in every contender. Rounds are interleaved; the table gives medians. The last
row is the floor every contender pays: the bare ``epoll_wait`` syscall returning the
same 100 events, with nothing read from them.
"""

from __future__ import annotations

import resource
import select
import selectors
import statistics
import timeit
from collections.abc import Callable
from typing import Any

from ngxffi import LEVEL_EVENT, READ_EVENT, UPDATE_TIME, Cycle, lib
from ngxffi import os as nos

READY = 100
IDLE = 10_000
ROUNDS = 7
ITERATIONS = 2000


# Each contender's trivial handler, with the signature its dispatch passes.
def on_event(ev: Any) -> None:
    pass


def on_ready(fd_or_key: Any, mask: int) -> None:
    pass


def ngxffi_case(
    ready: list[int], idle: list[int]
) -> tuple[Callable[[], object], Cycle]:
    cy = Cycle(len(ready) + len(idle) + 16)
    for fd in ready + idle:
        c = cy.get_connection(fd)
        assert c is not None
        c.read.handler = on_event
        c.raw.shared = 1  # the benchmark owns the fds; close_connection must not
        cy.actions.add(c.read, READ_EVENT, LEVEL_EVENT)
    process = cy.actions.process_events
    return lambda: process(cy, 0, UPDATE_TIME), cy


def selectors_case(
    ready: list[int], idle: list[int]
) -> tuple[Callable[[], object], Any]:
    sel = selectors.EpollSelector()
    for fd in ready + idle:
        sel.register(fd, selectors.EVENT_READ, on_ready)

    def iteration() -> None:
        for key, mask in sel.select(0):
            key.data(key, mask)

    return iteration, sel


def epoll_case(ready: list[int], idle: list[int]) -> tuple[Callable[[], object], Any]:
    ep = select.epoll()
    handlers = {}
    for fd in ready + idle:
        ep.register(fd, select.EPOLLIN)
        handlers[fd] = on_ready

    def iteration() -> None:
        for fd, mask in ep.poll(0):
            handlers[fd](fd, mask)

    return iteration, ep


def syscall_case(ready: list[int], idle: list[int]) -> tuple[Callable[[], object], Any]:
    ep = nos.epoll_create1()
    for fd in ready + idle:
        nos.epoll_ctl(ep, lib.EPOLL_CTL_ADD, fd, lib.EPOLLIN)
    events = nos.new_events(512)

    class Owner:
        def close(self) -> None:
            nos.close(ep)

    return lambda: lib.epoll_wait(ep, events, 512, 0), Owner()


CASES = {
    "ngxffi process_events": ngxffi_case,
    "selectors.EpollSelector": selectors_case,
    "select.epoll + dict": epoll_case,
    "(floor: epoll_wait syscall only)": syscall_case,
}


def measure(cases: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median µs per iteration over interleaved rounds."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, fn in cases.items():
            seconds = timeit.Timer(fn).timeit(ITERATIONS)
            samples[name].append(seconds / ITERATIONS * 1e6)
    return {name: statistics.median(s) for name, s in samples.items()}


def run(idle_n: int) -> dict[str, float]:
    pairs = [
        nos.socketpair(type=lib.SOCK_STREAM | lib.SOCK_NONBLOCK) for _ in range(READY)
    ]
    for _, peer in pairs:
        nos.send(peer, b"x")
    ready = [a for a, _ in pairs]
    idle = [nos.eventfd(0) for _ in range(idle_n)]
    made = {name: make(ready, idle) for name, make in CASES.items()}
    try:
        return measure({name: fn for name, (fn, _) in made.items()})
    finally:
        for _, owner in made.values():
            owner.close()
        for fd in [fd for pair in pairs for fd in pair] + idle:
            nos.close(fd)


def main() -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != -1 and soft < IDLE + 2 * READY + 1000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = {0: run(0), IDLE: run(IDLE)}
    ours = "ngxffi process_events"
    lines = [
        f"| {READY} ready fds, no-op handlers | µs/iteration | ngxffi speed-up | "
        f"µs/iteration, +{IDLE:,} idle | ngxffi speed-up, +idle |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in CASES:
        base, idle = results[0][name], results[IDLE][name]
        lines.append(
            f"| {name} | {base:.1f} | {base / results[0][ours]:.2f}x | {idle:.1f} | "
            f"{idle / results[IDLE][ours]:.2f}x |"
        )
    growth = results[IDLE][ours] / results[0][ours] - 1
    lines.append("")
    lines.append(f"ngxffi with {IDLE:,} idle connections: {growth:+.1%} per iteration.")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
