"""What only the io_uring event module does, on real sockets: the cancel that lets a
closed socket go, the re-armed oneshot of level registrations, one enter a turn,
completions beyond the event list, a failed poll request, and a kernel, an
environment or a seccomp filter that refuses io_uring. What it shares with epoll runs
on both in the other files (``edge_cycle``, ``EDGE_METHODS``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from conftest import Signaller, needs_io_uring, small_cycle, uring
from test_precise_waits import ENOSYS, EPERM, FILTER, x86_64

from ngxffi import (
    READ_EVENT,
    Connection,
    Cycle,
    Event,
    TraceRecord,
    handle_read_event,
    lib,
    process_events_and_timers,
)
from ngxffi import os as nos
from ngxffi.event.event import ERROR

pytestmark = needs_io_uring

Attach = Callable[[Cycle], tuple[Connection, int]]
IO_URING_SETUP = 425  # the x86-64 syscall number


@pytest.fixture
def ring() -> Iterator[Cycle]:
    yield from small_cycle("io_uring")


def stats(cy: Cycle) -> dict[str, int]:
    return uring(cy).stats()


def assert_no_eof(fd: int) -> None:
    """The peer of ``fd`` is still open: nothing to read, and no end of file."""
    with pytest.raises(BlockingIOError):
        nos.recv(fd, 1)


# --- closing ------------------------------------------------------------------------


def test_a_closed_socket_is_let_go_by_the_next_turn(
    ring: Cycle, attach: Attach
) -> None:
    """The poll request holds the socket's file, so closing the fd does not close
    the socket: the cancel that does is queued, and submitted by the next turn."""
    c, peer = attach(ring)
    handle_read_event(c.read)
    ring.actions.process_events(ring, 0, 0)  # the poll request is armed
    ring.close_connection(c)
    assert_no_eof(peer)
    ring.actions.process_events(ring, 0, 0)
    assert nos.recv(peer, 1) == b""


def test_closing_the_cycle_lets_every_closed_socket_go(attach: Attach) -> None:
    with Cycle(16, "io_uring") as cy:
        conns = [attach(cy) for _ in range(3)]
        for c, _ in conns:
            handle_read_event(c.read)
        cy.actions.process_events(cy, 0, 0)
        for c, peer in conns:
            cy.close_connection(c)
            assert_no_eof(peer)
    for _, peer in conns:
        assert nos.recv(peer, 1) == b""


# --- readiness ----------------------------------------------------------------------


def test_a_level_registration_is_armed_again_after_each_event(
    ring: Cycle,
    listener: tuple[int, tuple[str, int]],
    connect: Callable[[tuple[str, int]], int],
    fds: list[int],
) -> None:
    """A listener is added with flags 0, as accept does: level-triggered, so a
    handler that accepts one connection a call is called again while more wait."""
    fd, address = listener
    ls = ring.get_connection(fd)
    assert ls is not None
    fds.remove(fd)  # the cycle closes it
    accepted: list[int] = []

    def accept_one(ev: Event) -> None:
        new, _ = nos.accept(ev.data.fd)
        fds.append(new)
        accepted.append(new)

    ls.read.handler = accept_one
    ring.actions.add(ls.read, READ_EVENT, 0)
    for _ in range(3):
        connect(address)
    rearms = stats(ring)["rearms"]
    for turn in range(1, 4):
        ring.actions.process_events(ring, 1000, 0)
        assert len(accepted) == turn
    assert stats(ring)["rearms"] - rearms == 3
    ring.actions.process_events(ring, 0, 0)  # none left: not called
    assert len(accepted) == 3


def test_a_keep_alive_exchange_is_one_enter_a_turn(ring: Cycle, attach: Attach) -> None:
    """The multishot request stays armed: 100 ping-pongs submit nothing, and each
    turn is one io_uring_enter."""
    c, peer = attach(ring)

    def pong(ev: Event) -> None:
        assert nos.recv(ev.data.fd, 4) == b"ping"
        nos.send(ev.data.fd, b"pong")

    c.read.handler = pong
    handle_read_event(c.read)
    ring.actions.process_events(ring, 0, 0)  # notify's and c's requests submitted
    before = stats(ring)
    for _ in range(100):
        nos.send(peer, b"ping")
        ring.actions.process_events(ring, 1000, 0)
        assert nos.recv(peer, 4) == b"pong"
    after = stats(ring)
    assert after["turns"] - before["turns"] == 100
    assert after["enters"] - before["enters"] == 100
    assert after["sqes"] == before["sqes"]


def test_completions_beyond_the_event_list_wait_for_the_next_turns(
    attach: Attach,
) -> None:
    """40 connections ready at once, 8 events a turn: the rest stay in the
    completion queue, as epoll keeps what exceeds maxevents, and none is lost."""
    with Cycle(64, "io_uring", events=8) as cy:
        handled: list[int] = []
        for _ in range(40):
            c, peer = attach(cy)
            c.read.handler = lambda ev: handled.append(ev.data.index)
            handle_read_event(c.read)
            nos.send(peer, b"x")
        per_turn: list[int] = []
        while len(handled) < 40 and len(per_turn) < 10:
            start = len(handled)
            cy.actions.process_events(cy, 1000, 0)
            per_turn.append(len(handled) - start)
        assert sorted(handled) == list(range(40))
        assert per_turn == [8] * 5
        for c in cy.connections[:40]:
            cy.close_connection(c)


def test_notify_from_another_thread_wakes_every_infinite_wait(ring: Cycle) -> None:
    """Each notify ends a wait with no timer; notify's multishot request, armed once,
    serves them all."""
    notify = ring.actions.notify
    assert notify is not None
    ring.actions.process_events(ring, 0, 0)  # notify's request submitted
    woken: list[Event] = []
    handled = threading.Semaphore(0)

    def on_notify(ev: Event) -> None:
        woken.append(ev)
        handled.release()

    def notifier() -> None:
        for _ in range(20):
            notify(on_notify)
            handled.acquire()  # the loop handled it (and waits again)

    sqes = stats(ring)["sqes"]
    thread = threading.Thread(target=notifier)
    thread.start()
    try:
        while len(woken) < 20:
            process_events_and_timers(ring)  # no timers: waits forever but for notify
    finally:
        handled.release()
        thread.join()
    assert stats(ring)["sqes"] == sqes


@pytest.mark.timeout(10)
def test_a_signal_during_a_wait_that_submitted_is_eintr(
    ring: Cycle,
    attach: Attach,
    signaller: Signaller,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An enter that submitted requests returns their count when a signal ends its
    wait, hiding the EINTR: the turn must still end as an interrupted epoll_wait
    does, with ERROR and an INFO log, not as a wait that returned nothing."""
    ring.actions.process_events(ring, 0, 0)
    c, _ = attach(ring)
    handle_read_event(c.read)  # recorded: submitted by the next enter
    polls = stats(ring)["polls"]
    # once (a second signal would interrupt a wait that submitted nothing, whose
    # EINTR the kernel does not hide), and late enough to find the enter waiting
    signaller.start(0.2, times=1)
    with caplog.at_level("INFO", logger="ngxffi"):
        assert ring.actions.process_events(ring, -1, 0) == ERROR
    assert stats(ring)["polls"] == polls + 1  # the enter did submit
    assert signaller.fired
    assert "io_uring_enter() failed (4: Interrupted system call)" in caplog.text
    assert caplog.records[-1].levelname == "INFO"
    assert "without timeout" not in caplog.text


def test_a_failed_poll_request_reaches_its_handler_once(
    ring: Cycle, attach: Attach, caplog: pytest.LogCaptureFixture
) -> None:
    """The fd is closed behind the module's back, so its POLL_ADD fails (EBADF):
    the handler sees EPOLLERR|EPOLLHUP, ready, and its read fails; the failure is
    logged at alert, and the request is not made again (no spinning)."""
    c, _ = attach(ring)
    fd = c.fd
    lib.close(fd)
    c.raw.shared = 1  # closed already: close_connection must not close it again
    errors: list[tuple[int, int]] = []

    def read(ev: Event) -> None:
        try:
            nos.recv(ev.data.fd, 1)
        except OSError as e:
            errors.append((ev.ready, e.errno or 0))

    c.read.handler = read
    handle_read_event(c.read)
    records: list[TraceRecord] = []
    ring.trace = records.append
    ring.actions.process_events(ring, 1000, 0)
    assert [r.revents for r in records] == [lib.EPOLLERR | lib.EPOLLHUP]
    assert errors == [(1, lib.EBADF)]
    assert f"io_uring poll on fd {fd} failed (9: Bad file descriptor)" in caplog.text
    assert [r.levelname for r in caplog.records] == ["ALERT"]
    before = stats(ring)
    for _ in range(3):
        ring.actions.process_events(ring, 10, 0)
    after = stats(ring)
    assert errors == [(1, lib.EBADF)]
    assert (after["sqes"], after["errors"]) == (before["sqes"], before["errors"])
    ring.close_connection(c)


# --- where io_uring cannot run --------------------------------------------------------


def python(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


TRY_CYCLE = """
import json, os
from ngxffi import Cycle
from ngxffi.event.modules.io_uring import IoUringUnavailable
before = sorted(os.listdir("/proc/self/fd"))
try:
    Cycle(16, use="io_uring")
except IoUringUnavailable as e:
    print(json.dumps([e.errno, str(e), isinstance(e, OSError)]))
print(json.dumps(sorted(os.listdir("/proc/self/fd")) == before))
"""


def refused(out: subprocess.CompletedProcess[str]) -> tuple[int, str, bool]:
    """The errno and message of the IoUringUnavailable that TRY_CYCLE printed, and
    whether it left no descriptor behind."""
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stdout  # the cycle was refused
    err, message, is_oserror = json.loads(lines[0])
    assert is_oserror
    no_leak: bool = json.loads(lines[1])
    return err, message, no_leak


def test_the_environment_turns_io_uring_off() -> None:
    env = {"NGXFFI_IO_URING": "0"}
    err, message, no_leak = refused(python("-c", TRY_CYCLE, env=env))
    assert err == ENOSYS and "NGXFFI_IO_URING=0" in message and no_leak
    info = python("-m", "ngxffi", "info", env=env)
    assert info.returncode == 0, info.stderr
    assert re.search(r"^\s+io_uring\s+no$", info.stdout, re.MULTILINE)
    assert "(io_uring is turned off (NGXFFI_IO_URING=0))" in info.stdout


@pytest.mark.parametrize("test", [False, True], ids=["serve", "serve -t"])
def test_serve_stops_at_start_where_io_uring_is_off(test: bool) -> None:
    """``use io_uring`` where it cannot run fails at start-up, under -t too, with
    the reason, and no worker is started."""
    out = python(
        *("-m", "ngxffi", "serve", "--use", "io_uring", "--return", "200", "x"),
        *("--listen", "127.0.0.1:0", *(["-t"] if test else [])),
        env={"NGXFFI_IO_URING": "0"},
    )
    assert out.returncode == 1
    assert 'ngxffi: [emerg] "use io_uring": io_uring is turned off' in out.stderr
    assert "listening" not in out.stderr


SERVE = """
import os, sys
os.execv(sys.executable, [sys.executable, "-m", "ngxffi", "serve", "--use", "io_uring",
    "--return", "200", "x", "--listen", "127.0.0.1:0"])
"""


@x86_64
@pytest.mark.parametrize("errno", [ENOSYS, EPERM], ids=["ENOSYS", "EPERM"])
def test_a_kernel_that_refuses_io_uring_setup(errno: int) -> None:
    """A seccomp filter answers io_uring_setup with ENOSYS (a kernel without
    io_uring) or EPERM (a container's policy): the cycle is refused with the errno,
    and serve stops at start-up, as nginx does on a method it cannot use."""
    deny = f"deny([{IO_URING_SETUP}], {errno})\n"
    err, message, no_leak = refused(python("-c", FILTER + deny + TRY_CYCLE))
    name = {ENOSYS: "ENOSYS", EPERM: "EPERM"}[errno]
    assert err == errno and f"io_uring_setup() failed ({name}:" in message
    assert no_leak
    serve = python("-c", FILTER + deny + SERVE)
    assert serve.returncode == 1, serve.stderr
    assert any(
        "[emerg]" in line and "io_uring" in line
        for line in (serve.stderr + serve.stdout).splitlines()
    )
