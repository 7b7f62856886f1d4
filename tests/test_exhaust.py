"""``ngxffi exhaust`` end to end: real servers (ngxffi's, asyncio's, foreign ones,
failing ones) under a tiny RLIMIT_NOFILE, real clients, measured from outside with
psutil."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from ngxffi.lab.result import JSON_KEYS
from ngxffi.lab.target import free_port

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


@pytest.mark.skipif(
    shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin") is None,
    reason="nginx is not installed",
)
def test_the_nginx_preset_is_measured_in_its_worker() -> None:
    """nginx's worker runs as nobody: its fds and limit are read all the same."""
    r = exhaust(
        "--server", "nginx", "--nofile", "32", "--clients", "60", "--hold", "0.3"
    )
    assert r["server"] == "nginx" and r["served"] == 60 and r["healthy_after"]
    assert r["peak_fds"] == 32 and r["exhausted_s"] > 0  # the worker's, at its limit


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


def test_a_fixed_port_command_with_port() -> None:
    port = str(free_port())
    r = exhaust(
        "--port", port, "--nofile", "32", "--clients", "20", "--hold", "0",
        "--", sys.executable, SERVERS, "serve", port,
    )  # fmt: skip
    assert r["served"] == 20 and r["command"][-1] == port and r["port"] == int(port)


def test_a_fixed_port_in_use_is_a_usage_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        out = lab("--port", port, "--", sys.executable, SERVERS, "serve", port)
    assert out.returncode == 2 and "already in use" in out.stderr


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
        # found before the first server runs, not when its turn comes
        (["--server", "asyncio", "--", "nonexistent-server", "{port}"], "not found"),
        (["--"], "-- is followed by no command"),
        (["--port", "8080"], "not for a preset"),
        (["--port", "99999", "--", "x"], "not a port (1..65535)"),
        (["--port", "0", "--", "x"], "not a port"),
        (["--hold", "inf"], "--hold inf: a finite number"),
        (["--start-timeout", "nan"], "--start-timeout nan"),
        (["--timeout", "0"], "--timeout 0"),
        (["--path", "a b"], "--path 'a b': a path that starts with /"),
        (["--path", "/\r\nX-Injected: 1"], "no space or control character"),
        (["--plot", "/nonexistent/dir/x.png"], "no directory /nonexistent/dir"),
        (["--plot", "x.txt"], "the name ends in one of"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(
    args: list[str], message: str
) -> None:
    if "--plot" in args and not has_matplotlib():
        pytest.skip("without matplotlib, --plot's message is another")
    out = lab(*args, timeout=30)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def is_forks(p: psutil.Process) -> bool:
    try:
        return "forks" in p.cmdline()
    except psutil.Error:  # gone, or a zombie (the lab's readiness probe...)
        return False


def test_interrupted_the_lab_stops_the_whole_tree() -> None:
    """SIGTERM (as `timeout` sends) mid-run: exit 130, the servers of the tree gone,
    the server that finished in the table."""
    args = [sys.executable, "-m", "ngxffi", "exhaust", "--clients", "20", "--hold"]
    args += ["3", "--server", "asyncio", *foreign("forks")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lab_process = psutil.Process(proc.pid)
    deadline = time.monotonic() + 30
    tree: list[psutil.Process] = []
    while len(tree) < 2 and time.monotonic() < deadline:  # the forks server's two
        tree = [p for p in lab_process.children(recursive=True) if is_forks(p)]
    assert len(tree) == 2, "the forks server did not start"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and b"interrupted" in err, err
    assert b"asyncio" in out and b"Traceback" not in err  # what had finished
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert not alive


def test_a_server_that_raises_its_own_limit_is_not_exhausted() -> None:
    """Exhaustion is against each process's own soft limit, not --nofile's."""
    r = exhaust(
        "--nofile", "64:1024", "--clients", "80", "--hold", "0.5",
        *foreign("raises-limit"),
    )  # fmt: skip
    assert r["served"] == 80 and r["peak_fds"] > 64 and r["exhausted_s"] == 0


def test_the_presets_run_out_of_fds_before_connections() -> None:
    r = exhaust("--nofile", "700", "--clients", "800", "--hold", "0.5")
    assert r["peak_fds"] == 700 and r["reset"] == 0 and r["served"] == 800


def test_an_all_503_server_is_not_healthy_and_101_is_an_answer() -> None:
    busy = exhaust(
        "--nofile", "32", "--clients", "20", "--hold", "0", *foreign("busy-503")
    )
    assert busy["statuses"] == {"503": 20} and busy["served"] == 20
    assert busy["second_wave_statuses"] == {"503": 20} and not busy["healthy_after"]
    up = exhaust(
        "--nofile", "32", "--clients", "20", "--hold", "0", *foreign("upgrade")
    )
    assert up["statuses"] == {"101": 20} and up["healthy_after"]


def test_inject_reaches_the_server() -> None:
    """Every accept4 fails with EMFILE: the clients wait in the backlog until they
    time out, and the server backs off instead of spinning (nginx's answer)."""
    r = exhaust(
        "--nofile", "64", "--clients", "10", "--second-wave", "2", "--timeout", "2",
        "--inject", "accept4:EMFILE:1.0",
    )  # fmt: skip
    assert r["inject"] == ["accept4:EMFILE:1.0"] and r["timed_out"] == 10
    assert r["served"] == 0 and r["exit_status"] is None


def test_inject_econnaborted_loses_no_client() -> None:
    r = exhaust(
        "--nofile", "32", "--clients", "60", "--hold", "0.2",
        "--inject", "accept4:ECONNABORTED:0.3", "--inject-seed", "7",
    )  # fmt: skip
    assert r["served"] == 60 and r["healthy_after"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("accept5:EMFILE", "accept4"),  # lists the valid calls
        ("accept4:EBOGUS", "EMFILE"),  # lists the errnos
        ("accept4:EMFILE:2.5", "bad WHEN"),
        ("accept4", "CALL:WHAT[:WHEN]"),
    ],
)
def test_a_bad_inject_spec_is_a_usage_error(spec: str, message: str) -> None:
    out = lab("--inject", spec, timeout=30)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


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


def has_matplotlib() -> bool:
    """Whether the lab's interpreter, a child, can import it (the child is the one
    that draws)."""
    probe = [sys.executable, "-c", "import matplotlib"]
    return subprocess.run(probe, capture_output=True, timeout=60).returncode == 0


def test_plot_draws_a_png(tmp_path: Path) -> None:
    if not has_matplotlib():
        pytest.skip("matplotlib is not installed (the plot extra)")
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
