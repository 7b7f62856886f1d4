"""A raw ASGI app for the uvicorn recipes, answering every request with its loop's
selector: ``uvicorn --loop ngxffi.selector:new_event_loop recipes.asgi_app:app``
serves it; run as a module it is the ``uvicorn.run`` recipe."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from recipes import selector_name

Message = dict[str, Any]


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":  # nothing to set up: each step just completes
        while True:
            step = (await receive())["type"]
            await send({"type": f"{step}.complete"})
            if step == "lifespan.shutdown":
                return
    body = selector_name().encode()
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    # port 0: the test reads the port uvicorn bound from its startup line
    uvicorn.run(app, host="127.0.0.1", port=0, loop="ngxffi.selector:new_event_loop")
