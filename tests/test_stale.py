"""Stale events and tagged pointers on epoll and io_uring (NGINX_EVENT_CORE.md §2),
with real sockets: every case arranges one batch (one epoll_wait, or one enter's
completions) in which a handler invalidates an event that comes later in the same
batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from conftest import EDGE_METHODS, inject, tagged

from ngxffi import Connection, Cycle, Event, TraceRecord, ffi, handle_read_event, lib
from ngxffi import os as nos

Attach = Callable[[Cycle], tuple[Connection, int]]


@pytest.fixture(params=EDGE_METHODS)
def traced(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[Cycle, list[TraceRecord]]]:
    records: list[TraceRecord] = []
    with Cycle(16, request.param, trace=records.append) as cy:
        yield cy, records
        for c in cy.connections:
            if c.raw.fd != -1:
                cy.close_connection(c)


def two_readable(cy: Cycle, attach: Attach, handler: Callable[[Event], None]) -> None:
    """Two connections with the same read handler, both readable before the wait."""
    for _ in range(2):
        c, peer = attach(cy)
        c.read.handler = handler
        handle_read_event(c.read)
        nos.send(peer, b"x")


def the_other(cy: Cycle, c: Connection) -> Connection:
    return next(o for o in cy.connections[:2] if o is not c)


def test_tag_is_address_or_instance(
    traced: tuple[Cycle, list[TraceRecord]], attach: Attach
) -> None:
    cy, records = traced
    c, peer = attach(cy)
    c.read.handler = lambda ev: None
    handle_read_event(c.read)
    nos.send(peer, b"x")
    cy.actions.process_events(cy, 1000, 0)
    address = int(ffi.cast("uintptr_t", c.raw))
    assert records == [
        TraceRecord(
            0,
            address | c.read.instance,
            None,
            c.index,
            c.read.instance,
            lib.EPOLLIN,
            "dispatched",
            "-",
        )
    ]


def test_closed_earlier_in_the_batch(
    traced: tuple[Cycle, list[TraceRecord]], attach: Attach
) -> None:
    cy, records = traced
    calls: list[Connection] = []

    def close_the_other(ev: Event) -> None:
        calls.append(ev.data)
        cy.close_connection(the_other(cy, ev.data))

    two_readable(cy, attach, close_the_other)
    cy.actions.process_events(cy, 1000, 0)
    assert len(calls) == 1
    assert [r.read for r in records] == ["dispatched", "stale: closed"]
    assert records[1].write == "stale: closed"


def test_closed_and_reused_in_the_batch(
    traced: tuple[Cycle, list[TraceRecord]], attach: Attach
) -> None:
    cy, records = traced
    calls: list[Connection] = []
    reused: list[Connection] = []

    def close_and_reuse(ev: Event) -> None:
        calls.append(ev.data)
        other = the_other(cy, ev.data)
        cy.close_connection(other)
        new = cy.get_connection(nos.eventfd())
        assert new is other  # LIFO: the same slot, instance flipped
        new.read.handler = lambda ev: pytest.fail("stale event reached the new user")
        handle_read_event(new.read)  # registered: only the stale check stops it
        reused.append(new)

    two_readable(cy, attach, close_and_reuse)
    cy.actions.process_events(cy, 1000, 0)
    assert len(calls) == 1 and len(reused) == 1
    assert [r.read for r in records] == ["dispatched", "stale: reused"]
    assert records[1].instance != reused[0].read.instance


@pytest.mark.parametrize("reuse", [False, True])
def test_write_side_rechecked_after_the_read_handler_closes(
    traced: tuple[Cycle, list[TraceRecord]], attach: Attach, reuse: bool
) -> None:
    """One event carries IN and OUT; the read handler closes the connection (and
    maybe reuses the slot, registering the new user's write event). The write
    handler must not run: closing cleared `active`, and reuse flipped `instance`."""
    cy, records = traced
    c, peer = attach(cy)
    assert cy.actions.add_conn is not None
    cy.actions.add_conn(c)  # EPOLLIN|EPOLLOUT|EPOLLET: one event with both

    def close(ev: Event) -> None:
        cy.close_connection(ev.data)
        if reuse:
            a, b = nos.socketpair(type=lib.SOCK_STREAM | lib.SOCK_NONBLOCK)
            new = cy.get_connection(a)
            assert new is c
            new.write.handler = lambda ev: pytest.fail("stale write reached new user")
            cy.actions.add(new.write, lib.EPOLLOUT, lib.EPOLLET)
            nos.close(b)

    c.read.handler = close
    c.write.handler = lambda ev: pytest.fail("write handler of a closed connection")
    nos.send(peer, b"x")
    cy.actions.process_events(cy, 1000, 0)
    assert len(records) == 1
    assert records[0].revents & lib.EPOLLOUT
    expected = "stale: reused" if reuse else "-"  # "-": nginx skips an inactive event
    assert (records[0].read, records[0].write) == ("dispatched", expected)


def reuse_twice_in_one_batch(
    use: str, strong: bool, attach: Attach
) -> tuple[list[str], int]:
    """A handler closes the other connection and reuses its slot twice, so the
    instance bit flips back; the new user registers for reads with nothing to read.
    Returns the verdicts and how often the new user's handler was (wrongly) called."""
    records: list[TraceRecord] = []
    wrong: list[Event] = []
    with Cycle(16, use, strong_tags=strong, trace=records.append) as cy:

        def reuse_twice(ev: Event) -> None:
            other = the_other(cy, ev.data)
            cy.close_connection(other)
            first = cy.get_connection(nos.eventfd())
            assert first is other
            cy.close_connection(first)
            a, b = nos.socketpair(type=lib.SOCK_STREAM | lib.SOCK_NONBLOCK)
            second = cy.get_connection(a)
            assert second is other and second.read.instance == records_instance[0]
            second.read.handler = wrong.append
            handle_read_event(second.read)
            nos.close(b)

        records_instance = [0]  # both connections start with instance 0
        two_readable(cy, attach, reuse_twice)
        cy.actions.process_events(cy, 1000, 0)
        for c in cy.connections:
            if c.raw.fd != -1:
                cy.close_connection(c)
    return [r.read for r in records], len(wrong)


@pytest.mark.parametrize("use", EDGE_METHODS)
def test_the_double_flip_hole_in_nginx_mode(use: str, attach: Attach) -> None:
    verdicts, wrong = reuse_twice_in_one_batch(use, False, attach)
    assert verdicts == ["dispatched", "dispatched"]
    assert wrong == 1  # nginx's single bit let the stale event through


@pytest.mark.parametrize("use", EDGE_METHODS)
def test_strong_tags_close_the_hole(use: str, attach: Attach) -> None:
    verdicts, wrong = reuse_twice_in_one_batch(use, True, attach)
    assert verdicts == ["dispatched", "stale: reused"]
    assert wrong == 0


@pytest.mark.parametrize("use", EDGE_METHODS)
def test_strong_tags_carry_the_generation(use: str, attach: Attach) -> None:
    records: list[TraceRecord] = []
    with Cycle(4, use, strong_tags=True, trace=records.append) as cy:
        c, peer = attach(cy)
        c.read.handler = lambda ev: None
        handle_read_event(c.read)
        nos.send(peer, b"x")
        cy.actions.process_events(cy, 1000, 0)
        assert records[0].data is not None
        assert records[0].data >> 48 == c.generation == 1
        assert records[0].slot == c.index and records[0].read == "dispatched"
        cy.close_connection(c)


@pytest.mark.parametrize("use", EDGE_METHODS)
@pytest.mark.parametrize("strong", [False, True])
def test_invalid_tags_are_counted_logged_and_never_dereferenced(
    use: str,
    strong: bool,
    attach: Attach,
    caplog: pytest.LogCaptureFixture,
    fds: list[int],
) -> None:
    records: list[TraceRecord] = []
    with Cycle(16, use, strong_tags=strong, trace=records.append) as cy:
        base = int(ffi.cast("uintptr_t", cy.raw.connections))
        size = ffi.sizeof("ngx_connection_t")
        bogus = [
            0,  # NULL
            1,  # NULL with the instance bit
            0xDEADBEEF,
            base + 8,  # inside slot 0
            base + 3 * size + size // 2,  # inside slot 3
            base - size,  # just before the array
            base + 16 * size,  # just past it
            (1 << 64) - 2,
            (1 << 47) + base,  # an address above the array
        ]
        for value in bogus:
            efd = nos.eventfd(1)  # always readable
            fds.append(efd)
            inject(cy, efd, lib.EPOLLIN, value)
        c, peer = attach(cy)
        calls: list[Event] = []
        c.read.handler = calls.append
        handle_read_event(c.read)
        nos.send(peer, b"x")
        assert cy.actions.process_events(cy, 1000, 0) == 0
        assert cy.raw.invalid_events == len(bogus)
        assert calls == [c.read]  # the valid event in the same batch still ran
        verdicts = {r.data: (r.read, r.write, r.slot) for r in records}
        for value in bogus:
            assert verdicts[value] == ("invalid", "invalid", None)
            assert f"invalid {tagged(cy).TAG_FIELD} {value:#x}" in caplog.text
        assert sum(r.levelname == "ALERT" for r in caplog.records) == len(bogus)
        cy.close_connection(c)
