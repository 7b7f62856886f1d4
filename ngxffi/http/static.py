"""Static files (≈ ngx_http_static_module.c, ngx_http_index_module.c and the URI
normalisation of ngx_http_parse_complex_uri).

The target's path is percent-decoded and its ``.`` and ``..`` segments resolved; a
NUL byte, or a ``..`` that would climb above the root, is 400. The root is opened once,
as a directory descriptor, and every file beneath it by
:func:`ngxffi.os.open_beneath` (openat2 with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS):
the kernel resolves the path and refuses, in the same call that opens, whatever would
leave the root (a ``..`` or an absolute symlink: 403). Nothing outside the root is ever
served, even while a directory is swapped for a symlink (there is no check before the
open to race). Relative symlinks that stay beneath the root are followed;
``disable_symlinks on`` refuses them all (403), and so does every kernel without
openat2 (before Linux 5.6), where a component-by-component walk stands in.

A directory is answered with its ``index.html``, or redirected (301) to the same path
with a slash, as nginx does. Only GET and HEAD (405 otherwise). Files go out with
sendfile, with Content-Type by the requested name's extension, Last-Modified, and 304
for an ``If-Modified-Since`` equal to it (nginx's ``if_modified_since exact``).
A request costs openat2 and fstat (and for a directory without its index one pair
more).
"""

from __future__ import annotations

import errno
import mimetypes
import os
import stat
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote, unquote_to_bytes

import httptools

from ngxffi import os as nos
from ngxffi.core import log
from ngxffi.core.conf import Command, enum, string
from ngxffi.http.cache import OpenFileCache
from ngxffi.http.message import Request, Response

DEFAULT_TYPE = "application/octet-stream"
INDEX = "index.html"
# each file as ngx_open_and_stat_file opens it: never the controlling terminal's,
# never waiting on a FIFO's writer
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

# the statuses of ngx_http_static_handler's failed opens; anything else is 500
NOT_FOUND = frozenset((errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG))
FORBIDDEN = frozenset((errno.EACCES, errno.EPERM, errno.ELOOP, errno.EXDEV))


def directory(value: object) -> str:
    """An existing directory."""
    if not Path(string(value)).is_dir():
        raise ValueError(f'"{value}" is not a directory')
    return str(value)


@dataclass
class StaticConf:
    """The static module's directives: ``root`` (None: the bundled page) and
    ``disable_symlinks`` (``"on"``: no symlink is followed; nginx's
    ``if_not_owner`` is not offered)."""

    root: str | None = None
    disable_symlinks: str = "off"

    commands: ClassVar[tuple[Command, ...]] = (
        Command("root", directory),
        Command("disable_symlinks", enum("off", "on")),
    )


class Static:
    """A handler serving files under ``root``, whose directory descriptor it holds
    until :meth:`close` (the worker's service closes it as the worker ends)."""

    def __init__(
        self, root: str | os.PathLike[str], disable_symlinks: bool = False
    ) -> None:
        # a root that is itself a symlink is followed: only what lies beneath counts
        self.fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.symlinks = not disable_symlinks
        self.cache: OpenFileCache | None = None  # set by the service that has one

    def close(self) -> None:
        """Close the root's descriptor (once; later calls do nothing)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            nos.close(fd)

    def open(self, name: str) -> tuple[int, os.stat_result]:
        """``name`` (relative to the root) opened beneath it, and its fstat; the
        caller owns the descriptor. Imitates ngx_open_and_stat_file (without
        ngx_open_cached_file's cache)."""
        fd = nos.open_beneath(self.fd, name, OPEN_FLAGS, self.symlinks)
        try:
            return fd, os.fstat(fd)
        except BaseException:
            nos.close(fd)
            raise

    def identity(self, name: str) -> tuple[int, int] | None:
        """The device and inode ``name`` leads to now, or None: how the cache makes
        sure nothing changed between an open and its watches."""
        try:
            fd, st = self.open(name.lstrip("/"))
        except OSError:
            return None
        nos.close(fd)
        return st.st_dev, st.st_ino

    def __call__(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"")
        cache = self.cache
        key = request.uri.partition("?")[0]
        if cache is not None:
            entry = cache.get(key)
            if entry is not None:
                return entry.answer(request)
        path = normalize(request.uri)
        if path is None:
            return Response(400, b"")
        index = path.endswith("/")  # a directory: its index (ngx_http_index_module)
        target = path + INDEX if index else path
        try:
            fd, st = self.open(target.lstrip("/"))
        except OSError as e:
            if index and e.errno == errno.ENOENT:
                return self._no_index(path)
            return _failed(target, e)
        response = _file(fd, st, target, index, request)
        if cache is not None and response.status == 200:
            cache.put(key, target, fd, st, response)
        return response

    def _no_index(self, path: str) -> Response:
        """A directory without its index is 403 (no listing); no directory, 404."""
        try:
            fd, st = self.open(path.lstrip("/") or ".")
        except OSError as e:
            return _failed(path, e)
        nos.close(fd)
        if stat.S_ISDIR(st.st_mode):
            return Response(403, b"")
        return Response(404, b"not found\n")  # replaced by a file meanwhile


def _failed(path: str, e: OSError) -> Response:
    """The answer to a failed open, as ngx_http_static_handler gives it."""
    if e.errno in NOT_FOUND:
        return Response(404, b"not found\n")
    if e.errno in FORBIDDEN:
        return Response(403, b"")
    log.log_error(log.CRIT, f'"{path}": {e}')
    return Response(500, b"")


def _file(
    fd: int, st: os.stat_result, path: str, index: bool, request: Request
) -> Response:
    """The answer for the open file ``fd`` at ``path`` (a directory's ``index``
    or not): the file, a redirect or a refusal (``fd`` is the response's to close,
    or closed here)."""
    if not stat.S_ISREG(st.st_mode):
        nos.close(fd)
        if index or not stat.S_ISDIR(st.st_mode):
            return Response(403, b"")  # an index that is a directory, a device, a FIFO
        # re-encoded: the decoded path may hold CR, LF or non-ASCII bytes
        location = quote(path.encode("utf-8", "surrogateescape") + b"/")
        return Response(301, b"", headers=(("Location", location),))
    modified = formatdate(int(st.st_mtime), usegmt=True)
    headers = (("Last-Modified", modified),)
    if request.headers.get("if-modified-since") == modified:
        nos.close(fd)
        return Response(304, headers=headers)
    # by the path as asked (its leading slash: no "scheme:" in a name reads as a URL)
    content_type = mimetypes.guess_type(path)[0] or DEFAULT_TYPE
    return Response(
        200, content_type=content_type, headers=headers, file=fd, length=st.st_size
    )


def normalize(uri: str) -> str | None:
    """The decoded, resolved path of a request target (origin or absolute form), or
    None when it is invalid or climbs above the root."""
    raw = uri.encode("latin-1")
    try:
        path = httptools.parse_url(raw).path or b"/"
    except httptools.HttpParserInvalidURLError:
        return None
    decoded = unquote_to_bytes(path)
    if b"\0" in decoded or not decoded.startswith(b"/"):
        return None
    parts: list[bytes] = []
    for segment in decoded.split(b"/")[1:]:
        if segment == b"..":
            if not parts:
                return None
            parts.pop()
        elif segment not in (b".", b""):
            parts.append(segment)
    trailing = decoded.endswith((b"/", b"/.", b"/..")) and bool(parts or decoded)
    text = "/" + "/".join(p.decode("utf-8", "surrogateescape") for p in parts)
    return text + "/" if trailing and text != "/" else text
