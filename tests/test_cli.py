"""The ngxffi command, run as a real process the way users run it."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import ngxffi
from ngxffi import Cycle, ffi, process_events_and_timers
from ngxffi.process.worker import WorkerSignals

NGXFFI = shutil.which("ngxffi", path=str(Path(sys.executable).parent))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ngxffi", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_console_script_is_installed_next_to_python() -> None:
    assert NGXFFI is not None
    out = subprocess.run(
        [NGXFFI, "--version"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"ngxffi {ngxffi.__version__}"


@pytest.mark.parametrize("args", [["--help"], ["info", "--help"]])
def test_help(args: list[str]) -> None:
    out = run(*args)
    assert out.returncode == 0
    assert "usage: ngxffi" in out.stdout


def test_no_command_prints_help_and_fails() -> None:
    out = run()
    assert out.returncode == 2
    assert "info" in out.stdout


def test_unknown_command_is_an_error() -> None:
    out = run("frobnicate")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def test_info_json_reports_layout_features_and_limits() -> None:
    out = run("info", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    epoll_event = report["structs"]["struct epoll_event"]
    assert epoll_event["size"] == ffi.sizeof("struct epoll_event")
    assert epoll_event["fields"]["data"]["offset"] == ffi.offsetof(
        "struct epoll_event", "data"
    )
    event = report["structs"]["ngx_event_t"]["fields"]
    assert event["instance"]["bits"] == 1
    assert report["structs"]["ngx_connection_t"]["size"] == ffi.sizeof(
        "ngx_connection_t"
    )
    # This machine's kernel is modern (6.x): all of them are there.
    assert report["features"] == {
        "EPOLLRDHUP": True,
        "EPOLLEXCLUSIVE": True,
        "accept4": True,
        "epoll_pwait2": True,
        "openat2": True,
        "io_uring": True,
        "io_uring multishot poll": True,
    }
    assert report["io_uring"] == ngxffi.probe.io_uring()
    assert report["io_uring"]["usable"] is True and report["io_uring"]["reason"] == ""
    assert report["io_uring"]["features"] & 1  # IORING_FEAT_SINGLE_MMAP
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert report["RLIMIT_NOFILE"] == {"soft": soft, "hard": hard}
    assert report["python"].endswith(".".join(map(str, sys.version_info[:3])))


def test_info_text_names_every_section() -> None:
    out = run("info")
    assert out.returncode == 0, out.stderr
    for needle in (
        "EPOLLRDHUP",
        "EPOLLEXCLUSIVE",
        "accept4",
        "epoll_pwait2",
        "openat2",
        "io_uring multishot poll",
        "RLIMIT_NOFILE",
        "struct epoll_event: size",
        "ngx_connection_t: size",
        "cffi",
    ):
        assert needle in out.stdout


def test_probes_leave_no_descriptor_behind() -> None:
    before = sorted(Path("/proc/self/fd").iterdir())
    for _ in range(3):
        assert ngxffi.probe.epoll_rdhup() is True
        assert ngxffi.probe.epoll_exclusive() is True
        assert ngxffi.probe.accept4() is True
        assert ngxffi.probe.openat2() is True
        assert ngxffi.probe.epoll_pwait2() is True
    assert sorted(Path("/proc/self/fd").iterdir()) == before


def test_a_signal_just_before_the_wait_does_not_leave_the_worker_asleep() -> None:
    """A worker's stop signal can land after its loop checked for one and before
    epoll_wait: the handler must wake that wait (no timers, no events here: without
    the wake-up the turn would block until the test's timeout)."""
    previous = signal.getsignal(signal.SIGUSR2)
    try:
        with Cycle(4) as cycle:
            signals = WorkerSignals(cycle)
            signals.install(stop=(signal.SIGUSR2,), reopen=())
            try:
                os.kill(os.getpid(), signal.SIGUSR2)  # its Python handler runs here
                assert signals.stop == signal.SIGUSR2
                process_events_and_timers(cycle)  # an infinite wait, woken at once
            finally:
                signals.uninstall()
    finally:
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.timeout(20)
def test_a_signal_caught_in_c_during_the_wait_ends_it() -> None:
    """The other half of the race: the signal is caught by CPython's C handler, but
    its Python handler cannot run before the wait returns, and the wait is not
    interrupted (here: the signal goes to another thread, as it may to a worker's
    when the C handler runs just before epoll_wait). The wake-up pipe ends it."""
    previous = signal.getsignal(signal.SIGUSR2)
    go = threading.Event()

    def later() -> None:
        go.wait()
        time.sleep(0.2)  # the main thread is in its wait by then, or soon after
        os.kill(os.getpid(), signal.SIGUSR2)

    sender = threading.Thread(target=later)  # made before the main thread blocks
    sender.start()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        with Cycle(4) as cycle:
            signals = WorkerSignals(cycle)
            signals.install(stop=(signal.SIGUSR2,), reopen=())
            try:
                go.set()
                process_events_and_timers(cycle)  # infinite: only the pipe ends it
                assert signals.stop == signal.SIGUSR2
            finally:
                signals.uninstall()
    finally:
        sender.join()
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGUSR2, previous)
