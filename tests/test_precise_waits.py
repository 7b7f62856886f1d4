"""Waits shorter than a millisecond: ``epoll_pwait2`` under NgxSelector and the event
core's epoll module, and the fall-back to epoll_wait's whole milliseconds where the
kernel lacks it, shown on a kernel made to lack it: a child process whose seccomp
filter answers ENOSYS for epoll_pwait2, as a kernel older than 5.11 does."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import platform
import selectors
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ngxffi import faults, lib, probe, selector
from ngxffi.epoll import Epoll
from ngxffi.selector import NgxSelector

needs_pwait2 = pytest.mark.skipif(
    not probe.epoll_pwait2(), reason="this kernel has no epoll_pwait2"
)
# The filter compares x86-64 syscall numbers; elsewhere those tests are skipped.
x86_64 = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the seccomp filter is x86-64's"
)
EPOLL_WAIT, EPOLL_PWAIT, EPOLL_PWAIT2 = 232, 281, 441  # x86-64 syscall numbers
ENOSYS, EPERM = 38, 1


@pytest.fixture
def fallback() -> Iterator[None]:
    """epoll_wait's milliseconds for the test, epoll_pwait2 again after it."""
    selector.precise(False)
    yield
    selector.precise(True)


def shortest(wait: Callable[[], object], times: int = 20) -> float:
    """The shortest of ``times`` waits, in seconds: the one a busy machine spoiled
    least (a wait can take longer than the kernel's timer, never shorter)."""
    best = float("inf")
    for _ in range(times):
        start = time.perf_counter()
        wait()
        best = min(best, time.perf_counter() - start)
    return best


async def shortest_sleep(seconds: float, times: int = 20) -> float:
    best = float("inf")
    for _ in range(times):
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        best = min(best, time.perf_counter() - start)
    return best


@needs_pwait2
def test_the_selector_waits_less_than_a_millisecond() -> None:
    assert selector.precise() is True
    with NgxSelector() as sel:
        assert 0.0002 <= shortest(lambda: sel.select(0.0002)) < 0.0009


@needs_pwait2
def test_asyncio_sleeps_less_than_a_millisecond() -> None:
    assert 0.0001 <= selector.run(shortest_sleep(0.0001)) < 0.0009


def test_without_pwait2_waits_are_whole_milliseconds(fallback: None) -> None:
    assert selector.precise() is False
    with NgxSelector() as sel:
        assert shortest(lambda: sel.select(0.0002)) >= 0.001
    with Epoll() as ep:  # the C wait itself: rounded up, never short
        events = ep.event_array(1)
        fd, wait = ep.fileno(), lib.ngxffi_epoll_wait_ns
        for ns, at_least in ((999_999, 0.001), (1_000_001, 0.002)):
            assert shortest(functools.partial(wait, fd, events, 1, ns), 3) >= at_least


@needs_pwait2
def test_a_short_epoll_wait_rule_caps_pwait2_too() -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    with NgxSelector() as sel, a, b, c, d:
        sel.register(a, selectors.EVENT_WRITE)
        sel.register(c, selectors.EVENT_WRITE)
        with faults.inject("epoll_wait", short=1, probability=1.0):
            assert len(sel.select(0.001)) == 1
            assert faults.hits("epoll_wait") == 1
        assert len(sel.select(0.001)) == 2


def test_turning_it_on_again_asks_the_kernel(fallback: None) -> None:
    assert selector.precise(True) is probe.epoll_pwait2()


# --- a kernel without epoll_pwait2, or one whose epoll_wait is gone -----------------

# A classic BPF seccomp program: on x86-64, the listed syscalls fail with errno (or
# kill the process), every other call is allowed. (struct sock_filter: u16 code,
# u8 jt, u8 jf, u32 k.)
FILTER = """
import ctypes, struct

def deny(numbers, errno):  # errno None: SECCOMP_RET_KILL_PROCESS
    ld_arch, ld_nr = (0x20, 0, 0, 4), (0x20, 0, 0, 0)  # BPF_LD|BPF_W|BPF_ABS
    action = 0x80000000 if errno is None else 0x00050000 | errno
    allow, fail = (0x06, 0, 0, 0x7FFF0000), (0x06, 0, 0, action)
    n = len(numbers)
    prog = [ld_arch, (0x15, 0, n + 1, 0xC000003E), ld_nr]  # AUDIT_ARCH_X86_64
    prog += [(0x15, n - i, 0, nr) for i, nr in enumerate(numbers)]  # to fail
    prog += [allow, fail]
    code = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(code)
    fprog = struct.pack("HxxxxxxP", len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    arg = ctypes.create_string_buffer(fprog)
    assert libc.prctl(22, 2, arg, 0, 0) == 0, ctypes.get_errno()  # SECCOMP_MODE_FILTER
"""


def run_filtered(
    numbers: list[int],
    errno: int | None,
    early: bool,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run WAITS in a child whose ``numbers`` syscalls fail with ``errno`` (None:
    kill it) from its start (``early``), or from once its selector and cycle are
    made and have waited once; the JSON it prints."""
    deny = f"deny({numbers!r}, {errno})\n"
    body = textwrap.dedent(WAITS).replace("# deny here\n", "" if early else deny)
    code = FILTER + (deny if early else "") + body
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


WAITS = """
import asyncio, json, time
from ngxffi import Cycle, selector
from ngxffi.cli import info
from ngxffi.selector import NgxSelector

def shortest(wait):
    best = 1.0
    for _ in range(10):
        start = time.perf_counter()
        wait()
        best = min(best, time.perf_counter() - start)
    return best

async def sleeps():
    start = time.perf_counter()
    await asyncio.sleep(0.0001)
    return time.perf_counter() - start

# Made, and waited on once, before the filter when it is late: a cycle's init, and
# ngxffi info, probe EPOLLRDHUP with epoll_wait itself (ngxffi.probe), as nginx does.
sel, cy = NgxSelector(), Cycle(16)
features = info.collect()["features"]
sel.select(0)
# deny here
select = shortest(lambda: sel.select(0.0002))
cycle = shortest(lambda: cy.actions.process_events(cy, 1, 0))
print(json.dumps({
    "info": features["epoll_pwait2"],
    "precise": selector.precise(),
    "select": select,
    "sleep": selector.run(sleeps()),
    "cycle": cycle,
}))
"""


def assert_fell_back(got: dict[str, Any]) -> None:
    # (no bound on the sleep: a loaded machine can shorten the wait asyncio asks for)
    assert got["precise"] is False
    assert got["select"] >= 0.001
    assert got["cycle"] >= 0.001


@x86_64
@pytest.mark.parametrize("errno", [ENOSYS, EPERM], ids=["ENOSYS", "EPERM"])
def test_a_kernel_without_pwait2_falls_back_to_epoll_wait(errno: int) -> None:
    got = run_filtered([EPOLL_PWAIT2], errno, early=True)
    assert got["info"] is False
    assert_fell_back(got)


@x86_64
@needs_pwait2
def test_a_filter_installed_after_the_first_wait_falls_back_at_the_next() -> None:
    got = run_filtered([EPOLL_PWAIT2], EPERM, early=False)
    assert got["info"] is True  # found before the filter
    assert_fell_back(got)


@x86_64
def test_the_environment_can_say_no_before_the_first_wait() -> None:
    """NGXFFI_EPOLL_PWAIT2=0: not even probed, so a filter that kills on the call
    (as seccomp allow-lists older than it do) never sees it."""
    env = {"NGXFFI_EPOLL_PWAIT2": "0"}
    got = run_filtered([EPOLL_PWAIT2], None, early=True, env=env)
    assert got["info"] is False  # ngxffi info does not try it either
    assert_fell_back(got)


@x86_64
@needs_pwait2
def test_with_pwait2_neither_wait_calls_epoll_wait() -> None:
    """epoll_wait and epoll_pwait fail with EPERM in the child: the selector, asyncio
    and the event core's epoll module wait all the same, through epoll_pwait2."""
    got = run_filtered([EPOLL_WAIT, EPOLL_PWAIT], EPERM, early=False)
    assert got["info"] is got["precise"] is True
    assert 0.0002 <= got["select"] < 0.001
    assert 0.0001 <= got["sleep"] < 0.02
    assert got["cycle"] >= 0.001  # the event core's timers are nginx's milliseconds
