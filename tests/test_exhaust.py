"""``ngxffi exhaust`` end to end: a real server under a tiny RLIMIT_NOFILE, real
clients, measured from outside with psutil."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest


def exhaust(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "ngxffi", "exhaust", "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


KEYS = {
    "server",
    "policy",
    "nofile",
    "clients",
    "served",
    "refused",
    "reset",
    "timed_out",
    "cpu_percent_exhausted",
    "wakeups_per_s_exhausted",
    "peak_fds",
    "recovery_ms",
    "healthy_after",
}


def test_backoff_serves_everyone_without_spinning() -> None:
    """Nothing lost: every client gets its whole response; exhausted, the server
    sleeps (no busy loop); afterwards it answers at once."""
    r = exhaust("--nofile", "32", "--clients", "80", "--hold", "0.3")
    assert set(r) >= KEYS
    assert (r["served"], r["refused"], r["reset"], r["timed_out"]) == (80, 0, 0, 0)
    assert r["peak_fds"] == 32  # it really ran out
    assert r["cpu_percent_exhausted"] < 20
    assert r["healthy_after"] and r["recovery_ms"] < 1000


def test_reserve_fd_sheds_instead_of_queueing() -> None:
    r = exhaust(
        "--policy", "reserve-fd", "--nofile", "32", "--clients", "80", "--hold", "0.5"
    )
    assert r["reset"] > 0  # pending clients got a quick close
    assert r["served"] + r["reset"] == 80 and r["timed_out"] == 0
    assert r["healthy_after"]


def test_asyncio_server_runs_in_the_same_lab() -> None:
    r = exhaust(
        "--server", "asyncio", "--nofile", "32", "--clients", "40", "--hold", "0.2"
    )
    assert r["server"] == "asyncio" and r["served"] + r["reset"] + r["timed_out"] == 40


@pytest.mark.parametrize("bad", [["--nofile", "0"], ["--clients", "0"]])
def test_bad_arguments_are_clear_errors(bad: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ngxffi", "exhaust", *bad],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0 and "must be at least 1" in out.stderr
