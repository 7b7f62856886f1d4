"""asyncio on NgxSelector: loop, policy, run(), streams, servers, sock_* and
subprocesses, on real sockets and processes."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ngxffi.selector import EventLoopPolicy, NgxSelector, new_event_loop, run


def selector_of(loop: asyncio.AbstractEventLoop) -> object:
    return loop._selector  # type: ignore[attr-defined]


def test_new_event_loop_uses_ngxselector() -> None:
    loop = new_event_loop()
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
        assert isinstance(selector_of(loop), NgxSelector)
    finally:
        loop.close()


@pytest.fixture
def policy() -> Iterator[None]:
    old = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(EventLoopPolicy())
    yield
    asyncio.set_event_loop_policy(old)


def test_the_policy_makes_every_new_loop_an_ngx_one(policy: None) -> None:
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(selector_of(loop), NgxSelector)
    finally:
        loop.close()

    async def which() -> object:
        return selector_of(asyncio.get_running_loop())

    assert isinstance(asyncio.run(which()), NgxSelector)


def test_run_leaves_the_policy_alone() -> None:
    before = asyncio.get_event_loop_policy()

    async def which() -> object:
        await asyncio.sleep(0)
        return selector_of(asyncio.get_running_loop())

    assert isinstance(run(which()), NgxSelector)
    assert asyncio.get_event_loop_policy() is before


async def echo_server_and_clients(clients: int, messages: int) -> list[bool]:
    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def client(n: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ok = True
        for i in range(messages):
            line = f"client {n} message {i}\n".encode()
            writer.write(line)
            ok &= await reader.readline() == line
        writer.close()
        await writer.wait_closed()
        return ok

    async with server:
        return await asyncio.gather(*(client(n) for n in range(clients)))


def test_streams_echo_server_and_clients() -> None:
    assert run(echo_server_and_clients(clients=25, messages=40)) == [True] * 25


def test_sock_methods() -> None:
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            listener.setblocking(False)
            with socket.socket() as client:
                client.setblocking(False)
                connect = loop.sock_connect(client, listener.getsockname())
                _, (server_conn, _) = await asyncio.gather(
                    connect, loop.sock_accept(listener)
                )
                with server_conn:
                    await loop.sock_sendall(client, b"ping")
                    data = await loop.sock_recv(server_conn, 4)
                    await loop.sock_sendall(server_conn, data + b"!")
                    return await loop.sock_recv(client, 5)

    assert run(main()) == b"ping!"


def test_subprocesses() -> None:
    async def main() -> tuple[bytes, int]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; sys.stdout.write(sys.stdin.read()[::-1])",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(b"olleh")
        return out, await proc.wait()

    assert run(main()) == (b"hello", 0)


def test_timeouts_and_call_later_keep_their_order() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        order: list[int] = []
        done = loop.create_future()
        loop.call_later(0.03, order.append, 3)
        loop.call_later(0.01, order.append, 1)
        loop.call_later(0.02, order.append, 2)
        loop.call_later(0.04, done.set_result, None)
        await done
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.01)
        return order

    assert run(main()) == [1, 2, 3]


POLICYLESS = """
import asyncio
del asyncio.DefaultEventLoopPolicy  # as Python 3.16 will have it
import ngxffi.selector as selector

async def main():
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()._selector).__name__

print(selector.run(main()))
with asyncio.Runner(loop_factory=selector.new_event_loop) as runner:
    print(runner.run(main()))
try:
    selector.EventLoopPolicy
except AttributeError as e:
    print("AttributeError:", e)
"""


def test_the_module_never_touches_the_policy_system_unless_asked() -> None:
    """Importing ngxffi.selector and its loop factories work where asyncio has no
    policy system (3.16); only asking for EventLoopPolicy fails, saying what to
    use instead."""
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", POLICYLESS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["NgxSelector", "NgxSelector"]
    assert lines[2].startswith("AttributeError: ngxffi.selector.EventLoopPolicy: ")
    assert "loop_factory=selector.new_event_loop" in lines[2]


def test_the_policy_is_made_once_and_is_the_default_one() -> None:
    from ngxffi import selector

    policy = selector.EventLoopPolicy
    assert selector.EventLoopPolicy is policy  # made once
    assert issubclass(policy, asyncio.DefaultEventLoopPolicy)
    assert policy.__module__ == "ngxffi.selector"
