"""A user's handler (``app = "module:callable"``): a callable that takes a
:class:`~ngxffi.http.message.Request` and returns a
:class:`~ngxffi.http.message.Response`, served by ``ngxffi serve`` on the event core.

nginx has no such module: its closest counterparts are a content handler of
``ngx_http_core_module`` run in the worker, with the error page of
ngx_http_special_response.c when it fails. The directive's check imports the module
(so that ``-t`` and a reload catch a module that does not import), and wraps the
callable in an :class:`App`, which turns whatever the callable does wrong into a 500
and an error-log line instead of a closed connection.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import reprlib
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import ClassVar

from ngxffi import os as nos
from ngxffi.core.conf import Command, string
from ngxffi.core.log import ERR, log_error
from ngxffi.http.core import HttpCoreConf
from ngxffi.http.message import REASONS, Request, Response, error_page

# what build_fixed_head can send as is: a header name is an RFC 9110 token; a value
# (and Content-Type) any latin-1 but CR, LF, NUL and the other controls
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


class App:
    """``handler``, as the server calls it: its Response, or nginx's 500 error page
    when it raises or returns something that cannot be sent (logged at ``error``
    with the traceback or what was wrong). ``spec`` is ``module:callable``, for the
    log.

    Unlike nginx, which closes a connection after a 500, the connection stays open:
    the request was read whole, so the stream is still in step."""

    def __init__(
        self,
        spec: str,
        handler: Callable[[Request], object],
        server_tokens: str = HttpCoreConf.server_tokens,
    ) -> None:
        self.spec = spec
        self.handler = handler
        self.failed = error_page(500, REASONS[500], server_tokens)

    def __call__(self, request: Request) -> Response:
        try:
            response = self.handler(request)
        except Exception as e:
            self._log(request, f"raised {_one_line(e)}", _handler_traceback(e))
            return self.failed
        problem = invalid(response)
        if problem is not None:
            self._log(request, f"returned {problem}")
            if isinstance(response, Response) and isinstance(response.file, int):
                _close(response.file)  # the server's to close once it is given
            return self.failed
        assert isinstance(response, Response)
        return response

    def _log(self, request: Request, what: str, details: str = "") -> None:
        log_error(
            ERR,
            f'app "{self.spec}" {what}, request: "{request.method} {request.uri} '
            f'HTTP/{request.version}"' + (f"\n{details.rstrip()}" if details else ""),
        )


def invalid(response: object) -> str | None:
    """What makes ``response`` impossible to send as it is, or None."""
    if not isinstance(response, Response):
        return f"{reprlib.repr(response)}, not a Response"
    status, body = response.status, response.body
    if (
        not isinstance(status, int)
        or isinstance(status, bool)
        or not 100 <= status <= 599
    ):
        return f"status {status!r}, not an integer from 100 to 599"
    if not isinstance(body, bytes):
        return f"a body of type {type(body).__name__}, not bytes"
    file, length = response.file, response.length
    if not isinstance(file, int) or not isinstance(length, int):
        return f"file {file!r} and length {length!r}, not integers"
    if file >= 0 and length < 0:
        return "a file without its length"
    if not isinstance(response.content_type, str) or not _VALUE.fullmatch(
        response.content_type
    ):
        return f"Content-Type {response.content_type!r}"
    headers = response.headers
    if not isinstance(headers, tuple | list):
        return f"headers {reprlib.repr(headers)}, not a tuple"
    for header in headers:
        if not _is_header(header):
            return f"header {reprlib.repr(header)}, not a (name, value) of text"
    return None


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):  # EBADF: the handler closed it itself
            nos.close(fd)


def _is_header(header: object) -> bool:
    if not isinstance(header, tuple) or len(header) != 2:
        return False
    name, value = header
    return (
        isinstance(name, str)
        and isinstance(value, str)
        and _TOKEN.fullmatch(name) is not None
        and _VALUE.fullmatch(value) is not None
    )


def load_app(value: object) -> App:
    """The ``app`` directive's check: ``"module:callable"`` (the callable may be
    dotted, ``module:obj.method``) imported from ``sys.path``, and wrapped. A module
    already imported is reloaded (``importlib.reload``): a reload of the
    configuration runs the module's new code. Every failure is a ValueError of one
    line that names the spec and the cause."""
    spec = string(value)
    name, _, attr = spec.partition(":")
    if not name or not attr:
        raise ValueError(f'expected "MODULE:CALLABLE", not {spec!r}')
    try:
        module = _import(name)
    except (Exception, SystemExit) as e:  # whatever its code raises at import
        raise ValueError(f'"{spec}": cannot import {name}: {_one_line(e)}') from None
    handler: object = module
    for part in attr.split("."):
        try:
            handler = getattr(handler, part)
        except Exception as e:  # AttributeError, or a module __getattr__'s own
            raise ValueError(f'"{spec}": {_one_line(e)}') from None
    if not callable(handler):
        raise ValueError(f'"{spec}": {attr} is not callable: {reprlib.repr(handler)}')
    return App(spec, handler)


def _import(name: str) -> ModuleType:
    importlib.invalidate_caches()  # a module written since the last import
    module = sys.modules.get(name)
    return importlib.import_module(name) if module is None else importlib.reload(module)


def _handler_traceback(e: BaseException) -> str:
    """The traceback from the handler's frame down (App.__call__'s says nothing)."""
    tb = e.__traceback__
    return "".join(traceback.format_exception(type(e), e, tb.tb_next if tb else None))


def _one_line(e: BaseException) -> str:
    """``Type: message`` on one line (a SyntaxError's says the file and line)."""
    message = " ".join(str(e).split())
    return f"{type(e).__name__}: {message}" if message else type(e).__name__


@dataclass
class AppConf:
    """The app module's directive: ``app`` (None: no app; ``return`` or the static
    files answer)."""

    app: App | None = None

    commands: ClassVar[tuple[Command, ...]] = (Command("app", load_app),)
