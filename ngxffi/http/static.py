"""Static files (≈ ngx_http_static_module.c, ngx_http_index_module.c and the URI
normalisation of ngx_http_parse_complex_uri).

The target's path is percent-decoded and its ``.`` and ``..`` segments resolved; a
NUL byte, or a ``..`` that would climb above the root, is 400. The file must resolve
(symlinks followed) to a place inside the root, else 403: nothing outside the root is
ever served. A directory is answered with its ``index.html``, or redirected (301) to
the same path with a slash, as nginx does. Only GET and HEAD (405 otherwise). Files
go out with sendfile, with Content-Type by extension, Last-Modified, and 304 for an
``If-Modified-Since`` equal to it (nginx's ``if_modified_since exact``).
"""

from __future__ import annotations

import mimetypes
import os
import stat
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote, unquote_to_bytes

import httptools

from ngxffi.core.conf import Command, string
from ngxffi.http.message import Request, Response

DEFAULT_TYPE = "application/octet-stream"
INDEX = "index.html"


def directory(value: object) -> str:
    """An existing directory."""
    if not Path(string(value)).is_dir():
        raise ValueError(f'"{value}" is not a directory')
    return str(value)


@dataclass
class StaticConf:
    """The static module's directive: ``root`` (None: the bundled page)."""

    root: str | None = None

    commands: ClassVar[tuple[Command, ...]] = (Command("root", directory),)


class Static:
    """A handler serving files under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve(strict=True)
        if not self.root.is_dir():
            raise NotADirectoryError(f"root {str(self.root)!r} is not a directory")

    def __call__(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"")
        path = normalize(request.uri)
        if path is None:
            return Response(400, b"")
        target = self.root / path.lstrip("/")
        if path.endswith("/"):
            target = target / INDEX
        try:
            real = target.resolve(strict=True)
        except FileNotFoundError:
            if path.endswith("/") and target.parent.is_dir():
                return Response(403, b"")  # a directory without an index: no listing
            return Response(404, b"not found\n")
        except (OSError, RuntimeError):  # a loop of symlinks, a component not a dir
            return Response(404, b"not found\n")
        if real != self.root and self.root not in real.parents:
            return Response(403, b"")  # a symlink leaving the root
        return self._file(real, path, request)

    def _file(self, real: Path, path: str, request: Request) -> Response:
        try:
            fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except PermissionError:
            return Response(403, b"")
        except OSError:
            return Response(404, b"not found\n")
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            os.close(fd)
            if path.endswith("/"):
                return Response(403, b"")  # no index: directory listing is off
            # re-encoded: the decoded path may hold CR, LF or non-ASCII bytes
            location = quote(path.encode("utf-8", "surrogateescape") + b"/")
            return Response(301, b"", headers=(("Location", location),))
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return Response(403, b"")
        modified = formatdate(int(st.st_mtime), usegmt=True)
        headers = (("Last-Modified", modified),)
        if request.headers.get("if-modified-since") == modified:
            os.close(fd)
            return Response(304, headers=headers)
        content_type = mimetypes.guess_type(real.name)[0] or DEFAULT_TYPE
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
