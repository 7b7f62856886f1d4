"""ngxffi.epoll.Epoll against select.epoll, side by side on real sockets: the same
calls on both, and the same results, exceptions and errnos."""

from __future__ import annotations

import gc
import inspect
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Boom, Signaller, boom

from ngxffi.epoll import Epoll

IN, OUT, PRI = select.EPOLLIN, select.EPOLLOUT, select.EPOLLPRI
Factory = Callable[..., Any]
Pair = tuple[socket.socket, socket.socket]
IMPLEMENTATIONS = pytest.mark.parametrize(
    "make", [select.epoll, Epoll], ids=["stdlib", "ngxffi"]
)


@pytest.fixture
def socks() -> Iterator[Callable[[], Pair]]:
    """Make non-blocking socketpairs; all closed at the end."""
    made: list[socket.socket] = []

    def make() -> Pair:
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        made.extend((a, b))
        return a, b

    yield make
    for s in made:
        s.close()


@pytest.fixture
def both() -> Iterator[tuple[Any, Epoll]]:
    """(select.epoll, Epoll), both open; closed at the end."""
    theirs, ours = select.epoll(), Epoll()
    yield theirs, ours
    theirs.close()
    ours.close()


def outcome(call: Callable[[], Any], messages: bool = True) -> tuple[Any, ...]:
    """What ``call()`` does, in a form to compare: its result, or the exception's
    class and errno (OSError: the messages differ on purpose) or message."""
    try:
        return ("returned", call())
    except OSError as e:
        if e.errno is None:  # select.epoll's OSError("invalid flags")
            return (type(e), None, str(e))
        return (type(e), e.errno)
    except Exception as e:
        return (type(e), str(e) if messages else "")


def parameters(f: Any) -> list[tuple[str, Any]]:
    sig = inspect.signature(f)
    return [(p.name, p.default) for p in sig.parameters.values() if p.name != "self"]


def reference(name: str) -> list[tuple[str, Any]]:
    """select.epoll's parameters. CPython 3.13.0's inspect cannot evaluate
    register's default, ``select.EPOLLIN | select.EPOLLPRI | select.EPOLLOUT`` in
    its text signature (it finds the module's ``select`` function under that
    name): that one is read from the text signature itself."""
    f = getattr(select.epoll, name)
    try:
        return parameters(f)
    except AttributeError:
        text = f.__text_signature__
        assert "eventmask=select.EPOLLIN | select.EPOLLPRI | select.EPOLLOUT" in text
        return [("fd", inspect.Parameter.empty), ("eventmask", IN | PRI | OUT)]


@pytest.mark.parametrize("name", ["register", "modify", "unregister", "poll", "fromfd"])
def test_the_parameters_and_defaults_are_select_epolls(name: str) -> None:
    ours = getattr(Epoll, name)
    assert parameters(ours) == reference(name)
    if name == "register":
        assert parameters(ours)[1] == ("eventmask", IN | PRI | OUT)


# --- the instance ------------------------------------------------------------------


@IMPLEMENTATIONS
def test_an_epoll_instance_closed_on_exec(make: Factory) -> None:
    with make() as ep:
        fd = ep.fileno()
        assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventpoll]"
        assert os.get_inheritable(fd) is False
        assert ep.closed is False
    assert ep.closed is True


@IMPLEMENTATIONS
def test_close_closes_the_fd_and_twice_is_fine(make: Factory) -> None:
    ep = make()
    fd = ep.fileno()
    ep.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    ep.close()
    assert ep.closed


@IMPLEMENTATIONS
def test_garbage_collection_closes_the_fd(make: Factory) -> None:
    ep = make()
    fd = ep.fileno()
    del ep
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        ((1,), {}),
        ((-1,), {"flags": select.EPOLL_CLOEXEC}),
        ((), {"sizehint": 5, "flags": 0}),
        ((0,), {}),
        ((-2,), {}),
        ((1.5,), {}),
        (("x",), {}),
        ((), {"flags": 1}),
        ((), {"flags": -1}),
    ],
)
def test_constructor_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    def build(make: Factory) -> Callable[[], Any]:
        def call() -> bool:
            ep = make(*args, **kwargs)
            ep.close()
            return True

        return call

    ours = outcome(build(Epoll))
    assert ours == outcome(build(select.epoll))
    if args in ((0,), (-2,)):
        assert ours == (ValueError, "negative sizehint")


def test_fromfd_owns_the_fd_and_sees_its_registrations(
    socks: Callable[[], Pair],
) -> None:
    a, b = socks()
    theirs = select.epoll()
    theirs.register(a, IN)  # select.epoll fills data.fd only
    b.send(b"x")
    ours = Epoll.fromfd(os.dup(theirs.fileno()))
    fd = ours.fileno()
    assert ours.poll(0) == theirs.poll(0) == [(a.fileno(), IN)]
    ours.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    assert theirs.poll(0) == [(a.fileno(), IN)]  # the original is untouched
    theirs.close()


def test_close_does_not_raise_for_a_descriptor_closed_behind_its_back() -> None:
    for make in (select.epoll, Epoll):
        with make() as original:
            fd = os.dup(original.fileno())
        ep = make.fromfd(fd)
        os.close(fd)
        assert not ep.closed
        ep.close()  # close(2) fails with EBADF; neither reports it
        assert ep.closed


def test_fromfd_refuses_negative_numbers_on_purpose() -> None:
    # select.epoll.fromfd(-1) makes a new instance, -2 gives OSError(errno 0)
    for fd in (-1, -2):
        with pytest.raises(ValueError, match="negative"):
            Epoll.fromfd(fd)
    not_an_int: Any = "3"
    assert outcome(lambda: Epoll.fromfd(not_an_int)) == outcome(
        lambda: select.epoll.fromfd(not_an_int)
    )


# --- registration --------------------------------------------------------------------


def test_register_modify_unregister_report_alike(
    both: tuple[Any, Epoll], socks: Callable[[], Pair]
) -> None:
    a, b = socks()
    for ep in both:  # the same socket in both instances: the same reports
        assert ep.register(a, IN) is None
    assert both[0].poll(0) == both[1].poll(0) == []
    b.send(b"x")
    assert both[0].poll(0) == both[1].poll(0) == [(a.fileno(), IN)]
    for ep in both:
        assert ep.modify(a.fileno(), IN | OUT) is None
    assert both[0].poll(0) == both[1].poll(0) == [(a.fileno(), IN | OUT)]
    for ep in both:
        assert ep.unregister(a) is None
    assert both[0].poll(0) == both[1].poll(0) == []


def test_the_default_mask_and_hangup_are_reported_alike(
    both: tuple[Any, Epoll], socks: Callable[[], Pair]
) -> None:
    a, b = socks()
    for ep in both:
        ep.register(a)
    assert both[0].poll(0) == both[1].poll(0) == [(a.fileno(), OUT)]
    b.close()
    theirs = both[0].poll(0)
    assert theirs == both[1].poll(0)
    assert theirs[0][1] & select.EPOLLHUP and theirs[0][1] & IN


def test_oneshot_and_edge_triggered_masks_go_to_the_kernel(
    both: tuple[Any, Epoll], socks: Callable[[], Pair]
) -> None:
    a, b = socks()
    c, d = socks()
    for ep in both:
        ep.register(a, IN | select.EPOLLONESHOT)
        ep.register(c, IN | select.EPOLLET)
    b.send(b"x")
    d.send(b"x")
    results = [sorted(ep.poll(0)) for ep in both]
    assert results[0] == results[1] == sorted([(a.fileno(), IN), (c.fileno(), IN)])
    assert both[0].poll(0) == both[1].poll(0) == []  # disarmed, and no new edge
    for ep in both:
        ep.modify(a, IN | select.EPOLLONESHOT)  # re-armed
    assert both[0].poll(0) == both[1].poll(0) == [(a.fileno(), IN)]


def registering(make: Factory, what: str, tmp_path: Path) -> Callable[[], Any]:
    """A misuse of register/modify/unregister on a fresh instance of ``make``."""

    def call() -> Any:
        a, b = socket.socketpair()
        closed_fd = os.dup(a.fileno())
        os.close(closed_fd)
        try:
            with make() as ep, open(tmp_path / "f", "w") as regular:

                class NotAnInt:
                    def fileno(self) -> str:
                        return "3"

                regular_file: Any = regular
                cases: dict[str, Callable[[], Any]] = {
                    "twice": lambda: (ep.register(a), ep.register(a)),
                    "modify unknown": lambda: ep.modify(a, IN),
                    "unregister unknown": lambda: ep.unregister(a),
                    "register closed fd": lambda: ep.register(closed_fd),
                    "unregister closed fd": lambda: ep.unregister(closed_fd),
                    "negative fd": lambda: ep.register(-1),
                    "not a file": lambda: ep.register("x"),
                    "a float": lambda: ep.register(1.5),
                    "fileno not an int": lambda: ep.register(NotAnInt()),
                    "fd too large": lambda: ep.register(2**40),
                    "a regular file": lambda: ep.register(regular_file),
                    "itself": lambda: ep.register(ep.fileno()),
                    "mask not an int": lambda: ep.register(a, "x"),
                    "mask a float": lambda: ep.register(a, 1.5),
                    "mask -1": lambda: ep.register(a, -1),
                    "mask beyond 32 bits": lambda: (  # cut to 32 bits: IN
                        ep.register(a, 2**40 | IN),
                        b.send(b"x"),
                        [mask for _, mask in ep.poll(0)],
                    )[2],
                    "modify a closed fd": lambda: ep.modify(closed_fd, IN),
                }
                return cases[what]()
        finally:
            a.close()
            b.close()

    return call


MISUSES = [
    "twice",
    "modify unknown",
    "unregister unknown",
    "register closed fd",
    "unregister closed fd",
    "negative fd",
    "not a file",
    "a float",
    "fileno not an int",
    "fd too large",
    "a regular file",
    "itself",
    "mask not an int",
    "mask a float",
    "mask -1",
    "mask beyond 32 bits",
    "modify a closed fd",
]


@pytest.mark.parametrize("what", MISUSES)
def test_registration_misuse_raises_what_select_epoll_raises(
    what: str, tmp_path: Path
) -> None:
    ours = outcome(registering(Epoll, what, tmp_path))
    assert ours == outcome(registering(select.epoll, what, tmp_path))
    expected = {
        "twice": FileExistsError,
        "modify unknown": FileNotFoundError,
        "unregister unknown": FileNotFoundError,
        "register closed fd": OSError,
        "negative fd": ValueError,
        "not a file": TypeError,
        "a regular file": PermissionError,
    }
    if what in expected:
        assert ours[0] is expected[what]


def test_errors_name_the_call(socks: Callable[[], Pair]) -> None:
    a, b = socks()
    with Epoll() as ep:
        ep.register(a)
        with pytest.raises(FileExistsError, match=r"epoll_ctl\(EPOLL_CTL_ADD\)"):
            ep.register(a)
        with pytest.raises(FileNotFoundError, match=r"epoll_ctl\(EPOLL_CTL_DEL\)"):
            ep.unregister(b)


def test_an_object_with_fileno_is_registered_by_its_fd(
    both: tuple[Any, Epoll], socks: Callable[[], Pair]
) -> None:
    a, b = socks()

    class Wrapped:
        def fileno(self) -> int:
            return a.fileno()

    for ep in both:
        ep.register(Wrapped(), IN)
    b.send(b"x")
    assert both[0].poll(0) == both[1].poll(0) == [(a.fileno(), IN)]


# --- a closed object ------------------------------------------------------------------

ON_A_CLOSED_OBJECT: dict[str, Callable[[Any, int], Any]] = {
    "fileno": lambda ep, fd: ep.fileno(),
    "poll": lambda ep, fd: ep.poll(0),
    "poll with a bad timeout": lambda ep, fd: ep.poll("x"),
    "poll with bad maxevents": lambda ep, fd: ep.poll(0, 0),
    "register": lambda ep, fd: ep.register(fd),
    "register a bad fd": lambda ep, fd: ep.register("x"),
    "register a bad mask": lambda ep, fd: ep.register(fd, "x"),
    "modify": lambda ep, fd: ep.modify(fd, IN),
    "unregister": lambda ep, fd: ep.unregister(fd),
    "enter": lambda ep, fd: ep.__enter__(),
    "close": lambda ep, fd: ep.close(),
    "closed": lambda ep, fd: ep.closed,
}


@pytest.mark.parametrize("what", ON_A_CLOSED_OBJECT)
def test_a_closed_object_behaves_alike(what: str, socks: Callable[[], Pair]) -> None:
    a, _ = socks()
    results = []
    for make in (select.epoll, Epoll):
        ep = make()
        ep.close()
        results.append(outcome(lambda: ON_A_CLOSED_OBJECT[what](ep, a.fileno())))  # noqa: B023
    assert results[0] == results[1]
    if what in ("fileno", "poll", "register", "modify", "unregister", "enter"):
        assert results[1] == (ValueError, "I/O operation on closed epoll object")


# --- poll ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("x",),
        (1.5j,),
        (math.nan,),
        (math.inf,),
        (-math.inf,),
        (1e30,),
        (10**20,),
        (2**31 / 1000,),  # one ms beyond INT_MAX
        (-(2**31) / 1000 - 0.002,),
        (0, 0),
        (0, -2),
        (0, 1.5),
        (0, "x"),
        (0, 2**40),
        ("x", 0),  # the timeout is checked first
        (0.0,),
        (-0.0,),
        (-0.0001,),  # rounds to 0 ms: a poll, not forever
        (False,),
        (0, 1),
    ],
)
def test_poll_arguments(both: tuple[Any, Epoll], args: tuple[Any, ...]) -> None:
    theirs, ours = both
    # OverflowError messages differ: which internal conversion overflowed
    mine = outcome(lambda: ours.poll(*args), messages=False)
    assert mine == outcome(lambda: theirs.poll(*args), messages=False)
    if mine[0] is not OverflowError:
        assert outcome(lambda: ours.poll(*args)) == outcome(lambda: theirs.poll(*args))


def writable_in_both(
    both: tuple[Any, Epoll], socks: Callable[[], Pair], pairs: int
) -> list[Any]:
    """``2 * pairs`` writable sockets, registered for OUT in both epoll objects."""
    ends = [end for _ in range(pairs) for end in socks()]
    for ep in both:
        for s in ends:
            ep.register(s, OUT)
    return ends


def test_maxevents_limits_a_batch(
    both: tuple[Any, Epoll], socks: Callable[[], Pair]
) -> None:
    ends = writable_in_both(both, socks, 40)  # 80 writable sockets
    for maxevents in (1, 3, 64, 65, 80, 200, -1):
        batches = [ep.poll(0, maxevents) for ep in both]
        want = 80 if maxevents in (-1, 200) else maxevents
        assert len(batches[0]) == len(batches[1]) == want
        assert all(mask == OUT for batch in batches for _, mask in batch)
    assert sorted(both[1].poll(maxevents=100, timeout=0)) == sorted(
        (s.fileno(), OUT) for s in ends
    )


def test_no_limit_means_fd_setsize_minus_one(
    both: tuple[Any, Epoll], socks: Callable[[], Pair]
) -> None:
    writable_in_both(both, socks, 520)  # 1040 writable sockets
    assert len(both[0].poll(0)) == len(both[1].poll(0)) == 1023
    assert len(both[0].poll(0, 2000)) == len(both[1].poll(0, 2000)) == 1040


@IMPLEMENTATIONS
@pytest.mark.parametrize("timeout", [0.0001, 0.05])
def test_positive_timeouts_wait_at_least_that_long(
    make: Factory, timeout: float
) -> None:
    with make() as ep:
        start = time.monotonic()
        assert ep.poll(timeout) == []
        assert time.monotonic() - start >= max(timeout, 0.001)  # whole ms, rounded up


@IMPLEMENTATIONS
@pytest.mark.parametrize("timeout", [None, -1, -0.5])
def test_none_and_negative_timeouts_wait_until_ready(
    make: Factory, timeout: float | None, socks: Callable[[], Pair]
) -> None:
    a, b = socks()
    with make() as ep:
        ep.register(a, IN)
        timer = threading.Timer(0.05, b.send, (b"x",))
        start = time.monotonic()
        timer.start()
        assert ep.poll(timeout) == [(a.fileno(), IN)]
        assert time.monotonic() - start >= 0.045
        timer.join()


# --- signals (PEP 475) ---------------------------------------------------------------


@IMPLEMENTATIONS
def test_eintr_is_retried_with_the_remaining_timeout(
    make: Factory, signaller: Signaller
) -> None:
    with make() as ep:
        signaller.start(0.04)
        start = time.monotonic()
        assert ep.poll(0.3) == []
        elapsed = time.monotonic() - start
        signaller.stop()
    assert len(signaller.fired) >= 4  # interrupted again and again
    assert 0.295 <= elapsed < 0.45


@IMPLEMENTATIONS
def test_eintr_without_timeout_keeps_waiting_for_events(
    make: Factory, signaller: Signaller, socks: Callable[[], Pair]
) -> None:
    a, b = socks()

    def third_signal_makes_a_readable() -> None:
        if len(signaller.fired) == 3:
            b.send(b"x")

    signaller.on_signal = third_signal_makes_a_readable
    with make() as ep:
        ep.register(a, IN)
        signaller.start(0.02)
        assert ep.poll() == [(a.fileno(), IN)]
    assert len(signaller.fired) >= 3


@IMPLEMENTATIONS
def test_a_signal_handler_exception_propagates(
    make: Factory, signaller: Signaller
) -> None:
    signaller.on_signal = boom
    with make() as ep:
        signaller.start(0.05, times=1)
        with pytest.raises(Boom):
            ep.poll()
