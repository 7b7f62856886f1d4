"""CPython's own ``test_selectors`` and ``test_asyncio`` on NgxSelector, against a
baseline: the same suites on the default ``selectors.EpollSelector``, on the Python
this script runs with, in the same run (``make cpython-tests``).

Imitates what ``python -m test test_selectors test_asyncio`` checks, with unittest
doing the running. Each suite runs twice, each time in a worker process of its own
(``cpython_worker.py``; ``--jobs`` at a time): on the baseline, and on the candidate
(``ngxffi.selector:NgxSelector``), which is then ``selectors.DefaultSelector``, so that
every ``SelectorEventLoop()`` made without a selector, and test_selectors'
``DefaultSelectorTestCase``, are on it. The TestCases that name EpollSelector
(test_selectors' ``EpollSelectorTestCase``, with its epoll-specific tests, and the
``EPollEventLoopTests`` of test_asyncio's test_events, test_sendfile and
test_sock_lowlevel) get a subclass on the candidate too, compared with them. The worker
checks, before and after the suite, that a fresh ``asyncio.new_event_loop()`` is on the
selector under test, and counts the instances made.

A test that fails or errors on the candidate but not on the baseline fails the run
(exit status 1, listed by name), as does a test skipped on the candidate only, unless
it is in the worker's ``EXCLUDED`` (each with its reason). Such a failure is run once
more in a fresh worker, as regrtest reruns failed tests: one that passes then is
reported as flaky and does not fail the run. Tests failing on both sides (with no
network beyond loopback, say) are reported and do not. A worker that crashes or hangs
(``--test-timeout`` per test, ``--run-timeout`` in all) fails the run; each worker's
verbose unittest output is kept in ``build/cpython-suites/<python version>/``.

Processes that a test starts with multiprocessing's spawn or forkserver are fresh
interpreters: whatever loop they make is on the stock selector.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from cpython_worker import (
    BASELINE,
    CANDIDATE,
    EXCLUDED,
    EXCLUDED_MARK,
    SUITES,
    Run,
)

WORKER = Path(__file__).with_name("cpython_worker.py")


@dataclasses.dataclass(frozen=True)
class Job:
    suite: str
    side: str
    log: Path
    only: tuple[str, ...] | None = None


def _command(job: Job, args: argparse.Namespace, scratch: Path) -> list[str]:
    command = [sys.executable, str(WORKER), job.suite, job.side]
    command += ["--candidate", args.candidate, "--match", args.match]
    command += ["--test-timeout", str(args.test_timeout)]
    if job.only is not None:
        (scratch / "only.json").write_text(json.dumps(job.only))
        command += ["--only", str(scratch / "only.json")]
    return [*command, "--report", str(scratch / "report.json")]


def _spawn(job: Job, args: argparse.Namespace) -> Run:
    """One worker, in a scratch directory of its own (tests write files in the
    current one) and a process group of its own (killed whole on a hang)."""
    with tempfile.TemporaryDirectory() as scratch, open(job.log, "w") as log:
        proc = subprocess.Popen(
            _command(job, args, Path(scratch)),
            cwd=scratch,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            status = proc.wait(timeout=args.run_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            status = proc.wait()
            print(f"killed after {args.run_timeout} s", file=log)
        report = Path(scratch) / "report.json"
        if status != 0 or not report.exists():
            crash = f"exit status {status}, see {job.log.name}"
            return Run(job.suite, job.side, job.side, crash=crash)
        return Run(**json.loads(report.read_text()))


def _counterpart(cand: Run, test_id: str) -> str:
    """The baseline's id for a candidate's test (or subtest, after a space): the same,
    except for the tests of the subclasses made for the candidate."""
    test, space, subtest = test_id.partition(" ")
    return cand.counterparts.get(test, test) + space + subtest


@dataclasses.dataclass
class Verdict:
    both: list[str]  # not passing on either side: reported, not counted
    baseline_only: list[str]
    candidate_only: list[str]  # the run's failures (until a rerun passes them)
    skipped_only: list[str]  # skipped on the candidate alone, not EXCLUDED
    flaky: list[str] = dataclasses.field(default_factory=list)


def compare(base: Run, cand: Run) -> Verdict:
    """What fails, or is skipped, where (a candidate id matched to its counterpart)."""
    failing = {t: _counterpart(cand, t) in base.problems for t in cand.problems}
    counterparts = {_counterpart(cand, t) for t in cand.problems}
    skipped_only = [
        t
        for t, reason in cand.skipped.items()
        if not reason.startswith(EXCLUDED_MARK)
        and _counterpart(cand, t) not in base.skipped
    ]
    return Verdict(
        both=sorted(t for t, on_base in failing.items() if on_base),
        baseline_only=sorted(set(base.problems) - counterparts),
        candidate_only=sorted(t for t, on_base in failing.items() if not on_base),
        skipped_only=sorted(skipped_only),
    )


def _rerun(cand: Run, verdict: Verdict, args: argparse.Namespace, logs: Path) -> None:
    """Run the candidate's failures again, in a fresh worker; those that pass are
    moved to ``verdict.flaky`` (a subtest is rerun as its whole test)."""
    whole = {t: t.split(" ", 1)[0] for t in verdict.candidate_only}
    job = Job(cand.suite, cand.side, logs / f"{cand.suite}-candidate-rerun.log")
    again = _spawn(
        dataclasses.replace(job, only=tuple(sorted(set(whole.values())))), args
    )
    failed_again = {t.split(" ", 1)[0] for t in again.problems}
    verdict.flaky = [
        t for t, w in whole.items() if w in again.ran and w not in failed_again
    ]
    verdict.candidate_only = [
        t for t in verdict.candidate_only if t not in verdict.flaky
    ]


def _row(run: Run, name: str) -> str:
    fails = sum(1 for p in run.problems.values() if p != "ERROR")
    errors = len(run.problems) - fails
    cols = f"{len(run.ran):>6} {fails:>6} {errors:>6} {len(run.skipped):>7}"
    if run.crash:
        return f"{name:<15} {run.selector:<35} {cols}  CRASHED: {run.crash}"
    return f"{name:<15} {run.selector:<35} {cols} {run.made:>9} {run.seconds:>7.1f} s"


def _section(title: str, ids: list[str]) -> None:
    if ids:
        print(f"\n{title} ({len(ids)}):", *ids, sep="\n  ")


def _judge(base: Run, cand: Run, verdict: Verdict) -> list[str]:
    """The reasons this suite fails the run (none: it passes)."""
    if base.crash or cand.crash:
        return ["a worker crashed or hung (its log has the traceback)"]
    reasons = [f"EXCLUDED entry matches no test: {name}" for name in cand.stale]
    if not (base.loop_ok and cand.loop_ok):
        reasons.append("a fresh asyncio loop was not on the selector under test")
    if verdict.candidate_only:
        reasons.append(f"{len(verdict.candidate_only)} failing on the candidate only")
    if verdict.skipped_only:
        reasons.append(f"{len(verdict.skipped_only)} skipped on the candidate only")
    return reasons


def _report(suite: str, base: Run, cand: Run, verdict: Verdict) -> list[str]:
    excluded = [t for t, r in cand.skipped.items() if r.startswith(EXCLUDED_MARK)]
    _section(f"test_{suite}: excluded on the candidate (EXCLUDED)", sorted(excluded))
    for name, reason in EXCLUDED.get(suite, {}).items() if excluded else ():
        print(f"  {name}: {reason}")
    _section(f"test_{suite}: not passing on either selector", verdict.both)
    _section(f"test_{suite}: failing on the baseline only", verdict.baseline_only)
    _section(f"test_{suite}: flaky on the candidate (passed on rerun)", verdict.flaky)
    _section(f"test_{suite}: FAILING ON THE CANDIDATE ONLY", verdict.candidate_only)
    _section(f"test_{suite}: SKIPPED ON THE CANDIDATE ONLY", verdict.skipped_only)
    return [f"test_{suite}: {reason}" for reason in _judge(base, cand, verdict)]


def _has_the_suites() -> bool:
    """Whether this Python ships its own tests (pyenv's and python.org's builds do;
    Debian's python3 only with libpython3.X-testsuite)."""
    try:
        return importlib.util.find_spec("test.test_selectors") is not None
    except ModuleNotFoundError:  # no test package at all
        return False


def main(args: argparse.Namespace) -> int:
    if not _has_the_suites():
        print(
            f"{sys.executable} has no test package (CPython's own tests): use a "
            "Python built with them (pyenv's), or install libpython3.X-testsuite",
            file=sys.stderr,
        )
        return 1
    logs = args.logs or Path(__file__).resolve().parents[2] / "build"
    logs = logs / "cpython-suites" / platform.python_version()
    logs.mkdir(parents=True, exist_ok=True)
    jobs = [
        Job(suite, side, logs / f"{suite}-{side}.log")
        for suite in args.suite
        for side in (BASELINE, "candidate")
    ]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda job: _spawn(job, args), jobs))
    print(f"Python {platform.python_version()}, {args.candidate} against the default")
    print(
        f"{'suite':<15} {'selector':<35} {'run':>6} {'failed':>6} {'errors':>6} "
        f"{'skipped':>7} {'selectors':>9} {'time':>9}"
    )
    verdicts = []
    for base, cand in zip(runs[::2], runs[1::2], strict=True):
        verdict = compare(base, cand)
        if verdict.candidate_only and not cand.crash:
            _rerun(cand, verdict, args, logs)
        verdicts.append(verdict)
        for run in (base, cand):
            print(_row(run, f"test_{run.suite}"))
    failures = []
    for base, cand, verdict in zip(runs[::2], runs[1::2], verdicts, strict=True):
        failures += _report(base.suite, base, cand, verdict)
    print(f"\nlogs: {logs}")
    print("\n".join(["", "FAILED:", *failures] if failures else ["", "OK"]))
    return 1 if failures else 0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=SUITES, action="append")
    parser.add_argument("--candidate", default=CANDIDATE, help="module:class")
    parser.add_argument("--match", default="", help="only tests whose id contains it")
    parser.add_argument("--logs", type=Path, help="where cpython-suites/VER/ goes")
    parser.add_argument("-j", "--jobs", type=int, default=min(os.cpu_count() or 1, 4))
    parser.add_argument("--test-timeout", type=float, default=300.0)
    parser.add_argument("--run-timeout", type=float, default=1200.0)
    args = parser.parse_args(argv)
    args.suite = args.suite or list(SUITES)
    return args


if __name__ == "__main__":
    sys.exit(main(_parse(sys.argv[1:])))
