"""``make bench``: install what the benchmarks need, run them all, print the Markdown
report and save it to ``benchmarks/results/latest.md`` with the machine it ran on, so
that the README can quote it with its provenance; the medians go to ``latest.json``
and a chart of them to ``latest.png``. ``NGXFFI_BENCH_QUICK=1`` shortens the HTTP and
memory runs (fewer rounds, 1 s runs, 1,000 idle connections) for trying changes.
``NGXFFI_BENCH_ONLY=static_1k,app`` runs only the runs named (HTTP scenarios, by
their key in http.py, or sections, by their key below) and only prints the report:
the saved results stay those of a whole run."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import http

import apt_get
import asyncio_loops
import chart
import dispatch
import faults
import frameworks
import idle_memory
import sleep_precision
import syscalls
import uring_binding
import uring_completion
from servers import ONLY, selected, which

RESULTS = Path(__file__).parent / "results"
APT_TOOLS = {"wrk": "wrk", "nginx": "nginx"}  # command -> Debian package
SECTIONS: list[tuple[str, str, Callable[[], str]]] = [  # key, title, run
    ("http", "HTTP: nginx, ngxffi and Python servers (benchmarks/http.py)", http.main),
    (
        "idle_memory",
        "Idle keep-alive connections: memory (benchmarks/idle_memory.py)",
        idle_memory.main,
    ),
    (
        "dispatch",
        "Dispatch: one loop iteration, 100 ready fds (benchmarks/dispatch.py)",
        dispatch.main,
    ),
    (
        "asyncio_loops",
        "asyncio: default loop vs NgxSelector (benchmarks/asyncio_loops.py)",
        asyncio_loops.main,
    ),
    (
        "frameworks",
        "Frameworks: aiohttp and uvicorn on three loops (benchmarks/frameworks.py)",
        frameworks.main,
    ),
    (
        "sleep_precision",
        "asyncio.sleep below a millisecond (benchmarks/sleep_precision.py)",
        sleep_precision.main,
    ),
    (
        "uring_completion",
        "Completion-based I/O: io_uring against epoll for `return`, in C "
        "(benchmarks/uring_completion.py)",
        uring_completion.main,
    ),
    (
        "uring_binding",
        "io_uring binding: raw syscalls vs liburing (benchmarks/uring_binding.py)",
        uring_binding.main,
    ),
    ("syscalls", "Binding: per-call cost (benchmarks/syscalls.py)", syscalls.main),
    (
        "faults",
        "Fault injection: the hooks' cost when off (benchmarks/faults.py)",
        faults.main,
    ),
]
HTTP_KEYS = {scenario.key for scenario in http.SCENARIOS}


def ensure_tools() -> None:
    """Install missing load tools and servers with apt (the benchmarks' own set-up)."""
    missing = [pkg for cmd, pkg in APT_TOOLS.items() if which(cmd) is None]
    if missing and not apt_get.install(missing):
        raise SystemExit(f"missing {missing}: install them (apt-get install {missing})")


def machine() -> str:
    uname = platform.uname()
    return (
        f"{uname.system} {uname.release} {uname.machine}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )


def wanted(key: str) -> bool:
    """Whether the section ``key`` runs: HTTP's when any of its scenarios does."""
    if key == "http":
        return any(selected(k) for k in HTTP_KEYS)
    return selected(key)


def main() -> None:
    unknown = ONLY - HTTP_KEYS - {key for key, _, _ in SECTIONS if key != "http"}
    if unknown:
        known = sorted(HTTP_KEYS) + [key for key, _, _ in SECTIONS if key != "http"]
        raise SystemExit(
            f"NGXFFI_BENCH_ONLY: unknown {sorted(unknown)}; known: {known}"
        )
    ensure_tools()
    date = time.strftime("%Y-%m-%d")
    lines = [f"Machine: {machine()}; {date}; command: `make bench`"]
    for key, title, run in SECTIONS:
        if wanted(key):
            lines += ["", f"### {title}", "", run()]
    report = "\n".join(lines) + "\n"
    if ONLY:
        print(report)  # a partial run: the saved results stay a whole run's
        return
    data = {
        "machine": machine(),
        "date": date,
        "http": http.results,
        "idle_memory": {
            "connections": idle_memory.CONNECTIONS,
            "servers": idle_memory.results,
        },
        "frameworks": frameworks.results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(report)
    (RESULTS / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    chart.render(data, RESULTS / "latest.png")
    print(report)


if __name__ == "__main__":
    main()
