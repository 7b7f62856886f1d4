"""How an experiment runs (the CLI's flags, the testing API's keywords), and the
usage errors found before anything starts."""

from __future__ import annotations

import math
import re
import resource
from dataclasses import dataclass

from ngxffi.lab.target import LabError
from ngxffi.os import faults

# stdin, stdout, stderr, a listening socket, an epoll instance, and the interpreter's
# own few: below this no server can start, so it is a usage error, not a finding
NOFILE_MIN = 8

START_TIMEOUT_S = 10.0  # how long a server may take to listen

# an origin-form request target: a slash, then visible ASCII (no space, no CR/LF)
_PATH = re.compile(r"/[\x21-\x7e]*")


@dataclass(frozen=True)
class Options:
    """The experiment's parameters; ``nofile_hard`` None is the soft limit, as
    ``ulimit -n`` sets both."""

    nofile: int = 64
    nofile_hard: int | None = None
    clients: int = 300
    hold: float = 2.0
    second_wave: int = 20
    timeout: float = 60.0
    path: str = "/"
    inject: tuple[str, ...] = ()
    inject_seed: int = 0
    verbose: bool = False
    start_timeout: float = START_TIMEOUT_S

    @property
    def hard(self) -> int:
        return self.nofile if self.nofile_hard is None else self.nofile_hard

    def check(self) -> None:
        """:class:`LabError` for a usage error; changes nothing."""
        for name in ("clients", "second_wave"):
            if getattr(self, name) < 1:
                raise LabError(f"--{name.replace('_', '-')} must be at least 1")
        self._check_limits()
        times = {"--hold": self.hold, "--timeout": self.timeout}
        times["--start-timeout"] = self.start_timeout
        for flag, value in times.items():
            if (
                not math.isfinite(value)
                or value < 0
                or (value == 0 and flag != "--hold")
            ):
                raise LabError(f"{flag} {value}: a finite number of seconds above 0")
        if not _PATH.fullmatch(self.path):
            raise LabError(
                f"--path {self.path!r}: a path that starts with / and has no space or "
                "control character (percent-encode them)"
            )
        try:
            faults.environment(list(self.inject), self.inject_seed)
        except ValueError as e:
            raise LabError(f"--inject: {e}") from None

    def _check_limits(self) -> None:
        if self.nofile < NOFILE_MIN:
            raise LabError(
                f"--nofile {self.nofile} is too small to start a server: at least "
                f"{NOFILE_MIN} (stdin, stdout, stderr, a listening socket, an epoll "
                "instance and the interpreter's own)"
            )
        if self.hard < self.nofile:
            raise LabError(f"--nofile {self.nofile}:{self.hard}: hard below soft")
        lab_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if self.hard > lab_hard and lab_hard != resource.RLIM_INFINITY:
            raise LabError(
                f"hard limit {self.hard} is above the lab's own ({lab_hard})"
            )
