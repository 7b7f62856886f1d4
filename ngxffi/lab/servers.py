"""The lab's built-in servers (the ``ngxffi`` and ``asyncio`` presets of
``ngxffi exhaust``), run as a child process.

Both answer every request (a request ends with an empty line) with the same small
response and keep the connection open until the client closes it, so that held
clients hold their descriptors:

* ``ngxffi``: nginx's model on ngxffi's event core — a level-triggered listener,
  :func:`~ngxffi.event.accept.event_accept`, edge-triggered connections — with the
  EMFILE policy given;
* ``asyncio``: an ``asyncio.Protocol`` server on the default loop, for comparison.

``python -m ngxffi.lab.servers ngxffi|asyncio PORT [POLICY resume|no-resume N]`` listens
on 127.0.0.1:PORT and serves until killed; the lab sets RLIMIT_NOFILE before exec, as
``ulimit -n`` does, and knows the server is ready when the port accepts. N is the
ngxffi server's pool (connections).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from ngxffi import (
    Connection,
    Cycle,
    Event,
    handle_read_event,
    handle_write_event,
    lib,
    process_events_and_timers,
)
from ngxffi import os as nos
from ngxffi.event.accept import add_listening
from ngxffi.event.listening import Listening, open_listening_sockets

END = b"\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"


@dataclass
class _Client:
    """A connection's bytes: the input not yet answered, the output not yet sent."""

    inbuf: bytes = b""
    out: bytes = b""


def _send(c: Connection) -> bool:
    """Send what is queued (a send may take part of it: the rest waits for the write
    event); False when the connection was closed."""
    client: _Client = c.data
    while client.out:
        try:
            n = nos.send(c.raw.fd, client.out, lib.MSG_NOSIGNAL)
        except BlockingIOError:
            c.write.raw.ready = 0
            handle_write_event(c.write)
            return True
        except OSError:
            c.cycle.close_connection(c)
            return False
        client.out = client.out[n:]
    return True


def _on_write(ev: Event) -> None:
    _send(ev.data)


def _on_read(ev: Event) -> None:
    """Read until EAGAIN (edge-triggered); answer each complete request; close on
    EOF or error."""
    c: Connection = ev.data
    client: _Client = c.data
    while True:
        try:
            data = nos.recv(c.raw.fd, 4096)
        except BlockingIOError:
            ev.raw.ready = 0
            return
        except OSError:
            data = b""
        if not data:
            ev.cycle.close_connection(c)
            return
        client.inbuf += data
        while END in client.inbuf:
            _, _, client.inbuf = client.inbuf.partition(END)
            client.out += RESPONSE
        if not _send(c):
            return


def _on_connection(c: Connection) -> None:
    c.data = _Client()
    c.read.handler = _on_read
    c.write.handler = _on_write
    handle_read_event(c.read)


def serve_ngxffi(port: int, policy: str, resume: bool, connections: int) -> None:
    ls = Listening(("127.0.0.1", port), _on_connection, emfile_policy=policy)
    open_listening_sockets([ls])
    with Cycle(connections) as cycle:
        cycle.resume_accept = resume
        add_listening(cycle, [ls])
        while True:
            process_events_and_timers(cycle)


class _Responder(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a stream's, always
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while END in self.buffer:
            _, _, self.buffer = self.buffer.partition(END)
            self.transport.write(RESPONSE)


async def _serve_asyncio(port: int) -> None:
    await asyncio.get_running_loop().create_server(
        _Responder, "127.0.0.1", port, backlog=511
    )
    await asyncio.Event().wait()


def main(argv: list[str]) -> None:
    kind, port = argv[0], int(argv[1])
    if kind == "asyncio":
        asyncio.run(_serve_asyncio(port))
    else:
        serve_ngxffi(port, argv[2], argv[3] == "resume", int(argv[4]))


if __name__ == "__main__":
    main(sys.argv[1:])
