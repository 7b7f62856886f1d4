"""What requests and responses are, and how a response becomes what is sent.

≈ the structures of src/http/ngx_http_request.h that a handler sees, the status lines
and head of ngx_http_header_filter_module.c (with nginx's cached ``Date``,
ngx_cached_http_time) and the error page of ngx_http_special_response.c.

A response head is built in three parts: the fixed head (status line, Server,
Content-Type, Content-Length and the handler's headers), built once per
:class:`Response`; the Date line, formatted once a second; the Connection line, one of
two constants. The answer of an in-memory body is kept whole on its response for the
second of its Date: a ``return`` server sends the same bytes again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate

from ngxffi import os as nos
from ngxffi.http.core import HttpCoreConf

REASONS = {
    200: "OK",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Not Allowed",
    408: "Request Time-out",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    500: "Internal Server Error",
    503: "Service Temporarily Unavailable",
}
HEADER_TOO_LARGE = "Request Header Or Cookie Too Large"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
KEEP_ALIVE = b"Connection: keep-alive\r\n\r\n"
CLOSE = b"Connection: close\r\n\r\n"
HEADS_MAX = 256  # response heads fixed_head keeps
_heads: dict[tuple[object, ...], bytes] = {}


@dataclass(slots=True)
class Request:
    """What a handler sees of one request."""

    method: str
    uri: str
    version: str
    headers: dict[str, str]
    keep_alive: bool


@dataclass(slots=True)
class Response:
    """A handler's answer: a body in memory, or ``file`` (an open fd, sent with
    sendfile and then closed) of ``length`` bytes."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()
    file: int = -1
    length: int = -1
    # built on first use: the head but for Date and Connection; the whole keep-alive
    # answer for the second of ``cached_date``
    fixed_head: bytes | None = field(default=None, repr=False, compare=False)
    cached_date: bytes | None = field(default=None, repr=False, compare=False)
    cached: bytes = field(default=b"", repr=False, compare=False)

    @property
    def content_length(self) -> int:
        return self.length if self.file >= 0 else len(self.body)


Handler = Callable[[Request], Response]


def expects_continue(request: Request) -> bool:
    """An HTTP/1.1 client waiting for ``100 Continue`` before its body (nginx's
    ngx_http_test_expect)."""
    expect = request.headers.get("expect")
    return (
        expect is not None
        and request.version == "1.1"
        and expect.lower() == "100-continue"
    )


class FileBody:
    """A file still to send: sendfile from ``offset``, ``left`` bytes to go."""

    __slots__ = ("fd", "left", "offset")

    def __init__(self, fd: int, length: int) -> None:
        self.fd, self.offset, self.left = fd, 0, length


class CachedDate:
    """The Date header, formatted once a second (nginx caches ngx_cached_http_time):
    the same bytes object all that second, so that ``is`` tells it is still valid."""

    since = until = 0.0  # the second of ``line``, from ``since`` to ``until``
    line = b""

    @classmethod
    def refresh(cls, now: float) -> bytes:
        """The line of ``now`` (a time.time()), when it is not in the line's second
        (later, or earlier: the clock was set back): the callers compare ``now``
        with ``since`` and ``until`` (a call per answer would cost more)."""
        second = int(now)
        date = formatdate(second, usegmt=True)
        cls.since, cls.until = float(second), second + 1.0
        cls.line = f"Date: {date}\r\n".encode()
        return cls.line


def build_fixed_head(response: Response, server_tokens: str) -> bytes:
    """The response head but for Date and Connection, which change."""
    lines = [
        f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}",
        f"Server: {server_tokens}",
    ]
    if response.status != 304:
        lines += [
            f"Content-Type: {response.content_type}",
            f"Content-Length: {response.content_length}",
        ]
    lines += [f"{name}: {value}" for name, value in response.headers]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def queue_response(
    out: list[bytes | FileBody],
    response: Response,
    head: bool,
    close: bool,
    conf: HttpCoreConf,
) -> None:
    """Append the answer ``response`` makes to ``out``: its head (``Connection:
    close`` when ``close``), then its body, in memory or a :class:`FileBody`; no body
    for ``head`` (a HEAD request) or a 304, whose file is closed at once."""
    now = time.time()
    if CachedDate.since <= now < CachedDate.until:
        date = CachedDate.line
    else:
        date = CachedDate.refresh(now)
    if response.cached_date is date and not close and not head:
        out.append(response.cached)  # the common case, built once a second
        return
    fixed = response.fixed_head
    if fixed is None:  # once per Response: `return` answers reuse one
        fixed = response.fixed_head = fixed_head(response, conf.server_tokens)
    connection = CLOSE if close else KEEP_ALIVE
    if response.file >= 0:
        out.append(fixed + date + connection)
        if head or response.status == 304:
            nos.close(response.file)
        else:
            out.append(FileBody(response.file, response.length))
        return
    if head or response.status == 304:
        out.append(fixed + date + connection)
        return
    data = b"".join((fixed, date, connection, response.body))
    if not close:
        response.cached_date, response.cached = date, data
    out.append(data)


def fixed_head(response: Response, server_tokens: str) -> bytes:
    """:func:`build_fixed_head`'s bytes, kept by what they are made of: a handler
    that makes a new Response per request mostly makes the same few heads. Up to
    HEADS_MAX are kept (then they are forgotten, all at once)."""
    length = response.length if response.file >= 0 else len(response.body)
    key = (
        response.status,
        response.content_type,
        length,
        response.headers,
        server_tokens,
    )
    try:
        return _heads[key]
    except KeyError:
        pass
    except TypeError:  # headers that cannot be a key (a list, say): not kept
        return build_fixed_head(response, server_tokens)
    if len(_heads) >= HEADS_MAX:
        _heads.clear()
    head = _heads[key] = build_fixed_head(response, server_tokens)
    return head


def error_page(status: int, title: str, server_tokens: str) -> Response:
    """nginx's error page for ``status`` (ngx_http_special_response_handler's)."""
    body = (
        f"<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {title}</h1></center>\r\n"
        f"<hr><center>{server_tokens}</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
    return Response(status, body, "text/html")
