"""Posted queues and process_events_and_timers (NGINX_EVENT_CORE.md §4)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest
from conftest import EDGE_METHODS

from ngxffi import (
    POST_EVENTS,
    Connection,
    Cycle,
    Event,
    delete_posted_event,
    handle_read_event,
    post_event,
    process_events_and_timers,
)
from ngxffi import os as nos
from ngxffi.event.event import OK
from ngxffi.event.posted import event_process_posted

Attach = Callable[[Cycle], tuple[Connection, int]]


@pytest.fixture
def cy(edge_cycle: Cycle) -> Cycle:
    return edge_cycle


def named(cy: Cycle, log: list[str], name: str) -> Event:
    return Event.standalone(cy, lambda ev: log.append(name), name)


def test_posted_queue_is_fifo_and_posting_twice_is_once(cy: Cycle) -> None:
    log: list[str] = []
    a, b, c = (named(cy, log, n) for n in "abc")
    for ev in (a, b, a, c):
        post_event(ev, cy.posted_events)
    assert a.posted and len(cy.posted_events) == 3
    delete_posted_event(b)
    assert not b.posted
    event_process_posted(cy, cy.posted_events)
    assert log == ["a", "c"]
    assert not a.posted and not cy.posted_events


def test_events_posted_while_processing_run_in_the_same_pass(cy: Cycle) -> None:
    log: list[str] = []
    late = named(cy, log, "late")

    def first(ev: Event) -> None:
        log.append("first")
        post_event(late, cy.posted_events)

    post_event(Event.standalone(cy, first), cy.posted_events)
    event_process_posted(cy, cy.posted_events)
    assert log == ["first", "late"]


def test_a_handler_can_unpost_a_later_event(cy: Cycle) -> None:
    log: list[str] = []
    victim = named(cy, log, "victim")
    post_event(
        Event.standalone(cy, lambda ev: delete_posted_event(victim)), cy.posted_events
    )
    post_event(victim, cy.posted_events)
    event_process_posted(cy, cy.posted_events)
    assert log == []


class StubMutex:
    """An accept mutex that is always won, recording the calls in the log."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.held = False

    def trylock(self, cycle: Cycle) -> int:
        self.log.append("trylock")
        self.held = True
        return OK

    def unlock(self) -> None:
        self.log.append("unlock")
        self.held = False


def test_one_turn_runs_the_steps_in_nginx_order(cy: Cycle, attach: Attach) -> None:
    """Accept mutex held -> POST_EVENTS; then the accept queue, unlock, timers, the
    posted queue; an I/O event posted by process_events runs with the posted ones."""
    log: list[str] = []
    cy.accept_mutex = StubMutex(log)
    post_event(named(cy, log, "posted"), cy.posted_events)
    post_event(named(cy, log, "accept"), cy.posted_accept_events)
    timer = named(cy, log, "timer")
    cy.timers.add_timer(timer, 0)
    c, peer = attach(cy)
    c.read.handler = lambda ev: log.append("io")
    handle_read_event(c.read)
    nos.send(peer, b"x")
    flags_seen: list[int] = []
    process = cy.actions.process_events

    def spy(cycle: Cycle, timer_ms: int, flags: int) -> int:
        flags_seen.append(flags)
        log.append("process_events")
        return process(cycle, timer_ms, flags)

    cy.actions.process_events = spy
    process_events_and_timers(cy)
    assert flags_seen[0] & POST_EVENTS
    assert log == [
        "trylock",
        "process_events",
        "accept",
        "unlock",
        "timer",
        "posted",
        "io",
    ]


def test_accept_disabled_skips_the_mutex(cy: Cycle) -> None:
    log: list[str] = []
    cy.accept_mutex = StubMutex(log)
    cy.accept_disabled = 2
    cy.timers.add_timer(named(cy, log, "t"), 0)
    process_events_and_timers(cy)
    assert cy.accept_disabled == 1 and "trylock" not in log


def test_mutex_not_held_caps_the_wait(cy: Cycle) -> None:
    class Busy(StubMutex):
        def trylock(self, cycle: Cycle) -> int:
            self.held = False
            return OK

    cy.accept_mutex = Busy([])
    cy.accept_mutex_delay = 50
    start = time.monotonic()
    process_events_and_timers(cy)  # no timers, nothing ready: only the cap ends it
    assert 0.045 <= time.monotonic() - start < 1


def test_posted_next_events_are_made_ready_and_do_not_wait(cy: Cycle) -> None:
    log: list[str] = []
    ev = named(cy, log, "next")
    post_event(ev, cy.posted_next_events)
    start = time.monotonic()
    process_events_and_timers(cy)  # no timers: would wait forever without posted_next
    assert time.monotonic() - start < 1
    assert log == ["next"] and ev.ready and ev.available == -1


def test_the_loop_waits_for_the_nearest_timer(cy: Cycle) -> None:
    fired: list[float] = []
    ev = Event.standalone(cy, lambda ev: fired.append(time.monotonic()))
    start = time.monotonic()
    cy.timers.add_timer(ev, 50)
    while not fired:
        process_events_and_timers(cy)
    assert fired[0] - start >= 0.045
    assert ev.timedout


@pytest.mark.parametrize("use", EDGE_METHODS)
def test_timer_resolution_updates_the_clock_from_sigalrm(use: str) -> None:
    # In a child: SIGALRM belongs to pytest-timeout in this process.
    code = textwrap.dedent(f"""
        from ngxffi import Cycle, Event, process_events_and_timers
        fired = []
        with Cycle(4, {use!r}, timer_resolution=10) as cy:
            ev = Event.standalone(cy, lambda ev: fired.append(cy.current_msec))
            start = cy.current_msec
            cy.timers.add_timer(ev, 50)
            turns = 0
            while not fired:
                process_events_and_timers(cy)  # waits forever but for SIGALRM
                turns += 1
        print(fired[0] - start >= 50, turns > 1)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
