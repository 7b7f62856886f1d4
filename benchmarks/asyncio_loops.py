"""The same asyncio Protocol server on the default loop and on ngxffi's NgxSelector.

A minimal HTTP/1.1 keep-alive responder (one fixed response per request) runs in its
own process pinned to CPU 0; wrk, pinned to CPU 1, drives it with 50 connections for
a few seconds per round. Rounds alternate the two loops. Per loop: the median req/s
and the server's CPU time per request, split user/kernel, read from psutil around the
measured run. CPU per request is the deciding figure: when wrk saturates its core,
req/s says little.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import psutil

ROUNDS = 5
SECONDS = 3
CONNECTIONS = 50
ROOT = Path(__file__).resolve().parent.parent

SERVER = r"""
import asyncio, sys

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 5\r\n\r\nhello")


class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        n = self.buffer.count(b"\r\n\r\n")
        if n:
            self.buffer = self.buffer[self.buffer.rindex(b"\r\n\r\n") + 4:]
            self.transport.write(RESPONSE * n)


async def main():
    server = await asyncio.get_running_loop().create_server(
        Http, "127.0.0.1", 0, backlog=511)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


if sys.argv[1] == "ngxffi":
    from ngxffi.selector import run
    run(main())
else:
    asyncio.run(main())
"""

LOOPS = ("asyncio default (EpollSelector)", "asyncio on ngxffi NgxSelector")


def one_run(kind: str) -> tuple[float, float, float]:
    """(req/s, user µs/request, kernel µs/request) of one server run under wrk."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, "ngxffi" if "ngxffi" in kind else "default"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}/"
        wrk = ["taskset", "-c", "1", "wrk", "-t1", f"-c{CONNECTIONS}"]
        subprocess.run([*wrk, "-d1s", url], capture_output=True, check=True)  # warm up
        proc = psutil.Process(server.pid)
        before = proc.cpu_times()
        out = subprocess.run(
            [*wrk, f"-d{SECONDS}s", url], capture_output=True, text=True, check=True
        ).stdout
        after = proc.cpu_times()
    finally:
        server.kill()
        server.wait()
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    user = (after.user - before.user) / requests * 1e6
    kernel = (after.system - before.system) / requests * 1e6
    return rate, user, kernel


def main() -> str:
    samples: dict[str, list[tuple[float, float, float]]] = {k: [] for k in LOOPS}
    for _ in range(ROUNDS):
        for kind in LOOPS:
            samples[kind].append(one_run(kind))
    medians = {
        kind: tuple(statistics.median(s[i] for s in runs) for i in range(3))
        for kind, runs in samples.items()
    }
    base = medians[LOOPS[0]]
    lines = [
        "| loop | req/s | server user µs/req | server kernel µs/req | "
        "server CPU µs/req | CPU vs default |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, (rate, user, kernel) in medians.items():
        ratio = (user + kernel) / (base[1] + base[2])
        lines.append(
            f"| {kind} | {rate:,.0f} | {user:.2f} | {kernel:.2f} | "
            f"{user + kernel:.2f} | {ratio:.2f} |"
        )
    lines += [
        "",
        f"{ROUNDS} interleaved rounds of {SECONDS} s, wrk -t1 "
        f"-c{CONNECTIONS}, server on CPU 0, wrk on CPU 1; medians.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
