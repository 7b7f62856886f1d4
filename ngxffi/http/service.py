"""``ngxffi serve``'s HTTP service: what one worker runs, made from the configuration
(≈ what ngx_http_block and the http modules' init_process set up: the content
handler chosen by the directives, the access log).

Every request goes to stub_status when its path is ``status_path``, else to the
content handler: ``return``'s fixed answer if there is one (which the C read handler
can send too), or the user's ``app`` (:mod:`ngxffi.http.app`), or the static files
under ``root`` (default: a small bundled page). ``app`` excludes the other two.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TextIO

from ngxffi.core.conf import Conf, ConfigError
from ngxffi.event.connection import Connection
from ngxffi.event.cycle import Cycle
from ngxffi.event.listening import Listening
from ngxffi.http.app import AppConf
from ngxffi.http.cache import OpenFileCache, OpenFileCacheConf
from ngxffi.http.core import HttpCoreConf
from ngxffi.http.message import Request, Response
from ngxffi.http.server import HttpServer
from ngxffi.http.static import Static, StaticConf
from ngxffi.http.status import StatusConf, stub_status
from ngxffi.process.worker import Configuration

BUNDLED = Path(__file__).resolve().parent / "html"


def configuration(conf: Conf) -> Configuration:
    """What the process layer needs to serve ``conf``."""
    listening = conf[HttpCoreConf].listen.listening(_no_handler)
    return Configuration(conf, listening, functools.partial(HttpService, conf))


def check_content(conf: Conf) -> None:
    """``app`` with ``return`` or ``root`` is an error: an app answers every request
    but ``status_path``, so the other would silently never be used."""
    if conf[AppConf].app is None:
        return
    others = {"return": conf[HttpCoreConf].return_, "root": conf[StaticConf].root}
    for name, value in others.items():
        if value is not None:
            raise ConfigError(
                f'"app" cannot be used with "{name}": '
                "an app answers every request but status_path"
            )


def _no_handler(c: Connection) -> None:
    """Until a worker installs its service's handler."""
    raise RuntimeError("the listening socket's handler is set in the worker")


class HttpService:
    """The HTTP server of one worker, as a :class:`ngxffi.process.worker.Service`."""

    def __init__(self, conf: Conf, cycle: Cycle) -> None:
        core = self.core = conf[HttpCoreConf]
        self.status_path = conf[StatusConf].status_path
        fixed = None if core.return_ is None else Response(*_encoded(core.return_))
        self.fixed = fixed
        self.app = conf[AppConf].app
        self.static = self.cache = None
        if not (fixed or self.app):  # each answers all but status_path itself
            self.static, self.cache = _static(conf, cycle)
        self.server = HttpServer(
            cycle,
            self.handle,
            core,
            self._open_access_log(),
            fixed=fixed,  # what the handler answers, for C to send
            fixed_except=self.status_path,
            files=self.cache.table if self.cache else None,  # or the cached files
        )

    def handle(self, request: Request) -> Response:
        if request.uri.split("?", 1)[0] == self.status_path:
            self.server.commit_stats()
            return stub_status(self.server.cycle.stats, request)
        if self.fixed is not None:
            return self.fixed
        if self.app is not None:
            return self.app(request)
        assert self.static is not None
        return self.static(request)

    def init_listening(self, ls: Listening) -> None:
        self.server.init_listening(ls)

    def init_connection(self, c: Connection) -> None:
        self.server.init_connection(c)

    def shutdown(self) -> None:
        self.server.shutting_down = True
        if self.cache is not None:  # its inotify's slot must not hold the worker
            assert self.static is not None
            self.static.cache = None
            self.cache.close()

    def reopen(self) -> None:
        """SIGUSR1, as nginx's ngx_reopen_files: after a rotation, a new file."""
        self._close_access_log()
        self.server.access_log = self._open_access_log()

    def close(self) -> None:
        """The worker is done: its C handler's buffers, the log, the root's fd."""
        self.server.close()  # no C handler keeps its buffers
        self._close_access_log()
        if self.cache is not None:
            self.cache.close()
        if self.static is not None:
            self.static.close()

    def _close_access_log(self) -> None:
        if self.server.access_log is not None:
            self.server.access_log.close()

    def _open_access_log(self) -> TextIO | None:
        """Line-buffered: each request is on disk at once."""
        path = self.core.access_log
        return open(path, "a", buffering=1) if path else None


def _static(conf: Conf, cycle: Cycle) -> tuple[Static, OpenFileCache | None]:
    """The static module under ``root``, with its open-file cache unless that is
    off (``open_file_cache = 0``)."""
    static_conf = conf[StaticConf]
    root = Path(static_conf.root or BUNDLED).resolve()
    static = Static(root, static_conf.disable_symlinks == "on")
    cache_conf = conf[OpenFileCacheConf]
    if cache_conf.open_file_cache > 0:
        server_tokens = conf[HttpCoreConf].server_tokens
        static.cache = OpenFileCache(
            cycle, root, cache_conf, server_tokens, static.identity
        )
    return static, static.cache


def _encoded(ret: tuple[int, str]) -> tuple[int, bytes]:
    return ret[0], ret[1].encode()
