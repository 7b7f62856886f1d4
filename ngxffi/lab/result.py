"""What an experiment found: :class:`ExhaustResult`, whose fields are ``--json``'s
keys (:data:`JSON_KEYS`), plus the timeline for the plot."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ngxffi.lab.clients import Outcome
from ngxffi.lab.sampler import Sample, Samples

# The result's fields that --json prints, in order; the timeline, the wave times and
# the clients' ends are for the plot (attributes only).
JSON_KEYS = (
    "server",
    "command",
    "port",
    "policy",
    "resume",
    "nofile",
    "nofile_hard",
    "clients",
    "started",
    "error",
    "served",
    "refused",
    "reset",
    "timed_out",
    "lab_errors",
    "statuses",
    "wave_s",
    "cpu_percent_exhausted",
    "wakeups_per_s_exhausted",
    "exhausted_s",
    "peak_fds",
    "recovery_ms",
    "second_wave",
    "second_wave_served",
    "second_wave_statuses",
    "healthy_after",
    "exit_status",
    "inject",
)


@dataclass
class ExhaustResult:
    """What ``ngxffi exhaust --json`` prints, as attributes (see :data:`JSON_KEYS`
    and the guide's table), plus ``timeline``, ``waves`` (the boundaries, seconds
    since the start) and ``ends`` (each client's end: seconds, kind) for plots."""

    server: str
    command: list[str]
    policy: str | None
    resume: bool | None
    nofile: int
    nofile_hard: int
    clients: int
    second_wave: int
    inject: list[str]
    port: int | None = None
    started: bool = True
    error: str | None = None
    served: int = 0
    refused: int = 0
    reset: int = 0
    timed_out: int = 0
    lab_errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    wave_s: float = 0.0
    cpu_percent_exhausted: float = 0.0
    wakeups_per_s_exhausted: float = 0.0
    exhausted_s: float = 0.0
    peak_fds: int = 0
    recovery_ms: int | None = None
    second_wave_served: int = 0
    second_wave_statuses: dict[str, int] = field(default_factory=dict)
    healthy_after: bool = False
    exit_status: int | None = None
    timeline: list[Sample] = field(default_factory=list, repr=False)
    waves: list[float] = field(default_factory=list, repr=False)
    ends: list[tuple[float, str]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The JSON object: :data:`JSON_KEYS`, in that order."""
        data = asdict(self)
        return {key: data[key] for key in JSON_KEYS}

    def record(
        self,
        samples: Samples,
        waves: tuple[Outcome, Outcome],
        released: float,
        done: float,
    ) -> None:
        """Fill in what the sampler and the two waves measured (``released``, ``done``:
        the ends of wave 1 and 2, monotonic)."""
        wave1, wave2 = waves
        start = samples.start
        exhausted = samples.exhausted_s or float("inf")  # never exhausted: rates 0
        self.served, self.refused = wave1.served, wave1.refused
        self.reset, self.timed_out = wave1.reset, wave1.timed_out
        self.lab_errors = wave1.lab_errors + wave2.lab_errors
        self.statuses = _statuses(wave1)
        self.wave_s = round(released - start, 2)
        self.cpu_percent_exhausted = round(100 * samples.cpu_s / exhausted, 1)
        self.wakeups_per_s_exhausted = round(samples.wakeups / exhausted, 1)
        self.exhausted_s = round(samples.exhausted_s, 2)
        self.peak_fds = samples.peak_fds
        if wave2.first_response is not None:
            self.recovery_ms = round(1000 * (wave2.first_response - released))
        self.second_wave_served = wave2.served
        self.second_wave_statuses = _statuses(wave2)
        healthy = sum(n for status, n in wave2.statuses.items() if status < 500)
        self.healthy_after = healthy == self.second_wave  # all served, none 5xx
        self.exit_status = samples.exited
        self.timeline = samples.timeline
        self.waves = [0.0, round(released - start, 3), round(done - start, 3)]
        self.ends = [(round(t - start, 3), k) for t, k in wave1.ends + wave2.ends]


def _statuses(out: Outcome) -> dict[str, int]:
    return {str(k): v for k, v in sorted(out.statuses.items())}
