"""Frameworks on three event loops: aiohttp and uvicorn hellos on the default asyncio
loop, on ngxffi's NgxSelector and on uvloop (the servers: framework_servers.py).

Two workloads, each answering ``GET /`` with ``Hello, world``: an aiohttp
``web.Application`` (``web.run_app``, access log off) and a raw ASGI app under
uvicorn (``--http httptools``, access log off, one worker, ``--loop`` given the loop
factory). Each runs on ``asyncio.new_event_loop``, ``ngxffi.selector:new_event_loop``
and ``uvloop.new_event_loop``, and is measured as http.py measures every server (its
``rounds``): a fresh server per run pinned to CPU 0, wrk ``-t1 -c50`` pinned to CPU 1,
a warm-up, rounds alternating the three loops, medians, the server's CPU time per
request (user, kernel) read with psutil around the measured run.

The ratios are medians of ratios paired within a round: each loop's run against the
default loop's of the same round, and against uvloop's. The machine's drift from round
to round disturbs those less than a ratio of medians; they are the figures to read.
"""

from __future__ import annotations

import http
from dataclasses import asdict
from importlib.metadata import version

import framework_servers
import servers
from framework_servers import FRAMEWORKS, LOOP_LABELS, LOOPS
from servers import Content

CONTENT = Content(body=framework_servers.BODY)
TITLES = {
    "aiohttp": "aiohttp `web.Application`, hello",
    "uvicorn": "uvicorn, raw ASGI app, hello (`--http httptools`)",
}
NOTES = {
    "aiohttp": "`web.run_app`, access log off, aiohttp's C parser",
    "uvicorn": "`python -m uvicorn --loop FACTORY --http httptools --no-access-log "
    "--workers 1`, httptools {httptools}",
}
SCENARIOS = {
    framework: http.Scenario(
        f"frameworks_{framework}",
        TITLES[framework],
        tuple(f"{framework}-{loop}" for loop in LOOPS),
        content=CONTENT,
        note=f"{framework} {version(framework)}: "
        + NOTES[framework].format(httptools=version("httptools"))
        + f"; uvloop {version('uvloop')}.",
    )
    for framework in FRAMEWORKS
}
HEADER = [
    "| loop | req/s | user µs/req | kernel µs/req | CPU µs/req | req/s vs default | "
    "user vs default | CPU vs default | req/s vs uvloop | CPU vs uvloop |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
PAIRED_NOTE = (
    " Ratios: medians of the per-round ratios, to the default loop's run and to "
    "uvloop's of the same round."
)

# the loop's extension, as it shows in the memory maps of a server running it
EXTENSIONS = {"ngxffi": "ngxffi/_ngx.", "uvloop": "uvloop/loop."}

# each framework's medians per loop, for run.py's JSON
results: dict[str, dict[str, dict[str, object]]] = {}


def table(framework: str, runs: dict[str, list[http.Run]]) -> list[str]:
    """One row per loop: medians, and its ratios paired with the default loop and
    with uvloop."""
    lines = list(HEADER)
    for loop in LOOPS:
        kind = f"{framework}-{loop}"
        m = http.median_run(runs[kind])
        rate, user, cpu = http.paired(runs, kind, base=f"{framework}-asyncio")
        uv_rate, _, uv_cpu = http.paired(runs, kind, base=f"{framework}-uvloop")
        lines.append(
            f"| {LOOP_LABELS[loop]} | {m.rate:,.0f} | {m.user_us:.2f} | "
            f"{m.kernel_us:.2f} | {m.user_us + m.kernel_us:.2f} | {rate:.3f} | "
            f"{user:.3f} | {cpu:.3f} | {uv_rate:.3f} | {uv_cpu:.3f} |"
        )
    return lines


def check_loops(scenario: http.Scenario) -> None:
    """Start each server once and check, from its memory maps, that it runs the loop
    it is named after: ngxffi's extension mapped in the ngxffi server only, uvloop's
    in the uvloop server only (a factory that fell back to the default loop would
    otherwise be measured under another loop's name)."""
    for kind in scenario.kinds:
        with servers.running(kind, content=scenario.content) as server:
            paths = [m.path for m in server.worker().memory_maps()]
        loop = kind.partition("-")[2]
        found = {name for name, ext in EXTENSIONS.items() if ext in "\n".join(paths)}
        if found != {loop} & EXTENSIONS.keys():
            raise RuntimeError(f"{kind}: the loop extensions mapped are {found}")


def section(framework: str) -> str:
    scenario = SCENARIOS[framework]
    check_loops(scenario)
    runs = http.rounds(scenario)
    medians = {kind: http.median_run(r) for kind, r in runs.items()}
    results[framework] = {kind: asdict(m) for kind, m in medians.items()}
    lines = [
        f"#### {scenario.title}",
        "",
        *table(framework, runs),
        "",
        http.setup(scenario) + PAIRED_NOTE,
        *http.error_note(medians),
    ]
    return "\n".join(lines)


def main() -> str:
    return "\n\n".join(section(framework) for framework in FRAMEWORKS)


if __name__ == "__main__":
    print(main())
