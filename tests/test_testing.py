"""``ngxffi.testing`` and its pytest plugin, on this process's real limits and real
servers."""

from __future__ import annotations

import errno
import resource
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ngxffi import testing
from ngxffi.lab.experiment import JSON_KEYS

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


@pytest.mark.parametrize("leave", [0, 1, 3])
def test_hold_fds_leaves_exactly_k_free(leave: int) -> None:
    with testing.nofile_limit(128), testing.hold_fds(leave=leave) as held:
        assert held  # it held some
        opened = [socket.socket() for _ in range(leave)]
        with pytest.raises(OSError) as exhausted:
            socket.socket()
        assert exhausted.value.errno == errno.EMFILE
        for s in opened:
            s.close()
    with socket.socket():  # released: free again
        pass


def test_hold_fds_refuses_more_than_is_free() -> None:
    with (
        testing.nofile_limit(64),
        pytest.raises(ValueError, match="descriptors are free"),
        testing.hold_fds(leave=64),
    ):
        pass


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
