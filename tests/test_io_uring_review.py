"""Regressions of the io_uring module found in review, each on real sockets and
checked against epoll where epoll has the same rule: a re-arm made by a completion
that is not an event goes with the same turn's wait; EPOLLONESHOT stays disarmed; a
turn takes every ready connection, past the kernel's budget of 20 deferred
completions per enter (Linux 6.13+); a child that closes an inherited cycle leaves
the parent's ring alone; closing the cycle lets every socket go before it returns."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable

import pytest
from conftest import EDGE_METHODS, needs_io_uring

from ngxffi import (
    CLEAR_EVENT,
    ONESHOT_EVENT,
    READ_EVENT,
    WRITE_EVENT,
    Connection,
    Cycle,
    Event,
    lib,
)
from ngxffi import os as nos


def add_conn(cy: Cycle, c: Connection) -> None:
    assert cy.actions.add_conn is not None  # the edge methods have it
    cy.actions.add_conn(c)


def connected(
    cy: Cycle, n: int, fds: list[int], on_read: Callable[[Event], object]
) -> list[int]:
    """n socketpairs in the cycle, both events added edge-triggered; their peers."""
    peers = []
    for _ in range(n):
        a, b = pair()
        fds.append(b)
        peers.append(b)
        c = cy.get_connection(a)
        assert c is not None
        c.read.handler = on_read
        c.write.handler = lambda ev: None
        add_conn(cy, c)
    return peers


def pair() -> tuple[int, int]:
    a, b = nos.socketpair(type=lib.SOCK_STREAM | lib.SOCK_NONBLOCK)
    return a, b


@pytest.mark.parametrize("use", EDGE_METHODS)
def test_level_write_added_to_a_level_read_is_reported_every_turn(use: str) -> None:
    """A level read, then a level write (a mask change: on io_uring a cancel and a
    new request, whose old one's ECANCELED may be reaped only at the next turn's
    start): the socket stays writable, so every turn reports it at once."""
    with Cycle(16, use=use, events=1) as cy:
        a, b = pair()
        c = cy.get_connection(a)
        assert c is not None
        calls: list[str] = []
        c.read.handler = lambda ev: calls.append("r")
        c.write.handler = lambda ev: calls.append("w")
        cy.actions.add(c.read, READ_EVENT, 0)
        cy.actions.process_events(cy, 0, 0)
        cy.actions.add(c.write, WRITE_EVENT, 0)
        cy.actions.process_events(cy, 100, 0)
        for _ in range(3):
            calls.clear()
            start = time.monotonic()
            cy.actions.process_events(cy, 2000, 0)
            assert calls == ["w"]
            assert time.monotonic() - start < 1.0  # not the timer's 2 s
        cy.close_connection(c)
        nos.close(b)


@pytest.mark.parametrize("flags", [ONESHOT_EVENT, ONESHOT_EVENT | CLEAR_EVENT])
@pytest.mark.parametrize("use", EDGE_METHODS)
def test_oneshot_reports_once_until_modified(use: str, flags: int) -> None:
    with Cycle(16, use=use) as cy:
        a, b = pair()
        c = cy.get_connection(a)
        assert c is not None
        calls: list[int] = []
        c.read.handler = lambda ev: calls.append(1)
        cy.actions.add(c.read, READ_EVENT, flags)
        nos.send(b, b"x")
        for i in range(4):
            cy.actions.process_events(cy, 50, 0)
            if i == 1:
                nos.send(b, b"y")  # a new edge: still nothing while disarmed
        assert len(calls) == 1
        cy.close_connection(c)
        nos.close(b)


@pytest.mark.parametrize("use", EDGE_METHODS)
def test_one_turn_takes_every_ready_connection(use: str, fds: list[int]) -> None:
    n = 200
    with Cycle(n + 8, use=use, events=512) as cy:
        hits: list[object] = []
        peers = connected(cy, n, fds, hits.append)
        for _ in range(3):
            cy.actions.process_events(cy, 0, 0)  # the first write-ready reports
        for b in peers:
            nos.send(b, b"x")
        hits.clear()
        cy.actions.process_events(cy, 1000, 0)
        assert len(hits) == n
        for c in cy.connections:
            if c.raw.fd != -1:
                cy.close_connection(c)


@needs_io_uring
@pytest.mark.parametrize("setup", ["coop", "plain"])
def test_a_child_closing_an_inherited_cycle_leaves_the_parent_alone(
    setup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under COOP or PLAIN the kernel would let the child cancel the parent's
    requests and take their completions from the shared queue."""
    monkeypatch.setenv("NGXFFI_URING_SETUP", setup)
    with Cycle(16, use="io_uring") as cy:
        a, b = pair()
        c = cy.get_connection(a)
        assert c is not None
        got: list[bytes] = []
        c.read.handler = lambda ev: got.append(nos.recv(ev.data.fd, 100))
        c.write.handler = lambda ev: None
        add_conn(cy, c)
        cy.actions.process_events(cy, 0, 0)
        pid = os.fork()
        if pid == 0:
            lib.ngxffi_uring_close(cy.raw)  # what the child's Cycle.close does
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        nos.send(b, b"hello")
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            cy.actions.process_events(cy, 500, 0)
        assert got == [b"hello"]
        cy.close_connection(c)
        nos.close(b)


@needs_io_uring
def test_closing_the_cycle_lets_every_socket_go_before_it_returns(
    fds: list[int],
) -> None:
    n = 2000
    cy = Cycle(n + 8, use="io_uring")
    peers = connected(cy, n, fds, lambda ev: None)
    for _ in range(3):
        cy.actions.process_events(cy, 0, 0)
    for c in cy.connections:
        if c.raw.fd != -1:
            cy.close_connection(c)  # cancels queued, not yet submitted
    cy.close()
    poller = select.poll()
    for b in peers:
        poller.register(b, select.POLLIN)
    assert len(poller.poll(0)) == n  # every peer at EOF already
