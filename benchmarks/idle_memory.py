"""Server memory per idle keep-alive connection, and whether it is given back.

For each server (one worker; see servers.py), started fresh: one request on one
connection, closed, to warm it up; the worker's RSS (psutil) as the base; then 10,000
connections (``NGXFFI_BENCH_IDLE_CONNECTIONS``; 1,000 in quick mode), each sending one
``GET`` and reading its whole response, so that each is an idle keep-alive connection
the server holds; once the server has them all (its fd count), the RSS again; then all
closed, and once the server has closed them too (its fd count back to the base), the
RSS after it settles. Bytes per connection is what a server pays to hold many idle
clients; the RSS after closing shows whether it returns that memory.
"""

from __future__ import annotations

import os
import re
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import cast

import psutil
import servers
from servers import LABELS, QUICK

CONNECTIONS = int(
    os.environ.get("NGXFFI_BENCH_IDLE_CONNECTIONS", 1_000 if QUICK else 10_000)
)
KINDS = ("nginx", "ngxffi", "asyncio", "uvloop", "selectors")
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
IN_FLIGHT = 200  # connections being opened at once, below the servers' backlog
TIMEOUT = 60.0  # seconds for any one step
SETTLE = 2.0  # seconds at most for the RSS to stop changing after the closes
TARGETS = {"per_connection": 300, "after_close": 1 << 20}  # ngxffi's, in bytes
MIB = 1 << 20


@dataclass
class Memory:
    """One server's RSS, in bytes: base, holding the connections, after closing."""

    base: int
    held: int
    after: int

    @property
    def per_connection(self) -> float:
        return (self.held - self.base) / CONNECTIONS

    @property
    def after_close(self) -> int:
        return self.after - self.base


results: dict[str, dict[str, float]] = {}


def response_complete(data: bytes) -> bool:
    head, blank, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
    return bool(blank) and length is not None and len(body) >= int(length[1])


def step(selector: selectors.BaseSelector, key: selectors.SelectorKey) -> bool:
    """Advance one connection being opened: send the request once connected, then
    read the response; True when it is complete (the connection is then idle)."""
    sock = cast(socket.socket, key.fileobj)
    if key.events & selectors.EVENT_WRITE:
        sock.send(REQUEST)  # raises if the connect failed
        selector.modify(sock, selectors.EVENT_READ, b"")
        return False
    chunk = sock.recv(4096)
    if not chunk:
        raise ConnectionError("the server closed a connection before answering")
    data = key.data + chunk
    if response_complete(data):
        selector.unregister(sock)
        return True
    selector.modify(sock, selectors.EVENT_READ, data)
    return False


def open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connections, each having sent a request and read its response;
    ``IN_FLIGHT`` of them opened at a time, non-blocking, on one selector."""
    selector = selectors.DefaultSelector()
    opened: list[socket.socket] = []
    pending = 0
    deadline = time.monotonic() + TIMEOUT
    while len(opened) < count:
        while pending < IN_FLIGHT and len(opened) + pending < count:
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            selector.register(sock, selectors.EVENT_WRITE, b"")
            pending += 1
        for key, _ in selector.select(deadline - time.monotonic()):
            if step(selector, key):
                opened.append(cast(socket.socket, key.fileobj))
                pending -= 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(opened)} of {count} connections opened")
    selector.close()
    return opened


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds, for ``TIMEOUT`` seconds at most."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {TIMEOUT:.0f} s for {what}")
        time.sleep(0.05)


def accepted(worker: psutil.Process) -> int:
    """How many accepted TCP connections the server holds."""
    return sum(c.status != psutil.CONN_LISTEN for c in worker.net_connections("tcp"))


def settled_rss(worker: psutil.Process) -> int:
    """The RSS once two readings 0.1 s apart agree (``SETTLE`` seconds at most)."""
    deadline = time.monotonic() + SETTLE
    rss = worker.memory_info().rss
    while time.monotonic() < deadline:
        time.sleep(0.1)
        rss, last = worker.memory_info().rss, rss
        if rss == last:
            break
    return rss


def warm(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(REQUEST)
        data = b""
        while not response_complete(data):
            data += sock.recv(4096)


def measure(kind: str) -> Memory:
    with servers.running(kind) as server:
        worker = server.worker()
        warm(server.port)  # the server is ready, its own fds (epoll, …) all open
        wait_for(lambda: not accepted(worker), "the warm-up connection to close")
        fds = worker.num_fds()
        base = settled_rss(worker)
        clients = open_idle(server.port, CONNECTIONS)
        try:
            wait_for(lambda: worker.num_fds() >= fds + CONNECTIONS, "the connections")
            held = worker.memory_info().rss
        finally:
            for sock in clients:
                sock.close()
        wait_for(lambda: worker.num_fds() <= fds, "the server to close them")
        return Memory(base, held, settled_rss(worker))


def row(kind: str, m: Memory) -> str:
    per_connection = f"{m.per_connection:,.0f}"
    after_close = f"{m.after_close / 1024:+,.0f} KiB"
    if kind == "ngxffi":
        per_connection += f" (target ≤ {TARGETS['per_connection']})"
        after_close += f" (target ≤ {TARGETS['after_close'] // MIB} MiB)"
    return (
        f"| {LABELS[kind]} | {m.base / MIB:.1f} | {m.held / MIB:.1f} | "
        f"{per_connection} | {m.after / MIB:.1f} | {after_close} |"
    )


def main() -> str:
    servers.raise_nofile()  # the client side holds CONNECTIONS sockets too
    lines = [
        f"| server | base MiB | RSS at {CONNECTIONS:,} conns MiB | bytes/conn | "
        "after close MiB | after close - base |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in KINDS:
        memory = measure(kind)
        results[kind] = {**asdict(memory), "per_connection": memory.per_connection}
        lines.append(row(kind, memory))
    lines += [
        "",
        f"RSS of the worker process (psutil), one worker per server; {CONNECTIONS:,} "
        "keep-alive connections, each idle after one request and its response.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
