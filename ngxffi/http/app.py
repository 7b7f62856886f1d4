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
from ngxffi.http.message import (
    REASONS,
    Request,
    Response,
    build_fixed_head,
    error_page,
)


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
        self.server_tokens = server_tokens
        self.failed = error_page(500, REASONS[500], server_tokens)

    def __call__(self, request: Request) -> Response:
        try:
            response = self.handler(request)
        except Exception as e:
            self._log(request, f"raised {_one_line(e)}", _handler_traceback(e))
            return self.failed
        if isinstance(response, Response) and response.fixed_head is not None:
            return response  # sent before, and so checked: its head is built
        problem = build_head(response, self.server_tokens)
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


def build_head(response: object, server_tokens: str) -> str | None:
    """Build ``response``'s fixed head, as the server would when it sends it (so it
    costs no more than that), and check what building does not: None when it can be
    sent as it is, else what is wrong."""
    if not isinstance(response, Response):
        return f"{reprlib.repr(response)}, not a Response"
    status, body, file = response.status, response.body, response.file
    if not isinstance(status, int) or isinstance(status, bool) or not 99 < status < 600:
        return f"status {status!r}, not an integer from 100 to 599"
    if not isinstance(body, bytes):
        return f"a body of type {type(body).__name__}, not bytes"
    length = response.length
    if not isinstance(file, int) or not isinstance(length, int) or file >= 0 > length:
        return f"file {file!r} of length {length!r}"
    try:
        head = build_fixed_head(response, server_tokens)
        # build_fixed_head ends its lines, and only them, with CRLF: a CR or LF
        # more came from the handler's strings (header injection)
        lines = 2 + 2 * (status != 304) + len(response.headers)
    except (TypeError, ValueError) as e:  # headers not pairs, not latin-1 text...
        return f"a head that cannot be built ({_one_line(e)})"
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        return "a header or Content-Type with CR or LF"
    response.fixed_head = head
    return None


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):  # EBADF: the handler closed it itself
            nos.close(fd)


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
