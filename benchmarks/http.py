"""HTTP throughput, latency and server CPU per request: nginx, ngxffi, Python servers.

Every server (see servers.py) answers each request with a small ``200 hello``, or,
in the static runs, a file. Each measured run starts the server fresh, checks its
answer once (a 200 of the right length: a 404 is never measured), drives it with wrk
for a 1 s warm-up, then for the measured run, reading the server's CPU times (psutil;
all its processes, so a master's workers count) just before and after. Rounds
interleave the servers (A B C…, A B C…) so that a noisy moment hurts them alike;
tables give medians, and each ratio to nginx is the median of the per-round ratios
(each server against the nginx run of its own round), which this VM's drifts from
round to round disturb less than a ratio of medians.

The runs (``SCENARIOS``; ``NGXFFI_BENCH_ONLY=static_1k,app`` runs only those named):

* ``keepalive``: keep-alive, one worker: server pinned to CPU 0, wrk (``-t1 -c50``)
  to CPU 1;
* ``churn``: the same with ``Connection: close`` (a new connection per request);
* ``two_workers``: keep-alive, two workers (ngxffi's and nginx's master with 2
  workers, uvloop in two processes sharing the port with SO_REUSEPORT), nothing
  pinned, wrk ``-t1 -c100``;
* ``static_1k``, ``static_64k``: as ``keepalive``, nginx and ngxffi only, each
  serving a 1 KiB or 64 KiB file from its ``root``;
* ``app``: as ``keepalive``, ngxffi running a user's Python handler
  (hello_app.py; the C read handler only answers ``return``) beside uvloop's raw
  Protocol and nginx's ``return``. When this build of ``ngxffi serve`` does not know
  the ``app`` directive (the server does not start), the run says "not available".

Server CPU per request (user and kernel) is the deciding figure: when wrk saturates
its core, req/s says more about wrk than about the server. The medians are kept in
``results`` for run.py's JSON and chart.
"""

from __future__ import annotations

import re
import statistics
import subprocess
from dataclasses import asdict, dataclass, field

import psutil
import servers
from servers import HELLO, LABELS, QUICK, Content, selected

ROUNDS = 2 if QUICK else 7
SECONDS = 1 if QUICK else 3
WARMUP = 1
ONE_WORKER = ("nginx", "ngxffi", "ngxffi-uring", "asyncio", "uvloop", "selectors")
STATIC = ("nginx", "ngxffi")  # the Python servers serve no files
STATIC_NOTE = (
    "nginx: `root`, `sendfile on`, `open_file_cache off`, otherwise its defaults; "
    "ngxffi: `root` (sendfile)."
)
UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass(frozen=True)
class Scenario:
    """One table: which servers, how many workers, how wrk drives them."""

    key: str
    title: str
    kinds: tuple[str, ...]
    workers: int = 1
    connections: int = 50
    pinned: bool = True
    headers: tuple[str, ...] = ()
    note: str = ""
    content: Content = HELLO
    # the server the run is about: started once first, since it may need a
    # directive this build lacks ("not available" then), and its user CPU per
    # request stated under the table, against user_target_us
    focus: str = ""
    user_target_us: float = 0.0


SCENARIOS = (
    Scenario("keepalive", "Keep-alive, one worker", ONE_WORKER),
    Scenario(
        "churn",
        "Connection churn (`Connection: close`), one worker",
        ONE_WORKER,
        headers=("Connection: close",),
    ),
    Scenario(
        "two_workers",
        "Keep-alive, two workers",
        ("nginx", "ngxffi", "uvloop"),
        workers=2,
        connections=100,
        pinned=False,
        note="Workers: nginx and ngxffi: a master and 2 workers sharing one "
        "listening socket; uvloop: 2 processes, each with its own SO_REUSEPORT "
        "socket on the port.",
    ),
    Scenario(
        "static_1k",
        "Static file, 1 KiB, keep-alive, one worker",
        STATIC,
        content=Content(file_kib=1),
        note=STATIC_NOTE,
    ),
    Scenario(
        "static_64k",
        "Static file, 64 KiB, keep-alive, one worker",
        STATIC,
        content=Content(file_kib=64),
        note=STATIC_NOTE,
    ),
    Scenario(
        "app",
        "A user's Python handler, keep-alive, one worker",
        ("nginx", "ngxffi-app", "uvloop"),
        note=f'ngxffi: `app = "{servers.APP}"` (benchmarks/hello_app.py), '
        "the Python request path; nginx: `return 200`, for scale.",
        focus="ngxffi-app",
        user_target_us=servers.APP_TARGET_US,
    ),
)


@dataclass
class Run:
    """One measured run, or the medians of several (errors summed)."""

    rate: float  # requests/s
    p50_ms: float
    p99_ms: float
    user_us: float  # server user CPU time per request
    kernel_us: float  # server kernel CPU time per request
    errors: dict[str, int] = field(default_factory=dict)


results: dict[str, dict[str, dict[str, object]]] = {}


def wrk(scenario: Scenario, url: str, seconds: int) -> str:
    pin = ["taskset", "-c", "1"] if scenario.pinned else []
    headers = [arg for h in scenario.headers for arg in ("-H", h)]
    command = [*pin, "wrk", "-t1", f"-c{scenario.connections}", "--latency"]
    command += [*headers, f"-d{seconds}s", url]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def cpu_times(processes: list[psutil.Process]) -> tuple[float, float]:
    """Summed (user, kernel) CPU seconds of the processes."""
    times = [p.cpu_times() for p in processes]
    return sum(t.user for t in times), sum(t.system for t in times)


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"{pattern!r} not in wrk's output:\n{text}")
    return float(match.group(1))


def latency_ms(percentile: str, out: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    if match is None:
        raise ValueError(f"no {percentile}% latency in wrk's output:\n{out}")
    return float(match.group(1)) * UNITS_MS[match.group(2)]


def wrk_errors(out: str) -> dict[str, int]:
    """wrk's socket errors and non-2xx/3xx responses, those that are not zero."""
    counts: dict[str, int] = {}
    sockets = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sockets:
        names = ("connect", "read", "write", "timeout")
        counts.update(zip(names, map(int, sockets.groups()), strict=True))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        counts["non-2xx"] = int(bad.group(1))
    return {name: n for name, n in counts.items() if n}


def measure(kind: str, scenario: Scenario) -> Run:
    """One fresh server, a warm-up, and one measured wrk run against it."""
    cpus = {0} if scenario.pinned else None
    with servers.running(kind, scenario.workers, cpus, scenario.content) as server:
        server.check()
        wrk(scenario, server.url, WARMUP)
        processes = server.processes()
        user0, kernel0 = cpu_times(processes)
        out = wrk(scenario, server.url, SECONDS)
        user1, kernel1 = cpu_times(processes)
    requests = number(r"(\d+) requests in", out)
    return Run(
        rate=number(r"Requests/sec:\s+([\d.]+)", out),
        p50_ms=latency_ms("50", out),
        p99_ms=latency_ms("99", out),
        user_us=(user1 - user0) / requests * 1e6,
        kernel_us=(kernel1 - kernel0) / requests * 1e6,
        errors=wrk_errors(out),
    )


def median_run(runs: list[Run]) -> Run:
    """Each figure's median over the runs; the errors summed."""
    errors: dict[str, int] = {}
    for run in runs:
        for name, count in run.errors.items():
            errors[name] = errors.get(name, 0) + count
    figures = ("rate", "p50_ms", "p99_ms", "user_us", "kernel_us")
    medians = {f: statistics.median(getattr(r, f) for r in runs) for f in figures}
    return Run(**medians, errors=errors)


def rounds(scenario: Scenario, count: int = ROUNDS) -> dict[str, list[Run]]:
    """Each server's runs over ``count`` rounds, servers alternating."""
    runs: dict[str, list[Run]] = {kind: [] for kind in scenario.kinds}
    for _ in range(count):
        for kind in scenario.kinds:
            runs[kind].append(measure(kind, scenario))
    return runs


def interleaved(scenario: Scenario, count: int = ROUNDS) -> dict[str, Run]:
    """Median run of each server over ``count`` rounds, servers alternating."""
    return {kind: median_run(r) for kind, r in rounds(scenario, count).items()}


def paired(
    runs: dict[str, list[Run]], kind: str, base: str = "nginx"
) -> tuple[float, float, float]:
    """Median over the rounds of ``kind``'s req/s, user CPU and CPU per request,
    each divided by ``base``'s (nginx's) in the same round."""
    pairs = list(zip(runs[kind], runs[base], strict=True))
    return (
        statistics.median(r.rate / n.rate for r, n in pairs),
        statistics.median(r.user_us / n.user_us for r, n in pairs),
        statistics.median(
            (r.user_us + r.kernel_us) / (n.user_us + n.kernel_us) for r, n in pairs
        ),
    )


def table(runs: dict[str, list[Run]]) -> list[str]:
    lines = [
        "| server | req/s | req/s vs nginx | p50 ms | p99 ms | user µs/req | "
        "kernel µs/req | CPU µs/req | user vs nginx | CPU vs nginx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, kind_runs in runs.items():
        m = median_run(kind_runs)
        rate, user, cpu = paired(runs, kind)
        lines.append(
            f"| {LABELS[kind]} | {m.rate:,.0f} | {rate:.2f} | "
            f"{m.p50_ms:.3f} | {m.p99_ms:.3f} | {m.user_us:.2f} | {m.kernel_us:.2f} | "
            f"{m.user_us + m.kernel_us:.2f} | {user:.2f} | {cpu:.2f} |"
        )
    return lines


def setup(scenario: Scenario) -> str:
    wrk_line = f"wrk -t1 -c{scenario.connections} --latency"
    wrk_line += "".join(f' -H "{h}"' for h in scenario.headers)
    wrk_line += f" http://127.0.0.1:PORT{scenario.content.path}"
    where = (
        "server pinned to CPU 0, wrk to CPU 1"
        if scenario.pinned
        else "nothing pinned: the two workers and wrk share both CPUs"
    )
    return (
        f"{ROUNDS} interleaved rounds; per run a fresh server, {WARMUP} s warm-up, "
        f"{SECONDS} s measured; `{wrk_line}`; {where}; medians."
        + (f" {scenario.note}" if scenario.note else "")
    )


def error_note(medians: dict[str, Run]) -> list[str]:
    """A line naming wrk's errors, when there were any, summed over the rounds."""
    noted = [
        f"{LABELS[kind]}: " + ", ".join(f"{n} {name}" for name, n in m.errors.items())
        for kind, m in medians.items()
        if m.errors
    ]
    return [f"wrk errors over all rounds: {'; '.join(noted)}."] if noted else []


def unavailable(scenario: Scenario) -> str:
    """Why the scenario's focus server does not start (its last log line), or ""."""
    if not scenario.focus:
        return ""
    try:
        with servers.running(scenario.focus, content=scenario.content):
            return ""
    except servers.StartFailed as failed:
        return failed.reason


def method_line(runs: dict[str, list[Run]]) -> list[str]:
    """ngxffi on io_uring against ngxffi on epoll, paired within each round."""
    if "ngxffi-uring" not in runs or "ngxffi" not in runs:
        return []
    rate, user, cpu = paired(runs, "ngxffi-uring", "ngxffi")
    u, e = median_run(runs["ngxffi-uring"]), median_run(runs["ngxffi"])
    return [
        f"**io_uring vs epoll (ngxffi serve):** req/s {rate:.2f}x, user CPU per "
        f"request {user:.2f}x, CPU per request {cpu:.2f}x; kernel µs per request "
        f"{u.kernel_us:.2f} against {e.kernel_us:.2f} (medians of per-round "
        "ratios).",
        "",
    ]


def focus_line(scenario: Scenario, medians: dict[str, Run]) -> list[str]:
    """The focus server's user CPU per request against the scenario's target."""
    if not scenario.focus:
        return []
    user = medians[scenario.focus].user_us
    target = scenario.user_target_us
    verdict = "met" if user <= target else "**not met**"
    return [
        f"**{LABELS[scenario.focus]}: {user:.2f} µs of user CPU per request** "
        f"(median; target ≤ {target} µs: {verdict}).",
        "",
    ]


def section(scenario: Scenario) -> str:
    title = f"#### {scenario.title}"
    missing = unavailable(scenario)
    if missing:
        who = LABELS[scenario.focus]
        return f"{title}\n\nNot available: {who!r} does not start: {missing}."
    runs = rounds(scenario)
    medians = {kind: median_run(r) for kind, r in runs.items()}
    results[scenario.key] = {kind: asdict(m) for kind, m in medians.items()}
    paired_note = " Ratios to nginx: medians of the per-round ratios."
    lines = [
        title,
        "",
        *table(runs),
        "",
        *method_line(runs),
        *focus_line(scenario, medians),
        setup(scenario) + paired_note,
    ]
    return "\n".join([*lines, *error_note(medians)])


def main() -> str:
    return "\n\n".join(section(s) for s in SCENARIOS if selected(s.key))


if __name__ == "__main__":
    print(main())
