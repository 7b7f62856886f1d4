"""The configuration file (≈ src/core/ngx_conf_file.c), in TOML with nginx's names.

```toml
worker_processes = 1
worker_connections = 512
use = "epoll"
listen = { address = "127.0.0.1:8080", backlog = 511, reuseport = false }
keepalive_timeout = "75s"
root = "html"
error_log = "stderr warn"
```

Every directive has nginx's default where nginx has one; times take nginx's units
(``ms``, ``s``, ``m``, ``h``, ``d``; a bare number is seconds). Unknown directives and
wrong types are errors that name the directive and its line, as ``nginx -t`` does.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ngxffi.core.listening import EMFILE_POLICIES
from ngxffi.core.log import LEVELS

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class ConfigError(ValueError):
    """A configuration error, with nginx's "in FILE:LINE" suffix when known."""


@dataclass
class Listen:
    address: str = "127.0.0.1:8080"
    backlog: int = 511
    reuseport: bool = False
    deferred: bool = False
    emfile_policy: str = "backoff"


@dataclass
class Config:
    master_process: bool = True
    worker_processes: int = 1
    worker_connections: int = 512
    worker_rlimit_nofile: int = 0  # 0: leave the limit alone
    use: str = "epoll"
    multi_accept: bool = False
    accept_mutex: bool = False
    accept_mutex_delay: int = 500  # ms
    worker_shutdown_timeout: int = (
        0  # ms; 0: a graceful shutdown waits as long as needed
    )
    listen: Listen = field(default_factory=Listen)
    keepalive_timeout: int = 75_000
    keepalive_requests: int = 1000
    client_header_timeout: int = 60_000
    send_timeout: int = 60_000
    root: str | None = None
    return_: tuple[int, str] | None = None
    status_path: str = "/status"
    error_log: tuple[str, str] = ("stderr", "error")
    access_log: str | None = None
    pid: str | None = None


def msec(value: object) -> int:
    """nginx's time syntax: ``500ms``, ``75s``, ``1m``…; a bare number is seconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid time {value!r}")
    if isinstance(value, int | float):
        return round(value * 1000)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", value)
        if match:
            return round(float(match.group(1)) * _UNITS[match.group(2) or "s"])
    raise ValueError(f"invalid time {value!r}")


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer, not {value!r}")
    return value


def _positive(value: object) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError(f"expected at least 1, not {value!r}")
    return number


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, not {value!r}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, not {value!r}")
    return value


def _choice(*choices: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, not {value!r}")
        return str(value)

    return check


def _worker_processes(value: object) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    return _positive(value)


def _return(value: object) -> tuple[int, str]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], int)
        or not 100 <= value[0] <= 599
        or not isinstance(value[1], str)
    ):
        raise ValueError(f'expected [STATUS, "body"], not {value!r}')
    return value[0], value[1]


def _error_log(value: object) -> tuple[str, str]:
    parts = _str(value).split()
    if not 1 <= len(parts) <= 2 or (len(parts) == 2 and parts[1] not in LEVELS):
        raise ValueError(
            f'expected "FILE [LEVEL]" with a level among '
            f"{', '.join(LEVELS)}, not {value!r}"
        )
    return parts[0], parts[1] if len(parts) == 2 else "error"


def _listen(value: object) -> Listen:
    if isinstance(value, str):
        return Listen(value)
    if not isinstance(value, dict):
        raise ValueError(f"expected an address or a table, not {value!r}")
    checks: dict[str, Callable[[object], Any]] = {
        "address": _str,
        "backlog": _positive,
        "reuseport": _bool,
        "deferred": _bool,
        "emfile_policy": _choice(*EMFILE_POLICIES),
    }
    unknown = set(value) - set(checks)
    if unknown:
        raise ValueError(f"unknown listen parameter {sorted(unknown)[0]!r}")
    return Listen(**{k: checks[k](v) for k, v in value.items()})


DIRECTIVES: dict[str, Callable[[object], Any]] = {
    "master_process": _bool,
    "worker_processes": _worker_processes,
    "worker_connections": _positive,
    "worker_rlimit_nofile": _int,
    "use": _choice("epoll", "poll"),
    "multi_accept": _bool,
    "accept_mutex": _bool,
    "accept_mutex_delay": msec,
    "worker_shutdown_timeout": msec,
    "listen": _listen,
    "keepalive_timeout": msec,
    "keepalive_requests": _positive,
    "client_header_timeout": msec,
    "send_timeout": msec,
    "root": _str,
    "return": _return,
    "status_path": _str,
    "error_log": _error_log,
    "access_log": _str,
    "pid": _str,
}


def _line_of(text: str, key: str) -> int | None:
    match = re.search(rf"^\s*{re.escape(key)}\s*=", text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else None


def parse(text: str, path: str = "<config>") -> Config:
    """A Config from TOML text; ConfigError names the directive and its line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{e} in {path}") from None
    config = Config()
    for key, value in data.items():
        line = _line_of(text, key)
        where = f" in {path}:{line}" if line else f" in {path}"
        check = DIRECTIVES.get(key)
        if check is None:
            raise ConfigError(f'unknown directive "{key}"{where}')
        try:
            setattr(config, "return_" if key == "return" else key, check(value))
        except ValueError as e:
            raise ConfigError(f'invalid value of "{key}": {e}{where}') from None
    return config


def load(path: str) -> Config:
    """Read and parse a configuration file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f'open() "{path}" failed ({e.errno}: {e.strerror})') from None
    return parse(text, path)
