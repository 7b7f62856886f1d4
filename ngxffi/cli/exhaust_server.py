"""The servers of the fd-exhaustion lab (``ngxffi exhaust``), run as a child process.

Both answer every request (a request ends with an empty line) with the same small
response and keep the connection open until the client closes it, so that held
clients hold their descriptors:

* ``ngxffi``: nginx's model on ngxffi's event core — a level-triggered listener,
  :func:`~ngxffi.event.accept.event_accept`, edge-triggered connections — with the
  EMFILE policy given;
* ``asyncio``: an ``asyncio.Protocol`` server on the default loop, for comparison.

``python -m ngxffi.cli.exhaust_server ngxffi|asyncio POLICY resume|no-resume`` prints
the port, then serves until killed. The parent sets RLIMIT_NOFILE before exec, as
``ulimit -n`` does.
"""

from __future__ import annotations

import asyncio
import sys

from ngxffi import (
    Connection,
    Cycle,
    Event,
    handle_read_event,
    lib,
    process_events_and_timers,
)
from ngxffi import os as nos
from ngxffi.cli.exhaust import END, RESPONSE
from ngxffi.event.accept import add_listening
from ngxffi.event.listening import Listening, open_listening_sockets


def _on_read(ev: Event) -> None:
    """Read until EAGAIN (edge-triggered); answer each complete request; close on
    EOF or error."""
    c: Connection = ev.data
    cycle = ev.cycle
    while True:
        try:
            data = nos.recv(c.raw.fd, 4096)
        except BlockingIOError:
            ev.raw.ready = 0
            return
        except OSError:
            data = b""
        if not data:
            cycle.close_connection(c)
            return
        c.data += data
        while END in c.data:
            _, _, c.data = c.data.partition(END)
            try:
                nos.send(c.raw.fd, RESPONSE, lib.MSG_NOSIGNAL)
            except OSError:
                cycle.close_connection(c)
                return


def _on_connection(c: Connection) -> None:
    c.data = b""
    c.read.handler = _on_read
    handle_read_event(c.read)


def serve_ngxffi(policy: str, resume: bool) -> None:
    ls = Listening(("127.0.0.1", 0), _on_connection, emfile_policy=policy)
    open_listening_sockets([ls])
    with Cycle(512) as cycle:
        cycle.resume_accept = resume
        add_listening(cycle, [ls])
        print(nos.getsockname(ls.fd)[1], flush=True)
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


async def _serve_asyncio() -> None:
    server = await asyncio.get_running_loop().create_server(
        _Responder, "127.0.0.1", 0, backlog=511
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


def main(argv: list[str]) -> None:
    if argv[0] == "asyncio":
        asyncio.run(_serve_asyncio())
    else:
        serve_ngxffi(argv[1], argv[2] == "resume")


if __name__ == "__main__":
    main(sys.argv[1:])
