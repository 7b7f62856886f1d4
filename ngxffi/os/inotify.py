"""inotify (nothing in nginx: its open_file_cache re-checks a file once
``open_file_cache_valid`` has passed; ngxffi's cache is told of each change instead).

The descriptor is non-blocking and close-on-exec; its events are read with
:func:`ngxffi.os.read` and split by :func:`inotify_events`.
"""

from __future__ import annotations

import os as _os
import struct
from typing import NamedTuple

from ngxffi._ngx import lib
from ngxffi.os.errors import FileLike, fileno, retry

# struct inotify_event: int wd; uint32_t mask, cookie, len; char name[len]
_EVENT = struct.Struct("=iIII")


class InotifyEvent(NamedTuple):
    wd: int
    mask: int
    cookie: int
    name: bytes


def inotify_init1(flags: int = lib.IN_NONBLOCK | lib.IN_CLOEXEC) -> int:
    """A new inotify instance."""
    return retry("inotify_init1", lib.inotify_init1, flags)


def inotify_add_watch(
    fd: FileLike, path: str | bytes | _os.PathLike[str], mask: int
) -> int:
    """Watch ``path`` for ``mask``; the watch descriptor (the same one again for an
    inode already watched: add IN_MASK_ADD to widen its mask rather than replace it)."""
    name = _os.fsencode(path)
    if b"\0" in name:
        raise ValueError("embedded null byte")
    return retry("inotify_add_watch", lib.inotify_add_watch, fileno(fd), name, mask)


def inotify_rm_watch(fd: FileLike, wd: int) -> None:
    """Remove a watch; its IN_IGNORED event follows."""
    retry("inotify_rm_watch", lib.inotify_rm_watch, fileno(fd), wd)


def inotify_events(data: bytes) -> list[InotifyEvent]:
    """The events in what one read of an inotify descriptor returned (the kernel
    returns whole events only); a truncated tail is ignored."""
    events = []
    offset, end = 0, len(data)
    while offset + _EVENT.size <= end:
        wd, mask, cookie, length = _EVENT.unpack_from(data, offset)
        offset += _EVENT.size
        name = data[offset : offset + length].rstrip(b"\0")
        offset += length
        events.append(InotifyEvent(wd, mask, cookie, name))
    return events
