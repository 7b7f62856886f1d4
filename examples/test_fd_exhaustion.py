"""Fd-exhaustion tests of your own server, with ngxffi's pytest plugin.

Installing ngxffi registers the plugin: the fixtures ``exhaust``, ``nofile_limit`` and
``hold_fds`` need no import. "Your server" here is the small asyncio HTTP server at
the end of this file (``python examples/test_fd_exhaustion.py --serve PORT``); put
your own command in ``SERVER``, with ``{port}`` where its port goes.

Run it with ``pytest examples/test_fd_exhaustion.py``, or as a script:
``python examples/test_fd_exhaustion.py`` (which runs pytest on itself).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from collections.abc import Callable

import pytest

from ngxffi.testing import ExhaustResult

SERVER = [sys.executable, __file__, "--serve", "{port}"]


def test_the_server_survives_running_out_of_fds(
    exhaust: Callable[..., ExhaustResult],
) -> None:
    # 60 clients at once, each holding its connection 0.2 s, against 32 descriptors
    r = exhaust(SERVER, nofile=32, clients=60, hold=0.2, timeout=20)
    assert r.started and r.exit_status is None  # it listened, and it is still alive
    assert r.served + r.refused + r.reset + r.timed_out == 60  # each one is counted
    assert r.served > 0 and r.healthy_after  # it served, and serves again after


def test_my_code_meets_emfile(
    nofile_limit: Callable[[int], int], hold_fds: Callable[..., list[int]]
) -> None:
    nofile_limit(256)  # restored when the test ends
    hold_fds(leave=1)  # every free descriptor but one, until the test ends
    with socket.socket() as last:  # the one left
        assert last.fileno() >= 0
        with pytest.raises(OSError) as exhausted:
            socket.socket()
    assert exhausted.value.errno == errno.EMFILE


async def serve(port: int) -> None:
    """Your server: answers each request, keeps the connection until the client
    closes it (so held clients hold its descriptors)."""

    async def on_client(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")

    server = await asyncio.start_server(on_client, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        asyncio.run(serve(int(sys.argv[2])))
    else:
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", __file__]))
