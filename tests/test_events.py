"""Handling I/O events on every module: one behavioural suite, the nginx rules for
edge-triggered (epoll, io_uring) and level-triggered (poll) methods."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from conftest import edge, tagged

from ngxffi import (
    POST_EVENTS,
    READ_EVENT,
    Connection,
    Cycle,
    Event,
    handle_read_event,
    handle_write_event,
    lib,
    process_events_and_timers,
)
from ngxffi import os as nos
from ngxffi.event.event import ERROR, OK, USE_CLEAR_EVENT, USE_LEVEL_EVENT

Attach = Callable[[Cycle], tuple[Connection, int]]


def turn(cy: Cycle, timeout: int = 0) -> None:
    """process_events once with a bounded wait, then the posted queues (poll posts)."""
    cy.actions.process_events(cy, timeout, 0)
    from ngxffi.event.posted import event_process_posted

    event_process_posted(cy, cy.posted_accept_events)
    event_process_posted(cy, cy.posted_events)


def recorder(calls: list[tuple[str, int]], name: str) -> Callable[[Event], None]:
    def handler(ev: Event) -> None:
        calls.append((name, ev.data.index))

    return handler


def test_module_flags(cycle: Cycle) -> None:
    if edge(cycle):
        assert cycle.event_flags & USE_CLEAR_EVENT
        assert cycle.actions.add_conn is not None and cycle.actions.notify is not None
    else:
        assert cycle.event_flags & USE_LEVEL_EVENT
        assert cycle.actions.add_conn is None and cycle.actions.notify is None
    assert cycle.actions.del_ is cycle.actions.delete
    assert cycle.actions.enable == cycle.actions.add


def test_read_handler_runs_when_data_arrives(cycle: Cycle, attach: Attach) -> None:
    c, peer = attach(cycle)
    got: list[bytes] = []

    def on_read(ev: Event) -> None:
        assert ev.ready and ev.available == -1
        got.append(nos.recv(ev.data.fd, 100))

    c.read.handler = on_read
    handle_read_event(c.read)
    assert c.read.active
    turn(cycle)
    assert got == []
    nos.send(peer, b"hello")
    turn(cycle, 1000)
    assert got == [b"hello"]


def test_edge_vs_level_triggered_handling(cycle: Cycle, attach: Attach) -> None:
    """A handler that does not read: epoll (edge) reports it once; poll (level)
    reports it again on every turn."""
    c, peer = attach(cycle)
    calls: list[tuple[str, int]] = []
    c.read.handler = recorder(calls, "read")
    handle_read_event(c.read)
    nos.send(peer, b"x")
    for _ in range(3):
        turn(cycle, 100)
        c.read.raw.ready = 0  # as a handler that hit EAGAIN would
    expected = 1 if edge(cycle) else 3
    assert calls == [("read", c.index)] * expected


def test_level_handle_read_event_deletes_while_ready(
    cycle: Cycle, attach: Attach
) -> None:
    c, _ = attach(cycle)
    handle_read_event(c.read)
    assert c.read.active
    c.read.raw.ready = 1
    handle_read_event(c.read)
    # level-triggered: removed so that it does not fire before the data is read;
    # edge-triggered: never removed
    assert c.read.active == (edge(cycle))


def test_write_handler_runs_when_writable(cycle: Cycle, attach: Attach) -> None:
    c, _ = attach(cycle)
    calls: list[tuple[str, int]] = []
    c.write.handler = recorder(calls, "write")
    handle_write_event(c.write)
    turn(cycle, 1000)
    assert calls == [("write", c.index)]
    assert c.write.ready


def test_read_and_write_on_one_connection(cycle: Cycle, attach: Attach) -> None:
    c, peer = attach(cycle)
    calls: list[tuple[str, int]] = []
    c.read.handler = recorder(calls, "read")
    c.write.handler = recorder(calls, "write")
    handle_read_event(c.read)
    handle_write_event(c.write)  # epoll: EPOLL_CTL_MOD with both masks
    nos.send(peer, b"x")
    turn(cycle, 1000)
    assert calls == [("read", c.index), ("write", c.index)]


def test_delete_one_side_keeps_the_other(cycle: Cycle, attach: Attach) -> None:
    c, peer = attach(cycle)
    calls: list[tuple[str, int]] = []
    c.read.handler = recorder(calls, "read")
    c.write.handler = recorder(calls, "write")
    cycle.actions.add(c.read, READ_EVENT, 0)
    cycle.actions.add(c.write, lib.EPOLLOUT, 0)
    cycle.actions.delete(c.write, lib.EPOLLOUT, 0)
    assert c.read.active and not c.write.active
    nos.send(peer, b"x")
    turn(cycle, 1000)
    assert calls == [("read", c.index)]
    cycle.actions.delete(c.read, READ_EVENT, 0)
    turn(cycle)
    assert calls == [("read", c.index)]


def test_peer_close_reaches_an_active_handler(cycle: Cycle, attach: Attach) -> None:
    c, peer = attach(cycle)
    seen: list[tuple[int, int]] = []
    c.read.handler = lambda ev: seen.append((ev.ready, ev.pending_eof))
    handle_read_event(c.read)
    nos.close(peer)
    turn(cycle, 1000)
    if edge(cycle):
        assert seen == [(1, 1)]  # EPOLLRDHUP -> pending_eof
    else:
        assert seen == [(1, 0)]
    assert nos.recv(c.fd, 10) == b""


def test_hangup_alone_reaches_the_read_handler(cycle: Cycle, fds: list[int]) -> None:
    """An empty pipe whose writer closed reports HUP without IN; nginx adds IN|OUT so
    that an active handler sees it."""
    r, w = nos.pipe2(lib.O_CLOEXEC | lib.O_NONBLOCK)
    c = cycle.get_connection(r)
    assert c is not None
    revents: list[int] = []
    cycle.trace = lambda record: revents.append(record.revents)
    calls: list[tuple[str, int]] = []
    c.read.handler = recorder(calls, "read")
    handle_read_event(c.read)
    nos.close(w)
    turn(cycle, 1000)
    assert calls == [("read", c.index)]
    hup = lib.EPOLLHUP if edge(cycle) else lib.POLLHUP
    assert revents and revents[0] & hup
    if edge(cycle):
        assert not revents[0] & lib.EPOLLIN  # the kernel said HUP only


def test_post_events_sends_accept_events_to_their_queue(
    edge_cycle: Cycle, attach: Attach
) -> None:
    cy = edge_cycle
    a, pa = attach(cy)
    b, pb = attach(cy)
    a.read.raw.accept = 1
    for c, peer in ((a, pa), (b, pb)):
        c.read.handler = lambda ev: None
        handle_read_event(c.read)
        nos.send(peer, b"x")
    assert cy.actions.process_events(cy, 1000, POST_EVENTS) == OK
    assert list(cy.posted_accept_events) == [a.read]
    assert list(cy.posted_events) == [b.read]
    assert a.read.posted and b.read.posted


def test_poll_always_posts(attach: Attach) -> None:
    with Cycle(4, use="poll") as cy:
        c, peer = attach(cy)
        c.read.handler = lambda ev: pytest.fail("poll must post, not call")
        handle_read_event(c.read)
        nos.send(peer, b"x")
        cy.actions.process_events(cy, 1000, 0)
        assert list(cy.posted_events) == [c.read]
        cy.close_connection(c)


def test_poll_delete_moves_the_last_entry_into_the_hole(attach: Attach) -> None:
    with Cycle(8, use="poll") as cy:
        conns = [attach(cy) for _ in range(3)]
        for c, _ in conns:
            handle_read_event(c.read)
        assert [c.read.index for c, _ in conns] == [0, 1, 2]
        first, last = conns[0][0], conns[2][0]
        cy.actions.delete(first.read, READ_EVENT, 0)
        assert last.read.index == 0 and first.read.index == lib.NGXFFI_INVALID_INDEX
        calls: list[tuple[str, int]] = []
        last.read.handler = recorder(calls, "read")
        nos.send(conns[2][1], b"x")
        turn(cy, 1000)
        assert calls == [("read", last.index)]
        for c, _ in conns:
            cy.close_connection(c)


def test_nothing_ready_within_the_timeout_is_ok(cycle: Cycle, attach: Attach) -> None:
    c, _ = attach(cycle)
    handle_read_event(c.read)
    assert cycle.actions.process_events(cycle, 10, 0) == OK
    assert not cycle.posted_events and not c.read.ready


def test_the_wait_interrupted_logs_info_and_returns(
    edge_cycle: Cycle, caplog: pytest.LogCaptureFixture
) -> None:
    """On io_uring the first turn submits notify's poll request, so the kernel hides
    the EINTR of that enter (it returns the count submitted): C must find it."""
    import signal

    cy = edge_cycle

    main = threading.main_thread().ident
    assert main is not None
    old = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        threading.Timer(0.05, signal.pthread_kill, (main, signal.SIGUSR1)).start()
        with caplog.at_level("INFO", logger="ngxffi"):
            assert cy.actions.process_events(cy, -1, 0) == ERROR
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert f"{tagged(cy).WAIT_CALL} failed (4: Interrupted system call)" in caplog.text
    assert caplog.records[-1].levelname == "INFO"


def test_add_conn_registers_both_sides_edge_triggered(
    edge_cycle: Cycle, attach: Attach
) -> None:
    cy = edge_cycle
    c, peer = attach(cy)
    calls: list[tuple[str, int]] = []
    c.read.handler = recorder(calls, "read")
    c.write.handler = recorder(calls, "write")
    assert cy.actions.add_conn is not None
    cy.actions.add_conn(c)
    assert c.read.active and c.write.active
    nos.send(peer, b"x")
    turn(cy, 1000)
    turn(cy)
    assert calls == [("read", c.index), ("write", c.index)]  # once: edge-triggered


def test_failed_epoll_ctl_raises_and_alerts(
    edge_cycle: Cycle, attach: Attach, caplog: pytest.LogCaptureFixture
) -> None:
    """io_uring's registrations keep epoll_ctl's contract, EEXIST included, though
    they make no syscall."""
    cy = edge_cycle
    c, _ = attach(cy)
    cy.actions.add(c.read, READ_EVENT, 0)
    c.read.raw.active = 0  # lie: the next add is an ADD again
    with pytest.raises(FileExistsError):
        cy.actions.add(c.read, READ_EVENT, 0)
    call = tagged(cy).CTL_CALL
    assert f"{call}(1, {c.fd}) failed (17: File exists)" in caplog.text


def test_notify_wakes_a_blocked_loop_from_another_thread(edge_cycle: Cycle) -> None:
    cy = edge_cycle
    woken: list[Event] = []
    notify = cy.actions.notify
    assert notify is not None
    threading.Timer(0.05, notify, (woken.append,)).start()
    process_events_and_timers(cy)  # no timers: waits forever without notify
    assert woken == [tagged(cy).notify_event]
    notify(woken.append)
    process_events_and_timers(cy)
    assert len(woken) == 2
