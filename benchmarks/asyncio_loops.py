"""The same asyncio Protocol server on the default loop and on ngxffi's NgxSelector.

A minimal HTTP/1.1 keep-alive responder (python_servers.py's ``HttpProtocol``) runs
in its own process pinned to CPU 0; wrk, pinned to CPU 1, drives it with 50 connections,
measured the way http.py measures every server (a fresh server per run, a warm-up,
rounds alternating the two loops, medians). Per loop: the median req/s and the
server's CPU time per request, split user/kernel, read from psutil around the
measured run. CPU per request is the deciding figure: when wrk saturates its core,
req/s says little.
"""

from __future__ import annotations

import http

LOOPS = {
    "asyncio": "asyncio default (EpollSelector)",
    "ngxffi-asyncio": "asyncio on ngxffi NgxSelector",
}
SCENARIO = http.Scenario("asyncio_loops", "asyncio loops", tuple(LOOPS))


def main() -> str:
    medians = http.interleaved(SCENARIO)
    base = medians["asyncio"]
    lines = [
        "| loop | req/s | server user µs/req | server kernel µs/req | "
        "server CPU µs/req | CPU vs default |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, m in medians.items():
        cpu = m.user_us + m.kernel_us
        lines.append(
            f"| {LOOPS[kind]} | {m.rate:,.0f} | {m.user_us:.2f} | {m.kernel_us:.2f} | "
            f"{cpu:.2f} | {cpu / (base.user_us + base.kernel_us):.2f} |"
        )
    lines += ["", http.setup(SCENARIO), *http.error_note(medians)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
