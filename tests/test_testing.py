"""``ngxffi.testing`` and its pytest plugin, on this process's real limits and real
servers."""

from __future__ import annotations

import errno
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ngxffi import testing
from ngxffi.lab.fds import free_fds
from ngxffi.lab.result import JSON_KEYS

SERVERS = str(Path(__file__).with_name("lab_servers.py"))


def soft() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_nofile_limit_lowers_then_restores() -> None:
    before = soft()
    with testing.nofile_limit(100) as n:
        assert n == 100 and soft() == 100
    assert soft() == before
    with pytest.raises(RuntimeError), testing.nofile_limit(90):
        raise RuntimeError  # restored on the way out of an exception too
    assert soft() == before


def test_nofile_limit_refuses_above_the_hard_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with pytest.raises(ValueError, match=r"must be 0\.\."):
        testing.nofile_limit(hard + 1).__enter__()


def opened() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("leave", [0, 1, 3])
def test_hold_fds_leaves_exactly_k_free(leave: int) -> None:
    with testing.nofile_limit(opened() + 64), testing.hold_fds(leave=leave) as held:
        assert held  # it held some
        last = [socket.socket() for _ in range(leave)]
        with pytest.raises(OSError) as exhausted:
            socket.socket()
        assert exhausted.value.errno == errno.EMFILE
        for s in last:
            s.close()
    with socket.socket():  # released: free again
        pass


def test_hold_fds_refuses_more_than_is_free() -> None:
    with testing.nofile_limit(opened() + 64):
        free = free_fds()
        with pytest.raises(ValueError, match=f"{free} descriptors are free"):
            testing.hold_fds(leave=free + 1).__enter__()
        with testing.hold_fds(leave=free) as held:
            assert held == []  # as many free as asked: nothing to hold


def test_exhaust_as_a_function_has_the_json_keys_as_attributes() -> None:
    r = testing.exhaust("ngxffi", nofile=32, clients=40, hold=0.2)
    assert isinstance(r, testing.ExhaustResult) and list(r.to_json()) == list(JSON_KEYS)
    assert r.served == 40 and r.peak_fds == 32 and r.healthy_after
    assert r.timeline and r.waves[0] == 0.0  # the plot's data too


def test_exhaust_on_a_command_string() -> None:
    r = testing.exhaust(
        f"{sys.executable} {SERVERS} dies-on-emfile {{port}}", nofile=32, clients=50
    )
    assert r.exit_status == 3 and r.server == Path(sys.executable).name


def test_exhaust_makes_room_for_its_clients_and_gives_it_back() -> None:
    """Under hold_fds, the lab raises its own limit for its clients (none of them is
    a lab error), and puts the limit back afterwards."""
    with testing.nofile_limit(opened() + 64), testing.hold_fds(leave=10):
        before = soft()
        r = testing.exhaust("asyncio", nofile=32, clients=60, hold=0.2)
        assert soft() == before
    assert r.served == 60 and r.lab_errors == 0


def test_exhaust_usage_errors_raise_laberror() -> None:
    with pytest.raises(testing.LabError, match="has no \\{port\\}"):
        testing.exhaust(["python3", "-m", "http.server"])


def test_the_fixtures_undo_themselves(
    nofile_limit: Callable[[int], int], hold_fds: Callable[..., list[int]]
) -> None:
    nofile_limit(200)
    assert soft() == 200
    assert hold_fds(leave=2)
    with socket.socket(), socket.socket(), pytest.raises(OSError):
        socket.socket()


def test_after_the_fixtures_the_process_is_itself_again() -> None:
    # runs after the test above (file order): the limit is back, fds are free
    assert soft() != 200
    sockets = [socket.socket() for _ in range(10)]
    for s in sockets:
        s.close()


def test_the_plugin_is_registered(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("ngxffi")


def test_hold_fds_gives_them_back_before_a_failure_is_reported(tmp_path: Path) -> None:
    """pytest reads the failing test's source to report it: with every descriptor
    held it could not (`>   ???`); the plugin releases them when the call ends."""
    test = tmp_path / "test_fails.py"
    test.write_text(
        "def test_fails(hold_fds):\n    hold_fds(leave=0)\n    assert 1 == 2\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(test)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 1
    assert ">       assert 1 == 2" in out.stdout and "???" not in out.stdout
