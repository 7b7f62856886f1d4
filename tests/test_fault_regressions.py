"""Error paths that fault rules reached and that were wrong: each test fails on the
code before its fix. Real sockets and servers of this process (tests/test_faults.py
has the feature itself)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cache import LARGE, Files
from test_exhaust import exhaust
from test_http_fast import PLAIN, Loop

from ngxffi import Cycle, faults, selector
from ngxffi.event.event import process_events_and_timers
from ngxffi.http.core import HttpCoreConf
from ngxffi.lab.target import free_port


@pytest.fixture(autouse=True)
def no_rule_left() -> Iterator[None]:
    yield
    faults.disarm()


def answers(loop: Loop, s: socket.socket, want: int) -> int:
    """Turn the loop until ``want`` answers came on s (a loop turn with nothing to
    do waits for the keep-alive timer: the tests' timeouts stop a regression)."""
    got = b""
    while got.count(b"HTTP/1.1 200") < want:
        loop.turn_until(s)
        chunk = s.recv(1 << 20)
        assert chunk, "closed"
        got += chunk
    return got.count(b"HTTP/1.1 200")


@pytest.mark.timeout(15)
@pytest.mark.parametrize("fast", [True, False], ids=["C", "Python"])
def test_a_capped_read_is_not_taken_for_an_empty_socket(fast: bool) -> None:
    """Two pipelined requests, the first read capped to one of them: the second is
    still behind it (edge-triggered, no new event comes), and is answered."""
    with Loop(HttpCoreConf(), fast=fast) as loop:
        s = loop.connect()
        s.sendall(PLAIN)
        loop.response(s)  # an idle keep-alive connection now
        with faults.inject("recv", short=len(PLAIN), times=1) as fault:
            s.sendall(PLAIN * 2)  # on loopback, in the server's socket on return
            assert answers(loop, s, 2) == 2
        assert fault.hits == 1


@pytest.mark.timeout(15)
def test_eintr_forever_in_c_leaves_the_loop_turning() -> None:
    """recv fails with EINTR every time: the C's plain read gives up after a few
    tries and the loop turn returns (it spun in C, where no signal could stop it);
    once the rule is gone, the posted read answers."""
    with Loop(HttpCoreConf(), fast=False) as loop:
        s = loop.connect()
        s.sendall(PLAIN)
        loop.response(s)
        with faults.inject("recv", "EINTR", probability=1.0) as fault:
            s.sendall(PLAIN)
            done = threading.Event()

            def turn() -> None:
                process_events_and_timers(loop.cycle)
                done.set()

            threading.Thread(target=turn, daemon=True).start()
            assert done.wait(5), "the loop turn never returned"
        assert fault.hits >= 1
        assert answers(loop, s, 1) == 1


def test_a_failed_registration_closes_the_new_connection_only() -> None:
    """epoll_ctl fails (ENOMEM) for a new connection: it is closed and its slot is
    freed, the loop goes on, and the next client is served."""
    with Loop(HttpCoreConf(), fast=False) as loop:
        free = loop.cycle.raw.free_connection_n
        first = loop.connect()
        with faults.inject("epoll_ctl", "ENOMEM", times=1) as fault:
            deadline = time.monotonic() + 5
            while fault.hits == 0 and time.monotonic() < deadline:
                process_events_and_timers(loop.cycle)  # raised out of it before
        assert fault.hits == 1
        loop.turn_until(first)
        assert first.recv(1) == b""  # closed, not left without a handler
        assert loop.cycle.raw.free_connection_n == free  # its slot is back
        second = loop.connect()
        second.sendall(PLAIN)
        assert b"200 OK" in loop.response(second)


def test_notify_is_not_broken_by_a_write_rule() -> None:
    """The eventfd wake-up is not a connection's write: a write rule leaves it be
    (a short eventfd write is EINVAL, and notify runs in signal handlers)."""
    woke: list[object] = []
    with Cycle(8) as cycle, faults.inject("write", short=1, probability=1.0) as fault:
        notify = cycle.actions.notify
        assert notify is not None
        notify(woke.append)
        process_events_and_timers(cycle)
    assert woke and fault.hits == 0


def test_eintr_on_the_c_pread_is_retried(tmp_path: Path) -> None:
    """A cached file whose rest C reads into the stash: an EINTR there is retried,
    not a truncated answer."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "large.bin").write_bytes(LARGE)
    files = Files(tmp_path)
    try:
        first = files.get("/d/large.bin")  # Python's, and now cached
        with (
            faults.inject("sendfile", "EINTR", times=1),
            faults.inject("pread", "EINTR", times=1) as pread,
        ):
            assert files.get("/d/large.bin") == first
        assert pread.hits == 1
    finally:
        files.close()


def test_the_selector_raises_what_is_not_eintr() -> None:
    sel = selector.NgxSelector()
    try:
        with (
            faults.inject("epoll_wait", "ENOMEM", times=1),
            pytest.raises(OSError) as e,
        ):
            sel.select(0.1)
        assert e.value.errno == errno.ENOMEM and "epoll_wait" in str(e.value)
    finally:
        sel.close()


def test_small_probabilities_and_any_errno_round_trip() -> None:
    rule = faults.Rule("accept4", errno.ECONNABORTED, probability=1e-5)
    assert faults.parse(rule.spec) == rule
    with pytest.raises(ValueError, match="no errno 200"):
        faults.Rule("send", 200)
    with pytest.raises(ValueError, match="N in"):
        faults.Rule("accept4", errno.EMFILE, times=2**70)


def test_the_lab_preset_sends_all_of_a_short_send() -> None:
    """The lab's ngxffi server under send:short=5: each answer whole, in pieces."""
    r = exhaust(
        "--nofile", "32", "--clients", "20", "--hold", "0",
        "--inject", "send:short=5:1.0",
    )  # fmt: skip
    assert r["served"] == 20 and r["statuses"] == {"200": 20} and r["healthy_after"]


def test_a_short_write_rule_leaves_a_worker_s_shutdown_alone() -> None:
    """SIGQUIT reaches the server through the eventfd wake-up: under a write rule
    meant for connections it still exits cleanly (notify raised in the handler)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ngxffi", "serve", "--listen", f"127.0.0.1:{port}",
         "--return", "200", "hi"],
        env={**os.environ, "NGXFFI_INJECT": "write:short=1:1.0"},
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not port_taken(port):
            assert proc.poll() is None and time.monotonic() < deadline
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(PLAIN)  # one answer (one-byte writes): the loop is turning
            assert s.recv(100).startswith(b"H")
        proc.send_signal(signal.SIGQUIT)
        assert proc.wait(timeout=10) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
