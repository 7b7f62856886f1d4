"""The process directives (≈ ngx_core_module's commands in src/core/nginx.c, with
``error_log`` of ngx_errlog_module): how many processes, their limits, their files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from ngxffi.core.conf import Command, flag, msec, number, positive, string
from ngxffi.core.log import LEVELS


def parse_worker_processes(value: object) -> int:
    """A number, or ``"auto"``: one per CPU."""
    if value == "auto":
        return os.cpu_count() or 1
    return positive(value)


def parse_error_log(value: object) -> tuple[str, str]:
    """``"FILE [LEVEL]"``; the level defaults to ``error``, as nginx's."""
    parts = string(value).split()
    if not 1 <= len(parts) <= 2 or (len(parts) == 2 and parts[1] not in LEVELS):
        raise ValueError(
            f'expected "FILE [LEVEL]" with a level among '
            f"{', '.join(LEVELS)}, not {value!r}"
        )
    return parts[0], parts[1] if len(parts) == 2 else "error"


@dataclass
class CoreConf:
    """``ngx_core_conf_t``, with nginx's defaults."""

    master_process: bool = True
    worker_processes: int = 1
    worker_rlimit_nofile: int = 0  # 0: leave the limit alone
    worker_shutdown_timeout: int = 0  # ms; 0: a graceful shutdown waits as needed
    error_log: tuple[str, str] = ("stderr", "error")
    pid: str | None = None

    commands: ClassVar[tuple[Command, ...]] = (
        Command("master_process", flag),
        Command("worker_processes", parse_worker_processes),
        Command("worker_rlimit_nofile", number),
        Command("worker_shutdown_timeout", msec),
        Command("error_log", parse_error_log),
        Command("pid", string),
    )
