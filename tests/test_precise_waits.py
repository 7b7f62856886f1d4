"""Waits shorter than a millisecond: ``epoll_pwait2`` under NgxSelector and the event
core's epoll module, and the fall-back to epoll_wait's whole milliseconds where the
kernel lacks it, shown on a kernel made to lack it: a child process whose seccomp
filter answers ENOSYS for epoll_pwait2, as a kernel older than 5.11 does."""

from __future__ import annotations

import asyncio
import json
import platform
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ngxffi import probe, selector
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
    assert selector.run(shortest_sleep(0.0001, times=5)) >= 0.001


def test_turning_it_on_again_asks_the_kernel(fallback: None) -> None:
    assert selector.precise(True) is probe.epoll_pwait2()


# --- a kernel without epoll_pwait2, or one whose epoll_wait is gone -----------------

# A classic BPF seccomp program: on x86-64, the listed syscalls fail with errno,
# every other call is allowed. (struct sock_filter: u16 code, u8 jt, u8 jf, u32 k.)
FILTER = """
import ctypes, struct

def deny(numbers, errno):
    ld_arch, ld_nr = (0x20, 0, 0, 4), (0x20, 0, 0, 0)  # BPF_LD|BPF_W|BPF_ABS
    allow, fail = (0x06, 0, 0, 0x7FFF0000), (0x06, 0, 0, 0x00050000 | errno)
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


def run_filtered(numbers: list[int], errno: int, early: bool) -> dict[str, Any]:
    """Run WAITS in a child whose ``numbers`` syscalls fail with ``errno`` from its
    start (``early``), or from once its selector and cycle are made; the JSON it
    prints."""
    deny = f"deny({numbers!r}, {errno})\n"
    body = textwrap.dedent(WAITS).replace("# deny here\n", "" if early else deny)
    code = FILTER + (deny if early else "") + body
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


WAITS = """
import asyncio, json, time
from ngxffi import Cycle, probe, selector
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

# Made before the filter when it is late: a cycle's init, and ngxffi info, probe
# EPOLLRDHUP with epoll_wait itself (ngxffi.probe), as nginx does.
sel, cy = NgxSelector(), Cycle(16)
features = info.collect()["features"]
# deny here
select = shortest(lambda: sel.select(0.0002))
cycle = shortest(lambda: cy.actions.process_events(cy, 1, 0))
print(json.dumps({
    "probe": probe.epoll_pwait2(),
    "info": features["epoll_pwait2"],
    "precise": selector.precise(),
    "select": select,
    "sleep": selector.run(sleeps()),
    "cycle": cycle,
}))
"""


@x86_64
def test_a_kernel_without_pwait2_falls_back_to_epoll_wait() -> None:
    got = run_filtered([EPOLL_PWAIT2], ENOSYS, early=True)
    assert got["probe"] is got["info"] is got["precise"] is False
    assert got["select"] >= 0.001
    assert got["sleep"] >= 0.001
    assert got["cycle"] >= 0.001


@x86_64
@needs_pwait2
def test_with_pwait2_neither_wait_calls_epoll_wait() -> None:
    """epoll_wait and epoll_pwait fail with EPERM in the child: the selector, asyncio
    and the event core's epoll module wait all the same, through epoll_pwait2."""
    got = run_filtered([EPOLL_WAIT, EPOLL_PWAIT], EPERM, early=False)
    assert got["probe"] is got["precise"] is True
    assert 0.0002 <= got["select"] < 0.001
    assert 0.0001 <= got["sleep"] < 0.02
    assert got["cycle"] >= 0.001  # the event core's timers are nginx's milliseconds
