"""Differential test of epoll's batch dispatch against nginx's loop, transcribed.

Random batches (valid, stale and reused tags; any mix of IN/OUT/ERR/HUP/RDHUP) meet
random handlers that close connections, take new ones and add or delete events in
the middle of the batch. The same scenario runs twice from one seed: through
EpollModule's decide-in-C-then-dispatch path, and through a line-by-line Python
transcription of ngx_epoll_process_events. Which handlers run, in which order, on
which connection incarnation, must be identical. The kernel is not involved: the
batch is written into the event list, and the actions only flip ``active`` (and call
the change hook, as the real ones do); the fds are numbers no process can have.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator

import pytest
from conftest import epoll_module
from hypothesis import given, settings
from hypothesis import strategies as st

from ngxffi import Connection, Cycle, Event, EventActions, lib

N = 6
IN, OUT = lib.EPOLLIN, lib.EPOLLOUT
ERR, HUP, RDHUP = lib.EPOLLERR, lib.EPOLLHUP, lib.EPOLLRDHUP
Record = tuple[int, int, int]  # event code, connection generation, instance


@pytest.fixture(autouse=True, scope="module")
def quiet() -> Iterator[None]:
    logger = logging.getLogger("ngxffi")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 100)  # closing the fake fds logs EBADF
    yield
    logger.setLevel(level)


class Scenario:
    """One seeded world: a cycle with fake actions, a batch, random handlers."""

    def __init__(self, seed: int, strong: bool) -> None:
        self.rnd = random.Random(seed)
        self.next_fd = 1_000_000  # beyond any RLIMIT_NOFILE: never a real fd
        self.cycle = cy = Cycle(N, strong_tags=strong)
        real = cy.actions
        touch = epoll_module(cy)._touch

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

    def _batch(self) -> list[tuple[int, int]]:
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


def through_ngxffi(seed: int, strong: bool) -> list[Record]:
    s = Scenario(seed, strong)
    cy, module = s.cycle, epoll_module(s.cycle)
    for i, (tag, revents) in enumerate(s.batch):
        module.event_list[i].data.u64 = tag
        module.event_list[i].events = revents
    cy.raw.batch_n = len(s.batch)
    k = lib.ngxffi_epoll_decide(cy.raw, 0, 0, 0)
    if k:
        module._dispatch(cy, k)
    cy.close()
    return s.log


def through_nginx(seed: int, strong: bool) -> list[Record]:
    """ngx_epoll_process_events' loop, line by line, on the same scenario."""
    s = Scenario(seed, strong)
    cy = s.cycle

    def stale(c: Connection, ev: Event, tag: int) -> bool:
        generation_ok = not strong or (c.raw.generation & 0xFFFF) == tag >> 48
        return c.raw.fd == -1 or ev.raw.instance != tag & 1 or not generation_ok

    for tag, revents in s.batch:
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


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), strong=st.booleans())
def test_dispatch_matches_nginx(seed: int, strong: bool) -> None:
    assert through_ngxffi(seed, strong) == through_nginx(seed, strong)
