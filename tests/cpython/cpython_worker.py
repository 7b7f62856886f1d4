"""The worker of ``cpython_suites.py``: one CPython suite, on one selector, in this
process, reported as JSON.

``python tests/cpython/cpython_worker.py SUITE SIDE --report FILE``: SIDE
``baseline`` runs the suite as it is, on ``selectors.EpollSelector``; ``candidate``
first sets ``selectors.DefaultSelector`` to the candidate class, before the suite is
imported, and adds a subclass on the candidate of each TestCase that names EpollSelector
(``ON_EPOLL``). unittest runs the tests verbosely on stderr, as ``python -m
unittest`` does (every test resource enabled), with a watchdog per test.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import faulthandler
import importlib
import json
import selectors
import sys
import time
import unittest
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

SUITES = {"selectors": "test.test_selectors", "asyncio": "test.test_asyncio"}
CANDIDATE = "ngxffi.selector:NgxSelector"
BASELINE = "baseline"

# Tests of a candidate class that are skipped on purpose, by method name, each with its
# reason (printed with every run). A name here that no longer matches a test fails the
# run, so that the list cannot outlive what it excuses.
EXCLUDED: dict[str, dict[str, str]] = {
    "selectors": {
        "test_modify_unregister": (
            "patches selectors.EpollSelector._selector_cls (a private detail) and "
            "skips itself, with no reason, for a class not named EpollSelector; what "
            "it checks, that a failed modify() forgets the fd, is checked on both "
            "classes by tests/test_selector.py::"
            "test_modify_data_alone_does_not_touch_the_kernel"
        ),
    },
}
EXCLUDED_MARK = "excluded: "  # how the skip reason of an EXCLUDED test begins

# The TestCases that make their selector, or their loop's, an EpollSelector by name:
# the candidate run adds a subclass of each on the candidate (its tests compared with
# theirs), since setting DefaultSelector does not reach them.
ON_EPOLL = {
    "selectors": (("test.test_selectors", "EpollSelectorTestCase"),),
    "asyncio": tuple(
        (f"test.test_asyncio.{module}", "EPollEventLoopTests")
        for module in ("test_events", "test_sendfile", "test_sock_lowlevel")
    ),
}


@dataclasses.dataclass
class Run:
    """What one worker reports: every test it ran, the ones that did not pass (id to
    FAIL, ERROR or UNEXPECTED SUCCESS), the skipped ones (id to reason)."""

    suite: str
    side: str
    selector: str = ""
    ran: list[str] = dataclasses.field(default_factory=list)
    problems: dict[str, str] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    made: int = 0  # instances of the selector class under test made during the run
    loop_ok: bool = False  # a fresh loop was on it, before the suite and after
    stale: list[str] = dataclasses.field(default_factory=list)  # unmatched EXCLUDED
    # the id of each test of an ON_EPOLL subclass, to the id of the test it inherits
    counterparts: dict[str, str] = dataclasses.field(default_factory=dict)
    crash: str = ""  # why the worker gave no report; empty when it did


def _selector_class(side: str, candidate: str) -> type[selectors.BaseSelector]:
    if side == BASELINE:
        return selectors.EpollSelector
    module, _, name = candidate.partition(":")
    cls: type[selectors.BaseSelector] = getattr(importlib.import_module(module), name)
    return cls


def _count_instances(cls: type[Any]) -> Callable[[], int]:
    """Wrap ``cls.__init__`` (in this worker only) to count the instances made."""
    made = 0
    init = cls.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal made
        made += 1
        init(self, *args, **kwargs)

    cls.__init__ = counting_init
    return lambda: made


def _loop_is_on(cls: type[Any]) -> bool:
    loop = asyncio.new_event_loop()
    try:
        return type(getattr(loop, "_selector", None)) is cls
    finally:
        loop.close()


def _flatten(suite: Iterable[Any]) -> Iterator[unittest.TestCase]:
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from _flatten(test)
        else:
            yield test


def _on(cls: type[Any], base: type[Any]) -> type[Any]:
    """A subclass of ``base`` with its selector (test_selectors' SELECTOR) and its
    loop's (test_asyncio's create_event_loop) on ``cls``; in base's module, whose
    setUpModule and tearDownModule then frame it."""

    def create_event_loop(self: Any) -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(cls())

    namespace: dict[str, Any] = {"SELECTOR": cls, "__module__": base.__module__}
    namespace["create_event_loop"] = create_event_loop
    return type(f"{base.__name__}On{cls.__name__}", (base,), namespace)


def _load(suite: str, cls: type[Any], report: Run) -> list[unittest.TestCase]:
    """The suite's tests, and on the candidate the ON_EPOLL subclasses' (their
    counterparts noted in ``report``)."""
    loader = unittest.defaultTestLoader
    tests = list(_flatten(loader.loadTestsFromName(SUITES[suite])))
    for module, name in ON_EPOLL[suite] if report.side != BASELINE else ():
        base = getattr(importlib.import_module(module), name)
        for test in _flatten(loader.loadTestsFromTestCase(_on(cls, base))):
            report.counterparts[test.id()] = f"{module}.{name}.{test._testMethodName}"
            tests.append(test)
    return tests


def _exclude(tests: list[unittest.TestCase], cls: type[Any], suite: str) -> list[str]:
    """Skip, naming the reason, the EXCLUDED tests of every TestCase on ``cls``;
    return the EXCLUDED names that matched none."""
    reasons = EXCLUDED.get(suite, {})
    unmatched = set(reasons)
    for test in tests:
        name = getattr(test, "_testMethodName", "")
        if name in reasons and getattr(test, "SELECTOR", None) is cls:
            unmatched.discard(name)
            case = type(test)
            skip = unittest.skip(EXCLUDED_MARK + reasons[name])
            setattr(case, name, skip(getattr(case, name)))
    return sorted(unmatched)


class _Recorder(unittest.TextTestResult):
    """unittest's verbose result, recording the ids run, with a watchdog per test
    (faulthandler dumps every thread's traceback and exits on a hang). A skipped test
    counts as run, as in unittest's testsRun, also on 3.12.1, whose unittest starts
    no test that is skipped by decorator."""

    test_timeout = 300.0

    def __init__(self, stream: Any, descriptions: bool, verbosity: int) -> None:
        super().__init__(stream, descriptions, verbosity)
        self.ran: list[str] = []

    def startTest(self, test: unittest.TestCase) -> None:
        self.ran.append(test.id())
        faulthandler.dump_traceback_later(self.test_timeout, exit=True)
        super().startTest(test)

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        if isinstance(test, unittest.TestCase) and test.id() not in self.ran[-1:]:
            self.ran.append(test.id())

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
        faulthandler.cancel_dump_traceback_later()


def _run_tests(tests: unittest.TestSuite, report: Run) -> None:
    runner = unittest.TextTestRunner(sys.stderr, verbosity=2, resultclass=_Recorder)
    start = time.monotonic()
    result = runner.run(tests)
    report.seconds = time.monotonic() - start
    assert isinstance(result, _Recorder)
    report.ran = result.ran
    outcomes = (
        (result.failures, "FAIL"),
        (result.errors, "ERROR"),
        ([(t, "") for t in result.unexpectedSuccesses], "UNEXPECTED SUCCESS"),
    )
    for failed, outcome in outcomes:
        report.problems.update((test.id(), outcome) for test, _ in failed)
    report.skipped = {test.id(): reason for test, reason in result.skipped}


def worker(suite: str, side: str, candidate: str, keep: Callable[[str], bool]) -> Run:
    """Run the tests of ``suite`` whose id ``keep`` accepts, on one side; the report."""
    cls = _selector_class(side, candidate)
    selectors.DefaultSelector = cls  # type: ignore[misc, assignment]
    report = Run(suite, side, f"{cls.__module__}.{cls.__qualname__}")
    before = _loop_is_on(cls)
    made = _count_instances(cls)
    tests = _load(suite, cls, report)
    if side != BASELINE:
        report.stale = _exclude(tests, cls, suite)
    selected = unittest.TestSuite(t for t in tests if keep(t.id()))
    # A suite drops each test once it has run, so that what the test made can be
    # freed. With a list still holding them all, test_asyncio took 280 s instead of
    # 68: gc.collect(), which some of its tests call in loops, went through them all.
    del tests
    _run_tests(selected, report)
    report.made = made()
    report.loop_ok = before and _loop_is_on(cls)
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=SUITES)
    parser.add_argument("side", choices=[BASELINE, "candidate"])
    parser.add_argument("--report", type=Path, required=True, help="the JSON file")
    parser.add_argument("--candidate", default=CANDIDATE, help="module:class")
    parser.add_argument("--match", default="", help="only tests whose id contains it")
    parser.add_argument("--only", type=Path, help="a JSON list of the ids to run")
    parser.add_argument("--test-timeout", type=float, default=_Recorder.test_timeout)
    args = parser.parse_args(argv)
    _Recorder.test_timeout = args.test_timeout
    only = set(json.loads(args.only.read_text())) if args.only else None

    def keep(test_id: str) -> bool:
        return args.match in test_id and (only is None or test_id in only)

    report = worker(args.suite, args.side, args.candidate, keep)
    args.report.write_text(json.dumps(dataclasses.asdict(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
