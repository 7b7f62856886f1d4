"""The thundering herd, measured: how many workers wake per new connection, and how
evenly the accepts spread, for nginx's four ways of sharing a listening socket.

N worker processes run ngxffi's event loop on one address; the parent opens M
connections one by one, leaving the workers idle in epoll_wait between them. Each
worker counts the wake-ups of its listening event (event_accept runs) and its
accepts. Modes:

* ``shared``: one socket in every worker's epoll set, level-triggered: all wake;
* ``exclusive``: the same with EPOLLEXCLUSIVE (nginx's default): about one wakes;
* ``mutex``: the accept mutex: only the holder has the socket in its set;
* ``reuseport``: one socket per worker: the kernel picks, nobody else wakes.

Run: python examples/thundering_herd.py [workers] [connections]
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

from ngxffi import Connection, Cycle, process_events_and_timers
from ngxffi import os as nos
from ngxffi.event import accept
from ngxffi.event.event import EXCLUSIVE_EVENT, LEVEL_EVENT, Event
from ngxffi.event.listening import Listening, open_listening_sockets
from ngxffi.process.shm import SharedStats
from ngxffi.process.shmtx import AcceptMutex
from ngxffi.process.worker import WorkerSignals

MODES = ("shared", "exclusive", "mutex", "reuseport")


def worker(mode: str, ls: Listening, stats: SharedStats, out: int) -> None:
    counts = {"wakeups": 0, "accepts": 0}

    def on_connection(c: Connection) -> None:
        counts["accepts"] += 1
        cycle.close_connection(c)

    def counting_accept(ev: Event) -> None:
        counts["wakeups"] += 1
        accept.event_accept(ev)

    with Cycle(64) as cycle:
        cycle.accept_mutex_delay = 20
        ls.handler = on_connection
        if mode == "mutex":
            cycle.accept_mutex = AcceptMutex(stats)
            accept.add_listening(cycle, [ls], register=False)
        else:
            flags = EXCLUSIVE_EVENT if mode == "exclusive" else LEVEL_EVENT
            accept.add_listening(cycle, [ls], flags)
        assert ls.connection is not None
        ls.connection.read.handler = counting_accept
        signals = WorkerSignals(cycle)  # SIGTERM ends the loop, and wakes it
        signals.install(stop=(signal.SIGTERM,), reopen=())
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        while not signals.stop:
            process_events_and_timers(cycle)
    os.write(out, (json.dumps(counts) + "\n").encode())


def asleep(pids: list[int], timeout: float = 10) -> None:
    """Wait until every worker is blocked in epoll_wait (the kernel says so in
    /proc/PID/wchan); a worker still busy after ``timeout`` is left as it is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = []
        for pid in pids:
            with open(f"/proc/{pid}/wchan") as f:
                waiting.append(f.read() in ("do_epoll_wait", "ep_poll"))
        if all(waiting):
            return
        os.sched_yield()


def run(mode: str, workers: int, connections: int) -> dict[str, object]:
    count = workers if mode == "reuseport" else 1
    listening: list[Listening] = []
    port = 0
    for _ in range(count):
        ls = Listening(("127.0.0.1", port), lambda c: None, reuseport=count > 1)
        open_listening_sockets([ls])
        address = nos.getsockname(ls.fd)
        assert isinstance(address, tuple)
        port = address[1]  # the clones bind the port the first one got
        listening.append(ls)
    stats = SharedStats()
    r, w = os.pipe()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    pids = []
    for slot in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                worker(mode, listening[slot % count], stats, w)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    os.close(w)
    for _ in range(connections):
        asleep(pids)  # the herd must be asleep for each new connection
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.recv(1)  # the server accepts and closes: wait for that
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    with os.fdopen(r) as results:
        per_worker = [json.loads(line) for line in results]
    for pid in pids:
        os.waitpid(pid, 0)
    for ls in listening:
        ls.close()
    wakeups = sum(c["wakeups"] for c in per_worker)
    return {
        "mode": mode,
        "wakeups_per_connection": round(wakeups / connections, 2),
        "accepts_per_worker": sorted((c["accepts"] for c in per_worker), reverse=True),
    }


def main() -> None:
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    print(f"{workers} workers, {connections} connections, one at a time")
    print(f"{'mode':<10} {'wake-ups per connection':>24}  accepts per worker")
    for mode in MODES:
        r = run(mode, workers, connections)
        print(
            f"{r['mode']:<10} {r['wakeups_per_connection']:>24}  "
            f"{r['accepts_per_worker']}"
        )


if __name__ == "__main__":
    main()
