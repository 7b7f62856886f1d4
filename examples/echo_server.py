"""An edge-triggered echo server on ngxffi's event core, with its own clients.

The listening socket is registered level-triggered and its handler accepts until
EAGAIN; each client connection is registered edge-triggered by handle_read_event, so
its read handler reads until EAGAIN and echoes back, keeping what the socket would not
take for the write handler. Client threads connect, send, check the echo and hang up;
the last one wakes the loop with notify, and the script exits.
Run: python examples/echo_server.py
"""

from __future__ import annotations

import socket
import threading

from ngxffi import (
    LEVEL_EVENT,
    READ_EVENT,
    Connection,
    Cycle,
    Event,
    handle_read_event,
    handle_write_event,
    lib,
    process_events_and_timers,
)
from ngxffi import os as nos

CLIENTS = 20
MESSAGES = 50


def echo(cycle: Cycle, c: Connection) -> None:
    """Send what is pending; keep the rest and wait for the write event if needed."""
    pending: bytearray = c.data
    while pending:
        try:
            sent = nos.send(c.fd, pending, lib.MSG_NOSIGNAL)
        except BlockingIOError:
            handle_write_event(c.write)
            return
        del pending[:sent]


def on_read(ev: Event) -> None:
    c, cycle = ev.data, ev.cycle
    while True:  # edge-triggered: drain the socket
        try:
            data = nos.recv(c.fd, 65536)
        except BlockingIOError:
            ev.ready = 0
            break
        except ConnectionResetError:
            data = b""
        if not data:
            cycle.close_connection(c)
            return
        c.data += data
    echo(cycle, c)


def on_write(ev: Event) -> None:
    echo(ev.cycle, ev.data)


def on_accept(ev: Event) -> None:
    cycle, listener = ev.cycle, ev.data
    while True:
        try:
            fd, _ = nos.accept4(listener.fd)
        except BlockingIOError:
            return
        c = cycle.get_connection(fd)
        if c is None:
            nos.close(fd)
            continue
        c.data = bytearray()
        c.read.handler, c.write.handler = on_read, on_write
        handle_read_event(c.read)


def client(port: int, results: list[bool]) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        ok = True
        for i in range(MESSAGES):
            message = f"message {i} from {threading.get_ident()}\n".encode()
            s.sendall(message)
            echoed = b""
            while len(echoed) < len(message):
                echoed += s.recv(len(message) - len(echoed))
            ok &= echoed == message
        results.append(ok)


def main() -> None:
    with Cycle(CLIENTS + 8) as cycle:
        lfd = nos.socket(
            lib.AF_INET, lib.SOCK_STREAM | lib.SOCK_NONBLOCK | lib.SOCK_CLOEXEC
        )
        nos.setsockopt(lfd, lib.SOL_SOCKET, lib.SO_REUSEADDR, 1)
        nos.bind(lfd, ("127.0.0.1", 0))
        nos.listen(lfd)
        port = nos.getsockname(lfd)[1]
        listener = cycle.get_connection(lfd)
        assert listener is not None
        listener.read.accept = 1
        listener.read.handler = on_accept
        cycle.actions.add(listener.read, READ_EVENT, LEVEL_EVENT)

        results: list[bool] = []
        done = threading.Event()
        notify = cycle.actions.notify
        assert notify is not None

        def run_clients() -> None:
            threads = [
                threading.Thread(target=client, args=(port, results))
                for _ in range(CLIENTS)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            done.set()
            notify(lambda ev: None)  # wake the loop so that it sees `done`

        threading.Thread(target=run_clients).start()
        while not done.is_set():
            process_events_and_timers(cycle)
        cycle.close_connection(listener)
        in_use = cycle.connection_n - cycle.free_connection_n
    print(
        f"{sum(results)}/{CLIENTS} clients got all {MESSAGES} messages echoed; "
        f"connections still in use: {in_use}"
    )
    raise SystemExit(0 if sum(results) == CLIENTS else 1)


if __name__ == "__main__":
    main()
