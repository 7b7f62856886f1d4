"""The framework servers of frameworks.py (servers.py starts them): an aiohttp
``web.Application`` and a raw ASGI app under uvicorn, each answering ``GET /`` with
``Hello, world``, each on one of three event loops.

The loops are named by the import string of their factory, the one a user hands to
uvicorn's ``--loop`` (uvicorn calls any ``module:attr`` it is given as the factory),
and that the aiohttp server here calls itself, so that both frameworks run on exactly
the same three loops:

* ``asyncio``: ``asyncio.new_event_loop`` (on Linux a SelectorEventLoop on
  EpollSelector, what uvicorn's own ``--loop asyncio`` gives too);
* ``ngxffi``: ``ngxffi.selector:new_event_loop`` (a SelectorEventLoop on NgxSelector);
* ``uvloop``: ``uvloop.new_event_loop`` (uvicorn's ``--loop uvloop``).

uvicorn runs as a user runs it, ``python -m uvicorn ... framework_servers:asgi_app``
with ``--http httptools``, the access log off and one worker; the ASGI app is raw (no
Starlette), so that what is measured is uvicorn and the loop. aiohttp runs as
``python -P framework_servers.py LOOP PORT`` through ``web.run_app``, access log off;
it parses with its C parser, as installed from its wheels. Both listen with nginx's
backlog, as the other servers do.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # aiohttp is imported by its server only, not by uvicorn's
    from aiohttp import web

BODY = b"Hello, world"
BACKLOG = 511  # python_servers.BACKLOG: nginx's default
LOOPS = {
    "asyncio": "asyncio:new_event_loop",
    "ngxffi": "ngxffi.selector:new_event_loop",
    "uvloop": "uvloop:new_event_loop",
}
LOOP_LABELS = {
    "asyncio": "asyncio default loop",
    "ngxffi": "ngxffi (NgxSelector)",
    "uvloop": "uvloop",
}
FRAMEWORKS = ("aiohttp", "uvicorn")
LABELS = {
    f"{framework}-{loop}": f"{framework} on {label}"
    for framework in FRAMEWORKS
    for loop, label in LOOP_LABELS.items()
}
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def asgi_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The raw ASGI hello: every HTTP request gets ``200 Hello, world``; lifespan
    events are refused (uvicorn then goes on without them)."""
    if scope["type"] != "http":
        raise RuntimeError(f"no {scope['type']} here")
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def aiohttp_app() -> web.Application:
    """The aiohttp hello: one route, ``GET /``, answering ``Hello, world``."""
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/", hello)
    return app


def loop_factory(loop: str) -> Callable[[], Any]:
    """The factory that ``LOOPS[loop]`` names, imported."""
    module, _, attr = LOOPS[loop].partition(":")
    factory: Callable[[], Any] = getattr(importlib.import_module(module), attr)
    return factory


def command(kind: str, port: int, app_dir: Path) -> list[str]:
    """The command line of the server ``kind`` (``FRAMEWORK-LOOP``) on ``port``;
    ``app_dir`` holds a link to this module, importable from there alone (this
    directory's http.py would shadow the standard library's)."""
    framework, _, loop = kind.partition("-")
    if framework == "aiohttp":
        script = str(app_dir / Path(__file__).name)
        return [sys.executable, "-P", script, loop, str(port)]
    return [
        *(sys.executable, "-P", "-m", "uvicorn", "--app-dir", str(app_dir)),
        *("--loop", LOOPS[loop], "--http", "httptools", "--no-access-log"),
        *("--workers", "1", "--backlog", str(BACKLOG), "--log-level", "warning"),
        *("--timeout-graceful-shutdown", "1", "--host", "127.0.0.1"),
        *("--port", str(port), f"{Path(__file__).stem}:asgi_app"),
    ]


def serve_aiohttp(loop: str, port: int) -> None:
    """Run the aiohttp hello on ``loop`` until SIGTERM (a second's grace)."""
    from aiohttp import web

    web.run_app(
        aiohttp_app(),
        host="127.0.0.1",
        port=port,
        backlog=BACKLOG,
        access_log=None,
        print=None,
        shutdown_timeout=1.0,
        loop=loop_factory(loop)(),
    )


if __name__ == "__main__":
    serve_aiohttp(sys.argv[1], int(sys.argv[2]))
