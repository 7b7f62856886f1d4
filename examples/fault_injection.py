"""Syscall fault injection: an HTTP server on ngxffi's event core, first accepting
while half its accept4 calls fail with ECONNABORTED, then answering while every send
and write moves a single byte. Its clients are in this process too (the stdlib's
socket module, which no rule reaches); the script prints what happened and exits.

The same rules reach a server in another process through the environment, e.g.
``NGXFFI_INJECT=accept4:ECONNABORTED:0.5,send:short=1:1.0 ngxffi serve``.
Run: python examples/fault_injection.py
"""

from __future__ import annotations

import select
import socket

from ngxffi import faults, process_events_and_timers
from ngxffi import os as nos
from ngxffi.event.accept import add_listening
from ngxffi.event.cycle import Cycle
from ngxffi.event.listening import Listening, open_listening_sockets
from ngxffi.http.core import HttpCoreConf
from ngxffi.http.message import Response
from ngxffi.http.server import HttpServer

CLIENTS = 10
PAGE = Response(200, bytes(range(256)) * 16)  # 4 KiB
REQUEST = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"


def get(cycle: Cycle, s: socket.socket) -> bytes:
    """Send one request on s and turn the loop until its whole answer came."""
    s.sendall(REQUEST)
    data = b""
    while not data.endswith(PAGE.body):
        while not select.select([s], [], [], 0)[0]:
            process_events_and_timers(cycle)
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} bytes")
        data += chunk
    return data


def main() -> None:
    ls = Listening(("127.0.0.1", 0), print)
    open_listening_sockets([ls])
    with Cycle(64) as cycle:
        cycle.multi_accept = True  # nginx's loop goes on after an ECONNABORTED
        server = HttpServer(cycle, lambda request: PAGE, HttpCoreConf(), fixed=PAGE)
        ls.handler = server.init_connection
        add_listening(cycle, [ls])
        name = nos.getsockname(ls.fd)
        assert isinstance(name, tuple)
        address = (str(name[0]), int(name[1]))

        with faults.inject("accept4:ECONNABORTED:0.5", seed=1) as aborted:
            clients = [socket.create_connection(address) for _ in range(CLIENTS)]
            answers = [get(cycle, s) for s in clients]
        print(
            f"accept4:ECONNABORTED:0.5: {CLIENTS} clients, "
            f"{sum(a.endswith(PAGE.body) for a in answers)} answered, "
            f"{aborted.hits} accepts failed and skipped"
        )

        expected = get(cycle, clients[0]).partition(b"\r\n\r\n")[2]
        with (
            faults.inject("send", short=1, probability=1.0) as send,
            faults.inject("write", short=1, probability=1.0) as write,
        ):
            body = get(cycle, clients[0]).partition(b"\r\n\r\n")[2]
        print(
            f"send:short=1, write:short=1: a {len(body):,}-byte answer in "
            f"{send.hits + write.hits:,} one-byte calls "
            f"({send.hits} send in C, {write.hits:,} write in Python), "
            f"byte-exact: {body == expected == PAGE.body}"
        )
        print(f"in C: {server.fast.answered if server.fast else 0} answers")
        for s in clients:
            s.close()
        server.close()
    ls.close()


if __name__ == "__main__":
    main()
