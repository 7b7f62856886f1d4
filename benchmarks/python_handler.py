"""User CPU per keep-alive request of the Python request path: an HttpServer whose
handler is a Python callable, beside uvloop's raw asyncio.Protocol server.

Handlers (each an HttpServer on one cycle, the C fast path off: ``fixed=None``):

* ``fixed``: ``lambda r: RESPONSE``, one ``Response(200, b"hello")`` made once;
* ``fresh``: a new ``Response(200, b"hello")`` per request.

``python benchmarks/python_handler.py`` measures each (and ``uvloop`` of servers.py)
as http.py's keep-alive scenario does: the server fresh and pinned to CPU 0, wrk
``-t1 -c50`` on CPU 1, 1 s warm-up, a 3 s measured run, psutil CPU times of the
server before and after, divided by the requests; the median of ``ROUNDS`` rounds,
servers alternating. ``python benchmarks/python_handler.py serve KIND PORT`` runs
one server until killed (under valgrind's callgrind, say, to count instructions).
"""

from __future__ import annotations

import http as bench  # benchmarks/http.py: sys.path[0] is this directory
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import servers

from ngxffi.http.message import Handler, Response

RESPONSE_BODY = b"hello"
KINDS = ("fixed", "fresh", "uvloop")
ROUNDS = 2 if servers.QUICK else 5
SECONDS = 1 if servers.QUICK else 3


def handler(kind: str) -> Handler:
    if kind == "fixed":
        response = Response(200, RESPONSE_BODY)
        return lambda request: response
    if kind == "fresh":
        return lambda request: Response(200, RESPONSE_BODY)
    raise SystemExit(f"unknown handler {kind!r}")


def serve(kind: str, port: int) -> None:
    """An HttpServer with handler ``kind`` on 127.0.0.1:``port``, as a worker runs
    one (ngxffi.process.worker), until killed."""
    from ngxffi.event.accept import add_listening
    from ngxffi.event.cycle import Cycle
    from ngxffi.event.event import process_events_and_timers
    from ngxffi.event.listening import Listening, open_listening_sockets
    from ngxffi.http.core import HttpCoreConf
    from ngxffi.http.server import HttpServer

    conf = HttpCoreConf(keepalive_requests=1_000_000_000)
    ls = Listening(("127.0.0.1", port), print, backlog=servers.BACKLOG)
    open_listening_sockets([ls])
    cycle = Cycle(1024)
    server = HttpServer(cycle, handler(kind), conf, fixed=None)  # no C fast path
    ls.handler = server.init_connection
    add_listening(cycle, [ls])
    while True:
        process_events_and_timers(cycle)


def measure(kind: str) -> tuple[float, float, float]:
    """One fresh server pinned to CPU 0: (req/s, user µs/req, kernel µs/req)."""
    scenario = bench.SCENARIOS[0]  # keep-alive, one worker, pinned
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as name:
        port = servers.free_port()
        script = str(Path(__file__).resolve())
        server = servers.Server(port, [], Path(name))
        argv = (
            [sys.executable, script, "serve", kind, str(port)]
            if kind != "uvloop"
            else servers.commands(kind, Path(name), port, 1)[0]
        )
        try:
            server.popens.append(
                subprocess.Popen(argv, preexec_fn=servers.preexec({0}))
            )
            server.wait_listening()
            bench.wrk(scenario, server.url, bench.WARMUP)
            processes = server.processes()
            user0, kernel0 = bench.cpu_times(processes)
            out = bench.wrk(scenario, server.url, SECONDS)
            user1, kernel1 = bench.cpu_times(processes)
        finally:
            for popen in server.popens:
                servers.stop(popen)
    requests = bench.number(r"(\d+) requests in", out)
    errors = bench.wrk_errors(out)
    if errors:
        print(f"{kind}: wrk errors {errors}", file=sys.stderr)
    return (
        bench.number(r"Requests/sec:\s+([\d.]+)", out),
        (user1 - user0) / requests * 1e6,
        (kernel1 - kernel0) / requests * 1e6,
    )


def main() -> None:
    runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in KINDS}
    for _ in range(ROUNDS):
        for kind in KINDS:
            runs[kind].append(measure(kind))
    print("| server | req/s | user µs/req | kernel µs/req |")
    print("|---|---:|---:|---:|")
    for kind, kind_runs in runs.items():
        rate, user, kernel = (
            statistics.median(f) for f in zip(*kind_runs, strict=True)
        )
        print(f"| {kind} | {rate:,.0f} | {user:.2f} | {kernel:.2f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        main()
