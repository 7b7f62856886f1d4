"""What the lab tests: a :class:`Target` is a name and a command line, checked before
anything runs.

``{port}`` in any argument becomes a free port, found by binding port 0 and closing it
again (another program could take it in between: the start then fails clearly, as
"never listened" or as the server's own error); a command without ``{port}`` needs a
fixed ``port``, which must be free when the run starts (else the lab would measure
whoever holds it). ``{tmp}`` is a fresh directory of the run, removed afterwards,
where ``files`` are written (a configuration, say: ``{port}`` and ``{tmp}`` are
replaced in them too). The built-in presets (:mod:`ngxffi.lab.presets`) are targets
like any other.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path


class LabError(Exception):
    """A request the lab cannot carry out (the CLI's exit status 2)."""


@dataclass(frozen=True)
class Target:
    """A server to test: ``name`` (for the table) and ``argv``, where ``{port}``
    stands for the port and ``{tmp}`` for the run's directory, holding ``files``
    (name, text); ``port`` is the fixed port of a command without ``{port}``;
    ``policy`` and ``resume`` describe the ngxffi preset (None for the others)."""

    name: str
    argv: tuple[str, ...]
    port: int | None = None
    policy: str | None = None
    resume: bool | None = None
    files: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.argv:
            raise LabError(f"server {self.name!r}: no command")
        texts = [*self.argv, *(text for _, text in self.files)]
        if self.port is None and not any("{port}" in t for t in texts):
            raise LabError(
                f"server {self.name!r}: the command has no {{port}} to replace and "
                "no --port says where it listens"
            )
        if self.port is not None and not 0 < self.port < 65536:
            raise LabError(f"server {self.name!r}: port {self.port} is not 1..65535")

    def command(self, port: int, tmp: Path) -> list[str]:
        """``argv`` with every ``{port}`` and ``{tmp}`` replaced; writes ``files``."""
        for name, text in self.files:
            (tmp / name).write_text(_fill(text, port, tmp))
        return [_fill(a, port, tmp) for a in self.argv]

    def check(self) -> None:
        """:class:`LabError` unless the program exists and a fixed port is free."""
        program = self.argv[0]
        found = os.access(program, os.X_OK) if "/" in program else shutil.which(program)
        if not found and "{tmp}" not in program:
            raise LabError(f"server {self.name!r}: cannot run {program}: not found")
        if self.port is not None and not port_free(self.port):
            raise LabError(
                f"server {self.name!r}: port {self.port} is already in use: the lab "
                "would measure whoever holds it"
            )


def _fill(text: str, port: int, tmp: Path) -> str:
    """``{port}`` and ``{tmp}`` replaced in ``text``."""
    return text.replace("{port}", str(port)).replace("{tmp}", str(tmp))


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:port can be bound (nothing listens there)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port that was free a moment ago (the kernel's choice for port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
