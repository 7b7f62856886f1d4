"""The lab's sampler on real processes: wake-ups of every thread, CPU of children
that live shorter than a sample, each process against its own limit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from ngxffi.lab.sampler import Samples, exhausted, sample

THREAD_WAKES = """
import threading, time
def tick():
    while True:
        time.sleep(0.001)
threading.Thread(target=tick, daemon=True).start()
time.sleep(60)
"""

SHORT_CHILDREN = """
import os, time
while True:
    if os.fork() == 0:
        end = time.process_time() + 0.03
        while time.process_time() < end:
            pass
        os._exit(0)
    os.wait()
    time.sleep(0.02)
"""


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def watch(proc: subprocess.Popen[bytes], seconds: float) -> Samples:
    samples = Samples(nofile=1024)

    def tree() -> list[psutil.Process]:
        root = psutil.Process(proc.pid)
        return [root, *root.children(recursive=True)]

    async def run() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sample(tree, proc.poll, samples), seconds)

    asyncio.run(run())
    return samples


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_wakeups_count_every_thread(spawn: list[subprocess.Popen[bytes]]) -> None:
    proc = subprocess.Popen([sys.executable, "-c", THREAD_WAKES])
    spawn.append(proc)
    points = watch(proc, 1.0).timeline[2:]  # the interpreter's start aside
    assert mean([p.wakeups_per_s for p in points]) > 200  # ~1000 in the thread


def test_cpu_of_children_shorter_than_a_sample(
    spawn: list[subprocess.Popen[bytes]],
) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SHORT_CHILDREN])
    spawn.append(proc)
    points = watch(proc, 1.5).timeline[2:]
    assert mean([p.cpu_percent for p in points]) > 25  # 30 ms of every ~55


def test_exhausted_is_within_2_of_the_limit_or_1_below_64() -> None:
    assert exhausted(62, 64) and not exhausted(61, 64)
    assert exhausted(31, 32) and not exhausted(30, 32)
    assert exhausted(7, 8) and not exhausted(6, 8)
