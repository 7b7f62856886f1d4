"""The glue to the C read handler ``ngxffi_http_fast_read`` (``src/ngx_http_fast.c``):
beyond nginx, ngx_http_keepalive_handler of src/http/ngx_http_request.c with a
``return`` answer, in C, for plain requests.

When the handler answers everything with one fixed response (``return``), or serves
static files through the open-file cache (:mod:`ngxffi.http.cache`: C answers the
files the cache holds), an idle connection's read event also carries the C handler,
which answers plain GETs inside the epoll batch and stashes anything else on the
connection for Python: input it read, or answers the socket did not take at once
(:meth:`ngxffi.event.connection.Connection.take_stash`). It runs only while
the connection is idle: armed when it goes idle, disarmed as soon as Python has a
request or an answer under way on it.
"""

from __future__ import annotations

from typing import Any

from ngxffi._ngx import ffi, lib
from ngxffi.http.core import HttpCoreConf
from ngxffi.http.message import Response, build_fixed_head

READ_SIZE = 16384  # what one read asks for, in C as in Python (connection.py)
FAST_OUTPUT = 1 << 17  # the C handler's answers to one read; more go to Python
FAST_HANDLER = ffi.cast(
    "ngxffi_c_handler_pt", ffi.addressof(lib, "ngxffi_http_fast_read")
)


def fast_conf(
    fixed: Response | None,
    fixed_except: str,
    conf: HttpCoreConf,
    requests: Any,
    files: Any = None,
) -> tuple[Any, tuple[object, ...]] | None:
    """The C handler's configuration (an ``ngxffi_http_fast_t``) when every request
    but ``fixed_except`` is answered with ``fixed``, or from the open-file cache's
    table ``files`` (an ``ngxffi_http_files_t``, :mod:`ngxffi.http.cache`), with what
    it points into (to be kept alive as long as it is); None when neither is for C to
    send. ``requests`` is stub_status's shared counter."""
    if files is None and (
        fixed is None or fixed.file >= 0 or fixed.status in (204, 304)
    ):
        return None
    fast = ffi.new("ngxffi_http_fast_t *")
    skip = fixed_except.encode("latin-1")
    buf = ffi.new("char[]", READ_SIZE)
    out = ffi.new("char[]", FAST_OUTPUT)
    head = body = b""
    if files is not None:
        fast.files = files
    elif fixed is not None:
        head, body = build_fixed_head(fixed, conf.server_tokens), fixed.body
    fast.head, fast.head_len = ffi.from_buffer(head), len(head)
    fast.body, fast.body_len = ffi.from_buffer(body), len(body)
    fast.skip_path, fast.skip_path_len = ffi.from_buffer(skip), len(skip)
    fast.keepalive_requests = conf.keepalive_requests
    fast.requests = requests
    fast.buf, fast.size, fast.out, fast.out_size = buf, READ_SIZE, out, FAST_OUTPUT
    fast.enabled = 1
    return fast, (head, body, skip, buf, out, files)
