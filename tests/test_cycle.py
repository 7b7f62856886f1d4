"""The connection pool (NGINX_EVENT_CORE.md §1), on both event modules."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from conftest import EDGE_METHODS, free_list

from ngxffi import Connection, Cycle, ffi, lib
from ngxffi import os as nos
from ngxffi.event.posted import post_event

Attach = Callable[[Cycle], tuple[Connection, int]]


@pytest.mark.parametrize("use", EDGE_METHODS)
def test_a_new_cycle_is_laid_out_as_nginx_does(use: str) -> None:
    with Cycle(8, use) as cy:
        assert free_list(cy) == list(range(8))
        assert cy.free_connection_n == 8
        for c in cy.connections:
            assert c.raw.fd == -1
            assert c.raw.read == cy.raw.read_events + c.index
            assert c.raw.write == cy.raw.write_events + c.index
            assert (c.read.instance, c.write.instance) == (1, 0)
            assert c.read.closed and c.write.closed


@pytest.mark.parametrize("use", EDGE_METHODS)
def test_one_allocation_per_array(use: str) -> None:
    with Cycle(8, use) as cy:
        size = ffi.sizeof("ngx_connection_t")
        addresses = [int(ffi.cast("uintptr_t", c.raw)) for c in cy.connections]
        assert addresses == [addresses[0] + i * size for i in range(8)]


def test_get_connection_takes_the_head_and_flips_instance(cycle: Cycle) -> None:
    fds = [nos.eventfd() for _ in range(3)]
    got = [cycle.get_connection(fd) for fd in fds]
    assert [c.index for c in got if c] == [0, 1, 2]
    for c, fd in zip(got, fds, strict=True):
        assert c is not None
        assert c.fd == fd
        assert c.read.instance == c.write.instance == 0  # was 1 on the read event
        assert c.write.write == 1 and c.read.write == 0
        assert c.read.data is c and c.write.data is c
        assert c.read.index == c.write.index == lib.NGXFFI_INVALID_INDEX
    assert cycle.free_connection_n == 13
    assert free_list(cycle) == list(range(3, 16))


def test_get_connection_zeroes_everything_but_the_links(
    cycle: Cycle, attach: Attach
) -> None:
    c, _ = attach(cycle)
    c.raw.requests = 7
    c.raw.number = 9
    c.read.raw.ready = c.read.raw.eof = c.write.raw.error = 1
    c.read.raw.available = 5
    c.data = object()
    cycle.close_connection(c)
    again = cycle.get_connection(nos.eventfd())
    assert again is c  # LIFO: the slot just freed comes back first
    assert (c.raw.requests, c.raw.number, c.data) == (0, 0, None)
    assert (c.read.ready, c.read.eof, c.write.error, c.read.available) == (0, 0, 0, 0)
    assert c.read.closed == 0
    assert c.read.instance == c.write.instance == 1  # flipped again


def test_free_connection_is_lifo(cycle: Cycle) -> None:
    a, b, c = (cycle.get_connection(nos.eventfd()) for _ in range(3))
    assert a and b and c
    cycle.close_connection(a)
    cycle.close_connection(c)
    assert free_list(cycle)[:2] == [c.index, a.index]
    assert cycle.get_connection(nos.eventfd()) is c
    assert cycle.get_connection(nos.eventfd()) is a


def test_exhaustion_logs_nginx_alert_and_returns_none(
    cycle: Cycle, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(16):
        assert cycle.get_connection(nos.eventfd()) is not None
    fd = nos.eventfd()
    assert cycle.get_connection(fd) is None
    nos.close(fd)
    assert "16 worker_connections are not enough" in caplog.text
    assert caplog.records[-1].levelname == "ALERT"
    assert cycle.free_connection_n == 0


def test_close_connection_in_nginx_order(cycle: Cycle, attach: Attach) -> None:
    c, _ = attach(cycle)
    fd = c.fd
    cycle.actions.add(c.read, lib.EPOLLIN | lib.EPOLLRDHUP, 0)
    cycle.timers.add_timer(c.read, 1000)
    cycle.timers.add_timer(c.write, 1000)
    post_event(c.read, cycle.posted_accept_events)
    post_event(c.write, cycle.posted_events)
    cycle.reusable_connection(c, True)
    cycle.close_connection(c)
    assert c.raw.fd == -1
    assert not c.read.timer_set and not c.write.timer_set and len(cycle.timers) == 0
    assert not c.read.active
    assert not c.read.posted and not c.write.posted
    assert not cycle.posted_events and not cycle.posted_accept_events
    assert c.read.closed and c.write.closed
    assert not c.reusable and not cycle.reusable_connections_queue
    assert cycle.free_connection_n == 16
    with pytest.raises(OSError):
        nos.get_status_flags(fd)  # the socket is closed


def test_closing_twice_only_logs(
    cycle: Cycle, attach: Attach, caplog: pytest.LogCaptureFixture
) -> None:
    c, _ = attach(cycle)
    cycle.close_connection(c)
    free = free_list(cycle)
    cycle.close_connection(c)
    assert "connection already closed" in caplog.text
    assert free_list(cycle) == free
    assert cycle.free_connection_n == 16


def test_reusable_queue_and_drain(
    cycle: Cycle, caplog: pytest.LogCaptureFixture
) -> None:
    """Free slots at connection_n/16 (1 of 16): get_connection closes the oldest
    reusable connection through its read handler, with close set."""
    conns = [cycle.get_connection(nos.eventfd()) for _ in range(15)]
    assert all(conns) and cycle.free_connection_n == 1
    drained: list[int] = []

    def idle_handler(ev: object) -> None:
        c = ev.data  # type: ignore[attr-defined]
        assert c.close == 1
        drained.append(c.index)
        cycle.close_connection(c)

    for c in conns[3:6]:
        assert c is not None
        c.read.handler = idle_handler
        cycle.reusable_connection(c, True)
    assert [c.index for c in cycle.reusable_connections_queue] == [3, 4, 5]
    cycle.reusable_connection(conns[3], False)  # type: ignore[arg-type]
    assert [c.index for c in cycle.reusable_connections_queue] == [4, 5]

    fd = nos.eventfd()
    got = cycle.get_connection(fd)
    assert drained == [4]  # max(min(32, 2 // 8), 1) = 1, the oldest
    assert got is not None and got.index == 4
    assert "worker_connections are not enough, reusing connections" in caplog.text


def test_no_drain_while_slots_remain(cycle: Cycle) -> None:
    c = cycle.get_connection(nos.eventfd())
    assert c is not None
    c.read.handler = lambda ev: pytest.fail("drained too early")
    cycle.reusable_connection(c, True)
    assert cycle.get_connection(nos.eventfd()) is not None


def test_cycle_argument_errors() -> None:
    with pytest.raises(ValueError, match="connection_n"):
        Cycle(0)
    with pytest.raises(ValueError, match="unknown event method 'kqueue'"):
        Cycle(4, use="kqueue")


def test_poll_get_connection_refuses_fds_beyond_files(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Cycle(4, use="poll") as cy:
        assert cy.files is not None
        assert cy.get_connection(len(cy.files)) is None
        assert "but only" in caplog.text and "files are available" in caplog.text


def open_fds() -> set[int]:
    """The open descriptors, less the one the listing itself used."""
    listed = {int(name) for name in os.listdir("/proc/self/fd")}
    return {fd for fd in listed if lib.ngxffi_get_status_flags(fd) != -1}


@pytest.mark.parametrize("use", EDGE_METHODS)
def test_repr_and_context_manager_close_the_kernel_objects(use: str) -> None:
    before = open_fds()
    cy = Cycle(4, use)
    opened = open_fds() - before  # the epoll fd or the ring, and notify's eventfd
    assert len(opened) == 2
    assert "0/4 used" in repr(cy)
    with cy:
        pass
    assert not opened & open_fds()
    cy.close()  # idempotent


def test_drain_starts_exactly_at_one_sixteenth() -> None:
    with Cycle(32, use="poll") as cy:
        drained: list[int] = []

        def idle(ev: object) -> None:
            c = ev.data  # type: ignore[attr-defined]
            drained.append(c.index)
            cy.close_connection(c)

        conns = [cy.get_connection(nos.eventfd()) for _ in range(29)]
        assert all(conns) and cy.free_connection_n == 3
        first = conns[0]
        assert first is not None
        first.read.handler = idle
        cy.reusable_connection(first, True)
        assert cy.get_connection(nos.eventfd()) is not None  # 3 free > 32/16: no drain
        assert drained == []
        assert cy.get_connection(nos.eventfd()) is not None  # 2 free: drain
        assert drained == [first.index]
        for c in cy.connections:
            if c.raw.fd != -1:
                cy.close_connection(c)


def test_drain_tries_the_last_one_again_when_nothing_was_freed() -> None:
    """ngx_drain_connections: a first call may only start a lingering close; with no
    free slot at all the same connection's handler is called once more."""
    with Cycle(16, use="poll") as cy:
        conns = [cy.get_connection(nos.eventfd()) for _ in range(16)]
        assert all(conns) and cy.free_connection_n == 0
        lingering = conns[0]
        assert lingering is not None
        calls: list[int] = []

        def linger_then_close(ev: object) -> None:
            calls.append(1)
            if len(calls) == 2:
                cy.close_connection(lingering)

        lingering.read.handler = linger_then_close
        cy.reusable_connection(lingering, True)
        fd = nos.eventfd()
        assert cy.get_connection(fd) is lingering
        assert len(calls) == 2
        for c in cy.connections:
            if c.raw.fd != -1:
                cy.close_connection(c)
