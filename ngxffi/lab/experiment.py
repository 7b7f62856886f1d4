"""One experiment on one server: start it under the limit, two waves of clients while
the sampler watches, stop it, and the result.

Wave 1 is ``clients`` clients at once, each holding its connection ``hold`` seconds
after its response: more than the limit allows at a time, so the server runs out of
fds. When they have all ended, wave 2 (``second_wave`` clients, no hold) checks that
the server is healthy again. Recovery is the time from the end of wave 1 to the first
wave-2 response.

A server that dies, hangs or never listens still gets a result: clients of a dead
server are refused or reset at once, those of a hung one time out, and one that
never listened has ``started`` false and its ``error``. The server's exit status is
``exit_status`` when it died during the run (None when it was still running).
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ngxffi.lab.clients import Outcome, wave
from ngxffi.lab.sampler import Sample, Samples, sample
from ngxffi.lab.target import (
    START_TIMEOUT_S,
    LabError,
    Started,
    StartError,
    Target,
    running,
)

# stdin, stdout, stderr, a listening socket, an epoll instance, and the interpreter's
# own few: below this no server can start, so it is a usage error, not a finding
NOFILE_MIN = 8

# The result's fields that --json prints, in order; timeline and wave times are for
# the plot (ExhaustResult keeps them as attributes).
JSON_KEYS = (
    "server",
    "command",
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
    "statuses",
    "wave_s",
    "cpu_percent_exhausted",
    "wakeups_per_s_exhausted",
    "exhausted_s",
    "peak_fds",
    "recovery_ms",
    "second_wave",
    "second_wave_served",
    "healthy_after",
    "exit_status",
    "inject",
)


@dataclass
class Options:
    """How to run the experiment (the CLI's flags, the testing API's arguments)."""

    nofile: int = 64
    nofile_hard: int | None = None  # None: the soft limit, as `ulimit -n` sets both
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


@dataclass
class ExhaustResult:
    """What ``ngxffi exhaust --json`` prints, as attributes (see :data:`JSON_KEYS`),
    plus the timeline and the wave boundaries (seconds since the start) for plots."""

    server: str
    command: list[str]
    policy: str | None
    resume: bool | None
    nofile: int
    nofile_hard: int
    clients: int
    started: bool = True
    error: str | None = None
    served: int = 0
    refused: int = 0
    reset: int = 0
    timed_out: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    wave_s: float = 0.0
    cpu_percent_exhausted: float = 0.0
    wakeups_per_s_exhausted: float = 0.0
    exhausted_s: float = 0.0
    peak_fds: int = 0
    recovery_ms: int | None = None
    second_wave: int = 0
    second_wave_served: int = 0
    healthy_after: bool = False
    exit_status: int | None = None
    inject: list[str] = field(default_factory=list)
    timeline: list[Sample] = field(default_factory=list, repr=False)
    waves: list[float] = field(default_factory=list, repr=False)
    ends: list[tuple[float, str]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The JSON object: :data:`JSON_KEYS`, in that order."""
        data = asdict(self)
        return {key: data[key] for key in JSON_KEYS}


Progress = Callable[[str, Outcome, Sample], None]


def check(options: Options) -> None:
    """Usage errors, before anything starts (:class:`LabError`)."""
    for name in ("clients", "second_wave"):
        if getattr(options, name) < 1:
            raise LabError(f"--{name.replace('_', '-')} must be at least 1")
    if options.nofile < NOFILE_MIN:
        raise LabError(
            f"--nofile {options.nofile} is too small to start a server: at least "
            f"{NOFILE_MIN} (stdin, stdout, stderr, a listening socket, an epoll "
            "instance and the interpreter's own)"
        )
    if options.hard < options.nofile:
        raise LabError(f"--nofile {options.nofile}:{options.hard}: hard below soft")
    lab_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if options.hard > lab_hard and lab_hard != resource.RLIM_INFINITY:
        raise LabError(f"hard limit {options.hard} is above the lab's own ({lab_hard})")
    if min(options.timeout, options.start_timeout) <= 0 or options.hold < 0:
        raise LabError("--timeout and --start-timeout must be above 0, --hold >= 0")
    _raise_own_limit(options.clients + options.second_wave + 64)


def _raise_own_limit(need: int) -> None:
    """The lab's own soft limit up to what its clients need (each holds an fd)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise LabError(
            f"the lab needs {need} fds for its clients, its hard limit is {hard}"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _environment(options: Options) -> dict[str, str]:
    """Fault injection reaches the server through ngxffi's environment hook."""
    if not options.inject:
        return {}
    return {
        "NGXFFI_INJECT": ",".join(options.inject),
        "NGXFFI_INJECT_SEED": str(options.inject_seed),
    }


async def _waves(
    started: Started, options: Options, result: ExhaustResult, progress: Progress | None
) -> None:
    samples = Samples(options.nofile)
    wave1, wave2 = Outcome(), Outcome()
    name, outcome = "wave 1", wave1  # the closure below sees them change

    def on_sample(point: Sample) -> None:
        if progress is not None:
            progress(name, outcome, point)

    sampler = asyncio.create_task(
        sample(started.tree, started.proc.poll, samples, on_sample)
    )
    try:
        port, path = started.port, options.path
        await wave(port, path, options.clients, options.hold, options.timeout, wave1)
        released = time.monotonic()
        name, outcome = "wave 2", wave2
        await wave(port, path, options.second_wave, 0, options.timeout, wave2)
        done = time.monotonic()
    finally:
        sampler.cancel()
    _fill(result, samples, wave1, wave2, released, done)


def _fill(
    result: ExhaustResult,
    samples: Samples,
    wave1: Outcome,
    wave2: Outcome,
    released: float,
    done: float,
) -> None:
    start = samples.start
    exhausted = samples.exhausted_s or float("inf")  # never exhausted: rates are 0
    result.served, result.refused = wave1.served, wave1.refused
    result.reset, result.timed_out = wave1.reset, wave1.timed_out
    result.statuses = {str(k): v for k, v in sorted(wave1.statuses.items())}
    result.wave_s = round(released - start, 2)
    result.cpu_percent_exhausted = round(100 * samples.cpu_s / exhausted, 1)
    result.wakeups_per_s_exhausted = round(samples.wakeups / exhausted, 1)
    result.exhausted_s = round(samples.exhausted_s, 2)
    result.peak_fds = samples.peak_fds
    if wave2.first_response is not None:
        result.recovery_ms = round(1000 * (wave2.first_response - released))
    result.second_wave_served = wave2.served
    result.healthy_after = wave2.served == result.second_wave
    result.exit_status = samples.exited
    result.timeline = samples.timeline
    result.waves = [0.0, round(released - start, 3), round(done - start, 3)]
    result.ends = [(round(t - start, 3), kind) for t, kind in wave1.ends + wave2.ends]


def exhaust(
    target: Target, options: Options, progress: Progress | None = None
) -> ExhaustResult:
    """Run the experiment on ``target``; ``progress`` is called at each sample with
    the wave's name, its outcome so far and the sample. Raises :class:`LabError` for
    a usage error; a server that does not start is a result with ``started`` false."""
    check(options)
    result = ExhaustResult(
        server=target.name,
        command=list(target.argv),
        policy=target.policy,
        resume=target.resume,
        nofile=options.nofile,
        nofile_hard=options.hard,
        clients=options.clients,
        second_wave=options.second_wave,
        inject=list(options.inject),
    )
    env = _environment(options)
    try:
        limits = options.nofile, options.hard
        with running(target, *limits, env, options.verbose, options.start_timeout) as s:
            asyncio.run(_waves(s, options, result, progress))
            if result.exit_status is None:
                result.exit_status = s.proc.poll()
    except StartError as e:
        result.started, result.error = False, str(e)
    return result
