"""Stale events, caught in the act: one epoll_wait batch, both kinds dropped.

Four events become ready in this order, so that one epoll_wait returns them together:
connection A has data, the listener has a new client, connections B and C have data.
A's handler closes B and C. The listener's handler then accepts, and get_connection
hands it C's slot (freed last, reused first) with the instance bit flipped. When the
loop reaches B's event, B's fd is -1: "stale: closed". When it reaches C's, the slot is
open again but the instance bit differs: "stale: reused". The trace prints every event
of the batch as the kernel returned it. Run: python examples/stale_events.py
"""

from __future__ import annotations

from ngxffi import (
    LEVEL_EVENT,
    READ_EVENT,
    Connection,
    Cycle,
    Event,
    TraceRecord,
    handle_read_event,
    lib,
)
from ngxffi import os as nos

NONBLOCK = lib.SOCK_STREAM | lib.SOCK_NONBLOCK | lib.SOCK_CLOEXEC


def main() -> None:
    trace: list[TraceRecord] = []
    peers: list[int] = []
    with Cycle(8, trace=trace.append) as cycle:
        names: dict[int, str] = {}

        def connection(name: str) -> Connection:
            a, b = nos.socketpair(type=NONBLOCK)
            peers.append(b)
            c = cycle.get_connection(a)
            assert c is not None
            names[c.index] = name
            c.read.handler = lambda ev: print(f"  handler of {name} runs")
            handle_read_event(c.read)
            return c

        lfd = nos.socket(lib.AF_INET, NONBLOCK)
        nos.bind(lfd, ("127.0.0.1", 0))
        nos.listen(lfd)
        listener = cycle.get_connection(lfd)
        assert listener is not None
        names[listener.index] = "listener"
        a, b, c = connection("A"), connection("B"), connection("C")

        def a_closes_b_and_c(ev: Event) -> None:
            print(f"  A's handler closes B (slot {b.index}) and C (slot {c.index})")
            cycle.close_connection(b)
            cycle.close_connection(c)

        def accept(ev: Event) -> None:
            fd, _ = nos.accept4(lfd)
            new = cycle.get_connection(fd)
            assert new is not None
            names[new.index] = "C's slot, reused"
            print(
                f"  the listener accepts into slot {new.index}, instance now "
                f"{new.read.instance}"
            )

        a.read.handler = a_closes_b_and_c
        listener.read.handler = accept
        cycle.actions.add(listener.read, READ_EVENT, LEVEL_EVENT)

        nos.send(peers[0], b"a")  # A ready first
        client = nos.socket(lib.AF_INET, lib.SOCK_STREAM | lib.SOCK_CLOEXEC)
        nos.connect(client, nos.getsockname(lfd))  # then the listener
        nos.send(peers[1], b"b")  # then B
        nos.send(peers[2], b"c")  # then C

        print("one epoll_wait, handlers in order:")
        cycle.actions.process_events(cycle, 1000, 0)

        print("\nthe trace of that batch:")
        for r in trace:
            who = names.get(r.slot, "?") if r.slot is not None else "invalid"
            print(
                f"  event {r.position}: data.u64 {r.data:#x} -> slot {r.slot} "
                f"({who}), instance {r.instance}: {r.read}"
            )
        for conn in cycle.connections:
            if conn.raw.fd != -1:
                cycle.close_connection(conn)
    for fd in (*peers, client):
        nos.close(fd)
    verdicts = [r.read for r in trace]
    assert verdicts == ["dispatched", "dispatched", "stale: closed", "stale: reused"], (
        verdicts
    )


if __name__ == "__main__":
    main()
