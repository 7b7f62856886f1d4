"""Tests pytest-asyncio runs on the conftest's loop factory, fixture and test on the
same NgxSelector loop, over a real TCP connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from recipes import selector_name


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.readline())
    await writer.drain()
    writer.close()


@pytest_asyncio.fixture
async def echo_port() -> AsyncIterator[int]:
    """An echo server on 127.0.0.1, started on the test's loop."""
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.mark.asyncio
async def test_the_loop_is_ngxffis() -> None:
    assert selector_name() == "NgxSelector"


@pytest.mark.asyncio
async def test_a_fixtures_server_answers_on_it(echo_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
    writer.write(f"{selector_name()}\n".encode())
    assert await reader.readline() == b"NgxSelector\n"
    writer.close()
    await writer.wait_closed()
