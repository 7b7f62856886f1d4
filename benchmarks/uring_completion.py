"""Completion-based I/O against readiness for the ``return`` case: the kernel time per
request of io_uring's completions (multishot accept, multishot recv into a provided
buffer ring, one send per batch of answers) against epoll's readiness, both in plain
C doing the same work (uring_return.c), beside ``ngxffi serve`` on epoll and, when
this ngxffi has it, ``ngxffi serve --use io_uring`` (its readiness module).

Every server answers ``GET /`` with ngxffi's ``return 200 "hello"`` (the same head
and body), and is measured as http.py's ``keepalive`` scenario measures a server (its
``rounds``): a fresh server per run pinned to CPU 0, wrk ``-t1 -c50`` pinned to
CPU 1, a warm-up, rounds alternating the servers, the server's user and kernel CPU
time per request read with psutil around the measured run. The C file is compiled
here with ``cc`` into a temporary directory first.

The figure to read is the kernel time per request against the C epoll server's,
as the median of the ratios paired within a round: the two C servers share all
their user-space work, so the kernel column compares the two interfaces and little
else.
"""

from __future__ import annotations

import atexit
import dataclasses
import http
import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import servers
from servers import LABELS, QUICK

SOURCE = Path(__file__).with_name("uring_return.c")
CFLAGS = ("-std=c11", "-O2", "-Wall", "-Wextra", "-Werror")
ROUNDS = 2 if QUICK else 5  # 5 rounds: about 70 s, 90 s with ngxffi on io_uring
BASE = "c-epoll"
URING_NGXFFI = "ngxffi-uring"
C_MODES = {"c-epoll": "epoll", "c-uring": "uring"}
LABELS.update(
    {
        "c-epoll": "C, epoll (readiness)",
        "c-uring": "C, io_uring (completions)",
    }
)
SCENARIO = http.Scenario(
    "uring_completion",
    "Completion-based I/O, `return 200`",
    (*C_MODES, "ngxffi"),
    note='C: benchmarks/uring_return.c; ngxffi: `return = [200, "hello"]` '
    "(the C read handler).",
)
HEADER = [
    "| server | req/s | user µs/req | kernel µs/req | CPU µs/req | kernel vs C epoll "
    "| CPU vs C epoll | req/s vs C epoll |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]


def build() -> Path:
    """uring_return.c compiled into a temporary directory (removed at exit)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-uring-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    binary = tmp / "uring_return"
    command = ["cc", *CFLAGS, "-o", str(binary), str(SOURCE)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return binary


def c_server(binary: Path, mode: str) -> Callable[[Path, int], list[str]]:
    def command(_tmp: Path, port: int) -> list[str]:
        return [str(binary), mode, str(port)]

    return command


def register(binary: Path) -> None:
    """The C servers as kinds servers.running starts (ngxffi on io_uring is one of
    its own: ``use = "io_uring"``)."""
    for kind, mode in C_MODES.items():
        servers.COMMANDS[kind] = c_server(binary, mode)


def holds_uring(server: servers.Server) -> bool:
    """Whether the server's process has an io_uring instance open (so that a
    server that fell back to epoll is not measured as io_uring's)."""
    fds = Path(f"/proc/{server.worker().pid}/fd")
    return any("io_uring" in os.readlink(fd) for fd in fds.iterdir())


def refusals() -> list[str]:
    """What the io_uring C server says the kernel refused (nothing: all granted),
    from its log after one checked request."""
    with servers.running("c-uring") as server:
        server.check()
        if not holds_uring(server):
            raise RuntimeError(
                f"the io_uring C server has no io_uring:\n{server.logs()}"
            )
        logs = server.logs()
    return [line for line in logs.splitlines() if "refused" in line]


def uring_missing() -> str:
    """Why ngxffi on io_uring is not measured, or "": this ngxffi does not start
    with ``--use io_uring`` (its last log line), or runs without io_uring."""
    try:
        with servers.running(URING_NGXFFI) as server:
            server.check()
            return "" if holds_uring(server) else "it runs without an io_uring"
    except servers.StartFailed as failed:
        return f"it does not start: {failed.reason}"


def kernel(run: http.Run) -> float:
    return run.kernel_us


def cpu(run: http.Run) -> float:
    return run.user_us + run.kernel_us


def rate(run: http.Run) -> float:
    return run.rate


def paired(
    runs: dict[str, list[http.Run]], kind: str, figure: Callable[[http.Run], float]
) -> float:
    """Median over the rounds of kind's figure divided by the C epoll server's of
    the same round. (No user-time ratio: the C servers' few ticks of user time
    per run make one mostly noise, or a division by zero.)"""
    pairs = zip(runs[kind], runs[BASE], strict=True)
    return statistics.median(figure(r) / figure(b) for r, b in pairs)


def table(runs: dict[str, list[http.Run]]) -> list[str]:
    lines = list(HEADER)
    for kind, kind_runs in runs.items():
        m = http.median_run(kind_runs)
        ratios = " | ".join(f"{paired(runs, kind, f):.3f}" for f in (kernel, cpu, rate))
        lines.append(
            f"| {LABELS[kind]} | {m.rate:,.0f} | {m.user_us:.2f} | "
            f"{m.kernel_us:.2f} | {cpu(m):.2f} | {ratios} |"
        )
    return lines


def verdict(runs: dict[str, list[http.Run]]) -> str:
    """The sentence on what the table shows: io_uring's kernel time against
    epoll's, in the C servers."""
    ratio = paired(runs, "c-uring", kernel)
    medians = {kind: http.median_run(runs[kind]).kernel_us for kind in C_MODES}
    way = "less" if ratio < 1 else "more"
    return (
        f"With completions the C server spends {abs(1 - ratio):.0%} {way} kernel "
        f"time per request than with epoll's readiness ({ratio:.3f}x; "
        f"{medians['c-uring']:.2f} µs against {medians['c-epoll']:.2f} µs in "
        "medians), for the same user-space work."
    )


def main() -> str:
    register(build())
    try:
        refused = refusals()
    except servers.StartFailed as failed:  # the kernel refused the buffer ring
        return f"Not available: the io_uring C server does not start: {failed.reason}."
    missing = uring_missing()
    measured = SCENARIO.kinds if missing else (*SCENARIO.kinds, URING_NGXFFI)
    scenario = dataclasses.replace(SCENARIO, kinds=measured)
    runs = http.rounds(scenario, ROUNDS)
    medians = {kind: http.median_run(r) for kind, r in runs.items()}
    setup = http.setup(scenario).replace(
        f"{http.ROUNDS} interleaved", f"{ROUNDS} interleaved"
    )
    features = "; ".join(refused) if refused else "all granted"
    return "\n".join(
        [
            *table(runs),
            "",
            verdict(runs),
            "",
            f"{setup} Ratios: medians of the per-round ratios to the C epoll "
            "server's run of the same round. The C io_uring server asks for "
            "SINGLE_ISSUER, DEFER_TASKRUN, SUBMIT_ALL, multishot accept and recv and "
            f"256 provided buffers of 2 KiB: {features}."
            + (f" ngxffi serve on io_uring: {missing}." if missing else ""),
            *http.error_note(medians),
        ]
    )


if __name__ == "__main__":
    print(main())
