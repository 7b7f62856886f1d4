"""A user's Python handler, as ``ngxffi serve`` runs it with ``app = "hello_app:app"``
(servers.py's ``ngxffi-app``): the ``200 hello`` every benchmarked server answers,
so that what differs is the server, not the work. One Response for every request,
as a handler with a fixed answer would keep one (the server caches its head in it).
"""

from __future__ import annotations

from ngxffi.http.message import Request, Response

# python_servers.BODY, written out: the server imports this module alone
RESPONSE = Response(200, b"hello")


def app(request: Request) -> Response:
    """Every request's answer: ``200 hello``, text/plain."""
    return RESPONSE
