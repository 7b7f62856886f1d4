"""``ngxffi exhaust`` end to end: real servers (ngxffi's, asyncio's, foreign ones,
failing ones) under a tiny RLIMIT_NOFILE, real clients, measured from outside with
psutil."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ngxffi.lab.experiment import JSON_KEYS

HERE = Path(__file__).parent
SERVERS = str(HERE / "lab_servers.py")


def lab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ngxffi", "exhaust", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def results(*args: str) -> list[dict[str, Any]]:
    out = lab("--json", *args)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def exhaust(*args: str) -> dict[str, Any]:
    (result,) = results(*args)
    assert list(result) == list(JSON_KEYS)
    return result


def foreign(mode: str) -> list[str]:
    return ["--", sys.executable, SERVERS, mode, "{port}"]


def accounted(r: dict[str, Any]) -> int:
    return int(r["served"] + r["refused"] + r["reset"] + r["timed_out"])


def test_backoff_serves_everyone_without_spinning() -> None:
    """Nothing lost: every client gets its whole response; exhausted, the server
    sleeps (no busy loop); afterwards it answers at once."""
    r = exhaust("--nofile", "32", "--clients", "80", "--hold", "0.3")
    assert r["server"] == "ngxffi" and r["policy"] == "backoff"
    assert (r["served"], r["refused"], r["reset"], r["timed_out"]) == (80, 0, 0, 0)
    assert r["statuses"] == {"200": 80}
    assert r["peak_fds"] == 32  # it really ran out
    assert r["cpu_percent_exhausted"] < 20
    assert r["healthy_after"] and r["recovery_ms"] < 1000
    assert r["exit_status"] is None  # alive to the end


def test_reserve_fd_sheds_instead_of_queueing() -> None:
    r = exhaust(
        "--policy", "reserve-fd", "--nofile", "32", "--clients", "80", "--hold", "0.5"
    )
    assert r["reset"] > 0  # pending clients got a quick close
    assert r["served"] + r["reset"] == 80 and r["timed_out"] == 0
    assert r["healthy_after"]


def test_several_servers_side_by_side() -> None:
    args = ["--nofile", "32", "--clients", "40", "--hold", "0.2"]
    servers = ["--server", "ngxffi", "--server", "asyncio"]
    threads = f"threads={sys.executable} {SERVERS} serve {{port}}"
    ngx, aio, thr = results(*args, *servers, "--server", threads)
    assert [ngx["server"], aio["server"], thr["server"]] == [
        "ngxffi",
        "asyncio",
        "threads",
    ]
    assert aio["policy"] is None and thr["command"][1:] == [SERVERS, "serve", "{port}"]
    for r in (ngx, aio, thr):
        assert accounted(r) == 40 and r["started"] and r["healthy_after"]
    out = lab(*args, *servers)  # the table: a column per server
    assert out.returncode == 0, out.stderr
    header = out.stdout.splitlines()[0].split()
    assert header == ["server", "ngxffi", "asyncio"]


def test_any_command_with_its_whole_process_tree() -> None:
    """The lab measures the server's tree: here the fds are a forked child's."""
    r = exhaust("--nofile", "32", "--clients", "60", "--hold", "0.3", *foreign("forks"))
    assert r["server"] == "python" or r["server"].startswith("python")
    assert r["served"] == 60 and r["healthy_after"]
    assert r["peak_fds"] == 32  # the child's: the parent holds a handful


def test_a_fixed_port_command_with_port(tmp_path: Path) -> None:
    from ngxffi.lab.target import free_port

    port = str(free_port())
    r = exhaust(
        "--port", port, "--nofile", "32", "--clients", "20", "--hold", "0",
        "--", sys.executable, SERVERS, "serve", port,
    )  # fmt: skip
    assert r["served"] == 20 and r["command"][-1] == port


def test_a_server_that_dies_on_its_first_emfile() -> None:
    start = time.monotonic()
    r = exhaust(
        "--nofile",
        "32",
        "--clients",
        "60",
        "--timeout",
        "5",
        *foreign("dies-on-emfile"),
    )
    assert r["exit_status"] == 3  # it died, and the lab says how
    assert accounted(r) == 60 and r["served"] < 60  # everyone counted, not all served
    assert not r["healthy_after"] and r["second_wave_served"] == 0
    assert time.monotonic() - start < 30  # its clients end at once, no hung lab


def test_a_server_that_hangs_costs_the_timeout_only() -> None:
    start = time.monotonic()
    r = exhaust(
        "--nofile", "32", "--clients", "40", "--second-wave", "2", "--timeout", "1",
        *foreign("never-answers"),
    )  # fmt: skip
    assert r["timed_out"] == 40 and r["served"] == 0 and accounted(r) == 40
    assert r["recovery_ms"] is None and not r["healthy_after"]
    assert time.monotonic() - start < 15


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (["-c", "import sys; sys.exit(4)", "{port}"], "exited with status 4 before"),
        (["-c", "import time; time.sleep(30)", "{port}"], "never listened on"),
    ],
)
def test_a_server_that_never_listens_is_a_clear_result(
    command: list[str], error: str
) -> None:
    out = lab("--json", "--start-timeout", "1", "--", sys.executable, *command)
    assert out.returncode == 1, out.stderr
    r = json.loads(out.stdout)
    assert not r["started"] and error in r["error"]
    table = lab("--start-timeout", "1", "--", sys.executable, *command)
    assert table.returncode == 1 and error in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--", "python3", "-m", "http.server"], "has no {port} to replace"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--nofile", "3"], "--nofile 3 is too small to start a server"),
        (["--nofile", "64:32"], "hard below soft"),
        (["--nofile", "many"], "SOFT or SOFT:HARD"),
        (["--clients", "0"], "--clients must be at least 1"),
        (["--server", "apache"], "no built-in server 'apache'"),
        (["--server", "=x {port}"], "NAME=COMMAND needs a name"),
        (["--name", "x"], "there is none"),
        (["--server", "ngxffi", "--server", "ngxffi"], "the same name"),
        (["--", "/nonexistent/server", "{port}"], "cannot run /nonexistent/server"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(
    args: list[str], message: str
) -> None:
    out = lab(*args, timeout=30)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_live_progress_on_a_terminal_only() -> None:
    args = [sys.executable, "-m", "ngxffi", "exhaust", "--nofile", "32"]
    args += ["--clients", "60", "--hold", "0.5"]
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            args, stdout=subprocess.PIPE, stderr=follower, timeout=60, text=True
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal has no writer left
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0
    assert b"ngxffi: wave 1" in shown and b"fds 32/32" in shown and b"cpu " in shown
    assert b"served " in shown and b"timed out " in shown
    piped = lab("--nofile", "32", "--clients", "10", "--hold", "0")
    assert "wave 1" not in piped.stderr and "\r" not in piped.stderr


def test_plot_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "run.png"
    out = lab(
        "--nofile", "32", "--clients", "40", "--hold", "0.2", "--plot", str(png),
        "--server", "ngxffi", "--server", "asyncio",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20000


def test_plot_without_matplotlib_is_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "matplotlib").mkdir()
    (tmp_path / "matplotlib" / "__init__.py").write_text("raise ImportError('absent')")
    out = subprocess.run(
        [sys.executable, "-m", "ngxffi", "exhaust", "--plot", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert out.returncode == 2 and "pip install 'ngxffi[plot]'" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "x.png").exists()
