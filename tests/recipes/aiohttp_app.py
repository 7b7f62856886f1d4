"""The aiohttp server recipe: an app answering every request with its loop's
selector, which ``web.run_app`` serves on a loop with an NgxSelector when run as a
module."""

from __future__ import annotations

from aiohttp import web

from ngxffi import selector
from recipes import selector_name


async def which(request: web.Request) -> web.Response:
    return web.Response(text=selector_name())


app = web.Application()
app.router.add_get("/", which)

if __name__ == "__main__":
    # port 0: the test reads the port bound from run_app's "Running on" line
    web.run_app(app, host="127.0.0.1", port=0, loop=selector.new_event_loop())
