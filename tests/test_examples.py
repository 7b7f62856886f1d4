"""Every example runs as is, exits 0 and prints what its docstring promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(name: str) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_example_is_covered() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == {
        "edge_vs_level.py",
        "dup_trap.py",
    }


def test_edge_vs_level() -> None:
    lines = run("edge_vs_level.py").splitlines()
    assert "after a partial read: readable" in lines[0]
    assert "after a partial read: silent" in lines[1]
    assert "after new data: readable" in lines[1]


def test_dup_trap() -> None:
    out = run("dup_trap.py")
    assert "1 event(s)" in out
    assert "Bad file descriptor" in out and "No such file or directory" in out
    assert "after closing the dup too: 0 event(s)" in out
