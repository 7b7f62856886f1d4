"""Misuse and failure: raising handlers, huge timers, closed cycles, slots freed
without close, bad fds, re-entry, failed start-up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest
from conftest import EDGE_METHODS, inject, needs_io_uring, uring

from ngxffi import (
    CLOSE_EVENT,
    READ_EVENT,
    Connection,
    Cycle,
    Event,
    TraceRecord,
    handle_read_event,
    lib,
    post_event,
    process_events_and_timers,
)
from ngxffi import os as nos

Attach = Callable[[Cycle], tuple[Connection, int]]


class Boom(Exception):
    pass


def test_a_raising_handler_does_not_lose_the_rest_of_the_batch(
    edge_cycle: Cycle, attach: Attach
) -> None:
    """Edge-triggered events after the raising one were already marked ready and will
    not be reported again: they run on the next turn, without waiting."""
    cy = edge_cycle
    calls: list[int] = []

    def handler(ev: Event) -> None:
        calls.append(ev.data.index)
        if len(calls) == 1:
            raise Boom

    for _ in range(3):
        c, peer = attach(cy)
        c.read.handler = handler
        handle_read_event(c.read)
        nos.send(peer, b"x")
    with pytest.raises(Boom):
        process_events_and_timers(cy)
    assert len(calls) == 1
    start = time.monotonic()
    process_events_and_timers(cy)  # no timers: would block forever without the fix
    assert time.monotonic() - start < 1
    assert sorted(calls) == [0, 1, 2]


def test_timers_beyond_int_max_do_not_overflow(cycle: Cycle, attach: Attach) -> None:
    c, peer = attach(cycle)
    cycle.timers.add_timer(Event.standalone(cycle, lambda ev: None), 2**31 + 5)
    seen: list[int] = []
    c.read.handler = lambda ev: seen.append(1)
    handle_read_event(c.read)
    nos.send(peer, b"x")
    process_events_and_timers(cycle)  # waits at most INT_MAX ms; the data ends it
    assert seen == [1]


@pytest.mark.parametrize("use", EDGE_METHODS)
def test_a_closed_cycle_refuses_to_run(use: str) -> None:
    a = Cycle(4, use=use)
    a.close()
    with Cycle(4, use=use) as b:  # likely reuses a's epoll fd (or ring) number
        with pytest.raises(ValueError, match="closed cycle"):
            a.actions.process_events(a, 0, 0)
        assert b.actions.process_events(b, 0, 0) == 0


def test_a_slot_freed_without_close_starts_clean(edge_cycle: Cycle) -> None:
    cy = edge_cycle
    c = cy.get_connection(nos.eventfd())
    assert c is not None
    fired: list[Event] = []
    c.read.handler = fired.append
    cy.timers.add_timer(c.read, 0)
    post_event(c.write, cy.posted_events)
    cy.reusable_connection(c, True)
    fd = c.fd
    cy.free_connection(c)  # misuse: no close_connection
    nos.close(fd)
    again = cy.get_connection(nos.eventfd())
    assert again is c
    assert len(cy.timers) == 0 and not cy.posted_events
    assert not cy.reusable_connections_queue
    cy.timers.expire_timers()
    assert fired == []


def test_reusable_flag_set_by_hand_does_not_break_close(
    edge_cycle: Cycle, attach: Attach
) -> None:
    c, _ = attach(edge_cycle)
    c.reusable = 1  # not through reusable_connection: not in the queue
    edge_cycle.close_connection(c)
    assert c.raw.fd == -1 and edge_cycle.free_connection_n == 16


def test_negative_fds_are_refused(cycle: Cycle) -> None:
    with pytest.raises(ValueError, match="invalid file descriptor"):
        cycle.get_connection(-1)
    assert cycle.free_connection_n == 16


def test_process_events_is_not_reentrant(edge_cycle: Cycle, attach: Attach) -> None:
    cy = edge_cycle
    c, peer = attach(cy)
    c.read.handler = lambda ev: cy.actions.process_events(cy, 0, 0)
    handle_read_event(c.read)
    nos.send(peer, b"x")
    with pytest.raises(RuntimeError, match="called from a handler"):
        cy.actions.process_events(cy, 1000, 0)


def test_invalid_tags_are_counted_once_per_batch(
    edge_cycle: Cycle, attach: Attach, fds: list[int]
) -> None:
    """The batch is closer, a tag not ours, victim: the close re-decides the rest of
    the batch, which must not count the bad tag again."""
    cy = edge_cycle
    efd = nos.eventfd(0)
    fds.append(efd)
    closer, peer = attach(cy)
    victim, peer2 = attach(cy)
    closed: list[int] = []

    def close_victim(ev: Event) -> None:
        closed.append(victim.index)
        cy.close_connection(victim)  # forces a re-decision

    closer.read.handler = close_victim
    victim.read.handler = lambda ev: pytest.fail("the closed victim's handler ran")
    handle_read_event(closer.read)
    handle_read_event(victim.read)
    inject(cy, efd, lib.EPOLLIN, 0xBAD0)
    cy.actions.process_events(cy, 0, 0)  # io_uring submits the requests: none ready
    # in this order, so that both kernels queue the events in this order
    nos.send(peer, b"x")
    os.eventfd_write(efd, 1)
    nos.send(peer2, b"x")
    records: list[TraceRecord] = []
    cy.trace = records.append
    cy.actions.process_events(cy, 1000, 0)
    assert [r.slot for r in records] == [closer.index, None, victim.index]
    assert closed == [victim.index]
    assert cy.raw.invalid_events == 1


@pytest.mark.parametrize("use", EDGE_METHODS)
def test_a_failed_start_leaves_no_descriptor_behind(use: str) -> None:
    code = textwrap.dedent(f"""
        import os, resource
        from ngxffi import Cycle
        first, second = os.dup(0), os.dup(0)  # the two lowest free fd numbers
        os.close(first)
        os.close(second)
        before = set(os.listdir("/proc/self/fd"))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        # room for the epoll fd (or the ring, and io_uring's probe: a ring and an
        # eventfd) and the RDHUP probe's epoll fd, not its socketpair
        resource.setrlimit(resource.RLIMIT_NOFILE, (second + 1, hard))
        try:
            Cycle(4, use={use!r})
        except OSError as e:
            print(e.errno, set(os.listdir("/proc/self/fd")) == before)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert out.stdout.split() == [str(lib.EMFILE), "True"]


# --- behaviours the mutation run showed untested ----------------------------------


def test_the_last_handler_can_activate_the_write_side_of_its_own_event(
    edge_cycle: Cycle, attach: Attach
) -> None:
    """nginx checks wev->active after the read handler: activating it there makes the
    write handler run in the same iteration, even for the batch's last event."""
    cy = edge_cycle
    c, peer = attach(cy)
    assert cy.actions.add_conn is not None
    cy.actions.add_conn(c)  # IN|OUT|ET
    # inactive, still registered: what epoll's delete with CLOSE_EVENT leaves (on
    # io_uring that delete cancels the request)
    c.write.raw.active = 0
    calls: list[str] = []

    def read(ev: Event) -> None:
        calls.append("read")
        cy.actions.add(c.write, lib.EPOLLOUT, lib.EPOLLET)

    c.read.handler = read
    c.write.handler = lambda ev: calls.append("write")
    nos.send(peer, b"x")
    cy.actions.process_events(cy, 1000, 0)
    assert calls == ["read", "write"]


def test_every_change_in_a_batch_is_seen(edge_cycle: Cycle, attach: Attach) -> None:
    """A closes C, then B closes D: a change after a re-decision counts too."""
    cy = edge_cycle
    conns = []
    calls: list[int] = []
    for _ in range(4):
        c, peer = attach(cy)
        conns.append(c)
        handle_read_event(c.read)
        nos.send(peer, b"x")
    a, b, c3, d = conns

    def closer(victim: Connection) -> Callable[[Event], None]:
        def handler(ev: Event) -> None:
            calls.append(ev.data.index)
            cy.close_connection(victim)

        return handler

    a.read.handler, b.read.handler = closer(c3), closer(d)
    c3.read.handler = d.read.handler = lambda ev: calls.append(ev.data.index)
    cy.actions.process_events(cy, 1000, 0)
    assert calls == [a.index, b.index]


def test_an_inactive_read_side_is_skipped(edge_cycle: Cycle, attach: Attach) -> None:
    cy = edge_cycle
    c, peer = attach(cy)
    assert cy.actions.add_conn is not None
    cy.actions.add_conn(c)
    c.read.raw.active = 0  # still registered, so still reported (see above)
    calls: list[str] = []
    c.read.handler = lambda ev: calls.append("read")
    c.write.handler = lambda ev: calls.append("write")
    nos.send(peer, b"x")
    cy.actions.process_events(cy, 1000, 0)
    assert calls == ["write"]


def test_delete_with_close_event_makes_no_syscall(epoll_cycle: Cycle) -> None:
    cy = epoll_cycle
    c = cy.get_connection(nos.eventfd())
    assert c is not None
    handle_read_event(c.read)
    nos.close(c.fd)  # any epoll_ctl on this fd would now fail with EBADF
    cy.actions.delete(c.read, READ_EVENT, CLOSE_EVENT)
    assert not c.read.active
    c.raw.shared = 1  # the fd is gone already: do not close it again
    cy.close_connection(c)


@needs_io_uring
def test_delete_with_close_event_makes_no_enter(attach: Attach) -> None:
    """io_uring's counterpart: the cancel is only queued, so the closed socket, which
    the poll request holds, is let go by the next turn's enter, not before."""
    with Cycle(4, use="io_uring") as cy:
        c, peer = attach(cy)
        handle_read_event(c.read)
        cy.actions.process_events(cy, 0, 0)  # the poll request is submitted
        enters = uring(cy).stats()["enters"]
        cy.actions.delete(c.read, READ_EVENT, CLOSE_EVENT)
        assert not c.read.active
        assert uring(cy).stats()["enters"] == enters
        nos.close(c.fd)
        with pytest.raises(BlockingIOError):  # the request still holds the socket
            nos.recv(peer, 1)
        cy.actions.process_events(cy, 0, 0)
        assert nos.recv(peer, 1) == b""
        c.raw.shared = 1  # closed above
        cy.close_connection(c)


def test_exclusive_registration_drops_rdhup(epoll_cycle: Cycle, attach: Attach) -> None:
    """The kernel refuses EPOLLRDHUP with EPOLLEXCLUSIVE (EINVAL); nginx strips it."""
    c, _ = attach(epoll_cycle)
    epoll_cycle.actions.add(c.read, READ_EVENT, lib.EPOLLEXCLUSIVE)
    assert c.read.active


def test_poll_posts_accept_events_to_their_queue(attach: Attach) -> None:
    with Cycle(4, use="poll") as cy:
        c, peer = attach(cy)
        c.read.raw.accept = 1
        handle_read_event(c.read)
        nos.send(peer, b"x")
        cy.actions.process_events(cy, 1000, 0)
        assert list(cy.posted_accept_events) == [c.read] and not cy.posted_events
        cy.close_connection(c)
