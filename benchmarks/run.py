"""``make bench``: install what the benchmarks need, run them all, print the Markdown
report and save it to ``benchmarks/results/latest.md`` with the machine it ran on, so
that the README can quote it with its provenance."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import asyncio_loops
import dispatch
import syscalls

RESULTS = Path(__file__).parent / "results"
APT_TOOLS = {"wrk": "wrk"}  # command -> Debian package


def ensure_tools() -> None:
    """Install missing load tools with apt (the benchmarks' own set-up)."""
    missing = [pkg for cmd, pkg in APT_TOOLS.items() if shutil.which(cmd) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"missing {missing}: install them (apt-get install {missing})")
    install = ["apt-get", "install", "-y", "-q", *missing]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        subprocess.run(install, check=True, capture_output=True)


def machine() -> str:
    uname = platform.uname()
    return (
        f"{uname.system} {uname.release} {uname.machine}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )


def main() -> None:
    ensure_tools()
    sections = [
        (
            "Dispatch: one loop iteration, 100 ready fds (benchmarks/dispatch.py)",
            dispatch.main,
        ),
        (
            "asyncio: default loop vs NgxSelector (benchmarks/asyncio_loops.py)",
            asyncio_loops.main,
        ),
        ("Binding: per-call cost (benchmarks/syscalls.py)", syscalls.main),
    ]
    lines = [
        f"Machine: {machine()}; {time.strftime('%Y-%m-%d')}; command: `make bench`"
    ]
    for title, run in sections:
        lines += ["", f"### {title}", "", run()]
    report = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
