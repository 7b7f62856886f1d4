"""asyncio on ngxffi: ``NgxSelector``, a ``selectors.BaseSelector`` on ngxffi's epoll.

``NgxSelector`` imitates ``selectors.EpollSelector`` in every documented and observable
respect — return values, exceptions (the selectors module's messages; the kernel's
errors with their class and errno, worded as in :mod:`ngxffi.os`), the read-only live
map (which finds a file object by identity once it is closed), ``modify`` of the data
alone not touching the kernel, ``unregister`` of an fd closed since, a wait never
shorter than its timeout, EINTR retried with the remaining time (PEP 475), ``get_map()``
returning ``None`` and ``fileno()`` raising once closed. Underneath it is an
:class:`ngxffi.epoll.Epoll` (registrations, the descriptor, the event array), and each
wait is one C call, ``ngxffi_epoll_select``, which waits into the Epoll's array and
writes every ready fd as one int, ``fd << 2 | EVENT_READ/EVENT_WRITE``, instead of a
list of tuples.

The deliberate difference is the timeout's precision. EpollSelector rounds it up to
whole milliseconds, as epoll_wait takes them (and about one timeout in eight waits a
millisecond longer still: 0.009 s waits 10 ms, rounded twice), so ``asyncio.sleep
(0.0001)`` lasts over a millisecond. Where the kernel has ``epoll_pwait2`` (Linux 5.11,
a timespec timeout), NgxSelector waits to the nanosecond, rounded up; elsewhere it falls
back to epoll_wait and whole milliseconds, rounded once (:func:`precise`). Timeouts
EpollSelector refuses, it refuses with the same exceptions.

Loop factories are the way in: ``new_event_loop()`` is an ``asyncio.SelectorEventLoop``
on it (``asyncio.Runner(loop_factory=new_event_loop)``, uvicorn's ``--loop``, anyio's
and pytest-asyncio's loop factories take it), and ``run(coro)`` is ``asyncio.run`` on
one, without touching the global policy. ``EventLoopPolicy``, which makes every new
loop one, is made only when asked for: importing this module never touches asyncio's
policy system, which Python 3.14 deprecates and 3.16 removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Coroutine, Iterator, Mapping
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
_select = lib.ngxffi_epoll_select
_unpack = ffi.unpack
_monotonic = time.monotonic


def _fd_of(fileobj: Any) -> int:
    """The fd selectors finds for ``fileobj`` (an int, or ``int(fileobj.fileno())``),
    with the selectors module's ValueErrors for anything else (``Epoll`` raises
    ``select.epoll``'s TypeErrors instead, hence this)."""
    try:
        fd = fileobj if isinstance(fileobj, int) else int(fileobj.fileno())
    except (AttributeError, TypeError, ValueError):
        raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


# The longest wait EpollSelector takes: select.epoll.poll refuses more than INT_MAX ms.
_MAX_WAIT_NS = 0x7FFFFFFF * 10**6


def _wait_ns(timeout: float | None) -> int:
    """selectors' timeout in ngxffi_epoll_select's nanoseconds: None waits forever
    (-1), zero or less polls, and a positive wait is rounded up, so that it lasts *at
    least* timeout; NaN and infinity raise as in EpollSelector, and so does a wait
    longer than it takes."""
    if timeout is None:
        return -1
    if timeout <= 0:
        return 0
    ns = math.ceil(timeout * 1e9)  # ValueError for NaN, OverflowError for infinity
    if ns > _MAX_WAIT_NS:
        raise OverflowError("timeout is too large")
    return ns


def precise(use: bool | None = None) -> bool:
    """Whether waits (the selector's and the event core's) go through
    ``epoll_pwait2``, to the nanosecond; ``use=False`` turns it off for the process,
    back to epoll_wait's milliseconds, and ``use=True`` on again where the kernel has
    it (probed as ``ngxffi info`` does). Until then the first wait decides: off when
    ``NGXFFI_EPOLL_PWAIT2=0`` is in the environment (without trying the call, for
    seccomp filters that kill on a call they do not know), else on where the kernel
    has it; and a wait that finds it refused since (a filter installed later) turns it
    off for good and waits with epoll_wait. No call of nginx: it has only
    epoll_wait."""
    return bool(lib.ngxffi_epoll_pwait2(-1 if use is None else int(use)))


class _Keys(Mapping[Any, SelectorKey]):
    """The selector's keys by fd, and the read-only view ``get_map()`` returns: looked
    up by file object (one closed since it was registered is found by identity),
    iterated as fds, changed only by the selector."""

    __slots__ = ("by_fd",)

    def __init__(self) -> None:
        self.by_fd: dict[int, SelectorKey] = {}

    def fd_of(self, fileobj: Any) -> int:
        try:
            return _fd_of(fileobj)
        except ValueError:
            for key in self.by_fd.values():
                if key.fileobj is fileobj:
                    return key.fd
            raise

    def __getitem__(self, fileobj: Any) -> SelectorKey:
        key = self.by_fd.get(self.fd_of(fileobj))
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        return key

    @overload
    def get(self, fileobj: Any, /) -> SelectorKey | None: ...
    @overload
    def get(self, fileobj: Any, /, default: SelectorKey | T) -> SelectorKey | T: ...
    def get(self, fileobj: Any, /, default: Any = None) -> Any:
        # no KeyError built and caught on a miss (asyncio asks this for every fd)
        return self.by_fd.get(self.fd_of(fileobj), default)

    def __len__(self) -> int:
        return len(self.by_fd)

    def __iter__(self) -> Iterator[int]:
        return iter(self.by_fd)

    def put(self, key: SelectorKey) -> SelectorKey:
        self.by_fd[key.fd] = key
        return key

    def take(self, fileobj: Any) -> SelectorKey:
        key = self[fileobj]
        del self.by_fd[key.fd]
        return key


class NgxSelector(BaseSelector):
    """An epoll selector on :class:`ngxffi.epoll.Epoll`; imitates
    ``selectors.EpollSelector`` and can replace it anywhere."""

    def __init__(self) -> None:
        self._keys = _Keys()
        self._epoll = Epoll()
        self._epfd = self._epoll.fileno()  # -1 once closed
        self._closed = False
        self._make_room(1)

    def _make_room(self, n: int) -> None:
        """Room for ``n`` events in one wait (one per registered fd, as EpollSelector
        asks for): the Epoll's array, and the codes array beside it."""
        self._events = self._epoll.event_array(n)
        self._codes = ffi.new("int32_t[]", len(self._events))  # fd << 2 | EVENT_*

    # --- registration: the keys here, the interest in the Epoll ---------------------

    def register(self, fileobj: Any, events: int, data: Any = None) -> SelectorKey:
        """Watch ``fileobj`` for ``events`` (EVENT_READ, EVENT_WRITE); its key."""
        if not events or events & ~_BOTH:
            raise ValueError(f"Invalid events: {events!r}")
        fd = self._keys.fd_of(fileobj)
        if fd in self._keys.by_fd:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        self._epoll.register(fd, _KERNEL_MASK[events])  # a refusal leaves no key
        key = self._keys.put(SelectorKey(fileobj, fd, events, data))
        if len(self._keys) > len(self._events):
            self._make_room(len(self._keys))
        return key

    def unregister(self, fileobj: Any) -> SelectorKey:
        """Stop watching ``fileobj`` (closed since, too); its last key."""
        key = self._keys.take(fileobj)
        # OSError: closed since, so the kernel has dropped it already (or it is reused)
        with contextlib.suppress(OSError):
            self._epoll.unregister(key.fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> SelectorKey:
        """Change what ``fileobj`` is watched for (the kernel is told only then), or
        its data alone."""
        key = self._keys[fileobj]
        if events != key.events:
            mask = _KERNEL_MASK[events & _BOTH]  # a TypeError here keeps the key
            try:
                self._epoll.modify(key.fd, mask)
            except BaseException:
                self._keys.take(fileobj)  # a failed change forgets the fd
                raise
        elif data == key.data:
            return key
        return self._keys.put(key._replace(events=events, data=data))

    # --- selection ----------------------------------------------------------------

    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]:
        """Wait up to ``timeout`` seconds (None: forever) for registered files to be
        ready; ``(key, events)`` for each. One C call waits and decodes the batch; an
        interrupted or failed one goes through :func:`ngxffi.os.retry_wait`."""
        timeout_ns = _wait_ns(timeout)
        epfd = self._epfd
        if epfd < 0:
            self._epoll.fileno()  # raises the closed epoll object's ValueError
        by_fd = self._keys.by_fd
        maxevents = len(by_fd) or 1
        start = _monotonic() if timeout_ns > 0 else None
        n = _select(epfd, self._events, maxevents, timeout_ns, self._codes)
        if n < 0:  # EINTR waits again for the rest; any other errno raises
            if ffi.errno != lib.EINTR:
                raise nos.error("epoll_wait")
            n = nos.retry_wait(
                "epoll_wait",
                _select,
                epfd,
                self._events,
                maxevents,
                timeout_ns,
                self._codes,
                start=start,
                per_second=10**9,
            )
        ready = []
        for code in _unpack(self._codes, n):
            key = by_fd.get(code >> 2)
            if key is not None:  # an fd unregistered in the meantime: not reported
                ready.append((key, code & _BOTH & key.events))
        return ready

    # --- the rest of the selectors API ----------------------------------------------

    def get_key(self, fileobj: Any) -> SelectorKey:
        """The key of ``fileobj`` (KeyError if not registered)."""
        if self._closed:
            raise RuntimeError("Selector is closed")
        return self._keys[fileobj]

    def get_map(self) -> Mapping[Any, SelectorKey]:
        """The read-only map of file objects to keys; None once closed."""
        return None if self._closed else self._keys  # type: ignore[return-value]

    def fileno(self) -> int:
        """The epoll descriptor; ``ValueError`` once closed, as EpollSelector's."""
        return self._epoll.fileno()

    def close(self) -> None:
        """Close the epoll instance and forget every key."""
        self._epoll.close()
        self._epfd = -1
        self._keys.by_fd.clear()
        self._closed = True


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An ``asyncio.SelectorEventLoop`` on an :class:`NgxSelector`."""
    return asyncio.SelectorEventLoop(NgxSelector())


def _event_loop_policy() -> type:
    """The default policy (child watchers included), with loops on NgxSelector.

    Made on first use, not at import: Python 3.14 deprecates asyncio's policy
    system (asking for ``asyncio.DefaultEventLoopPolicy`` warns, an error under
    ``-W error``) and 3.16 removes it, so importing this module must not touch it;
    only a program that asks for the policy gets the warning, or the AttributeError
    once the system is gone."""
    try:
        base = asyncio.DefaultEventLoopPolicy
    except AttributeError:
        raise AttributeError(
            "ngxffi.selector.EventLoopPolicy: this Python has no asyncio policy "
            "system; use a loop factory: selector.run(main()), "
            "asyncio.Runner(loop_factory=selector.new_event_loop)"
        ) from None

    class EventLoopPolicy(base):  # type: ignore[misc, valid-type]
        """The default policy, with loops on NgxSelector:
        ``asyncio.set_event_loop_policy(ngxffi.selector.EventLoopPolicy())``."""

        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            return new_event_loop()

    EventLoopPolicy.__module__ = __name__
    return EventLoopPolicy


def __getattr__(name: str) -> Any:
    """``EventLoopPolicy``, made when first asked for (:func:`_event_loop_policy`)."""
    if name == "EventLoopPolicy":
        policy = _event_loop_policy()
        globals()[name] = policy
        return policy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """``asyncio.run(main)`` on an NgxSelector loop, leaving the policy alone."""
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
