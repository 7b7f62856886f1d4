"""asyncio on ngxffi: a ``selectors.BaseSelector`` on ngxffi's epoll binding.

``NgxSelector`` behaves like ``selectors.EpollSelector`` in every documented and
observable respect — return values, exceptions, the read-only map, ``modify`` of the
data alone not touching the kernel, ``unregister`` of an fd closed since, timeouts
rounded up to the millisecond, EINTR retried with the remaining time (PEP 475) — but
it owns its epoll instance and its ``struct epoll_event`` array through ngxffi's
binding instead of the ``select`` module, and waits and reads each batch with one C
call (``ngxffi_epoll_select``) instead of building a list of tuples.

``new_event_loop()`` is an ``asyncio.SelectorEventLoop`` on it, ``EventLoopPolicy``
makes every new loop one, and ``run(coro)`` runs a coroutine on one without touching
the global policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Coroutine, Iterator, Mapping
from selectors import EVENT_READ, EVENT_WRITE, BaseSelector, SelectorKey
from typing import Any, TypeVar

from ngxffi import os as nos
from ngxffi._ngx import ffi, lib

T = TypeVar("T")

_EPOLLIN: int = lib.EPOLLIN
_EPOLLOUT: int = lib.EPOLLOUT
_select = lib.ngxffi_epoll_select
_unpack = ffi.unpack


def _fileobj_to_fd(fileobj: Any) -> int:
    """The fd of ``fileobj`` with the selectors module's errors."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


def _poller_events(events: int) -> int:
    return (_EPOLLIN if events & EVENT_READ else 0) | (
        _EPOLLOUT if events & EVENT_WRITE else 0
    )


class _SelectorMapping(Mapping[Any, SelectorKey]):
    """The read-only view ``get_map()`` returns: file objects to keys."""

    def __init__(self, selector: NgxSelector) -> None:
        self._selector = selector

    def __len__(self) -> int:
        return len(self._selector._fd_to_key)

    def __getitem__(self, fileobj: Any) -> SelectorKey:
        try:
            fd = self._selector._fileobj_lookup(fileobj)
            return self._selector._fd_to_key[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self) -> Iterator[int]:
        return iter(self._selector._fd_to_key)


class NgxSelector(BaseSelector):
    """An epoll selector on ngxffi's binding; a drop-in ``EpollSelector``."""

    def __init__(self) -> None:
        self._fd_to_key: dict[int, SelectorKey] = {}
        self._map: _SelectorMapping | None = _SelectorMapping(self)
        self._epfd = nos.epoll_create1()
        self._events = nos.new_events(64)
        self._codes = ffi.new("int32_t[]", 64)  # fd << 2 | EVENT_* per ready fd

    # --- registration ------------------------------------------------------------

    def _fileobj_lookup(self, fileobj: Any) -> int:
        """The fd, falling back to a search of the registered objects so that an
        object closed since it was registered can still be found (as selectors
        does)."""
        try:
            return _fileobj_to_fd(fileobj)
        except ValueError:
            for key in self._fd_to_key.values():
                if key.fileobj is fileobj:
                    return key.fd
            raise

    def _check_open(self) -> None:
        if self._epfd < 0:
            raise ValueError("I/O operation on closed epoll object")

    def _ctl(self, op: int, fd: int, events: int) -> None:
        self._check_open()
        nos.epoll_ctl(self._epfd, op, fd, events)

    def register(self, fileobj: Any, events: int, data: Any = None) -> SelectorKey:
        if (not events) or (events & ~(EVENT_READ | EVENT_WRITE)):
            raise ValueError(f"Invalid events: {events!r}")
        key = SelectorKey(fileobj, self._fileobj_lookup(fileobj), events, data)
        if key.fd in self._fd_to_key:
            raise KeyError(f"{fileobj!r} (FD {key.fd}) is already registered")
        self._fd_to_key[key.fd] = key
        try:
            self._ctl(lib.EPOLL_CTL_ADD, key.fd, _poller_events(events))
        except BaseException:
            del self._fd_to_key[key.fd]  # a refused fd leaves no key behind
            raise
        self._grow(len(self._fd_to_key))
        return key

    def unregister(self, fileobj: Any) -> SelectorKey:
        try:
            key = self._fd_to_key.pop(self._fileobj_lookup(fileobj))
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        # OSError: the fd was closed (or closed and reused) since it was registered
        with contextlib.suppress(OSError):
            self._ctl(lib.EPOLL_CTL_DEL, key.fd, 0)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> SelectorKey:
        try:
            key = self._fd_to_key[self._fileobj_lookup(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        changed = False
        if events != key.events:
            try:
                self._ctl(lib.EPOLL_CTL_MOD, key.fd, _poller_events(events))
            except BaseException:
                del self._fd_to_key[key.fd]
                raise
            changed = True
        if data != key.data:
            changed = True  # data alone: no syscall
        if changed:
            key = key._replace(events=events, data=data)
            self._fd_to_key[key.fd] = key
        return key

    def _grow(self, n: int) -> None:
        """Keep room for one event per registered fd, as EpollSelector asks for."""
        size = len(self._events)
        if n > size:
            while size < n:
                size *= 2
            self._events = nos.new_events(size)
            self._codes = ffi.new("int32_t[]", size)

    # --- selection -----------------------------------------------------------------

    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]:
        if timeout is None:
            timeout_ms = -1
        elif timeout <= 0:
            timeout_ms = 0
        else:
            # millisecond resolution: round away from zero to wait *at least* timeout
            timeout_ms = math.ceil(timeout * 1e3)
        epfd = self._epfd
        if epfd < 0:
            self._check_open()
        max_ev = len(self._fd_to_key) or 1
        start = time.monotonic() if timeout_ms > 0 else 0.0
        n = _select(epfd, self._events, max_ev, timeout_ms, self._codes)
        if n < 0:
            n = self._select_again(start, timeout_ms, max_ev)
        ready = []
        fd_to_key = self._fd_to_key
        for code in _unpack(self._codes, n):
            key = fd_to_key.get(code >> 2)
            if key:
                ready.append((key, code & 3 & key.events))
        return ready

    def _select_again(self, start: float, timeout_ms: int, max_ev: int) -> int:
        """The slow path: EINTR is retried with what remains of the timeout (the
        pending signal handlers have run by now, and their exceptions propagate);
        any other error raises."""
        remaining = timeout_ms
        while True:
            err = ffi.errno
            if err != lib.EINTR:
                raise nos.error("epoll_wait", err)
            if timeout_ms > 0:
                elapsed = math.floor((time.monotonic() - start) * 1e3)
                remaining = max(0, timeout_ms - elapsed)
            n: int = _select(self._epfd, self._events, max_ev, remaining, self._codes)
            if n >= 0:
                return n

    # --- the rest of the selectors API ---------------------------------------------

    def fileno(self) -> int:
        return self._epfd

    def get_map(self) -> Mapping[Any, SelectorKey]:
        return self._map  # type: ignore[return-value]  # None once closed, as selectors

    def close(self) -> None:
        if self._epfd >= 0:
            nos.close(self._epfd)
            self._epfd = -1
        self._fd_to_key.clear()
        self._map = None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An ``asyncio.SelectorEventLoop`` on an :class:`NgxSelector`."""
    return asyncio.SelectorEventLoop(NgxSelector())


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """The default policy (child watchers included), with loops on NgxSelector:
    ``asyncio.set_event_loop_policy(ngxffi.selector.EventLoopPolicy())``."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return new_event_loop()


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """``asyncio.run(main)`` on an NgxSelector loop, leaving the policy alone."""
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
