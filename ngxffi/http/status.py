"""stub_status (≈ src/http/modules/ngx_http_stub_status_module.c), in nginx's exact
format, trailing spaces included."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ngxffi.core.conf import Command, string
from ngxffi.event.stats import Stats
from ngxffi.http.message import Request, Response


@dataclass
class StatusConf:
    """Where the status page is (nginx puts ``stub_status`` in a location; ngxffi
    has one directive for it)."""

    status_path: str = "/status"

    commands: ClassVar[tuple[Command, ...]] = (Command("status_path", string),)


def stub_status(stats: Stats, request: Request) -> Response:
    """The status page; GET and HEAD only (405 otherwise), as nginx. With the query
    ``?full``, a line more (beyond nginx): the idle connections drain closed and
    the slow clients reclaimed (:mod:`ngxffi.http.reclaim`)."""
    if request.method not in ("GET", "HEAD"):
        return Response(405, b"")
    body = (
        f"Active connections: {stats.active} \n"
        "server accepts handled requests\n"
        f" {stats.accepted} {stats.handled} {stats.requests} \n"
        f"Reading: {stats.reading} Writing: {stats.writing} Waiting: {stats.waiting} \n"
    )
    if request.uri.partition("?")[2] == "full":
        body += f"Drained: {stats.drained} Reclaimed: {stats.reclaimed} \n"
    return Response(200, body.encode())
