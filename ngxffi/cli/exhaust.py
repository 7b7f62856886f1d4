"""``ngxffi exhaust``: the fd-exhaustion lab.

Starts a server (:mod:`ngxffi.cli.exhaust_server`) in a child process under a given
RLIMIT_NOFILE, then a first wave of ``--clients`` concurrent clients that each send a
request, wait for the response and hold the connection ``--hold`` seconds; when they
are all done, a second, small wave checks that the server is healthy. Meanwhile psutil
samples the server every 100 ms: CPU time, open fds and voluntary context switches
(each wait that blocks and wakes is one: "wake-ups"). "Exhausted" means the server's
open fds are within 2 of the limit.

Reported: clients served, refused (connect refused), reset (closed or reset before a
response), timed out; the server's CPU % and wake-ups per second while exhausted; peak
fds; the wave-1 duration; recovery (from the last wave-1 release to the first wave-2
response); whether wave 2 was all served.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from ngxffi.event.listening import EMFILE_POLICIES, Listening

END = b"\r\n\r\n"
REQUEST = b"GET / HTTP/1.1\r\nHost: lab" + END
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
SAMPLE_S = 0.1


def add_parser(sub: Any) -> None:
    p = sub.add_parser("exhaust", help="fd-exhaustion lab: a server under ulimit -n")
    p.add_argument("--server", choices=("ngxffi", "asyncio"), default="ngxffi")
    p.add_argument(
        "--policy",
        choices=EMFILE_POLICIES,
        default=Listening.emfile_policy,
        help="EMFILE policy of the ngxffi server (default: nginx's backoff)",
    )
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="re-enable accepting only when the back-off timer fires, "
        "as nginx does (default: as soon as a connection closes)",
    )
    p.add_argument("--nofile", type=int, default=64, help="the server's RLIMIT_NOFILE")
    p.add_argument("--clients", type=int, default=300, help="clients in the first wave")
    p.add_argument(
        "--hold",
        type=float,
        default=2.0,
        help="seconds each client holds its connection after the response",
    )
    p.add_argument(
        "--second-wave",
        type=int,
        default=20,
        metavar="N",
        help="clients of the health-check wave (default 20)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds a client waits for its response",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show the server's error log (EMFILE lines and the like)",
    )
    p.set_defaults(run=run)


@dataclass
class Outcome:
    served: int = 0
    refused: int = 0
    reset: int = 0
    timed_out: int = 0
    first_response: float | None = None  # monotonic time


@dataclass
class Samples:
    cpu_s: float = 0.0  # server CPU seconds while exhausted
    wakeups: int = 0
    exhausted_s: float = 0.0
    peak_fds: int = 0
    log: list[tuple[float, int, int]] = field(default_factory=list)  # t, fds, served


async def client(port: int, hold: float, timeout: float, out: Outcome) -> None:
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout
        )
        writer.write(REQUEST)
        response = await asyncio.wait_for(reader.readexactly(len(RESPONSE)), timeout)
        if response != RESPONSE:
            out.reset += 1
            return
        out.served += 1
        if out.first_response is None:
            out.first_response = time.monotonic()
        await asyncio.sleep(hold)
    except ConnectionRefusedError:
        out.refused += 1
    except (ConnectionError, asyncio.IncompleteReadError):
        out.reset += 1
    except TimeoutError:
        out.timed_out += 1
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def sample(
    proc: psutil.Process, nofile: int, samples: Samples, out: Outcome, progress: bool
) -> None:
    """Every 100 ms: the server's CPU, fds and wake-ups; the exhausted share."""
    start = time.monotonic()
    last = None
    while True:
        with proc.oneshot():
            cpu = proc.cpu_times()
            fds = proc.num_fds()
            switches = proc.num_ctx_switches().voluntary
        now = time.monotonic()
        samples.peak_fds = max(samples.peak_fds, fds)
        exhausted = fds >= nofile - 2
        if last is not None and exhausted and last[3]:
            samples.cpu_s += (cpu.user + cpu.system) - (last[1].user + last[1].system)
            samples.wakeups += switches - last[2]
            samples.exhausted_s += now - last[0]
        last = (now, cpu, switches, exhausted)
        samples.log.append((now - start, fds, out.served))
        if progress and len(samples.log) % 10 == 0:
            print(
                f"  {now - start:5.1f}s  served {out.served:4d}  fds {fds:4d}",
                file=sys.stderr,
                flush=True,
            )
        await asyncio.sleep(SAMPLE_S)


async def experiment(
    args: argparse.Namespace, port: int, proc: psutil.Process
) -> dict[str, Any]:
    wave1, wave2, samples = Outcome(), Outcome(), Samples()
    sampler = asyncio.create_task(
        sample(proc, args.nofile, samples, wave1, not args.json)
    )
    start = time.monotonic()
    await asyncio.gather(
        *(client(port, args.hold, args.timeout, wave1) for _ in range(args.clients))
    )
    released = time.monotonic()
    await asyncio.gather(
        *(client(port, 0, args.timeout, wave2) for _ in range(args.second_wave))
    )
    sampler.cancel()
    recovery = wave2.first_response
    exhausted = samples.exhausted_s or float("inf")  # never exhausted: rates are 0
    return {
        "server": args.server,
        "policy": args.policy if args.server == "ngxffi" else "asyncio",
        "resume": args.resume if args.server == "ngxffi" else None,
        "nofile": args.nofile,
        "clients": args.clients,
        "served": wave1.served,
        "refused": wave1.refused,
        "reset": wave1.reset,
        "timed_out": wave1.timed_out,
        "wave_s": round(released - start, 2),
        "cpu_percent_exhausted": round(100 * samples.cpu_s / exhausted, 1),
        "wakeups_per_s_exhausted": round(samples.wakeups / exhausted, 1),
        "exhausted_s": round(samples.exhausted_s, 2),
        "peak_fds": samples.peak_fds,
        "recovery_ms": None
        if recovery is None
        else round(1000 * (recovery - released)),
        "healthy_after": wave2.served == args.second_wave,
    }


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], int]:
    """The server in a child under RLIMIT_NOFILE = --nofile, as `ulimit -n` would."""
    nofile = args.nofile

    def limit() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ngxffi.cli.exhaust_server",
            args.server,
            args.policy,
            "resume" if args.resume else "no-resume",
        ],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
        stderr=None if args.verbose else subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise SystemExit(f"the lab server did not start (nofile {nofile} too low?)")
    return proc, int(line)


def format_table(result: dict[str, Any]) -> str:
    width = max(map(len, result))
    return "\n".join(f"{key:<{width}}  {value}" for key, value in result.items())


def run(args: argparse.Namespace) -> int:
    for name in ("nofile", "clients", "second_wave"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    proc, port = start_server(args)
    try:
        if not args.json:
            print(
                f"{args.server} server (policy {args.policy}) pid {proc.pid} on "
                f"port {port}, RLIMIT_NOFILE {args.nofile}; {args.clients} clients "
                f"holding {args.hold}s",
                file=sys.stderr,
            )
        result = asyncio.run(experiment(args, port, psutil.Process(proc.pid)))
    finally:
        proc.kill()
        proc.wait()
    print(json.dumps(result) if args.json else format_table(result))
    return 0
