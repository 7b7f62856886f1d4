"""Differential test of the batch dispatch of epoll and io_uring against nginx's
loop, transcribed.

Random batches (valid, stale and reused tags; any mix of IN/OUT/ERR/HUP/RDHUP) meet
random handlers that close connections, take new ones and add or delete events in
the middle of the batch. The same scenario runs twice from one seed: through the
module's process_events (its wait, the C decision, the dispatch), and through a
line-by-line Python transcription of ngx_epoll_process_events. Which handlers run,
in which order, on which connection incarnation, must be identical.

The kernel makes the batch: each of its events is a socket made ready with exactly
those error and hang-up conditions, registered (:func:`conftest.inject`) with the
event's tag and the rest of its mask, so that epoll_wait, or the ring's completions,
return the batch in order. The connections' actions only flip ``active`` (and call
the change hook, as the real ones do); their fds are numbers no process can have.
"""

from __future__ import annotations

import contextlib
import logging
import random
import select
import socket
from collections.abc import Callable, Iterator

import pytest
from conftest import EDGE_METHODS, inject, tagged
from hypothesis import given, settings
from hypothesis import strategies as st

from ngxffi import Connection, Cycle, Event, EventActions, lib
from ngxffi import os as nos

N = 6
IN, OUT = lib.EPOLLIN, lib.EPOLLOUT
ERR, HUP, RDHUP = lib.EPOLLERR, lib.EPOLLHUP, lib.EPOLLRDHUP
Record = tuple[int, int, int]  # event code, connection generation, instance
Batch = list[tuple[int, int]]  # tag, revents
State = tuple[bool, bool, bool]  # a socket's error, hang-up, read hang-up
IP_RECVERR = 11  # <linux/in.h>; the socket module lacks it


@pytest.fixture(autouse=True, scope="module")
def quiet() -> Iterator[None]:
    logger = logging.getLogger("ngxffi")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 100)  # closing the fake fds logs EBADF
    yield
    logger.setLevel(level)


def ready_socket(err: bool, hup: bool, rdhup: bool) -> socket.socket:
    """A UDP socket, readable and writable, with an error queued (an ICMP port
    unreachable: it stays until read with MSG_ERRQUEUE) and its receiving side (RDHUP)
    or both sides (HUP, RDHUP: Linux has no hang-up without both) shut down. These
    conditions last, so that every batch can use it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    if err:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
            gone.bind(("127.0.0.1", 0))
            nowhere = gone.getsockname()
        s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        s.sendto(b"x", nowhere)
        poller = select.poll()
        poller.register(s, select.POLLERR)
        assert poller.poll(5000), "no ICMP error on loopback"
        s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # a send would raise it
    s.connect(s.getsockname())
    s.send(b"x")  # readable
    if hup or rdhup:
        s.shutdown(socket.SHUT_RDWR if hup else socket.SHUT_RD)
    return s


@pytest.fixture(scope="module")
def sockets() -> Iterator[dict[State, socket.socket]]:
    made = {
        (err, hup, rdhup): ready_socket(err, hup, rdhup)
        for err in (False, True)
        for hup, rdhup in ((False, False), (False, True), (True, True))
    }
    yield made
    for s in made.values():
        s.close()


def as_reported(batch: Batch, use: str) -> Batch:
    """The batch as the kernel can report it: io_uring reports RDHUP whether asked
    for or not (poll's IO_POLL_UNMASK), and a socket hangs up only with both sides
    shut, which includes RDHUP."""
    if use == "epoll":
        return batch
    return [
        (tag, revents | RDHUP if revents & HUP else revents) for tag, revents in batch
    ]


def make_batch(
    cy: Cycle, batch: Batch, sockets: dict[State, socket.socket]
) -> list[int]:
    """Register, for each event of the batch, a socket in the state its ERR, HUP and
    RDHUP say, with the rest of its mask and its tag; a dup each, since epoll takes a
    file once per fd. Returns the dups, for the caller to close."""
    dups = []
    for tag, revents in batch:
        state = (
            bool(revents & ERR),
            bool(revents & HUP),
            bool(revents & (HUP | RDHUP)),
        )
        fd = nos.dup(sockets[state].fileno())
        dups.append(fd)
        inject(cy, fd, revents & (IN | OUT | RDHUP), tag)
    return dups


class Scenario:
    """One seeded world: a cycle with fake actions, a batch, random handlers."""

    def __init__(self, seed: int, strong: bool, use: str) -> None:
        self.rnd = random.Random(seed)
        self.next_fd = 1_000_000  # beyond any RLIMIT_NOFILE: never a real fd
        self.cycle = cy = Cycle(N, use, strong_tags=strong)
        real = cy.actions
        touch = tagged(cy)._touch

        def flip(on: int) -> Callable[[Event, int, int], None]:
            def action(ev: Event, event: int, flags: int) -> None:
                ev.raw.active = on
                touch()

            return action

        def del_conn(c: Connection, flags: int) -> None:
            c.read.raw.active = c.write.raw.active = 0
            touch()

        cy.actions = EventActions(
            flip(1),
            flip(0),
            flip(1),
            flip(0),
            None,
            del_conn,
            real.notify,
            real.process_events,
            real.init,
            real.done,
        )
        self.log: list[Record] = []
        self.batch = self._batch()
        for c in cy.connections:
            c.read.handler = c.write.handler = self.handler

    def fd(self) -> int:
        self.next_fd += 1
        return self.next_fd

    def _new(self, tags: list[int]) -> None:
        c = self.cycle.get_connection(self.fd())
        if c is None:
            return
        for ev in (c.read, c.write):
            if self.rnd.random() < 0.8:
                ev.raw.active = 1
        tags.append(int(lib.ngxffi_tag(self.cycle.raw, c.raw, c.read.raw.instance)))

    def _batch(self) -> Batch:
        rnd, tags = self.rnd, list[int]()
        for _ in range(rnd.randint(2, N)):
            self._new(tags)
        for _ in range(rnd.randint(0, 3)):  # closes and reuses make stale tags
            used = [c for c in self.cycle.connections if c.raw.fd != -1]
            if used and rnd.random() < 0.5:
                self.cycle.close_connection(rnd.choice(used))
            else:
                self._new(tags)
        batch = []
        for _ in range(rnd.randint(1, 8)):
            tag = rnd.choice(tags) ^ (rnd.random() < 0.1)
            revents = 0
            for bit in (IN, OUT, ERR, HUP, RDHUP):
                if rnd.random() < 0.4:
                    revents |= bit
            batch.append((tag, revents or IN))
        return batch

    def handler(self, ev: Event) -> None:
        cy, rnd = self.cycle, self.rnd
        c = ev.data
        self.log.append((ev.code, int(c.raw.generation), int(ev.raw.instance)))
        for _ in range(rnd.randint(0, 2)):
            r = rnd.random()
            used = [x for x in cy.connections if x.raw.fd != -1]
            if r < 0.3 and used:
                cy.close_connection(rnd.choice(used))
            elif r < 0.55:
                new = cy.get_connection(self.fd())
                if new is not None:
                    new.read.handler = new.write.handler = self.handler
                    for e in (new.read, new.write):
                        if rnd.random() < 0.7:
                            cy.actions.add(e, 0, 0)
            elif r < 0.75 and used:
                x = rnd.choice(used)
                side = rnd.choice((x.read, x.write))
                if side.raw.active:
                    cy.actions.delete(side, 0, 0)
                else:
                    cy.actions.add(side, 0, 0)


def through_ngxffi(
    seed: int, strong: bool, use: str, sockets: dict[State, socket.socket]
) -> list[Record]:
    s = Scenario(seed, strong, use)
    cy, module = s.cycle, tagged(s.cycle)
    batch = as_reported(s.batch, use)
    dups = make_batch(cy, batch, sockets)
    try:
        cy.actions.process_events(cy, 1000, 0)
        got = [
            (int(module.event_list[i].data.u64), int(module.event_list[i].events))
            for i in range(cy.raw.batch_n)
        ]
        assert got == batch  # the kernel reported the scenario's batch
    finally:
        for fd in dups:
            with contextlib.suppress(OSError):
                nos.close(fd)
        cy.close()
    return s.log


def through_nginx(seed: int, strong: bool, use: str) -> list[Record]:
    """ngx_epoll_process_events' loop, line by line, on the same scenario. The
    transcription asks the module nothing, so its cycle is epoll's, which opens and
    closes faster than a ring."""
    s = Scenario(seed, strong, "epoll")
    cy = s.cycle

    def stale(c: Connection, ev: Event, tag: int) -> bool:
        generation_ok = not strong or (c.raw.generation & 0xFFFF) == tag >> 48
        return c.raw.fd == -1 or ev.raw.instance != tag & 1 or not generation_ok

    for tag, revents in as_reported(s.batch, use):
        slot = lib.ngxffi_tag_slot(cy.raw, tag)
        if slot < 0:
            continue  # ngxffi's addition: never dereference a tag that is not ours
        c = cy.connections[slot]
        if stale(c, c.read, tag):
            continue
        if revents & (ERR | HUP):
            revents |= IN | OUT
        if revents & IN and c.read.raw.active:
            if revents & RDHUP:
                c.read.raw.pending_eof = 1
            c.read.raw.ready = 1
            c.read.raw.available = -1
            c.read.handler(c.read)
        if revents & OUT and c.write.raw.active:
            if stale(c, c.write, tag):
                continue
            c.write.raw.ready = 1
            c.write.handler(c.write)
    cy.close()
    return s.log


@pytest.mark.parametrize("use", EDGE_METHODS)
@settings(max_examples=300, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), strong=st.booleans())
def test_dispatch_matches_nginx(
    use: str, sockets: dict[State, socket.socket], seed: int, strong: bool
) -> None:
    assert through_ngxffi(seed, strong, use, sockets) == through_nginx(
        seed, strong, use
    )
