"""Slow clients against nginx and ngxffi, side by side: slowhttptest's three slow
attacks (slow headers a.k.a. Slowloris, slow body, slow read) with more attackers
than slots, and a probe that asks what a normal client asks meanwhile.

Run: ``make bench-slow`` (or ``.venv/bin/python benchmarks/slow_clients.py``). It
installs slowhttptest and nginx (Debian's packages) when they are missing, and writes
its table to results/slow_clients.md (arguments: only the attacks whose names begin
so, e.g. ``"slow read"``, printed and not written).

Each server runs one worker, ``worker_connections`` 1024 (``ATTACKERS`` / 2),
serving the same small index.html from a temporary root, everything else at its
defaults (ngxffi's include ``client_min_rate`` 500, its defence). The attack is
slowhttptest ``-c 2000 -r 400 -i 5 -l 25`` in its three modes. The probe opens a
new keep-alive connection every ``PROBE_EVERY`` s, sends one GET and waits at most
``PROBE_TIMEOUT`` s for the whole answer; the table gives the share answered in
time after the ramp (the first ``ATTACKERS / RATE`` s), its median latency, and
slowhttptest's own verdict ("service available" in its statistics, sampled each
second, after the ramp). The probe goes on for the whole ``LENGTH`` s even when
slowhttptest stops early (it does once the server closed all its connections).
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from servers import free_port, raise_nofile, stop, which

ATTACKERS = 2000
RATE = 400  # attackers connected a second: the ramp takes ATTACKERS / RATE s
LENGTH = 25  # s the attack lasts
INTERVAL = 5  # s between an attacker's follow-up bytes
SLOTS = 1024  # worker_connections: about half the attackers
PROBE_EVERY = 0.2  # s
PROBE_TIMEOUT = 3.0  # s: slowhttptest's -p, and the probe's
SLOW_READ = ["-X", "-k", "3", "-w", "1", "-y", "3", "-n", "5", "-z", "32"]
ATTACKS = {  # the mode's options, and the path asked for
    "slow headers (-H)": (["-H"], "/"),
    "slow body (-B)": (["-B", "-s", "8192"], "/"),
    "slow read (-X)": (SLOW_READ, "/"),
    "slow read (-X), 8 MiB file": (SLOW_READ, "/big.bin"),
}
RESULTS = Path(__file__).with_name("results") / "slow_clients.md"
PAGE = b"<html><body><h1>hello, slow clients</h1></body></html>\n"

NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 8192;
error_log {tmp}/error.log error;
pid {tmp}/nginx.pid;
events {{ worker_connections {slots}; }}
http {{
    access_log off;
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""
NGXFFI_TOML = """master_process = false
worker_connections = {slots}
worker_rlimit_nofile = 8192
root = "{root}"
error_log = "{tmp}/error.log error"
listen = {{ address = "127.0.0.1:{port}" }}
"""


def ensure(command: str, package: str) -> str:
    """The path of ``command``, installing Debian's ``package`` when missing."""
    found = which(command)
    if found is None:
        if os.geteuid() != 0:
            sys.exit(f"missing {command}: apt-get install {package}")
        install = ["apt-get", "install", "-y", "-q", package]
        if subprocess.run(install, capture_output=True).returncode:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            subprocess.run(install, capture_output=True, check=True)
        found = which(command)
    assert found is not None, command
    return found


@contextmanager
def server(kind: str) -> Iterator[int]:
    """nginx or ngxffi on a free port, serving PAGE; its port."""
    with tempfile.TemporaryDirectory(prefix=f"slow-{kind}-") as name:
        tmp = Path(name)
        root = tmp / "www"
        root.mkdir()
        (root / "index.html").write_bytes(PAGE)
        (root / "big.bin").write_bytes(bytes(range(256)) * 4096 * 8)
        port = free_port()
        fields = {"tmp": tmp, "port": port, "root": root, "slots": SLOTS}
        if kind == "nginx":
            conf = tmp / "nginx.conf"
            conf.write_text(NGINX_CONF.format(**fields))
            nginx = ensure("nginx", "nginx")
            command = [nginx, "-p", str(tmp), "-e", str(tmp / "error.log")]
            command += ["-c", str(conf)]
        else:
            conf = tmp / "ngxffi.toml"
            conf.write_text(NGXFFI_TOML.format(**fields))
            command = [str(Path(sys.executable).parent / "ngxffi"), "serve"]
            command += ["-c", str(conf)]
        popen = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            wait_answering(port)
            yield port
        finally:
            stop(popen)


def wait_answering(port: int) -> None:
    deadline = time.monotonic() + 15
    while probe(port) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no server answers on port {port}")
        time.sleep(0.05)


def probe(port: int) -> float | None:
    """One GET on a new keep-alive connection: the seconds its whole answer took,
    or None when it did not come within PROBE_TIMEOUT."""
    begun = time.monotonic()
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: probe\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), PROBE_TIMEOUT) as s:
            s.sendall(request)
            data = b""
            while not data.endswith(PAGE):
                left = PROBE_TIMEOUT - (time.monotonic() - begun)
                if left <= 0:
                    return None
                s.settimeout(left)
                chunk = s.recv(65536)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    if not data.startswith(b"HTTP/1.1 200"):
        return None
    return time.monotonic() - begun


@dataclass
class Result:
    answered: int  # probes answered in time after the ramp
    probes: int
    latencies: list[float]
    available: float  # slowhttptest's samples saying "service available", a share
    connected: int  # the most attackers connected at once (slowhttptest's count)


def attack(tool: str, port: int, mode: list[str], path: str, tmp: Path) -> Result:
    """slowhttptest against ``port`` while probing it."""
    samples: list[tuple[float, float | None]] = []
    done = threading.Event()

    def probing() -> None:
        while not done.wait(PROBE_EVERY) and time.monotonic() < begun + LENGTH:
            sent = time.monotonic()
            samples.append((sent, probe(port)))

    prefix = tmp / "stats"
    command = [tool, *mode, "-c", str(ATTACKERS), "-r", str(RATE), "-i"]
    command += [str(INTERVAL), "-l", str(LENGTH), "-p", str(int(PROBE_TIMEOUT))]
    command += ["-u", f"http://127.0.0.1:{port}{path}", "-g", "-o", str(prefix)]
    begun = time.monotonic()
    thread = threading.Thread(target=probing)
    thread.start()
    try:
        subprocess.run(command, capture_output=True, timeout=LENGTH + 60)
        thread.join(LENGTH + 10)
    finally:
        done.set()
        thread.join()
    ramp = begun + ATTACKERS / RATE
    after = [(t, lat) for t, lat in samples if ramp <= t <= begun + LENGTH]
    latencies = [lat for _, lat in after if lat is not None]
    share, connected = statistics_of(prefix)
    return Result(len(latencies), len(after), latencies, share, connected)


def statistics_of(prefix: Path) -> tuple[float, int]:
    """From slowhttptest's per-second statistics: the share of the samples after
    the ramp that say the service was available, and the most attackers
    connected at once."""
    path = prefix.with_suffix(".csv")
    if not path.exists():
        return float("nan"), 0
    with path.open() as f:
        rows = list(csv.reader(f))
    header = [h.lower() for h in rows[0]]
    rows = rows[1:]
    column, connected = header.index("service available"), header.index("connected")
    peak = max((int(row[connected]) for row in rows), default=0)
    after = [row for row in rows if float(row[0]) >= ATTACKERS / RATE]
    if not after:
        return float("nan"), peak
    return sum(float(row[column]) > 0 for row in after) / len(after), peak


def main() -> None:
    raise_nofile()  # slowhttptest's 2000 sockets are ours
    tool = ensure("slowhttptest", "slowhttptest")
    kinds = ["nginx", "ngxffi"]
    rows = []
    only = sys.argv[1:]  # some attacks, by the start of their name: "slow read"
    for name, (mode, path) in ATTACKS.items():
        if only and not any(name.startswith(o) for o in only):
            continue
        for kind in kinds:
            with tempfile.TemporaryDirectory() as tmp, server(kind) as port:
                result = attack(tool, port, mode, path, Path(tmp))
            rows.append((name, kind, result))
            print(f"{name} {kind}: {fmt(result)}", file=sys.stderr)
    text = table(rows)
    print(text)
    if not only:  # a whole run is the latest
        RESULTS.write_text(text + "\n")


def fmt(r: Result) -> str:
    share = 100 * r.answered / r.probes if r.probes else float("nan")
    median = f"{statistics.median(r.latencies) * 1000:.1f} ms" if r.latencies else "—"
    return (
        f"{share:.0f}% ({r.answered}/{r.probes}) | {median} | "
        f"{100 * r.available:.0f}% | {r.connected}"
    )


def table(rows: list[tuple[str, str, Result]]) -> str:
    lines = [
        f"slowhttptest -c {ATTACKERS} -r {RATE} -i {INTERVAL} -l {LENGTH} "
        f"-p {PROBE_TIMEOUT:.0f}, one worker of worker_connections {SLOTS}; "
        f"probe every {PROBE_EVERY} s after the {ATTACKERS // RATE} s ramp",
        "",
        "| attack | server | probes answered within "
        f"{PROBE_TIMEOUT:.0f} s | median probe | slowhttptest: service available "
        "| attackers connected at most |",
        "|---|---|---|---|---|---|",
    ]
    for name, kind, result in rows:
        lines.append(f"| {name} | {kind} | {fmt(result)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if shutil.which("slowhttptest") is None and os.geteuid() != 0:
        sys.exit("slowhttptest is missing: apt-get install slowhttptest")
    main()
