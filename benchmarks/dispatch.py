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
same 100 events, with nothing read from them. ngxffi runs on both its edge methods:
epoll, and io_uring, whose level-triggered registrations are oneshot polls armed
again before every wait (100 requests submitted per iteration).

A second table is edge-triggered, nginx's own mode: each iteration writes to 100
eventfds registered with EPOLLET (multishot polls on io_uring), then runs one
``process_events``; the writes alone are its floor, and the ring's counters say how
many ``io_uring_enter`` calls an iteration took.
"""

from __future__ import annotations

import functools
import resource
import select
import selectors
import statistics
import timeit
from collections.abc import Callable
from typing import Any

from ngxffi import CLEAR_EVENT, LEVEL_EVENT, READ_EVENT, UPDATE_TIME, Cycle, ffi, lib
from ngxffi import os as nos
from ngxffi.event.modules.io_uring import IoUringModule

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
    ready: list[int], idle: list[int], use: str = "epoll"
) -> tuple[Callable[[], object], Cycle]:
    cy = Cycle(len(ready) + len(idle) + 16, use=use)
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


Case = Callable[[list[int], list[int]], tuple[Callable[[], object], Any]]
CASES: dict[str, Case] = {
    "ngxffi process_events": ngxffi_case,
    "ngxffi process_events, io_uring": functools.partial(ngxffi_case, use="io_uring"),
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


def edge_case(fds: list[int], use: str) -> tuple[Callable[[], object], Cycle]:
    """Write to every eventfd, then one turn of ngxffi on ``use``."""
    cy = Cycle(len(fds) + 16, use=use)
    for fd in fds:
        c = cy.get_connection(fd)
        assert c is not None
        c.read.handler = on_event
        c.raw.shared = 1
        cy.actions.add(c.read, READ_EVENT, CLEAR_EVENT)
    process, write, one = cy.actions.process_events, lib.write, ffi.new("uint64_t *", 1)

    def iteration() -> None:
        for fd in fds:
            write(fd, one, 8)
        process(cy, 0, UPDATE_TIME)

    return iteration, cy


def writes_case(fds: list[int]) -> tuple[Callable[[], object], None]:
    write, one = lib.write, ffi.new("uint64_t *", 1)

    def iteration() -> None:
        for fd in fds:
            write(fd, one, 8)

    return iteration, None


def edge_table() -> list[str]:
    fds = [nos.eventfd(0, lib.EFD_NONBLOCK) for _ in range(READY)]
    made: dict[str, tuple[Callable[[], object], Cycle | None]] = {
        "ngxffi, epoll (EPOLLET)": edge_case(fds, "epoll"),
        "ngxffi, io_uring (multishot poll)": edge_case(fds, "io_uring"),
        "(floor: the 100 eventfd writes alone)": writes_case(fds),
    }
    try:
        uring = made["ngxffi, io_uring (multishot poll)"][1]
        assert uring is not None and isinstance(uring.module, IoUringModule)
        before = uring.module.stats()
        result = measure({name: fn for name, (fn, _) in made.items()})
        after = uring.module.stats()
    finally:
        for _, owner in made.values():
            if owner is not None:
                owner.close()
        for fd in fds:
            nos.close(fd)
    floor = result["(floor: the 100 eventfd writes alone)"]
    lines = [
        f"| {READY} eventfds written, then one turn | µs/iteration | over the floor |",
        "|---|---:|---:|",
    ]
    lines += [f"| {n} | {us:.1f} | {us - floor:.1f} |" for n, us in result.items()]
    turns = after["turns"] - before["turns"]
    enters = (after["enters"] - before["enters"]) / turns
    lines += ["", f"io_uring: {enters:.2f} io_uring_enter per turn."]
    return lines


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
    return "\n".join([*lines, "", *edge_table()])


if __name__ == "__main__":
    print(main())
