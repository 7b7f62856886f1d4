"""The framework recipes of docs/asyncio.md, each run as a project would run it, on
real sockets and processes: uvicorn (its CLI and ``uvicorn.run``), aiohttp's server
and client, ``anyio.run``, and the pytest configurations of pytest-asyncio and anyio.
Every recipe answers with the class of the selector it ran on, so a framework that
quietly used its own loop fails the test. The frameworks are the ``integration``
extra (``make test`` installs it); without them these tests skip."""

from __future__ import annotations

import contextlib
import http.client
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from recipes import selector_name

from ngxffi import selector

TESTS = Path(__file__).parent
# the line each server prints once it listens: uvicorn's "Uvicorn running on URL",
# aiohttp's "======== Running on URL ========", with the port bound for port 0
LISTENING = re.compile(r"Running on http://127\.0\.0\.1:(\d+)", re.IGNORECASE)
NGX_LOOP = "ngxffi.selector:new_event_loop"


@contextlib.contextmanager
def serving(args: list[str], stop: signal.Signals, status: int) -> Iterator[int]:
    """Run ``python -u ARGS`` in tests/ (where ``recipes`` imports from) until it
    says where it listens; yield that port. Then stop it with ``stop`` and assert it
    exits with ``status`` after a clean shutdown (no traceback)."""
    proc = subprocess.Popen(
        [sys.executable, "-u", *args],
        cwd=TESTS,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    output: list[str] = []
    try:
        for line in proc.stdout:
            output.append(line)
            if listening := LISTENING.search(line):
                break
        else:
            pytest.fail(f"exited {proc.wait()} before listening:\n{''.join(output)}")
        yield int(listening[1])
        proc.send_signal(stop)
        rest, _ = proc.communicate(timeout=30)  # everything up to its exit
        output.append(rest)
        assert proc.returncode == status, "".join(output)
        assert "Traceback" not in "".join(output), "".join(output)
    finally:
        if proc.poll() is None:  # a failed test: never leave a server behind
            proc.kill()
            proc.wait()


def get(port: int) -> str:
    """The body of ``GET /`` on 127.0.0.1:port, over a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        conn.close()


def test_uvicorn_cli_takes_the_loop_factory() -> None:
    pytest.importorskip("uvicorn")
    app = ["recipes.asgi_app:app", "--host", "127.0.0.1", "--port", "0"]
    # Ctrl-C: uvicorn shuts down (lifespan included) and exits 0
    with serving(["-m", "uvicorn", "--loop", NGX_LOOP, *app], signal.SIGINT, 0) as port:
        assert get(port) == "NgxSelector"


def test_uvicorn_cli_refuses_the_policy() -> None:
    """What docs/asyncio.md warns about: ``--loop`` wants a loop factory, and a
    policy class is called as one, so uvicorn dies on the policy it got back."""
    pytest.importorskip("uvicorn")
    app = ["recipes.asgi_app:app", "--port", "0"]
    policy = ["--loop", "ngxffi.selector:EventLoopPolicy"]
    out = subprocess.run(
        [sys.executable, "-m", "uvicorn", *app, *policy],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "'EventLoopPolicy' object has no attribute" in out.stderr


def test_uvicorn_run_takes_the_loop_factory() -> None:
    pytest.importorskip("uvicorn")
    # SIGTERM: uvicorn shuts down, then raises the signal again (since 0.29) so that
    # the process ends as SIGTERM's default would
    with serving(["-m", "recipes.asgi_app"], signal.SIGTERM, -signal.SIGTERM) as port:
        assert get(port) == "NgxSelector"


def test_aiohttp_server_and_client_on_ngxselector() -> None:
    pytest.importorskip("aiohttp")
    import aiohttp

    async def fetch(port: int) -> tuple[str, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/") as response,
        ):
            return await response.text(), selector_name()

    # SIGTERM: run_app's GracefulExit, a clean shutdown and exit 0
    with serving(["-m", "recipes.aiohttp_app"], signal.SIGTERM, 0) as port:
        assert selector.run(fetch(port)) == ("NgxSelector", "NgxSelector")


def test_anyio_run_takes_the_loop_factory() -> None:
    pytest.importorskip("anyio")
    import anyio

    with socket.create_server(("127.0.0.1", 0)) as listener:

        async def main() -> str:
            async with await anyio.connect_tcp(*listener.getsockname()) as stream:
                await stream.send(selector_name().encode())
            return selector_name()

        options = {"loop_factory": selector.new_event_loop}
        assert anyio.run(main, backend="asyncio", backend_options=options) == (
            "NgxSelector"
        )
        conn, _ = listener.accept()  # the kernel completed anyio's connect already
        with conn:
            assert b"".join(iter(lambda: conn.recv(64), b"")) == b"NgxSelector"


@pytest.mark.parametrize(
    ("recipe", "plugin"),
    [("with_pytest_asyncio", "pytest_asyncio"), ("with_anyio", "anyio")],
)
def test_pytest_plugin_recipe(recipe: str, plugin: str) -> None:
    """The recipe's folder (a conftest.py and its tests) in a pytest run of its own,
    under the project's configuration, where a warning is an error."""
    pytest.importorskip(plugin)
    strict = ["-q", "-p", "no:cacheprovider", "-W", "error"]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", *strict, str(TESTS / "recipes" / recipe)],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^2 passed in ", out.stdout, re.MULTILINE), out.stdout
