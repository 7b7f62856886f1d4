"""``make bench``: run every benchmark, print the Markdown report and save it.

The report goes to ``benchmarks/results/latest.md`` with the machine it ran on, so the
README can quote it with its provenance.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import dispatch
import syscalls

RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    uname = platform.uname()
    return (
        f"{uname.system} {uname.release} {uname.machine}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )


def main() -> None:
    report = "\n".join(
        [
            f"Machine: {machine()}; {time.strftime('%Y-%m-%d')}; command: `make bench`",
            "",
            "### Dispatch: one loop iteration, 100 ready fds (benchmarks/dispatch.py)",
            "",
            dispatch.main(),
            "",
            "### Binding: per-call cost (benchmarks/syscalls.py)",
            "",
            syscalls.main(),
            "",
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
