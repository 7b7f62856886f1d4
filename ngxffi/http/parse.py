"""Reading a request: llhttp (through httptools) and nginx's limits on what a client
may send (≈ src/http/ngx_http_parse.c and the header-reading half of
ngx_http_request.c: ngx_http_process_request_line, _request_headers, _host).

Limits and statuses are nginx's: a request line longer than a large header buffer
(8k) is 414; a header line longer than that, or headers beyond 4 x 8k, 400 "Request
Header Or Cookie Too Large"; a Content-Length over ``client_max_body_size`` 413;
anything llhttp refuses, a duplicate Host or an HTTP/1.1 request without one, 400.
Every error response closes the connection (lingering: :mod:`ngxffi.http.linger`).

No handler reads a body: a request is answered once its header and the rest of the
read it came in are parsed, and its body is read and thrown away after the answer,
keep-alive kept, as nginx's ngx_http_discard_request_body does (a chunked body has no
size limit then; ``lingering_timeout`` and ``lingering_time`` bound the wait).
"""

from __future__ import annotations

from array import array
from typing import Any, NamedTuple, Protocol

import httptools

from ngxffi._ngx import ffi, lib
from ngxffi.http.core import HttpCoreConf
from ngxffi.http.message import HEADER_TOO_LARGE, REASONS, Request

METHODS = {m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE")}
# where ngxffi_http_plain puts what it found (src/ngx_http_parse.h)
TEXT: int = lib.NGXFFI_PLAIN_TEXT
END: int = lib.NGXFFI_PLAIN_END
KEEP: int = lib.NGXFFI_PLAIN_KEEP
LAST: int = lib.NGXFFI_PLAIN_LAST
DRAINED: int = lib.NGXFFI_PLAIN_DRAINED
new_request = object.__new__


class Limits(NamedTuple):
    """What a client may send, in bytes, from ``large_client_header_buffers`` (number,
    size) and ``client_max_body_size``."""

    line: int  # a request or header line: one large buffer
    headers: int  # all header lines: number x size
    unparsed: int  # what llhttp may buffer before the header ends: one buffer more
    body: int

    @classmethod
    def of(cls, conf: HttpCoreConf) -> Limits:
        number, size = conf.large_client_header_buffers
        return cls(size, number * size, (number + 1) * size, conf.client_max_body_size)


class PlainParser:
    """Requests of a plain shape, recognised by ``ngxffi_http_plain`` (in
    src/ngx_http_parse.c) instead of llhttp: the C copies the method, target,
    version and each header's name (in lower case) and value to ``text``, one NUL
    between two, and the Request is made of one string; anything else is llhttp's.
    The Request is the one llhttp's callbacks would make (tests/test_http_parse.py
    checks it). ``buf`` is what ``ngxffi_http_plain_read`` reads into, one
    connection's read at a time."""

    __slots__ = ("_out", "_text", "buf", "bufp", "ctx", "out", "text", "unparsed_max")

    def __init__(
        self,
        limits: Limits,
        size: int,
        short_read_drains: bool,
        requests: Any,
        cycle: Any,
        requests_max: int,
    ) -> None:
        self.out = array("i", bytes(4 * lib.NGXFFI_PLAIN_OUT))
        self.text = bytearray(size)  # a request's parts are shorter than it
        self.buf = bytearray(size)
        ctx = self.ctx = ffi.new("ngxffi_http_plain_t *")
        ctx.line_max, ctx.headers_max = limits.line, limits.headers
        ctx.unparsed_max = self.unparsed_max = limits.unparsed
        # C writes them, Python reads them in place; kept as long as C points there
        self._out = ffi.from_buffer("int32_t[]", self.out)
        self._text = ffi.from_buffer(self.text)
        self.bufp = ffi.from_buffer(self.buf)
        ctx.out, ctx.text, ctx.text_size = self._out, self._text, size
        ctx.buf, ctx.size = self.bufp, size
        ctx.short_read_drains = short_read_drains
        ctx.requests = requests  # stub_status's counter (ngxffi_http_plain_send)
        ctx.cycle = cycle  # the C cycle state, whose reusable queue it updates
        ctx.requests_max = requests_max  # a connection's last: Connection: close

    def request(self) -> Request:
        """The Request of the plain request ``text`` holds."""
        out = self.out
        fields = self.text[: out[TEXT]].decode("latin-1").split("\0")
        # its fields set one by one: the dataclass __init__ would be one more
        # Python call per request
        request = new_request(Request)
        request.method, request.uri, request.version = fields[0], fields[1], fields[2]
        headers = request.headers = {}
        i, n = 3, len(fields)
        while i < n:  # each name, then its value (cheaper than dict(zip()) for the
            headers[fields[i]] = fields[i + 1]  # few headers of most requests)
            i += 2
        request.keep_alive = out[KEEP] == 1
        return request


class StopReading(Exception):
    """Raised by a parser callback: no more requests on a connection that closes."""


class Rejected(Exception):
    """Raised by a parser callback to stop parsing; the status is in ``error``."""


# What feed_data raises for a request that cannot be answered (a callback's exception
# arrives wrapped in HttpParserCallbackError).
PARSE_ERRORS = (httptools.HttpParserError, ValueError, Rejected, StopReading)


class Answerer(Protocol):
    """Whom a parser gives its complete requests: its HTTP connection
    (connection.HttpConnection)."""

    close_after: bool  # the last request was answered: read no more

    def answer(self, request: Request) -> None:
        """Count the request on the connection, answer it."""

    def now(self) -> int:
        """The cycle's time (msec): when a request begins."""

    def body_discarded(self) -> None:
        """An answered request's body was read to its end."""


class HttpRequest:
    """The parse of one connection's current request: the llhttp parser and what it
    has seen so far (≈ ngx_http_request_t). Held only while a request is being read;
    an idle keep-alive connection gives it back to the server, as nginx frees its
    request when a connection goes idle. httptools calls the ``on_*`` methods during
    ``feed_data``."""

    __slots__ = (
        "begun",
        "body_bytes",
        "body_max",
        "discarding",
        "error",
        "hc",
        "header_bytes",
        "headers",
        "headers_max",
        "line_max",
        "parser",
        "request",
        "started",
        "unanswered",
        "unparsed",
        "unparsed_max",
        "url",
    )

    def __init__(self, limits: Limits) -> None:
        self.line_max, self.headers_max, self.unparsed_max, self.body_max = limits
        self.hc: Answerer | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.error: tuple[int, str] | None = None
        self._reset()

    def _reset(self) -> None:
        self.begun = False
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body_bytes = 0
        self.discarding = False  # answered, its body still to read and discard
        self.request: Request | None = None
        self.unanswered: Request | None = None  # its body is being read first
        self.unparsed = 0  # bytes fed since the request began, until its header ends
        self.started = 0  # when it began (msec), set by its connection

    def reject(self, status: int, title: str) -> Rejected:
        self.error = (status, title)
        return Rejected(status, title)

    def on_message_begin(self) -> None:
        if self.hc is not None and self.hc.close_after:
            # after a last request nothing more is read (nginx's lingering close)
            raise StopReading
        self.begun = True
        if self.hc is not None:
            self.started = self.hc.now()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.line_max:
            raise self.reject(414, REASONS[414])

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 4
        self.header_bytes += size
        if size > self.line_max or self.header_bytes > self.headers_max:
            raise self.reject(400, HEADER_TOO_LARGE)
        key = name.decode("latin-1").lower()
        if key == "host" and key in self.headers:
            raise self.reject(400, REASONS[400])  # client sent duplicate host header
        self.headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        parser = self.parser
        version = parser.get_http_version()
        if version == "1.1" and "host" not in self.headers:
            raise self.reject(400, REASONS[400])  # HTTP/1.1 request without "Host"
        length = int(self.headers.get("content-length") or 0)
        if length > self.body_max:
            raise self.reject(413, REASONS[413])
        # a body: read and thrown away once the request is answered, without
        # client_max_body_size (nginx's discarded bodies); lingering_time bounds it
        self.discarding = length > 0 or "chunked" in self.headers.get(
            "transfer-encoding", ""
        )
        method = parser.get_method()
        self.request = Request(
            METHODS.get(method) or method.decode("latin-1"),
            self.url.decode("latin-1"),
            version,
            self.headers,
            parser.should_keep_alive(),
        )
        assert self.hc is not None
        if self.discarding:
            # answered once the rest of this read is parsed, as nginx's
            # ngx_http_discard_request_body parses what the header's buffer holds
            # before the answer: a body found broken there is a 400 instead
            self.unanswered = self.request
        else:
            self.hc.answer(self.request)

    def answer_pending(self) -> None:
        """Answer the request whose body began in the read just parsed."""
        request, self.unanswered = self.unanswered, None
        if request is not None and self.hc is not None:
            self.hc.answer(request)

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)  # discarded

    def on_message_complete(self) -> None:
        hc = self.hc
        if self.discarding and hc is not None:  # discarded whole: keep-alive goes on
            self.answer_pending()
            hc.body_discarded()
        self._reset()
