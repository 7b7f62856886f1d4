"""The configuration file (≈ src/core/ngx_conf_file.c), in TOML with nginx's names.

.. code-block:: toml

    worker_processes = 1
    worker_connections = 512
    use = "epoll"
    listen = { address = "127.0.0.1:8080", backlog = 511, reuseport = false }
    keepalive_timeout = "75s"
    root = "html"
    error_log = "stderr warn"

This module knows no directive. Each module declares its own, as nginx's modules do
with their ``ngx_command_t`` tables: a conf class (a dataclass whose fields carry
nginx's defaults) with a ``commands`` tuple of :class:`Command`, each naming the
directive and the check that turns its TOML value into the field's. :class:`Conf`
holds one instance of each module's conf class (≈ ``cycle->conf_ctx``); ``conf[Cls]``
finds it, as ``ngx_get_conf`` does. Here live only the reading, the value checks the
modules share (nginx's ``ngx_conf_set_*_slot``), the units and the errors.

Times take nginx's units (``ms``, ``s``, ``m``, ``h``, ``d``; a bare number is
seconds), sizes ``k`` and ``m``. Unknown directives and wrong types are errors that
name the directive and its line, as ``nginx -t`` does.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

_TIME_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration error, with nginx's "in FILE:LINE" suffix when known."""


@dataclass(frozen=True)
class Command:
    """One directive (≈ ``ngx_command_t``): its name, the check that turns a value
    into the field's (raising ValueError), and the field it sets (default: the
    name)."""

    name: str
    check: Callable[[object], Any]
    field: str = ""


class ModuleConf(Protocol):
    """A module's conf class: constructible with no argument (every field has its
    default), and its directives."""

    commands: ClassVar[tuple[Command, ...]]

    def __init__(self) -> None: ...


class Conf:
    """The configuration of a program made of ``modules`` (their conf classes):
    ``conf[EventConf].worker_connections``."""

    def __init__(self, modules: Iterable[type[ModuleConf]]) -> None:
        self._confs: dict[type, object] = {}
        self._commands: dict[str, tuple[object, Command]] = {}
        for module in modules:
            conf = self._confs[module] = module()
            for command in module.commands:
                if command.name in self._commands:
                    raise ValueError(f'directive "{command.name}" declared twice')
                self._commands[command.name] = (conf, command)

    def __getitem__(self, module: type[T]) -> T:
        conf = self._confs[module]
        assert isinstance(conf, module)
        return conf

    def set(self, name: str, value: object, where: str = "") -> None:
        """Set directive ``name`` from ``value`` through its module's check."""
        found = self._commands.get(name)
        if found is None:
            raise ConfigError(f'unknown directive "{name}"{where}')
        conf, command = found
        try:
            setattr(conf, command.field or name, command.check(value))
        except ValueError as e:
            raise ConfigError(f'invalid value of "{name}": {e}{where}') from None


def parse(
    text: str, modules: Iterable[type[ModuleConf]], path: str = "<config>"
) -> Conf:
    """A Conf from TOML text; ConfigError names the directive and its line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{e} in {path}") from None
    conf = Conf(modules)
    for key, value in data.items():
        line = _line_of(text, key)
        conf.set(key, value, f" in {path}:{line}" if line else f" in {path}")
    return conf


def load(path: str, modules: Iterable[type[ModuleConf]]) -> Conf:
    """Read and parse a configuration file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f'open() "{path}" failed ({e.errno}: {e.strerror})') from None
    return parse(text, modules, path)


def _line_of(text: str, key: str) -> int | None:
    # `key = …` or a `[key]` table; [ \t], not \s: a blank line before the key must
    # not count as its line
    name = re.escape(key)
    match = re.search(rf"^[ \t]*(?:{name}[ \t]*=|\[[ \t]*{name}[ \t]*\])", text, re.M)
    return text.count("\n", 0, match.start()) + 1 if match else None


# --- the checks modules share (≈ ngx_conf_set_flag_slot, _num_slot, _msec_slot…) ----


def msec(value: object) -> int:
    """nginx's time syntax: ``500ms``, ``75s``, ``1m``…; a bare number is seconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid time {value!r}")
    if isinstance(value, int | float):
        return round(value * 1000)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", value)
        if match:
            return round(float(match.group(1)) * _TIME_UNITS[match.group(2) or "s"])
    raise ValueError(f"invalid time {value!r}")


def size(value: object) -> int:
    """nginx's size syntax: ``8k``, ``1m`` or a number of bytes."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", value)
        if match:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
        raise ValueError(f"invalid size {value!r}")
    return number(value)


def number(value: object) -> int:
    """A non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer, not {value!r}")
    return value


def positive(value: object) -> int:
    """An integer of at least 1."""
    n = number(value)
    if n < 1:
        raise ValueError(f"expected at least 1, not {value!r}")
    return n


def flag(value: object) -> bool:
    """``true`` or ``false`` (nginx's on/off)."""
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, not {value!r}")
    return value


def string(value: object) -> str:
    """Any string."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, not {value!r}")
    return value


def enum(*choices: str) -> Callable[[object], str]:
    """One of ``choices`` (≈ ngx_conf_set_enum_slot)."""

    def check(value: object) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, not {value!r}")
        return str(value)

    return check


def table(
    make: Callable[..., T], checks: dict[str, Callable[[object], Any]]
) -> Callable[[object], T]:
    """A TOML table whose keys are ``checks``' (a directive with parameters, such as
    ``listen``): ``make(**checked)``."""

    def check(value: object) -> T:
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, not {value!r}")
        unknown = set(value) - set(checks)
        if unknown:
            raise ValueError(f"unknown parameter {sorted(unknown)[0]!r}")
        return make(**{k: checks[k](v) for k, v in value.items()})

    return check
