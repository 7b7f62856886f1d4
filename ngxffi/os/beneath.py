"""Opening a file beneath a directory and never outside it (≈ ngx_openat_file and
ngx_open_file_wrapper of src/core/ngx_open_file_cache.c, nginx's walk for
``disable_symlinks``): openat2(2) with its ``RESOLVE_*`` flags, and a walk with plain
openat(2) that stands in for it on kernels without openat2 (Linux before 5.6).

:func:`open_beneath` is the way in. It uses openat2 while the module's ``use_openat2``
is true; that turns false by itself at the first ENOSYS, and tests set it false
(``ngxffi.os.beneath.use_openat2 = False``: the switch is not re-exported by
:mod:`ngxffi.os`) to try the walk. The walk cannot tell a symlink that stays beneath
the directory from one that leaves it, so it follows none: on a kernel without
openat2 every symlink is refused (ELOOP), as with nginx's ``disable_symlinks on``.
"""

from __future__ import annotations

import os as _os
import stat
from os import PathLike
from typing import Union

from ngxffi._ngx import lib
from ngxffi.os.errors import FileLike, error, fileno, retry
from ngxffi.os.files import close

StrPath = Union[str, bytes, PathLike[str], PathLike[bytes]]

RESOLVE_NO_XDEV: int = lib.RESOLVE_NO_XDEV
RESOLVE_NO_MAGICLINKS: int = lib.RESOLVE_NO_MAGICLINKS
RESOLVE_NO_SYMLINKS: int = lib.RESOLVE_NO_SYMLINKS
RESOLVE_BENEATH: int = lib.RESOLVE_BENEATH
RESOLVE_IN_ROOT: int = lib.RESOLVE_IN_ROOT

# openat2(2): with RESOLVE_BENEATH or RESOLVE_IN_ROOT, EAGAIN means that a rename or a
# mount anywhere on the machine raced a ".." and the kernel could not prove that it
# stayed beneath; "the caller may choose to retry". A few times, not forever: a
# machine that renames without pause must not hold a worker in a loop.
EAGAIN_TRIES = 4

use_openat2 = True  # False: open_beneath walks (see the module's docstring)

# A directory on the way: only looked up, never a symlink (ngx_openat_file's
# NGX_FILE_SEARCH | NGX_FILE_DIRECTORY | NGX_FILE_NOFOLLOW).
_SEARCH = lib.O_PATH | lib.O_DIRECTORY | lib.O_NOFOLLOW | lib.O_CLOEXEC


def _path(path: StrPath) -> bytes:
    """The bytes the kernel gets; a NUL would cut the path short in C."""
    raw = _os.fsencode(path)
    if b"\0" in raw:
        raise ValueError("embedded null byte")
    return raw


def openat2(dirfd: FileLike, path: StrPath, flags: int, resolve: int = 0) -> int:
    """openat2(2): ``path`` opened relative to ``dirfd`` under the ``RESOLVE_*`` rules
    of ``resolve``; the new descriptor. ``flags`` are open's ``O_*`` (O_CREAT and
    O_TMPFILE are EINVAL: no mode is passed). EINTR is retried, and EAGAIN (a ``..``
    raced by a rename) up to ``EAGAIN_TRIES`` times in all. nginx has no openat2."""
    fd, raw = fileno(dirfd), _path(path)
    tries = EAGAIN_TRIES
    while True:
        try:
            return retry("openat2", lib.ngxffi_openat2, fd, raw, flags, resolve)
        except BlockingIOError:
            tries -= 1
            if tries <= 0:
                raise


def openat(dirfd: FileLike, path: StrPath, flags: int) -> int:
    """openat(2) with no mode (O_CREAT and O_TMPFILE are EINVAL); EINTR retried.
    Imitates ngx_openat_file."""
    return retry("openat", lib.ngxffi_openat, fileno(dirfd), _path(path), flags)


def walk_beneath(dirfd: FileLike, path: StrPath, flags: int) -> int:
    """``path`` opened beneath ``dirfd`` a component at a time with O_NOFOLLOW, so
    that no symlink is ever followed: one on the way is ELOOP, as openat2 with
    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS says. An absolute path or a ``..`` is
    EXDEV unresolved (RESOLVE_BENEATH would resolve it, and refuse it only if it
    climbed out). Imitates ngx_open_file_wrapper with ``disable_symlinks on``;
    differs in saying ELOOP, not ENOTDIR, for a symlink where a directory is looked
    up (one fstatat more, on that failure only)."""
    raw = _path(path)
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    if raw.startswith(b"/") or b".." in parts:
        raise error("openat", lib.EXDEV)
    top = at = fileno(dirfd)
    try:
        for part in parts[:-1]:
            step = _search(at, part)
            if at != top:
                close(at)
            at = step
        return openat(at, parts[-1] if parts else b".", flags | lib.O_NOFOLLOW)
    finally:
        if at != top:
            close(at)


def _search(at: int, name: bytes) -> int:
    """The directory ``name`` under ``at``, looked up only; ELOOP for a symlink."""
    try:
        return openat(at, name, _SEARCH)
    except NotADirectoryError:  # what O_DIRECTORY | O_NOFOLLOW says of a symlink too
        st = _os.stat(name, dir_fd=at, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise error("openat", lib.ELOOP) from None
        raise


def open_beneath(
    dirfd: FileLike, path: StrPath, flags: int, symlinks: bool = True
) -> int:
    """``path`` opened beneath ``dirfd``: what it resolves to, through ``..`` or
    symlinks, must stay beneath (else EXDEV); no magic link (``/proc/self/fd/N``) is
    followed, nor any symlink unless ``symlinks`` (ELOOP). openat2 with
    RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS (| RESOLVE_NO_SYMLINKS), or
    :func:`walk_beneath`, which refuses every symlink whatever ``symlinks`` says.
    ≈ ngx_open_file_wrapper; differs: nginx follows symlinks anywhere when they are
    allowed."""
    global use_openat2
    if use_openat2:
        resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
        if not symlinks:
            resolve |= RESOLVE_NO_SYMLINKS
        try:
            return openat2(dirfd, path, flags, resolve)
        except OSError as e:
            if e.errno != lib.ENOSYS:
                raise
            use_openat2 = False  # no openat2 in this kernel: walk from now on
    return walk_beneath(dirfd, path, flags)
