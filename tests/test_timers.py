"""Timers (NGINX_EVENT_CORE.md §4): order, lazy delay, signed keys, cancelable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import EDGE_METHODS

from ngxffi import Cycle, Event
from ngxffi.core.times import MSEC_MASK, msec_diff
from ngxffi.event.timer import TIMER_INFINITE


@pytest.fixture(params=EDGE_METHODS)
def cy(request: pytest.FixtureRequest) -> Iterator[Cycle]:
    with Cycle(4, use=request.param) as cycle:
        yield cycle


def events(cy: Cycle, fired: list[str], *names: str) -> list[Event]:
    def handler(ev: Event) -> None:
        assert ev.timedout and not ev.timer_set
        fired.append(ev.data)

    return [Event.standalone(cy, handler, name) for name in names]


def advance(cy: Cycle, ms: int) -> None:
    cy.current_msec = (cy.current_msec + ms) & MSEC_MASK


def test_msec_diff_is_signed_modulo_2_64() -> None:
    assert msec_diff(5, 3) == 2
    assert msec_diff(3, 5) == -2
    assert msec_diff(2, MSEC_MASK - 1) == 4  # across the wrap
    assert msec_diff(MSEC_MASK - 1, 2) == -4


def test_timers_expire_in_key_order_and_fifo_for_equal_keys(cy: Cycle) -> None:
    fired: list[str] = []
    a, b, c, d = events(cy, fired, "a", "b", "c", "d")
    cy.timers.add_timer(a, 300)
    cy.timers.add_timer(b, 100)
    cy.timers.add_timer(c, 200)
    cy.timers.add_timer(d, 100)
    assert cy.timers.find_timer() == 100
    advance(cy, 99)
    cy.timers.expire_timers()
    assert fired == []
    assert cy.timers.find_timer() == 1
    advance(cy, 1)
    cy.timers.expire_timers()
    assert fired == ["b", "d"]
    advance(cy, 500)
    assert cy.timers.find_timer() == 0
    cy.timers.expire_timers()
    assert fired == ["b", "d", "c", "a"]
    assert cy.timers.find_timer() == TIMER_INFINITE and len(cy.timers) == 0


def test_lazy_delay_keeps_the_old_key_within_300_ms(cy: Cycle) -> None:
    (ev,) = events(cy, [], "ev")
    cy.timers.add_timer(ev, 1000)
    key = ev.raw.timer_key
    cy.timers.add_timer(ev, 1299)  # 299 ms later than the current key: kept
    assert ev.raw.timer_key == key
    cy.timers.add_timer(ev, 701)  # 299 ms earlier: kept
    assert ev.raw.timer_key == key
    cy.timers.add_timer(ev, 1300)  # 300 ms: re-keyed
    assert ev.raw.timer_key == (key + 300) & MSEC_MASK
    assert len(cy.timers) == 1


def test_del_timer_cancels(cy: Cycle) -> None:
    fired: list[str] = []
    a, b = events(cy, fired, "a", "b")
    cy.timers.add_timer(a, 10)
    cy.timers.add_timer(b, 20)
    cy.timers.del_timer(a)
    cy.timers.del_timer(a)  # twice is harmless
    assert not a.timer_set and len(cy.timers) == 1
    assert cy.timers.find_timer() == 20
    advance(cy, 30)
    cy.timers.expire_timers()
    assert fired == ["b"]


def test_rearming_often_keeps_the_heap_bounded(cy: Cycle) -> None:
    evs = events(cy, [], *"abcdefgh")
    for round_ in range(2000):
        for i, ev in enumerate(evs):
            cy.timers.del_timer(ev)
            cy.timers.add_timer(ev, 1000 + round_ * 400 + i)
    assert len(cy.timers) == 8
    assert len(cy.timers.heap) <= 2 * 8 + 64 + 1


@pytest.mark.parametrize("use", EDGE_METHODS)
def test_keys_wrap_around_2_64(use: str) -> None:
    fired: list[str] = []
    with Cycle(4, use, clock_offset=0) as probe_cycle:
        now = probe_cycle.current_msec
    with Cycle(4, use, clock_offset=(1 << 64) - 50 - now) as cy:
        assert cy.current_msec > (1 << 64) - 1000  # 50 ms before the wrap
        late, early = events(cy, fired, "late", "early")
        cy.timers.add_timer(late, 100)  # key wraps to about 50
        cy.timers.add_timer(early, 10)  # key just below 2**64
        assert late.raw.timer_key < early.raw.timer_key  # raw keys out of order...
        assert cy.timers.find_timer() == 10  # ...but signed differences are not
        advance(cy, 200)
        assert cy.current_msec < 1000
        cy.timers.expire_timers()
        assert fired == ["early", "late"]


def test_a_handler_may_rearm_its_own_timer(cy: Cycle) -> None:
    count: list[int] = []

    def periodic(ev: Event) -> None:
        count.append(1)
        if len(count) < 3:
            cy.timers.add_timer(ev, 0)

    ev = Event.standalone(cy, periodic)
    cy.timers.add_timer(ev, 0)
    cy.timers.expire_timers()
    assert len(count) == 3  # due again at once: the same pass runs it, as nginx
