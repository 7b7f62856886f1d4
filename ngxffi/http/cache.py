"""The open-file cache (≈ ngx_open_file_cache.c, nginx's ``open_file_cache``): what
answering a static file needs, kept per request path, so that a file asked for
again costs no open, no stat and no head to build, and C can answer it
(``src/ngx_http_cache.c``, ``src/ngx_http_fast.c``).

An entry holds the 200 answer's head up to Date, and the file: its bytes when it is
at most ``open_file_cache_inline`` long (the answer is then one send, and the entry
holds no descriptor), else its open descriptor, which is sent with sendfile.

Differs from nginx: nginx trusts an entry for ``open_file_cache_valid`` (60 s) and
then stats the file again, so a changed file can be served stale, or cut, for up to
that long. Here inotify, in the worker's own event loop, invalidates an entry as soon
as the kernel reports a change to the file or to any directory on its path: a write,
a chmod, a rename, a new symlink in its place. Three traps make that exact:

* a change between the open and the watches would go unseen, so after watching, the
  file must still have the size and times it was opened with, and the path must
  still lead to the same inode, or nothing is cached;
* a symlink's target can change through a directory on neither the requested path
  nor the file's real one, so a path that crosses a symlink is not cached (it is
  served, from the file, each time);
* the kernel reports changes after they happen: a request in the same event batch as
  the notification may still get the old answer (the old file, which was inside the
  root when it was opened: confinement never depends on the cache).

C answers files up to ``C_FILE_MAX`` (64 KiB): when the socket does not take an
answer, C keeps the rest in the connection's stash, and that bounds what a reader
that stops reading pins. Larger cached files are Python's, sent with sendfile from
an offset.

Entries are dropped oldest first beyond ``open_file_cache`` entries; descriptors held
count against the worker's RLIMIT_NOFILE beside its connections (:func:`fd_budget`).
"""

from __future__ import annotations

import contextlib
import os
import resource
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ngxffi import os as nos
from ngxffi._ngx import ffi, lib
from ngxffi.core.conf import Command, number, size
from ngxffi.core.log import ALERT, CRIT, log_error
from ngxffi.event.cycle import Cycle
from ngxffi.event.event import Event, handle_read_event
from ngxffi.http.message import Request, Response, build_fixed_head

# What a change to a watched file or directory is: anything but reading it.
WATCH_MASK = (
    lib.IN_MODIFY
    | lib.IN_ATTRIB
    | lib.IN_CLOSE_WRITE
    | lib.IN_MOVED_FROM
    | lib.IN_MOVED_TO
    | lib.IN_CREATE
    | lib.IN_DELETE
    | lib.IN_DELETE_SELF
    | lib.IN_MOVE_SELF
)
SENDFILE_MAX = 1 << 20  # larger files are not cached: their send is the cost
# The largest file C answers from: when the socket does not take it all, C keeps
# the rest in the connection's stash, so this bounds what a slow reader pins.
C_FILE_MAX = 1 << 16
FD_RESERVE = 32  # descriptors the cache leaves to logs, pipes, the listeners
READ_SIZE = 65536


@dataclass
class OpenFileCacheConf:
    """``open_file_cache`` (entries; 0 is off) and ``open_file_cache_inline`` (the
    largest file kept in memory; 0: none)."""

    open_file_cache: int = 1000
    open_file_cache_inline: int = 16384

    commands: ClassVar[tuple[Command, ...]] = (
        Command("open_file_cache", number),
        Command("open_file_cache_inline", size),
    )


def fd_budget(entries: int, connections: int) -> int:
    """How many descriptors the cache may hold: what RLIMIT_NOFILE leaves beyond
    ``connections`` (worker_connections) and FD_RESERVE, but at least a sixteenth
    of the limit — worker_connections is a bound, often set as high as the limit
    itself, not what a worker holds."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return entries
    return max(0, min(entries, max(soft - connections - FD_RESERVE, soft // 16)))


class CachedFile:
    """One entry: the C entry and what it points into, the answers Python gives from
    it, and the watches it is registered with."""

    __slots__ = ("c", "fd", "keep", "key", "last_modified", "ok", "size", "wds")

    def __init__(
        self, key: str, ok: Response, fd: int, size: int, wds: set[int]
    ) -> None:
        self.key = key
        self.ok = ok  # the 200 answer, whole when the body is inline
        self.fd = fd  # -1 when inline
        self.size = size
        self.last_modified = dict(ok.headers)["Last-Modified"]
        self.wds = wds
        self.c: Any = None
        self.keep: tuple[object, ...] = ()

    def answer(self, request: Request) -> Response:
        """What Python answers from the entry (the C handler answers plain GETs)."""
        if request.headers.get("if-modified-since") == self.last_modified:
            return Response(304, headers=self.ok.headers)
        if self.fd < 0:
            return self.ok  # the same object: its built answer is reused
        try:
            fd = nos.dup(self.fd)  # the answer closes its own descriptor
        except OSError as e:  # EMFILE: as a failed open would be (static._failed)
            log_error(CRIT, f'dup() of the cached "{self.key}" failed', e.errno or 0)
            return Response(500, b"")
        ok = self.ok
        return Response(
            200,
            content_type=ok.content_type,
            headers=ok.headers,
            file=fd,
            length=self.size,
        )


class OpenFileCache:
    """The cache of one worker. ``verify(path) -> (st_dev, st_ino) | None`` opens a
    path again the way the static module does (confined to the root)."""

    def __init__(
        self,
        cycle: Cycle,
        root: Path,
        conf: OpenFileCacheConf,
        server_tokens: str,
        verify: Callable[[str], tuple[int, int] | None],
    ) -> None:
        self.cycle = cycle
        self.root = root.resolve()  # real paths are compared with it
        self.max = conf.open_file_cache
        self.inline = conf.open_file_cache_inline
        self.server_tokens = server_tokens
        self.verify = verify
        self.entries: dict[str, CachedFile] = {}  # oldest first
        self.watches: dict[int, set[str]] = {}  # wd -> keys
        self.fds_held = 0
        self.fds_max = fd_budget(self.max, cycle.connection_n)
        n = 1 << max(4, (2 * self.max).bit_length())
        self.buckets = ffi.new("ngxffi_http_file_t *[]", n)
        self.table = ffi.new("ngxffi_http_files_t *")
        self.table.buckets, self.table.n = self.buckets, n
        ino = nos.inotify_init1()
        c = cycle.get_connection(ino)
        if c is None:
            nos.close(ino)
            raise OSError(lib.EMFILE, "no connection left for the cache's inotify")
        self.inotify = c
        c.read.handler = self._notified
        handle_read_event(c.read)

    def get(self, key: str) -> CachedFile | None:
        return self.entries.get(key)

    def put(
        self, key: str, path: str, fd: int, st: os.stat_result, ok: Response
    ) -> None:
        """Cache the 200 answer ``ok`` of ``key`` (the target's path as sent), whose
        file ``fd`` was opened as ``path`` (normalised, below the root). Nothing is
        cached when anything fails: the request is answered all the same."""
        if self.max <= 0 or not key.startswith("/") or not stat.S_ISREG(st.st_mode):
            return
        inline = st.st_size <= self.inline
        if st.st_size > SENDFILE_MAX or (not inline and self.fds_held >= self.fds_max):
            return
        if self.inotify.raw.fd == -1:  # closed: shutting down
            return
        while len(self.entries) >= self.max:  # first: its watches may be ours too
            self.remove(next(iter(self.entries.values())))
        wds: set[int] = set()
        try:
            held, body = self._take(path, fd, st, inline, wds)
        except OSError:
            self._unwatch(key, wds)
            return
        if inline:
            ok = Response(200, body, ok.content_type, ok.headers)
        entry = CachedFile(key, ok, held, st.st_size, wds)
        if st.st_size <= C_FILE_MAX:
            self._link(entry, body)
        self.entries[key] = entry
        for wd in wds:
            self.watches.setdefault(wd, set()).add(key)
        self.fds_held += held >= 0

    def _take(
        self, path: str, fd: int, st: os.stat_result, inline: bool, wds: set[int]
    ) -> tuple[int, bytes]:
        """Watch, then check that nothing changed before the watches were set (the
        path leads to the same inode, whose size and times are those of ``st``),
        then take the file's bytes (inline) or a descriptor of its own."""
        self._watch(path, fd, wds)
        now = os.fstat(fd)
        same = (now.st_size, now.st_mtime_ns, now.st_ctime_ns)
        if same != (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            raise FileNotFoundError(path)  # written to before the watches
        if self.verify(path) != (st.st_dev, st.st_ino):
            raise FileNotFoundError(path)  # replaced before the watches
        if not inline:
            return nos.dup(fd), b""
        body = os.pread(fd, st.st_size, 0)
        if len(body) != st.st_size:
            raise OSError(lib.EIO, "file changed while cached")
        return -1, body

    def _watch(self, path: str, fd: int, wds: set[int]) -> None:
        """Watch the file and every directory from the root down to it. Only a
        path without symlinks is cached (its real path is the path asked for):
        a symlink's target may change through a directory on neither path, which
        nothing here would watch."""
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        literal = self.root.joinpath(path.lstrip("/"))
        if real != literal:
            raise FileNotFoundError(path)  # a symlink on the way: not cached
        add = nos.inotify_add_watch
        ino = self.inotify.raw.fd
        wds.add(add(ino, f"/proc/self/fd/{fd}", WATCH_MASK))
        for d in literal.parents:
            if d == self.root or self.root in d.parents:
                wds.add(add(ino, d, WATCH_MASK | lib.IN_ONLYDIR | lib.IN_DONT_FOLLOW))

    def _link(self, entry: CachedFile, body: bytes) -> None:
        """The C entry, linked in the table the C handler looks in."""
        key = entry.key.encode("latin-1")
        ok = entry.ok
        like = Response(200, content_type=ok.content_type, headers=ok.headers)
        like.file, like.length = 0, entry.size  # for its Content-Length only
        head = build_fixed_head(like, self.server_tokens)
        e = ffi.new("ngxffi_http_file_t *")
        e.key, e.key_len = ffi.from_buffer(key), len(key)
        e.head, e.head_len = ffi.from_buffer(head), len(head)
        e.body = ffi.from_buffer(body) if entry.fd < 0 else ffi.NULL
        e.size, e.fd = entry.size, entry.fd
        if lib.ngxffi_http_file_link(self.table, e) < 0:
            raise nos.error("ngxffi_http_file_link")
        entry.c, entry.keep = e, (key, head, body)

    def remove(self, entry: CachedFile) -> None:
        """Drop an entry: out of the C table first, then its memory and descriptor."""
        if self.entries.get(entry.key) is not entry:
            return
        del self.entries[entry.key]
        if entry.c is not None:
            lib.ngxffi_http_file_unlink(self.table, entry.c)
        entry.c = None
        entry.keep = ()
        if entry.fd >= 0:
            nos.close(entry.fd)
            self.fds_held -= 1
        self._unwatch(entry.key, entry.wds)

    def _unwatch(self, key: str, wds: set[int]) -> None:
        """Forget ``key`` in its watches; a watch no entry needs is removed."""
        for wd in wds:
            keys = self.watches.get(wd)
            if keys is not None:
                keys.discard(key)
                if keys:
                    continue
                del self.watches[wd]
            with contextlib.suppress(OSError):  # gone with its inode already
                nos.inotify_rm_watch(self.inotify.raw.fd, wd)

    def clear(self) -> None:
        for entry in list(self.entries.values()):
            self.remove(entry)

    def _notified(self, ev: Event) -> None:
        """The inotify descriptor's read handler: drop the entries each change
        concerns (all of them when the kernel's queue overflowed)."""
        if ev.data.raw.close:  # worker_shutdown_timeout: everything closes now
            self.close()
            return
        fd = ev.data.raw.fd
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                ev.raw.ready = 0
                return
            except OSError as e:
                log_error(ALERT, "read() of the cache's inotify failed", e.errno or 0)
                self.clear()
                return
            for event in nos.inotify_events(data):
                if event.mask & lib.IN_Q_OVERFLOW:
                    self.clear()
                    continue
                keys = self.watches.get(event.wd, ())
                if event.mask & lib.IN_IGNORED:
                    self.watches.pop(event.wd, None)
                for key in list(keys):
                    entry = self.entries.get(key)
                    if entry is not None:
                        self.remove(entry)

    def close(self) -> None:
        """Every entry dropped, the inotify descriptor closed."""
        self.clear()
        if self.inotify.raw.fd != -1:
            self.cycle.close_connection(self.inotify)
