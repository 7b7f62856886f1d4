"""The io_uring binding choice, measured. ngxffi's io_uring event module makes its
loop turns with raw ``io_uring_setup`` and ``io_uring_enter`` syscalls on rings it
maps itself (src/ngx_uring.c), not through liburing; ``benchmarks/uring_binding.c``
and ``uring_binding_rings.c`` (whose comments say what each method does) time the
same turn both ways, epoll beside them, on two workloads:

* ``turn``: an eventfd written, then the wait for its readiness: ``epoll_wait`` on an
  EPOLLET registration, or a multishot ``IORING_OP_POLL_ADD``'s completion;
* ``life``: a connection's life as the event core sees it: a fresh socketpair with a
  byte to read, registered, one wait, closed (on io_uring the close's cancel goes
  with the next turn's poll in its one ``io_uring_enter``).

The section installs liburing-dev when its header is missing (apt-get, as root;
otherwise it says so and measures raw io_uring and epoll only), builds the program
with ``cc`` into a temporary directory, and runs each workload and method in a
process of its own pinned to one CPU, in 5 interleaved rounds (every other one in
the reverse order). It reports the median ns per turn of the process's CPU time
(the machine is shared: wall-clock time counts others' moments on the CPU too) and
of wall-clock time, what the first is above the floor (the same turn with no event
method), and raw / liburing as the median of the per-round ratios, each round's
beside it.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apt_get

SOURCES = [
    Path(__file__).with_name(f"{n}.c") for n in ("uring_binding", "uring_binding_rings")
]
HEADER = Path("/usr/include/liburing.h")
PACKAGE = "liburing-dev"
ROUNDS = 5
TURNS = {"turn": 300_000, "life": 40_000}  # timed per run, after a tenth untimed
WORKLOADS = {"turn": "one turn", "life": "a connection's life"}
FLOORS = {
    "turn": "(floor: the eventfd write alone)",
    "life": "(floor: socketpair, send, both closes)",
}
METHODS = ("floor", "epoll", "raw", "liburing")
SETUPS = {
    "defer": "SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL",
    "plain": "SUBMIT_ALL (the kernel refused DEFER_TASKRUN)",
}


@dataclass
class Case:
    """One workload on one method: each round's ns per turn (of the process's CPU
    time, and wall-clock), or why it failed."""

    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    enters: list[float] = field(default_factory=list)  # raw only
    setup: str = ""
    error: str | None = None

    def add(self, result: dict[str, Any]) -> None:
        if "error" in result:
            self.error = str(result["error"])
            return
        self.cpu.append(float(result["cpu_ns"]))
        self.wall.append(float(result["ns"]))
        self.setup = str(result["setup"])
        if "enters" in result:
            self.enters.append(float(result["enters"]))


Cases = dict[tuple[str, str], Case]


def liburing_missing() -> str | None:
    """None when liburing's header is installed (by apt-get now, if need be); else
    why it is not."""
    if HEADER.exists() or (apt_get.install([PACKAGE]) and HEADER.exists()):
        return None
    if os.geteuid() != 0:
        return f"{PACKAGE} is not installed (not root: apt-get install {PACKAGE})"
    return f"apt-get install {PACKAGE} failed"


@functools.cache
def liburing_label() -> str:
    """liburing with liburing-dev's Debian version, where dpkg knows it."""
    try:
        query = ["dpkg-query", "-W", "-f", "${Version}", PACKAGE]
        version = subprocess.run(query, capture_output=True, text=True).stdout
    except FileNotFoundError:
        version = ""
    return f"liburing {version.strip()}".strip()


def build(directory: Path, liburing: bool) -> Path:
    """The program compiled into directory, with liburing or without it."""
    binary = directory / "uring_binding"
    with_lib = ["-DNGXFFI_LIBURING"] if liburing else []
    command = ["cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", *with_lib]
    command += ["-o", str(binary), *map(str, SOURCES)]
    command += ["-luring"] if liburing else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}:\n{done.stderr}")
    return binary


def run_once(binary: Path, workload: str, method: str, cpu: int) -> dict[str, Any]:
    """One run of the program, pinned to cpu: the JSON object it prints."""
    done = subprocess.run(
        [str(binary), workload, method, str(TURNS[workload])],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(
            f"{binary.name} {workload} {method}: exit {done.returncode}, "
            f"{done.stderr.strip()!r}"
        ) from None
    return result


def measure(binary: Path, methods: list[str], cpu: int) -> Cases:
    """Every workload on every method, in interleaved rounds, every other one in
    the reverse order (a run can slow the next one down: its process's teardown);
    a case that failed runs no more."""
    cases = {(w, m): Case() for w in WORKLOADS for m in methods}
    order = list(cases.items())
    for i in range(ROUNDS):
        for (workload, method), case in order if i % 2 == 0 else order[::-1]:
            if case.error is None:
                case.add(run_once(binary, workload, method, cpu))
    return cases


def label(workload: str, method: str) -> str:
    return {
        "floor": FLOORS[workload],
        "epoll": "epoll_wait, EPOLLET",
        "raw": "raw io_uring syscalls, mapped rings (ngxffi's)",
        "liburing": liburing_label(),
    }[method]


def medians(cases: Cases) -> list[str]:
    lines = ["| workload | method | CPU ns/turn | over the floor | wall ns/turn |"]
    lines.append("|---|---|---:|---:|---:|")
    for (workload, method), case in cases.items():
        name = f"| {WORKLOADS[workload]} | {label(workload, method)} |"
        floor = cases[workload, "floor"]
        if case.error is not None:
            lines.append(f"{name} failed: {case.error} | | |")
            continue
        cpu, wall = statistics.median(case.cpu), statistics.median(case.wall)
        over = (
            f"{cpu - statistics.median(floor.cpu):,.0f}"
            if method != "floor" and floor.error is None
            else ""
        )
        lines.append(f"{name} {cpu:,.0f} | {over} | {wall:,.0f} |")
    return lines


def paired(raw: list[float], lib: list[float]) -> tuple[float, list[float]]:
    """The median of the per-round ratios raw / liburing, and those."""
    each = [r / b for r, b in zip(raw, lib, strict=True)]
    return statistics.median(each), each


def ratios(cases: Cases) -> list[str]:
    lines = [
        "| raw / liburing | CPU, median of per-round ratios | each round | "
        "wall-clock, the same |",
        "|---|---:|---|---:|",
    ]
    for workload, name in WORKLOADS.items():
        raw, lib = cases[workload, "raw"], cases[workload, "liburing"]
        failed = raw.error or lib.error
        if failed is not None:
            lines.append(f"| {name} | not measured: {failed} | | |")
            continue
        cpu, each = paired(raw.cpu, lib.cpu)
        shown = ", ".join(f"{x:.3f}" for x in each)
        wall, _ = paired(raw.wall, lib.wall)
        lines.append(f"| {name} | {cpu:.3f} | {shown} | {wall:.3f} |")
    return lines


def rings_note(cases: Cases) -> str:
    setups = {SETUPS[c.setup] for (_, m), c in cases.items() if m == "raw" and c.cpu}
    if not setups:
        return "no io_uring ring could be made (the table says why)"
    enters = [
        f"{statistics.median(cases[w, 'raw'].enters):.2f} ({WORKLOADS[w]})"
        for w in WORKLOADS
        if cases[w, "raw"].enters
    ]
    return (
        f"rings set up {' / '.join(sorted(setups))}; raw io_uring made "
        f"{', '.join(enters)} io_uring_enter calls per turn"
    )


def workload_note(cases: Cases, cpu: int) -> str:
    """The sentence that says what was run."""
    return (
        "Workload: one turn is an eventfd written then the wait for its readiness "
        "(epoll_wait on an EPOLLET registration, or a multishot IORING_OP_POLL_ADD's "
        "completion through one io_uring_enter with GETEVENTS | EXT_ARG); a "
        "connection's life is a fresh AF_UNIX socketpair with a byte to read, "
        "registered, one wait, closed, the io_uring close's ASYNC_CANCEL going with "
        f"the next turn's poll. {TURNS['turn']:,} turns and {TURNS['life']:,} lives "
        f"per run after a tenth more untimed, each run a process of its own pinned to "
        f"CPU {cpu}, {ROUNDS} interleaved rounds (every other one in the reverse "
        f"order); {rings_note(cases)}. CPU: the process's own CPU time per turn, "
        "which leaves out others' moments on the CPU (all of a turn's work, wakeups "
        "and the ring's task work included, is done in the process)."
    )


def main() -> str:
    missing = liburing_missing()
    methods = [m for m in METHODS if m != "liburing" or missing is None]
    cpu = max(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="uring-binding-") as tmp:
        cases = measure(build(Path(tmp), missing is None), methods, cpu)
    lines = [*medians(cases), ""]
    if missing is None:
        lines += [*ratios(cases), ""]
    else:
        lines += [f"liburing not measured: {missing}.", ""]
    return "\n".join([*lines, workload_note(cases, cpu)])


if __name__ == "__main__":
    print(main())
