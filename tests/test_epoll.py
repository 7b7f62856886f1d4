"""epoll through ngxffi.os, on real kernel objects."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Signaller
from hypothesis import given, settings
from hypothesis import strategies as st

from ngxffi import lib
from ngxffi import os as nos

IN, OUT = lib.EPOLLIN, lib.EPOLLOUT
ADD, MOD, DEL = lib.EPOLL_CTL_ADD, lib.EPOLL_CTL_MOD, lib.EPOLL_CTL_DEL


def ready(ep: int, timeout_ms: int = 0) -> dict[int, int]:
    """What epoll_wait reports now: {data.u64: events}."""
    events = nos.new_events(16)
    n = nos.epoll_wait(ep, events, timeout_ms)
    return {events[i].data.u64: events[i].events for i in range(n)}


# --- data.u64 ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def readable_eventfd() -> Iterator[tuple[int, int]]:
    """An epoll instance holding an eventfd that is always readable."""
    ep, efd = nos.epoll_create1(), nos.eventfd(1)
    nos.epoll_ctl(ep, ADD, efd, IN)
    yield ep, efd
    nos.close(efd)
    nos.close(ep)


@settings(max_examples=200, deadline=None)
@given(value=st.integers(min_value=0, max_value=2**64 - 1))
def test_data_u64_round_trips_any_64_bit_value(
    readable_eventfd: tuple[int, int], value: int
) -> None:
    ep, efd = readable_eventfd
    nos.epoll_ctl(ep, MOD, efd, IN, data=value)
    assert ready(ep) == {value: IN}


def test_data_defaults_to_the_fd_number(ep: int, pair: tuple[int, int]) -> None:
    a, _ = pair
    nos.epoll_ctl(ep, ADD, a, OUT)
    assert ready(ep) == {a: OUT}


def test_wrappers_accept_objects_with_fileno(ep: int, pair: tuple[int, int]) -> None:
    class Wrapped:
        def __init__(self, fd: int) -> None:
            self.fd = fd

        def fileno(self) -> int:
            return self.fd

    nos.epoll_ctl(Wrapped(ep), ADD, Wrapped(pair[0]), OUT, data=7)
    events = nos.new_events(4)
    assert nos.epoll_wait(Wrapped(ep), events, 0) == 1
    assert events[0].data.u64 == 7


# --- triggering modes ---------------------------------------------------------------


def test_level_triggered_reports_unread_data_again(
    ep: int, pair: tuple[int, int]
) -> None:
    a, b = pair
    nos.epoll_ctl(ep, ADD, a, IN)
    nos.send(b, b"0123456789")
    assert ready(ep) == {a: IN}
    assert nos.recv(a, 4) == b"0123"
    assert ready(ep) == {a: IN}  # six bytes still unread: reported again


def test_edge_triggered_reports_only_new_data(ep: int, pair: tuple[int, int]) -> None:
    a, b = pair
    nos.epoll_ctl(ep, ADD, a, IN | lib.EPOLLET)
    nos.send(b, b"0123456789")
    assert ready(ep) == {a: IN}
    assert nos.recv(a, 4) == b"0123"
    assert ready(ep) == {}  # unread data, but no new edge
    nos.send(b, b"more")
    assert ready(ep) == {a: IN}
    assert nos.recv(a, 100) == b"456789more"


def test_rdhup_on_peer_shutdown(ep: int, pair: tuple[int, int]) -> None:
    a, b = pair
    nos.epoll_ctl(ep, ADD, a, IN | lib.EPOLLRDHUP)
    assert ready(ep) == {}
    nos.shutdown(b, lib.SHUT_WR)
    assert ready(ep) == {a: IN | lib.EPOLLRDHUP}  # half-closed: no EPOLLHUP yet
    assert nos.recv(a, 10) == b""


def test_oneshot_disarms_until_modified(ep: int, pair: tuple[int, int]) -> None:
    a, b = pair
    nos.epoll_ctl(ep, ADD, a, IN | lib.EPOLLONESHOT)
    nos.send(b, b"x")
    assert ready(ep) == {a: IN}
    nos.send(b, b"y")
    assert ready(ep) == {}  # disarmed, although readable
    nos.epoll_ctl(ep, MOD, a, IN | lib.EPOLLONESHOT)
    assert ready(ep) == {a: IN}


def test_maxevents_limits_and_is_checked(ep: int, fds: list[int]) -> None:
    for _ in range(5):
        efd = nos.eventfd(1)
        fds.append(efd)
        nos.epoll_ctl(ep, ADD, efd, IN)
    events = nos.new_events(8)
    assert nos.epoll_wait(ep, events, 0, maxevents=3) == 3
    assert nos.epoll_wait(ep, events, 0) == 5
    with pytest.raises(ValueError, match="maxevents"):
        nos.epoll_wait(ep, events, 0, maxevents=9)
    with pytest.raises(ValueError):
        nos.new_events(0)


def test_epoll_pwait_reports_events(ep: int, pair: tuple[int, int]) -> None:
    a, _ = pair
    nos.epoll_ctl(ep, ADD, a, OUT)
    events = nos.new_events(2)
    assert nos.epoll_pwait(ep, events, 0, sigmask=[signal.SIGUSR1]) == 1
    assert events[0].events == OUT


# --- errors carry the right errno and name the call ---------------------------------


def test_ebadf_for_a_closed_fd(ep: int) -> None:
    r, w = nos.pipe2()
    nos.close(r)
    nos.close(w)
    with pytest.raises(OSError) as info:
        nos.epoll_ctl(ep, ADD, r, IN)
    assert info.value.errno == lib.EBADF
    assert "epoll_ctl(EPOLL_CTL_ADD)" in str(info.value)


def test_ebadf_for_a_closed_epoll_instance() -> None:
    ep = nos.epoll_create1()
    nos.close(ep)
    with pytest.raises(OSError) as info:
        nos.epoll_wait(ep, nos.new_events(1), 0)
    assert info.value.errno == lib.EBADF
    assert "epoll_wait" in str(info.value)


def test_eexist_for_a_double_add(ep: int, pair: tuple[int, int]) -> None:
    nos.epoll_ctl(ep, ADD, pair[0], IN)
    with pytest.raises(FileExistsError) as info:
        nos.epoll_ctl(ep, ADD, pair[0], IN)
    assert info.value.errno == lib.EEXIST


def test_enoent_for_deleting_an_unregistered_fd(ep: int, pair: tuple[int, int]) -> None:
    with pytest.raises(FileNotFoundError) as info:
        nos.epoll_ctl(ep, DEL, pair[0])
    assert info.value.errno == lib.ENOENT
    assert "EPOLL_CTL_DEL" in str(info.value)


def test_eperm_for_a_regular_file(ep: int, tmp_path: Path) -> None:
    path = tmp_path / "regular"
    path.write_text("x")
    with open(path) as f, pytest.raises(PermissionError) as info:
        nos.epoll_ctl(ep, ADD, f, IN)
    assert info.value.errno == lib.EPERM


def test_einval_for_exclusive_with_mod(ep: int, pair: tuple[int, int]) -> None:
    nos.epoll_ctl(ep, ADD, pair[0], IN | lib.EPOLLEXCLUSIVE)
    with pytest.raises(OSError) as info:
        nos.epoll_ctl(ep, MOD, pair[0], IN | lib.EPOLLEXCLUSIVE)
    assert info.value.errno == lib.EINVAL
    assert "EPOLL_CTL_MOD" in str(info.value)


def test_einval_for_exclusive_with_oneshot(ep: int, pair: tuple[int, int]) -> None:
    with pytest.raises(OSError) as info:
        nos.epoll_ctl(ep, ADD, pair[0], IN | lib.EPOLLEXCLUSIVE | lib.EPOLLONESHOT)
    assert info.value.errno == lib.EINVAL


# --- signals: PEP 475 ----------------------------------------------------------------


def test_eintr_is_retried_with_the_remaining_timeout(
    ep: int, signaller: Signaller
) -> None:
    # A signal every 40 ms during a 300 ms wait. Retrying with the full timeout would
    # never finish; retrying with what remains ends at 300 ms.
    signaller.start(0.04)
    start = time.monotonic()
    assert nos.epoll_wait(ep, nos.new_events(1), 300) == 0
    elapsed = time.monotonic() - start
    assert len(signaller.fired) >= 4  # the wait really was interrupted, again and again
    assert 0.295 <= elapsed < 0.45


def test_eintr_with_infinite_timeout_keeps_waiting_for_events(
    ep: int, signaller: Signaller, pair: tuple[int, int]
) -> None:
    a, b = pair
    nos.epoll_ctl(ep, ADD, a, IN)

    def third_signal_makes_a_readable() -> None:
        if len(signaller.fired) == 3:
            nos.send(b, b"x")

    signaller.on_signal = third_signal_makes_a_readable
    signaller.start(0.02)
    events = nos.new_events(1)
    assert nos.epoll_wait(ep, events, -1) == 1
    assert len(signaller.fired) >= 3
    assert events[0].data.u64 == a


class Boom(Exception):
    pass


def test_a_raising_signal_handler_propagates(ep: int, signaller: Signaller) -> None:
    def raise_boom() -> None:
        raise Boom

    signaller.on_signal = raise_boom
    signaller.start(0.05, times=1)
    start = time.monotonic()
    with pytest.raises(Boom):
        nos.epoll_wait(ep, nos.new_events(1), -1)
    assert time.monotonic() - start < 5


def test_epoll_pwait_blocks_the_given_signals_during_the_wait(
    ep: int, signaller: Signaller
) -> None:
    signaller.start(0.03, times=1)
    start = time.monotonic()
    assert nos.epoll_pwait(ep, nos.new_events(1), 150, sigmask=[signal.SIGUSR1]) == 0
    # The signal stayed pending for the whole wait and was handled only after it.
    assert time.monotonic() - start >= 0.145
    signaller.stop()
    assert len(signaller.fired) == 1 and signaller.fired[0] - start >= 0.145


# --- the dup trap ----------------------------------------------------------------


def test_the_dup_trap(ep: int, fds: list[int]) -> None:
    """epoll watches open file *descriptions*. ngxffi passes this through unchanged:
    closing one of two dup'ed fds leaves the registration alive, events keep coming
    tagged with the closed number, and neither fd can remove it; only closing the last
    fd of the description (or EPOLL_CTL_DEL before the close) does."""
    r, w = nos.pipe2()
    r2 = nos.dup(r)
    fds += [w, r2]
    nos.epoll_ctl(ep, ADD, r, IN, data=r)
    nos.close(r)
    nos.write(w, b"x")
    assert ready(ep) == {r: IN}  # an event for an fd number that is closed
    with pytest.raises(OSError) as info:
        nos.epoll_ctl(ep, DEL, r)
    assert info.value.errno == lib.EBADF
    with pytest.raises(FileNotFoundError):
        nos.epoll_ctl(ep, DEL, r2)  # the registration is keyed by (description, r)
    nos.close(r2)
    assert ready(ep) == {}  # last reference gone: the kernel dropped it
