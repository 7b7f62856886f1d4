"""The TOML configuration and ``ngxffi serve -t``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ngxffi.core.config import Config, ConfigError, msec, parse

EXAMPLE = Path(__file__).parent.parent / "examples" / "ngxffi.toml"


def serve_t(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ngxffi", "serve", "-t", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_defaults_are_nginx_s() -> None:
    c = Config()
    assert (c.worker_connections, c.keepalive_timeout, c.keepalive_requests) == (
        512,
        75_000,
        1000,
    )
    assert (c.client_header_timeout, c.send_timeout, c.accept_mutex_delay) == (
        60_000,
        60_000,
        500,
    )
    assert (c.listen.backlog, c.multi_accept, c.accept_mutex) == (511, False, False)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("75s", 75_000),
        ("1m", 60_000),
        ("2h", 7_200_000),
        (3, 3000),
        (0.25, 250),
    ],
)
def test_times(text: object, ms: int) -> None:
    assert msec(text) == ms


def test_the_example_config_is_valid() -> None:
    out = serve_t("-c", str(EXAMPLE))
    assert out.returncode == 0
    assert f"the configuration file {EXAMPLE} syntax is ok" in out.stderr
    assert "test is successful" in out.stderr
    config = parse(EXAMPLE.read_text())
    assert config.listen.address == "127.0.0.1:8080" and config.error_log == (
        "stderr",
        "warn",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "worker_connections = 512\nworkr_connections = 5\n",
            'unknown directive "workr_connections" in <config>:2',
        ),
        ('keepalive_timeout = "soon"\n', 'invalid value of "keepalive_timeout"'),
        ("worker_connections = 0\n", "expected at least 1"),
        ('use = "kqueue"\n', "expected one of epoll, poll"),
        ("multi_accept = 1\n", "expected true or false"),
        ('listen = { address = "x:1", backlogg = 5 }\n', "unknown listen parameter"),
        ("return = [200]\n", 'expected [STATUS, "body"]'),
        ('error_log = "stderr loud"\n', "with a level among"),
        ("worker_connections = \n", "Invalid value (at line 1, column 22)"),
    ],
)
def test_errors_name_the_directive_and_line(text: str, message: str) -> None:
    with pytest.raises(
        ConfigError,
        match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)"),
    ):
        parse(text)


def test_serve_t_reports_the_line_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('worker_connections = 100\n\nlisten = "127.0.0.1:8080"\nfoo = 1\n')
    out = serve_t("-c", str(path))
    assert out.returncode == 1
    assert f'ngxffi: [emerg] unknown directive "foo" in {path}:4' in out.stderr
    assert f"configuration file {path} test failed" in out.stderr


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    out = serve_t("-c", str(tmp_path / "nope.toml"))
    assert out.returncode == 1 and "open()" in out.stderr and "failed" in out.stderr


def test_workers_and_the_accept_mutex_are_accepted(tmp_path: Path) -> None:
    assert serve_t("--workers", "2").returncode == 0
    path = tmp_path / "mutex.toml"
    path.write_text("worker_processes = 2\naccept_mutex = true\n")
    assert serve_t("-c", str(path)).returncode == 0
