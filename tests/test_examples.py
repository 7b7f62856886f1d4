"""Every example runs as is, exits 0 and prints what its docstring promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(name: str) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_example_is_covered() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == {
        "app_hello.py",
        "edge_vs_level.py",
        "dup_trap.py",
        "echo_server.py",
        "fault_injection.py",
        "stale_events.py",
        "test_fd_exhaustion.py",
        "thundering_herd.py",
    }


def test_app_hello() -> None:
    lines = run("app_hello.py").splitlines()
    assert lines[:3] == [
        "GET / -> 200 OK: hello, world (GET from app_hello.py)",
        "GET /?name=ngxffi -> 200 OK: hello, ngxffi (GET from app_hello.py)",
        "GET /fail -> 500 Internal Server Error: <html>",
    ]
    # the count may include a connection closed that its worker has not seen yet
    assert lines[3].startswith("GET /status -> 200 OK: Active connections: ")
    assert lines[4].startswith(
        'error log: app "app_hello:app" raised RuntimeError: a bug in the handler, '
    )


def test_edge_vs_level() -> None:
    lines = run("edge_vs_level.py").splitlines()
    assert "after a partial read: readable" in lines[0]
    assert "after a partial read: silent" in lines[1]
    assert "after new data: readable" in lines[1]


def test_dup_trap() -> None:
    out = run("dup_trap.py")
    assert "1 event(s)" in out
    assert "Bad file descriptor" in out and "No such file or directory" in out
    assert "after closing the dup too: 0 event(s)" in out


def test_echo_server() -> None:
    out = run("echo_server.py")
    assert "20/20 clients got all 50 messages echoed" in out


def test_stale_events() -> None:
    out = run("stale_events.py")
    assert "A's handler closes B" in out
    lines = out.splitlines()
    trace = lines[lines.index("the trace of that batch:") + 1 :]
    assert [line.split("instance ")[1].split(": ", 1)[1] for line in trace] == [
        "dispatched",
        "dispatched",
        "stale: closed",
        "stale: reused",
    ]
    assert "handler of B runs" not in out and "handler of C runs" not in out


def test_thundering_herd() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "thundering_herd.py"), "3", "40"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rows = {
        line.split()[0]: line.split(None, 2)[1:] for line in out.stdout.splitlines()[2:]
    }
    assert set(rows) == {"shared", "exclusive", "mutex", "reuseport"}
    for mode, (wakeups, spread) in rows.items():
        accepts = [int(n) for n in spread.strip("[]").split(",")]
        assert sum(accepts) == 40 and len(accepts) == 3, mode
        assert float(wakeups) >= 1.0, mode
    for mode in ("mutex", "reuseport"):
        assert float(rows[mode][0]) == 1.0, mode  # one wake-up per connection
    assert float(rows["exclusive"][0]) <= 1.25  # "one or more", says epoll(7)
    reuseport = [int(n) for n in rows["reuseport"][1].strip("[]").split(",")]
    assert max(reuseport) < 40  # the kernel spreads them


def test_fault_injection() -> None:
    lines = run("fault_injection.py").splitlines()
    assert lines[0].startswith("accept4:ECONNABORTED:0.5: 10 clients, 10 answered, ")
    assert not lines[0].endswith(" 0 accepts failed and skipped")
    assert lines[1].startswith("send:short=1, write:short=1: a 4,096-byte answer in ")
    assert lines[1].endswith("byte-exact: True")
    assert lines[2] == "in C: 2 answers"


def test_fd_exhaustion_tests_pass() -> None:
    """The pytest plugin's example: it runs pytest on itself."""
    assert "2 passed" in run("test_fd_exhaustion.py")
