"""ngxffi.selector.NgxSelector against selectors.EpollSelector: every test runs on both,
so "behaves exactly like EpollSelector" is checked, not assumed."""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Boom, Signaller, boom

from ngxffi import lib
from ngxffi import os as nos
from ngxffi.selector import NgxSelector

R, W = selectors.EVENT_READ, selectors.EVENT_WRITE
Pair = tuple[socket.socket, socket.socket]


@pytest.fixture(params=[selectors.EpollSelector, NgxSelector], ids=["stdlib", "ngxffi"])
def sel(request: pytest.FixtureRequest) -> Iterator[selectors.BaseSelector]:
    s = request.param()
    yield s
    s.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_selector_events_match_the_c_helper() -> None:
    assert (R, W) == (1, 2)  # ngxffi_epoll_events computes these values in C


# --- register / unregister / modify -------------------------------------------------


def test_register_returns_the_key(sel: selectors.BaseSelector, pair: Pair) -> None:
    a, _ = pair
    key = sel.register(a, R, "data")
    assert key == selectors.SelectorKey(a, a.fileno(), R, "data")
    assert sel.get_key(a) == key and sel.get_key(a.fileno()) == key


@pytest.mark.parametrize("events", [0, 4, R | W | 8])
def test_register_rejects_bad_events(
    sel: selectors.BaseSelector, pair: Pair, events: int
) -> None:
    with pytest.raises(ValueError, match="Invalid events"):
        sel.register(pair[0], events)


def test_register_rejects_bad_file_objects(sel: selectors.BaseSelector) -> None:
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        sel.register(-1, R)
    with pytest.raises(ValueError, match="Invalid file object"):
        sel.register("not a file", R)  # type: ignore[arg-type]


def test_register_twice_is_a_key_error(sel: selectors.BaseSelector, pair: Pair) -> None:
    sel.register(pair[0], R)
    with pytest.raises(KeyError, match="already registered"):
        sel.register(pair[0].fileno(), W)


def test_a_regular_file_is_refused_and_leaves_no_key(
    sel: selectors.BaseSelector, tmp_path: Path
) -> None:
    with open(tmp_path / "f", "w") as f:
        with pytest.raises(PermissionError):
            sel.register(f, R)
        assert len(sel.get_map()) == 0
        with pytest.raises(KeyError):
            sel.get_key(f)


def test_unregister(sel: selectors.BaseSelector, pair: Pair) -> None:
    a, b = pair
    key = sel.register(a, R)
    assert sel.unregister(a) == key
    with pytest.raises(KeyError, match="is not registered"):
        sel.unregister(a)
    b.send(b"x")
    assert sel.select(0) == []


def test_unregister_after_the_fd_was_closed(sel: selectors.BaseSelector) -> None:
    a, b = socket.socketpair()
    sel.register(a, R)
    a.close()  # no OSError from unregister, even though the syscall fails
    assert sel.unregister(a).fileobj is a
    b.close()


def test_unregister_after_the_fd_was_closed_and_reused(
    sel: selectors.BaseSelector,
) -> None:
    a, b = socket.socketpair()
    fd = a.fileno()
    sel.register(fd, R)
    a.close()
    c, d = socket.socketpair()
    reused = c if c.fileno() == fd else d
    assert reused.fileno() == fd  # the lowest free number came back
    sel.unregister(fd)
    sel.register(reused, W)  # the new file registers cleanly
    assert sel.select(0) == [(sel.get_key(reused), W)]
    for s in (b, c, d):
        s.close()


def test_modify_events(sel: selectors.BaseSelector, pair: Pair) -> None:
    a, _ = pair
    sel.register(a, R, "d")
    key = sel.modify(a, W, "d")
    assert key.events == W and sel.get_key(a) is key
    assert sel.select(0) == [(key, W)]


def test_modify_data_alone_does_not_touch_the_kernel(
    sel: selectors.BaseSelector,
) -> None:
    a, b = socket.socketpair()
    sel.register(a, R, "old")
    fd = a.detach()
    os.close(fd)  # any epoll_ctl on it would now fail with EBADF
    key = sel.modify(fd, R, "new")
    assert key.data == "new" and sel.get_key(fd) is key
    with pytest.raises(OSError):
        sel.modify(fd, W, "new")  # a real change needs the syscall...
    with pytest.raises(KeyError):
        sel.get_key(fd)  # ...and a failed one drops the key
    b.close()


def test_modify_unknown_is_a_key_error(sel: selectors.BaseSelector, pair: Pair) -> None:
    with pytest.raises(KeyError, match="is not registered"):
        sel.modify(pair[0], R)


def test_modify_unchanged_returns_the_same_key(
    sel: selectors.BaseSelector, pair: Pair
) -> None:
    key = sel.register(pair[0], R, "d")
    assert sel.modify(pair[0], R, "d") is key


# --- map, close, context manager ---------------------------------------------------


def test_get_map_is_a_read_only_live_view(
    sel: selectors.BaseSelector, pair: Pair
) -> None:
    a, b = pair
    mapping = sel.get_map()
    assert len(mapping) == 0
    key = sel.register(a, R)
    assert len(mapping) == 1 and list(mapping) == [a.fileno()]
    assert mapping[a] is key and a in mapping and b not in mapping
    with pytest.raises(KeyError):
        mapping[b]
    with pytest.raises(TypeError):
        mapping[b] = key  # type: ignore[index]


def test_map_get_and_in(sel: selectors.BaseSelector, pair: Pair) -> None:
    a, b = pair
    mapping = sel.get_map()
    key = sel.register(a, R)
    assert mapping.get(a) is key and mapping.get(a.fileno()) is key
    assert mapping.get(b) is None and mapping.get(b, "none") == "none"
    assert b.fileno() not in mapping
    with pytest.raises(ValueError, match="Invalid file object"):
        mapping.get("not a file")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="Invalid file object"):
        "not a file" in mapping  # type: ignore[comparison-overlap]  # noqa: B015


def test_map_finds_an_object_closed_since_by_identity(
    sel: selectors.BaseSelector,
) -> None:
    a, b = socket.socketpair()
    key = sel.register(a, R)
    a.close()
    assert sel.get_map()[a] is key and sel.get_key(a) is key
    other = socket.socket()
    other.close()  # closed too, but never registered: its fd -1 is refused
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        sel.get_map()[other]
    b.close()


def test_modify_does_not_check_events(sel: selectors.BaseSelector, pair: Pair) -> None:
    a, b = pair
    sel.register(a, R)
    key = sel.modify(a, R | 4)  # accepted as it is, as EpollSelector accepts it
    assert key.events == R | 4
    b.send(b"x")
    assert sel.select(0) == [(key, R)]
    with pytest.raises(TypeError):
        sel.modify(a, "R")  # type: ignore[arg-type]
    assert sel.get_key(a) is key  # refused before the kernel was asked: kept


def test_close(pair: Pair) -> None:
    for cls in (selectors.EpollSelector, NgxSelector):
        s = cls()
        epfd = s.fileno()
        s.register(pair[0], R)
        s.close()
        assert s.get_map() is None
        with pytest.raises(RuntimeError, match="Selector is closed"):
            s.get_key(pair[0])
        with pytest.raises(OSError):
            os.fstat(epfd)  # the epoll fd is closed
        with pytest.raises(ValueError):
            s.select(0)
        with pytest.raises(ValueError):
            s.register(pair[1], R)
        with pytest.raises(ValueError, match="closed epoll object"):
            s.fileno()
        s.close()  # twice is fine


def test_context_manager_closes(pair: Pair) -> None:
    with NgxSelector() as s:
        s.register(pair[0], R)
    assert s.get_map() is None


def test_fileno_is_an_epoll_instance(sel: selectors.BaseSelector, pair: Pair) -> None:
    assert isinstance(sel, selectors.EpollSelector | NgxSelector)
    nos.epoll_ctl(sel.fileno(), lib.EPOLL_CTL_ADD, pair[1], lib.EPOLLOUT)
    assert sel.select(0) == []  # the fd is the kernel's, not a key: nothing reported


# --- select ------------------------------------------------------------------------


def test_read_and_write_in_one_key(sel: selectors.BaseSelector, pair: Pair) -> None:
    a, b = pair
    key = sel.register(a, R | W)
    assert sel.select(0) == [(key, W)]
    b.send(b"x")
    assert sel.select(0) == [(key, R | W)]
    sel.modify(a, R)
    assert sel.select(0) == [(sel.get_key(a), R)]  # masked by the key's events


def test_hangup_is_reported_as_readable_and_writable(
    sel: selectors.BaseSelector, pair: Pair
) -> None:
    a, b = pair
    key = sel.register(a, R)
    b.close()
    assert sel.select(0) == [(key, R)]


@pytest.mark.parametrize("timeout", [0, -1, -0.5])
def test_non_positive_timeouts_do_not_block(
    sel: selectors.BaseSelector, timeout: float
) -> None:
    start = time.monotonic()
    assert sel.select(timeout) == []
    assert time.monotonic() - start < 0.05


@pytest.mark.parametrize("timeout", [0.0001, 0.05])
def test_positive_timeouts_wait_at_least_that_long(
    sel: selectors.BaseSelector, timeout: float
) -> None:
    start = time.monotonic()
    assert sel.select(timeout) == []
    assert time.monotonic() - start >= timeout


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        (float("nan"), ValueError),
        (float("inf"), OverflowError),
        (2**31 / 1000, OverflowError),  # select.epoll.poll takes at most INT_MAX ms
    ],
)
def test_timeouts_it_cannot_wait_are_refused(
    sel: selectors.BaseSelector, timeout: float, error: type[Exception]
) -> None:
    with pytest.raises(error):
        sel.select(timeout)


def test_the_longest_timeout_it_takes_is_taken(
    sel: selectors.BaseSelector, pair: Pair
) -> None:
    a, b = pair
    key = sel.register(a, R)
    b.send(b"x")
    assert sel.select((2**31 - 1) / 1000) == [(key, R)]


def test_none_blocks_until_ready(sel: selectors.BaseSelector, pair: Pair) -> None:
    a, b = pair
    key = sel.register(a, R)
    threading.Timer(0.05, b.send, (b"x",)).start()
    start = time.monotonic()
    assert sel.select(None) == [(key, R)]
    assert time.monotonic() - start >= 0.04


def test_select_with_nothing_registered(sel: selectors.BaseSelector) -> None:
    assert sel.select(0) == []


def test_more_fds_than_fd_setsize(sel: selectors.BaseSelector) -> None:
    pairs = [socket.socketpair() for _ in range(700)]  # 1400 fds, beyond 1024
    try:
        for a, b in pairs:
            sel.register(b, W, a)
        ready = sel.select(0)
        assert len(ready) == 700
        assert max(key.fd for key, _ in ready) > 1024
        assert all(events == W for _, events in ready)
    finally:
        for a, b in pairs:
            a.close()
            b.close()


# --- signals (PEP 475) --------------------------------------------------------------


def test_eintr_is_retried_with_the_remaining_timeout(
    sel: selectors.BaseSelector, signaller: Signaller
) -> None:
    signaller.start(0.04)
    start = time.monotonic()
    assert sel.select(0.3) == []
    elapsed = time.monotonic() - start
    assert len(signaller.fired) >= 4  # interrupted again and again
    assert 0.295 <= elapsed < 0.45


def test_a_signal_handler_exception_propagates(
    sel: selectors.BaseSelector, signaller: Signaller
) -> None:
    signaller.on_signal = boom
    signaller.start(0.05, times=1)
    with pytest.raises(Boom):
        sel.select(None)
