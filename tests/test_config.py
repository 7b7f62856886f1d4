"""The TOML configuration and ``ngxffi serve -t``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from ngxffi.cli.serve import MODULES
from ngxffi.core.conf import Command, Conf, ConfigError, msec, parse, positive, size
from ngxffi.event.conf import EventConf
from ngxffi.http.core import HttpCoreConf
from ngxffi.process.conf import CoreConf

EXAMPLE = Path(__file__).parent.parent / "examples" / "ngxffi.toml"


def serve_t(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ngxffi", "serve", "-t", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_defaults_are_nginx_s() -> None:
    conf = Conf(MODULES)
    events, http = conf[EventConf], conf[HttpCoreConf]
    assert (events.worker_connections, http.keepalive_timeout) == (512, 75_000)
    assert (http.keepalive_requests, http.client_header_timeout) == (1000, 60_000)
    assert (http.send_timeout, events.accept_mutex_delay) == (60_000, 500)
    assert (http.listen.backlog, events.multi_accept, events.accept_mutex) == (
        511,
        False,
        False,
    )
    assert http.large_client_header_buffers == (4, 8192)
    assert http.client_max_body_size == 1 << 20


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('large_client_header_buffers = "8 16k"', (8, 16384)),
        ('client_max_body_size = "2m"', 2 << 20),
        ("client_max_body_size = 100", 100),
        ('error_log = "log.txt"', ("log.txt", "error")),
    ],
)
def test_http_limits_and_logs_are_directives(text: str, value: object) -> None:
    conf = parse(text + "\n", MODULES)
    name = text.split()[0]
    owner = CoreConf if name == "error_log" else HttpCoreConf
    assert getattr(conf[owner], name) == value


def test_sizes() -> None:
    assert (size("8k"), size("1m"), size(7)) == (8192, 1 << 20, 7)
    with pytest.raises(ValueError, match="invalid size"):
        size("8 kilobytes")


def test_a_directive_declared_by_two_modules_is_refused() -> None:
    class Twin:
        commands: ClassVar[tuple[Command, ...]] = (
            Command("worker_connections", positive),
        )

    with pytest.raises(ValueError, match='"worker_connections" declared twice'):
        Conf([EventConf, Twin])


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
    conf = parse(EXAMPLE.read_text(), MODULES)
    assert conf[HttpCoreConf].listen.address == "127.0.0.1:8080"
    assert conf[CoreConf].error_log == (
        "stderr",
        "warn",
    )


def test_the_example_config_shows_every_directive() -> None:
    text = EXAMPLE.read_text()
    directives = {c.name for module in MODULES for c in module.commands}
    missing = {d for d in directives if not re.search(rf"^#? ?{d} = ", text, re.M)}
    assert not missing


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
        ('listen = { address = "x:1", backlogg = 5 }\n', "unknown parameter"),
        ('listen = "127.0.0.1:http"\n', "invalid port"),
        ('root = "/nonexistent/dir"\n', '"/nonexistent/dir" is not a directory'),
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
        parse(text, MODULES)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('worker_connections = 5\n\nkeepalive_timeout = "x"\n', 3),
        ('use = "epoll"\n\n\n[listen]\naddress = "x:1"\nbacklogg = 5\n', 4),
    ],
)
def test_the_line_is_the_directive_s_own(text: str, line: int) -> None:
    with pytest.raises(ConfigError, match=rf" in <config>:{line}$"):
        parse(text, MODULES)


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
