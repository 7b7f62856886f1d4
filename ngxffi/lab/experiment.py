"""One experiment on one server: start it under the limit, two waves of clients while
the sampler watches, stop it, and the :class:`~ngxffi.lab.result.ExhaustResult`.

Wave 1 is ``clients`` clients at once, each holding its connection ``hold`` seconds
after its response: more than the limit allows at a time, so the server runs out of
fds. When they have all ended, wave 2 (``second_wave`` clients, no hold) checks that
the server is healthy again: every client served, none with a 5xx. Recovery is the
time from the end of wave 1 to the first wave-2 response.

A server that dies, hangs or never listens still gets a result: clients of a dead
server are refused or reset at once, those of a hung one time out (``timeout`` per
wave), and one that never listened has ``started`` false and its ``error``. The
server's exit status is ``exit_status`` when it died during the run (None when it was
still running; -N when a signal N killed it, as :mod:`subprocess` says).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

from ngxffi.lab.child import Started, StartError, running
from ngxffi.lab.clients import Outcome, wave
from ngxffi.lab.fds import room_for
from ngxffi.lab.options import Options
from ngxffi.lab.result import ExhaustResult
from ngxffi.lab.sampler import Sample, Samples, sample
from ngxffi.lab.target import Target
from ngxffi.os import faults

Progress = Callable[[str, Outcome, Sample], None]


def _environment(options: Options) -> dict[str, str]:
    """Fault injection reaches the server through ngxffi's environment hook."""
    if not options.inject:
        return {}
    return faults.environment(list(options.inject), options.inject_seed)


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
    result.record(samples, (wave1, wave2), released, done)


_STOPS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _runner() -> asyncio.Runner:
    """An asyncio.Runner whose loop is made while the signals that stop a run wait:
    an interrupt in the middle of building a loop leaves it half made (its __del__
    then prints a traceback); one that comes after finds it whole, and the Runner
    closes it."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
    try:
        runner = asyncio.Runner()
        runner.get_loop()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return runner


def exhaust(
    target: Target, options: Options, progress: Progress | None = None
) -> ExhaustResult:
    """Run the experiment on ``target``; ``progress`` is called at each sample with
    the wave's name, its outcome so far and the sample. Raises
    :class:`~ngxffi.lab.target.LabError` for a usage error; a server that does not
    start is a result with ``started`` false."""
    options.check()
    target.check()
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
        with (
            room_for(max(options.clients, options.second_wave) + 16),
            running(target, options, env) as s,
        ):
            result.port = s.port
            with _runner() as runner:
                runner.run(_waves(s, options, result, progress))
            if result.exit_status is None:
                result.exit_status = s.proc.poll()
    except StartError as e:
        result.started, result.error = False, str(e)
    return result
