"""asyncio on ngxffi: ``NgxSelector``, a ``selectors.BaseSelector`` on ngxffi's epoll.

``NgxSelector`` imitates ``selectors.EpollSelector`` in every documented and observable
respect — return values, exceptions (the selectors module's messages; the kernel's
errors with their class and errno, worded as in :mod:`ngxffi.os`), the read-only live
map (which finds a file object by identity once it is closed), ``modify`` of the data
alone not touching the kernel, ``unregister`` of an fd closed since, timeouts rounded up
to the millisecond, EINTR retried with the remaining time (PEP 475), ``get_map()``
returning ``None`` and ``fileno()`` raising once closed. Underneath it is an
:class:`ngxffi.epoll.Epoll` (registrations, the descriptor, the event array), and each
wait is one C call, ``ngxffi_epoll_select``, which waits into the Epoll's array and
writes every ready fd as one int, ``fd << 2 | EVENT_READ/EVENT_WRITE``, instead of a
list of tuples.

One difference, in NgxSelector's favour: EpollSelector rounds the timeout up to whole
milliseconds, turns that back into seconds and hands it to ``select.epoll.poll``, which
rounds again, so about one timeout in eight waits a millisecond longer (0.009 s waits
10 ms). NgxSelector passes the rounded milliseconds straight to the kernel.

``new_event_loop()`` is an ``asyncio.SelectorEventLoop`` on it, ``EventLoopPolicy``
makes every new loop one, and ``run(coro)`` runs a coroutine on one without touching
the global policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from selectors import EVENT_READ, EVENT_WRITE, BaseSelector, SelectorKey
from typing import Any, TypeVar, overload

from ngxffi import os as nos
from ngxffi._ngx import ffi, lib
from ngxffi.epoll import Epoll

T = TypeVar("T")

# The kernel mask for each selectors mask, indexed by its EVENT_READ|EVENT_WRITE bits.
_KERNEL_MASK: tuple[int, ...] = (
    0,
    lib.EPOLLIN,
    lib.EPOLLOUT,
    lib.EPOLLIN | lib.EPOLLOUT,
)
_BOTH = EVENT_READ | EVENT_WRITE
_EINTR: int = lib.EINTR
_select = lib.ngxffi_epoll_select
_unpack = ffi.unpack
_monotonic = time.monotonic


def _fd_of(fileobj: Any) -> int:
    """The fd selectors finds for ``fileobj`` (an int, or ``int(fileobj.fileno())``),
    with the selectors module's ValueErrors for anything else."""
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


def _not_registered(fileobj: Any) -> KeyError:
    return KeyError(f"{fileobj!r} is not registered")


class _KeyMap(Mapping[Any, SelectorKey]):
    """What ``get_map()`` returns (imitates selectors' mapping): a read-only live view
    of the keys, looked up by file object or fd, iterated as fds."""

    __slots__ = ("_find", "_keys")

    def __init__(
        self, keys: dict[int, SelectorKey], find: Callable[[Any], int]
    ) -> None:
        self._keys = keys
        self._find = find

    def __getitem__(self, fileobj: Any) -> SelectorKey:
        key = self._keys.get(self._find(fileobj))
        if key is None:
            raise _not_registered(fileobj)
        return key

    @overload
    def get(self, fileobj: Any, /) -> SelectorKey | None: ...
    @overload
    def get(self, fileobj: Any, /, default: SelectorKey | T) -> SelectorKey | T: ...
    def get(self, fileobj: Any, /, default: Any = None) -> Any:
        # no KeyError built and caught on a miss (asyncio asks this for every fd)
        return self._keys.get(self._find(fileobj), default)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)


class NgxSelector(BaseSelector):
    """An epoll selector on :class:`ngxffi.epoll.Epoll`; imitates
    ``selectors.EpollSelector`` and can replace it anywhere."""

    def __init__(self) -> None:
        self._keys: dict[int, SelectorKey] = {}  # by fd
        self._epoll = Epoll()
        self._epfd = self._epoll.fileno()  # -1 once closed
        self._room = 0
        self._events: Any = None
        self._codes: Any = None
        self._make_room(1)
        self._map: _KeyMap | None = _KeyMap(self._keys, self._fd)

    def _fd(self, fileobj: Any) -> int:
        """The fd of ``fileobj``; one that no longer has one (closed since it was
        registered) is found among the keys by identity, as selectors does."""
        try:
            return _fd_of(fileobj)
        except ValueError:
            fd = next((k.fd for k in self._keys.values() if k.fileobj is fileobj), -1)
            if fd < 0:
                raise
            return fd

    def _make_room(self, n: int) -> None:
        """Room for ``n`` events in one wait (one per registered fd, as EpollSelector
        asks for): the Epoll's array, and the codes array beside it."""
        self._events = self._epoll.event_array(n)
        self._room = len(self._events)
        self._codes = ffi.new("int32_t[]", self._room)  # fd << 2 | EVENT_* per event

    # --- registration (imitates EpollSelector's register/unregister/modify) ---------

    def register(self, fileobj: Any, events: int, data: Any = None) -> SelectorKey:
        """Watch ``fileobj`` for ``events`` (EVENT_READ, EVENT_WRITE); its key."""
        if not events or events & ~_BOTH:
            raise ValueError(f"Invalid events: {events!r}")
        fd = self._fd(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        self._epoll.register(fd, _KERNEL_MASK[events])  # a refusal leaves no key
        key = self._keys[fd] = SelectorKey(fileobj, fd, events, data)
        if len(self._keys) > self._room:
            self._make_room(len(self._keys))
        return key

    def unregister(self, fileobj: Any) -> SelectorKey:
        """Stop watching ``fileobj`` (closed since, too); its last key."""
        key = self._keys.pop(self._fd(fileobj), None)
        if key is None:
            raise _not_registered(fileobj)
        # OSError: closed since, so the kernel has dropped it already (or it is reused)
        with contextlib.suppress(OSError):
            self._epoll.unregister(key.fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> SelectorKey:
        """Change what ``fileobj`` is watched for, or its data alone (no syscall)."""
        fd = self._fd(fileobj)
        key = self._keys.get(fd)
        if key is None:
            raise _not_registered(fileobj)
        new_events = events != key.events
        if new_events:  # only then the kernel; like EpollSelector, no check of events
            mask = _KERNEL_MASK[events & _BOTH]  # a TypeError here keeps the key
            try:
                self._epoll.modify(fd, mask)
            except BaseException:
                del self._keys[fd]  # a failed change forgets the fd
                raise
        if data != key.data or new_events:
            key = self._keys[fd] = key._replace(events=events, data=data)
        return key

    # --- selection ----------------------------------------------------------------

    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]:
        """Wait up to ``timeout`` seconds (None: forever) for registered files to be
        ready; ``(key, events)`` for each. One C call waits and decodes the batch."""
        if timeout is None:
            timeout_ms = -1
        elif timeout <= 0:
            timeout_ms = 0
        else:  # epoll counts milliseconds: round up, to wait *at least* timeout
            timeout_ms = math.ceil(timeout * 1e3)
        epfd = self._epfd
        if epfd < 0:
            self._epoll.fileno()  # raises the closed epoll object's ValueError
        keys = self._keys
        maxevents = len(keys) or 1
        deadline = _monotonic() + timeout_ms / 1e3 if timeout_ms > 0 else 0.0
        n = _select(epfd, self._events, maxevents, timeout_ms, self._codes)
        if n < 0:  # errno now, before any Python code can make a cffi call
            n = self._wait_again(ffi.errno, deadline, timeout_ms, maxevents)
        ready = []
        for code in _unpack(self._codes, n):
            key = keys.get(code >> 2)
            if key is not None:  # an fd unregistered in the meantime: not reported
                ready.append((key, code & _BOTH & key.events))
        return ready

    def _wait_again(
        self, err: int, deadline: float, timeout_ms: int, maxevents: int
    ) -> int:
        """The slow path of ``select``: any errno but EINTR raises; after EINTR the
        pending signal handlers run as this method is called (their exceptions
        propagate), and ngxffi.os's retry waits for what remains of the timeout."""
        if err != _EINTR:
            raise nos.error("epoll_wait", err)
        if timeout_ms > 0:
            timeout_ms = max(0, math.ceil((deadline - _monotonic()) * 1e3))
        return nos.retry_wait(
            "epoll_wait",
            _select,
            self._epfd,
            self._events,
            maxevents,
            timeout_ms,
            self._codes,
        )

    # --- the rest of the selectors API ----------------------------------------------

    def get_key(self, fileobj: Any) -> SelectorKey:
        """The key of ``fileobj`` (KeyError if not registered); as BaseSelector's,
        without going through the map."""
        if self._map is None:
            raise RuntimeError("Selector is closed")
        key = self._keys.get(self._fd(fileobj))
        if key is None:
            raise _not_registered(fileobj)
        return key

    def get_map(self) -> Mapping[Any, SelectorKey]:
        """The read-only map of file objects to keys; None once closed."""
        return self._map  # type: ignore[return-value]  # None once closed, as selectors

    def fileno(self) -> int:
        """The epoll descriptor; ``ValueError`` once closed, as EpollSelector's."""
        return self._epoll.fileno()

    def close(self) -> None:
        """Close the epoll instance and forget every key."""
        self._epoll.close()
        self._epfd = -1
        self._keys.clear()
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
