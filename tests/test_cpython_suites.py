"""tests/cpython/cpython_suites.py, which runs CPython's selector and asyncio suites
on NgxSelector against the default selector: it catches a selector that differs, and
tells a flaky failure from a lasting one."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from selectors import SelectorKey

import pytest

from ngxffi.selector import NgxSelector

ROOT = Path(__file__).parent.parent
ONCE = "HASTY_ONCE_MARKER"  # the file whose making marks the first worker process


def _first_to_make(marker: str | None) -> bool:
    if marker is None:
        return False
    try:
        Path(marker).touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


class HastySelector(NgxSelector):
    """NgxSelector with a defect CPython's test_selectors sees and the default lacks:
    a positive timeout does not wait."""

    hasty = True

    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]:
        return super().select(0 if self.hasty and timeout is not None else timeout)


class HastyOnceSelector(HastySelector):
    """Hasty in the first worker process that imports it, and right in the next."""

    hasty = _first_to_make(os.environ.get(ONCE))


def run_suites(tmp_path: Path, candidate: str) -> subprocess.CompletedProcess[str]:
    """The runner on test_selectors' test_timeout tests only (a few seconds)."""
    runner = [sys.executable, str(ROOT / "tests" / "cpython" / "cpython_suites.py")]
    only = ["--suite", "selectors", "--match", "test_timeout", "--logs", str(tmp_path)]
    return subprocess.run(
        [*runner, *only, "--candidate", f"{__name__}:{candidate}"],
        env={
            **os.environ,
            "PYTHONPATH": str(Path(__file__).parent),
            ONCE: str(tmp_path / "made"),
        },
        capture_output=True,
        text=True,
        timeout=110,
    )


def listed(output: str, title: str) -> list[str]:
    return output.split(title, 1)[1].split("\n\n")[0].split()


TIMEOUT_TESTS = [  # on a candidate: test_selectors' own, and the one on EpollSelector's
    "test.test_selectors.DefaultSelectorTestCase.test_timeout",
    "test.test_selectors.EpollSelectorTestCaseOn{}.test_timeout",
]


@pytest.mark.timeout(120)
def test_a_test_failing_on_the_candidate_only_fails_the_run_by_name(
    tmp_path: Path,
) -> None:
    out = run_suites(tmp_path, "HastySelector")
    assert out.returncode == 1, out.stdout + out.stderr
    failing = listed(out.stdout, "FAILING ON THE CANDIDATE ONLY (2):")
    assert failing == [t.format("HastySelector") for t in TIMEOUT_TESTS]
    assert "flaky" not in out.stdout  # failed again when run once more
    assert "test_selectors: 2 failing on the candidate only" in out.stdout
    log = tmp_path / "cpython-suites" / platform.python_version()
    assert "FAIL: test_timeout" in (log / "selectors-candidate-rerun.log").read_text()


@pytest.mark.timeout(120)
def test_a_failure_that_passes_when_run_again_is_flaky(tmp_path: Path) -> None:
    out = run_suites(tmp_path, "HastyOnceSelector")
    assert out.returncode == 0, out.stdout + out.stderr
    flaky = listed(out.stdout, "flaky on the candidate (passed on rerun) (2):")
    assert flaky == [t.format("HastyOnceSelector") for t in TIMEOUT_TESTS]
    assert "FAILING" not in out.stdout and out.stdout.endswith("\nOK\n")
