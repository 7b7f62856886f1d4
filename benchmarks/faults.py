"""What the fault-injection hooks cost when off (src/ngx_fault.h): the C fast path
with them against the same code built without them, in one run.

``ngxffi serve`` answering ``return 200 hello`` on keep-alive connections (the C read
handler: one recv and one send per request through the ``ngxffi_sys_*`` wrappers, and
the epoll_wait of each batch), as http.py's ``keepalive`` scenario drives it: wrk
``-t1 -c50`` on CPU 1, the server on CPU 0, a fresh server per run, interleaved
rounds. Three builds of the same tree:

* ``ngxffi``: as installed, the hooks in, nothing armed (the off path: one load and
  a predicted branch per call);
* ``ngxffi-nofaults``: built here into a temporary directory with
  ``NGXFFI_NO_FAULTS=1`` (the wrappers are the raw calls), and run from there
  through PYTHONPATH; the build is checked to be that one;
* ``ngxffi-armed``: as installed, with ``NGXFFI_INJECT=openat:ENOENT:0.0``, a rule
  that never fires on a call the fast path does not make: every wrapper takes the
  armed path (a call into ngx_fault.c that finds no rule for it).

Ratios are medians of the per-round ratios to ``ngxffi-nofaults``. wrk's figures move
by a few per cent from run to run, more than the hooks can cost; so the same
comparison is also made exactly, in instructions: a server in one process answers
``REQUESTS`` keep-alive requests in C under callgrind (valgrind, when installed),
counting only inside ``ngxffi_http_fast_read`` and ``ngxffi_epoll_process`` (the C
read handler with its recv and send, and the wait with its decision), per request.
"""

from __future__ import annotations

import atexit
import http
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import servers
from servers import LABELS, QUICK

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("ngxffi-nofaults", "ngxffi", "ngxffi-armed")
ROUNDS = 2 if QUICK else 7
SCENARIO = http.Scenario("faults", "Fault-injection hooks, off", KINDS)
ARMED = "openat:ENOENT:0.0"


def build_without_faults() -> Path:
    """The package built with NGXFFI_NO_FAULTS=1 into a temporary directory (removed
    at exit): the directory to put first on PYTHONPATH."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-nofaults-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    shutil.copytree(ROOT / "src", tmp / "src", ignore=shutil.ignore_patterns("*.o"))
    shutil.copytree(
        ROOT / "ngxffi",
        tmp / "ngxffi",
        ignore=shutil.ignore_patterns("_ngx.*", "__pycache__"),
    )
    shutil.copy2(ROOT / "build_ffi.py", tmp)
    env = {**os.environ, "NGXFFI_NO_FAULTS": "1", "NGXFFI_WERROR": "1"}
    subprocess.run(
        [sys.executable, "build_ffi.py"],
        cwd=tmp,
        env=env,
        check=True,
        capture_output=True,
    )
    probe = "import ngxffi; print(ngxffi.__file__, ngxffi.lib.ngxffi_fault_compiled())"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(tmp)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if out != [str(tmp / "ngxffi" / "__init__.py"), "0"]:
        raise RuntimeError(f"the NGXFFI_NO_FAULTS build is not the one imported: {out}")
    return tmp


REQUESTS = 2000
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
COLLECT = ("ngxffi_http_fast_read", "ngxffi_epoll_process")


def serve_requests(n: int) -> None:
    """Answer n keep-alive requests from one client in this process (callgrind's
    program): the first by Python, the rest by the C read handler."""
    import select
    import socket

    from ngxffi import os as nos
    from ngxffi.event.accept import add_listening
    from ngxffi.event.cycle import Cycle
    from ngxffi.event.event import process_events_and_timers
    from ngxffi.event.listening import Listening, open_listening_sockets
    from ngxffi.http.core import HttpCoreConf
    from ngxffi.http.message import Response
    from ngxffi.http.server import HttpServer

    answer = Response(200, b"hello")
    ls = Listening(("127.0.0.1", 0), print)
    open_listening_sockets([ls])
    cycle = Cycle(16)
    server = HttpServer(
        cycle,
        lambda request: answer,
        HttpCoreConf(keepalive_requests=n + 1),  # not closed after nginx's 1000
        fixed=answer,
        fixed_except="/s",
    )
    ls.handler = server.init_connection
    add_listening(cycle, [ls])
    address = nos.getsockname(ls.fd)
    assert isinstance(address, tuple)
    client = socket.create_connection(("127.0.0.1", address[1]), timeout=5)
    for _ in range(n):
        client.sendall(REQUEST)
        data = b""
        while not data.endswith(b"hello"):
            while not select.select([client], [], [], 0)[0]:
                process_events_and_timers(cycle)
            chunk = client.recv(65536)
            if not chunk:
                raise RuntimeError(f"the server closed after {data!r}")
            data += chunk
    assert server.fast is not None and server.fast.answered == n - 1
    client.close()
    cycle.close()
    ls.close()


def instructions(env: dict[str, str], tmp: Path) -> float:
    """Instructions per C-answered request inside COLLECT, under callgrind."""
    out = tmp / "callgrind.out"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    command += [f"--toggle-collect={name}" for name in COLLECT]
    command += [sys.executable, __file__, "--serve", str(REQUESTS)]
    subprocess.run(command, env=env, check=True, capture_output=True)
    summary = next(
        line for line in out.read_text().splitlines() if line.startswith("summary:")
    )
    return int(summary.split()[1]) / (REQUESTS - 1)


def callgrind_lines(nofaults: Path) -> list[str]:
    if servers.which("valgrind") is None:
        return ["(callgrind: valgrind is not installed, no instruction counts.)"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NGXFFI_INJ")}
    builds = {
        "ngxffi-nofaults": {**env, "PYTHONPATH": str(nofaults)},
        "ngxffi": env,
        "ngxffi-armed": {**env, "NGXFFI_INJECT": ARMED},
    }
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as name:
        counts = {kind: instructions(e, Path(name)) for kind, e in builds.items()}
    base = counts["ngxffi-nofaults"]
    lines = [
        "| build | instructions per request (C read handler + wait) | vs no hooks |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {LABELS[kind]} | {n:,.1f} | {n - base:+.1f} |" for kind, n in counts.items()
    ]
    return [
        *lines,
        "",
        f"callgrind, {REQUESTS:,} keep-alive `GET /` answered in one process, "
        f"instructions counted inside {', '.join(f'`{c}`' for c in COLLECT)} only "
        "(the user-space side of their recv, send and epoll_wait included), per "
        "request answered in C.",
    ]


def main() -> str:
    nofaults = build_without_faults()
    servers.EXTRA_ENV["ngxffi-nofaults"] = {"PYTHONPATH": str(nofaults)}
    servers.EXTRA_ENV["ngxffi-armed"] = {"NGXFFI_INJECT": ARMED}
    runs = http.rounds(SCENARIO, ROUNDS)
    lines = [
        "| build | req/s | user µs/req | CPU µs/req | req/s ratio | user ratio | "
        "CPU ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in KINDS:
        m = http.median_run(runs[kind])
        rate, user, cpu = http.paired(runs, kind, base="ngxffi-nofaults")
        lines.append(
            f"| {LABELS[kind]} | {m.rate:,.0f} | {m.user_us:.2f} | "
            f"{m.user_us + m.kernel_us:.2f} | {rate:.3f} | {user:.3f} | {cpu:.3f} |"
        )
    medians = {kind: http.median_run(r) for kind, r in runs.items()}
    setup = http.setup(SCENARIO).replace(
        f"{http.ROUNDS} interleaved", f"{ROUNDS} interleaved"
    )
    lines += [
        "",
        f"{setup} `ngxffi serve` answering `return 200 hello` (the C read handler). "
        "Ratios: medians of the per-round ratios to the NGXFFI_NO_FAULTS build; "
        f"armed: `NGXFFI_INJECT={ARMED}`.",
        *http.error_note(medians),
        "",
        *callgrind_lines(nofaults),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve_requests(int(sys.argv[2]))
    else:
        print(main())
