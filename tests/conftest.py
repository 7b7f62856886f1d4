"""Shared fixtures: real kernel objects, closed after each test."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from ngxffi import Connection, Cycle, ffi, lib, probe
from ngxffi import os as nos
from ngxffi.event.event import USE_CLEAR_EVENT
from ngxffi.event.modules.epoll import EpollModule
from ngxffi.event.modules.io_uring import IoUringModule
from ngxffi.event.modules.tagged import TaggedModule

IO_URING = probe.io_uring()
needs_io_uring = pytest.mark.skipif(
    not IO_URING["usable"], reason=IO_URING["reason"] or "io_uring is not usable"
)
# the event modules, by the name Cycle(use=…) takes; edge: those whose registrations
# are edge-triggered with tags in the kernel (epoll's model)
METHODS = ["epoll", "poll", pytest.param("io_uring", marks=needs_io_uring)]
EDGE_METHODS = ["epoll", pytest.param("io_uring", marks=needs_io_uring)]

# the framework recipes' apps and pytest configurations: test_recipes.py runs them, the
# configurations each in a pytest run of its own, as a project using them would; and
# the runner of CPython's own suites (make cpython-tests; test_cpython_suites.py)
collect_ignore = ["recipes", "cpython"]


@pytest.fixture
def fds() -> Iterator[list[int]]:
    """A list to append descriptors to; whatever is still open at the end is closed."""
    opened: list[int] = []
    yield opened
    for fd in opened:
        with contextlib.suppress(OSError):  # the test may have closed it itself
            nos.close(fd)


@pytest.fixture
def ep(fds: list[int]) -> int:
    """A fresh epoll instance."""
    fd = nos.epoll_create1()
    fds.append(fd)
    return fd


@pytest.fixture
def pair(fds: list[int]) -> tuple[int, int]:
    """A connected, non-blocking AF_UNIX stream socketpair."""
    a, b = nos.socketpair(type=lib.SOCK_STREAM | lib.SOCK_NONBLOCK | lib.SOCK_CLOEXEC)
    fds += [a, b]
    return a, b


@pytest.fixture
def listener(fds: list[int]) -> tuple[int, tuple[str, int]]:
    """A non-blocking TCP listener on 127.0.0.1 and its address."""
    fd = nos.socket(lib.AF_INET, lib.SOCK_STREAM | lib.SOCK_NONBLOCK | lib.SOCK_CLOEXEC)
    fds.append(fd)
    nos.setsockopt(fd, lib.SOL_SOCKET, lib.SO_REUSEADDR, 1)
    nos.bind(fd, ("127.0.0.1", 0))
    nos.listen(fd)
    address = nos.getsockname(fd)
    assert isinstance(address, tuple)
    return fd, (address[0], address[1])


@pytest.fixture
def connect(fds: list[int]) -> Callable[[tuple[str, int]], int]:
    """Connect a blocking TCP client to an address; return its fd."""

    def _connect(address: tuple[str, int]) -> int:
        fd = nos.socket(lib.AF_INET, lib.SOCK_STREAM | lib.SOCK_CLOEXEC)
        fds.append(fd)
        nos.connect(fd, address)
        return fd

    return _connect


# --- the event core ------------------------------------------------------------


def edge(cy: Cycle) -> bool:
    """Whether the cycle's module is edge-triggered, with epoll's model (epoll,
    io_uring) rather than poll's."""
    return bool(cy.event_flags & USE_CLEAR_EVENT)


def small_cycle(use: str) -> Iterator[Cycle]:
    """Cycle(16, use=use) for a fixture; the connections a test left open are closed
    before the module, so that their sockets go with the test."""
    with Cycle(16, use=use) as cy:
        yield cy
        for c in cy.connections:
            if c.raw.fd != -1:
                cy.close_connection(c)


@pytest.fixture(params=METHODS)
def cycle(request: pytest.FixtureRequest) -> Iterator[Cycle]:
    """A small cycle on each event module: the behavioural suite runs on all."""
    yield from small_cycle(request.param)


@pytest.fixture(params=EDGE_METHODS)
def edge_cycle(request: pytest.FixtureRequest) -> Iterator[Cycle]:
    """A small cycle on each module with epoll's model (edge-triggered, tags in the
    kernel): the tests of epoll's rules run on io_uring too."""
    yield from small_cycle(request.param)


@pytest.fixture
def epoll_cycle() -> Iterator[Cycle]:
    """For the tests of epoll's own kernel rules."""
    yield from small_cycle("epoll")


@pytest.fixture
def attach(fds: list[int]) -> Callable[[Cycle], tuple[Connection, int]]:
    """Put one end of a fresh non-blocking socketpair in a pool slot; return the
    connection and the peer fd (which the test owns through ``fds``)."""

    def _attach(cy: Cycle) -> tuple[Connection, int]:
        a, b = nos.socketpair(
            type=lib.SOCK_STREAM | lib.SOCK_NONBLOCK | lib.SOCK_CLOEXEC
        )
        fds.append(b)
        c = cy.get_connection(a)
        assert c is not None
        return c, b

    return _attach


# --- signals ------------------------------------------------------------------


class Signaller:
    """Sends SIGUSR1 to the main thread from a helper thread.

    Not SIGALRM/setitimer: pytest-timeout owns those. pthread_kill aims at the main
    thread, so that it is the main thread's syscall that the signal interrupts.
    """

    def __init__(self) -> None:
        self.fired: list[float] = []
        self.on_signal: Callable[[], None] = lambda: None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def handler(self, signum: int, frame: object) -> None:
        self.fired.append(time.monotonic())
        self.on_signal()

    def start(self, interval: float, times: int = 1_000_000) -> None:
        main = threading.main_thread().ident
        assert main is not None

        def send() -> None:
            for _ in range(times):
                if self._stop.wait(interval):
                    return
                signal.pthread_kill(main, signal.SIGUSR1)

        self._thread = threading.Thread(target=send, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@pytest.fixture
def signaller() -> Iterator[Signaller]:
    s = Signaller()
    old = signal.signal(signal.SIGUSR1, s.handler)
    yield s
    s.stop()
    signal.signal(signal.SIGUSR1, old)


def free_list(cy: Cycle) -> list[int]:
    """The C free list, walked through c.data, as slot numbers."""
    base = int(ffi.cast("uintptr_t", cy.raw.connections))
    size = ffi.sizeof("ngx_connection_t")
    slots, p = [], cy.raw.free_connections
    while p != ffi.NULL:
        slots.append((int(ffi.cast("uintptr_t", p)) - base) // size)
        p = ffi.cast("ngx_connection_t *", p.data)
    return slots


def epoll_module(cy: Cycle) -> EpollModule:
    """The cycle's event module, for tests that look inside the epoll one."""
    assert isinstance(cy.module, EpollModule)
    return cy.module


def tagged(cy: Cycle) -> TaggedModule:
    """The cycle's event module, epoll or io_uring, for what both have: notify's
    event, the names of the wait call and of the tag's field in the log."""
    assert isinstance(cy.module, TaggedModule)
    return cy.module


def uring(cy: Cycle) -> IoUringModule:
    """The cycle's event module, for tests that look inside the io_uring one."""
    assert isinstance(cy.module, IoUringModule)
    return cy.module


def inject(cy: Cycle, fd: int, events: int, data: int) -> None:
    """Register ``fd`` in the cycle's kernel object with any tag ``data``, behind the
    module's back: epoll_ctl ADD (level-triggered unless EPOLLET) on epoll, a poll
    request (oneshot unless EPOLLET) on io_uring, submitted by the next
    process_events."""
    if isinstance(cy.module, EpollModule):
        nos.epoll_ctl(cy.module.ep, lib.EPOLL_CTL_ADD, fd, events, data=data)
    elif lib.ngxffi_uring_poll_raw(cy.raw, fd, events, data) == -1:
        raise nos.error("ngxffi_uring_poll_raw")


class Boom(Exception):
    """What a signal handler raises in tests that it propagates out of a wait."""


def boom() -> None:
    raise Boom
