"""Tests anyio's pytest plugin runs on the conftest's backend: NgxSelector loops,
and a real TCP listener and connection through anyio's API."""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream

from recipes import selector_name

pytestmark = pytest.mark.anyio


async def test_the_loop_is_ngxffis() -> None:
    assert selector_name() == "NgxSelector"


async def test_a_listener_answers_on_it() -> None:
    async def echo(stream: SocketStream) -> None:
        async with stream:
            await stream.send(await stream.receive())

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, echo)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            await client.send(selector_name().encode())
            assert await client.receive() == b"NgxSelector"
        tg.cancel_scope.cancel()
