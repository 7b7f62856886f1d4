"""The open-file cache (ngxffi.http.cache): a static file asked for again is
answered from the cache (in C on an idle keep-alive connection) with exactly the
bytes the uncached path sends; inotify drops an entry as soon as its file, or a
directory on its path, changes."""

from __future__ import annotations

import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_http_fast import undated

from ngxffi import os as nos
from ngxffi.event.accept import add_listening
from ngxffi.event.cycle import Cycle
from ngxffi.event.event import process_events_and_timers
from ngxffi.event.listening import Listening, open_listening_sockets
from ngxffi.http.cache import (
    C_FILE_MAX,
    FD_RESERVE,
    OpenFileCache,
    OpenFileCacheConf,
    fd_budget,
)
from ngxffi.http.core import HttpCoreConf
from ngxffi.http.server import HttpServer
from ngxffi.http.static import Static

SMALL = b"s" * 1024  # kept in memory
LARGE = bytes(range(256)) * 256  # 64 KiB: sent from the cached descriptor


class Files:
    """A static server on a cycle of this process, with the cache or without."""

    def __init__(self, root: Path, max_entries: int = 100) -> None:
        self.ls = Listening(("127.0.0.1", 0), print)
        open_listening_sockets([self.ls])
        self.cycle = Cycle(64)
        self.static = Static(root)
        self.cache = None
        if max_entries:
            conf = OpenFileCacheConf(open_file_cache=max_entries)
            self.cache = OpenFileCache(
                self.cycle, root, conf, "ngxffi", self.static.identity
            )
        self.static.cache = self.cache
        table = self.cache.table if self.cache else None
        self.server = HttpServer(self.cycle, self.static, HttpCoreConf(), files=table)
        self.ls.handler = self.server.init_connection
        add_listening(self.cycle, [self.ls])
        self.server.init_listening(self.ls)
        address = nos.getsockname(self.ls.fd)
        assert isinstance(address, tuple)
        self.s = socket.create_connection(("127.0.0.1", address[1]), timeout=5)

    def turn_until(self, done: Callable[[], bool], timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "timed out"
            process_events_and_timers(self.cycle)

    def get(self, target: str, headers: str = "", method: str = "GET") -> bytes:
        """One keep-alive request: its answer, without the Date line. The loop
        turns while the answer comes: a large one takes several writes."""
        request = f"{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n"
        self.s.sendall(request.encode())
        data = b""
        while not answered(data, method == "HEAD"):
            self.turn_until(lambda: bool(select.select([self.s], [], [], 0)[0]))
            chunk = self.s.recv(1 << 20)
            assert chunk, f"closed after {data[:200]!r}"
            data += chunk
        return undated(data)

    @property
    def in_c(self) -> int:
        return int(self.server.fast.answered) if self.server.fast else 0

    def close(self) -> None:
        self.s.close()
        self.server.close()
        if self.cache:
            self.cache.close()
        self.static.close()
        self.cycle.close()
        self.ls.close()


def answered(data: bytes, head_only: bool) -> bool:
    """Whether ``data`` is one whole answer (by its Content-Length)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    match = re.search(rb"Content-Length: (\d+)", head)
    length = int(match.group(1)) if match and not head_only else 0
    assert len(body) <= length, "more than one answer"
    return len(body) == length


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "small.txt").write_bytes(SMALL)
    (tmp_path / "d" / "large.bin").write_bytes(LARGE)
    (tmp_path / "d" / "e" / "index.html").write_bytes(b"<p>index</p>\n")
    return tmp_path


@pytest.fixture
def files(root: Path) -> Iterator[Files]:
    f = Files(root)
    yield f
    f.close()


TARGETS = ["/small.txt", "/d/large.bin", "/d/e/", "/d/./large.bin?q=1", "/%73mall.txt"]


@pytest.mark.parametrize("target", TARGETS)
def test_cached_answers_are_the_uncached_ones(root: Path, target: str) -> None:
    plain = Files(root, max_entries=0)
    try:
        expected = [plain.get(target) for _ in range(3)]
    finally:
        plain.close()
    with_cache = Files(root)
    try:
        got = [with_cache.get(target) for _ in range(3)]
        assert got == expected
        assert with_cache.in_c == 2  # the first was Python's (and cached it)
    finally:
        with_cache.close()


def test_head_and_304_come_from_the_cache_in_python(files: Files) -> None:
    first = files.get("/small.txt")
    modified = first.split(b"Last-Modified: ")[1].split(b"\r\n")[0].decode()
    head = files.get("/small.txt", method="HEAD")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    assert files.get("/small.txt", f"If-Modified-Since: {modified}\r\n").startswith(
        b"HTTP/1.1 304 "
    )
    assert files.in_c == 0  # HEAD and If-Modified-Since are Python's


def wait_dropped(files: Files, key: str) -> None:
    assert files.cache is not None
    files.turn_until(lambda: files.cache.get(key) is None)  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["rewrite", "append", "chmod", "touch"])
def test_a_changed_file_is_dropped_at_once(files: Files, root: Path, how: str) -> None:
    path = root / "small.txt"
    files.get("/small.txt")
    assert files.cache is not None and files.cache.get("/small.txt") is not None
    if how == "rewrite":
        path.write_bytes(b"n" * len(SMALL))
    elif how == "append":
        with path.open("ab") as f:
            f.write(b"more")
    elif how == "chmod":
        path.chmod(0o600)
    else:
        os.utime(path, (1, 1))
    wait_dropped(files, "/small.txt")
    answer = files.get("/small.txt")
    assert answer.endswith(path.read_bytes())


@pytest.mark.parametrize("how", ["rename", "symlink"])
def test_a_changed_directory_drops_what_is_beneath(
    files: Files, root: Path, how: str
) -> None:
    files.get("/d/large.bin")
    (root / "d").rename(root / "d.old")
    if how == "symlink":  # the place now leads elsewhere (still inside the root)
        (root / "other").mkdir()
        (root / "other" / "large.bin").write_bytes(b"other\n")
        (root / "d").symlink_to("other")
    wait_dropped(files, "/d/large.bin")
    answer = files.get("/d/large.bin")
    if how == "rename":
        assert answer.startswith(b"HTTP/1.1 404 ")
    else:
        assert answer.endswith(b"\r\n\r\nother\n")


def test_entries_beyond_max_are_dropped_oldest_first(root: Path) -> None:
    files = Files(root, max_entries=2)
    try:
        for target in ("/small.txt", "/d/large.bin", "/d/e/"):
            files.get(target)
        assert files.cache is not None
        assert list(files.cache.entries) == ["/d/large.bin", "/d/e/"]
        assert files.cache.fds_held == 1  # large.bin's; the others are in memory
        assert files.get("/small.txt").endswith(SMALL)  # from the file again
    finally:
        files.close()


def open_files() -> list[str]:
    """What this process's descriptors lead to, but sockets (the test's clients and
    the server's connections)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # listdir's own
            continue
    return sorted(f for f in found if not f.startswith("socket:"))


def test_closing_releases_descriptors_and_inotify(root: Path) -> None:
    before = open_files()
    files = Files(root)
    for target in TARGETS:
        files.get(target)
    during = open_files()
    assert str(root / "d" / "large.bin") in during
    assert "anon_inode:inotify" in during
    files.close()
    assert open_files() == before


def test_a_cached_file_the_socket_does_not_take_is_finished_by_python(
    root: Path,
) -> None:
    """C sends the head and what sendfile can of the file; the rest is read into
    the connection's stash and Python sends it behind the write event."""
    big = root / "d" / "big.bin"
    big.write_bytes(os.urandom(C_FILE_MAX))  # the largest C answers
    files = Files(root)
    try:
        port = files.s.getpeername()[1]
        files.s.close()
        files.s = socket.socket()  # a slow reader: a small window from the start
        files.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        files.s.settimeout(5)
        files.s.connect(("127.0.0.1", port))
        first = files.get("/d/big.bin")  # Python's, and now cached
        assert first.endswith(big.read_bytes())
        (conn,) = [
            c
            for c in files.cycle.connections
            if c.raw.fd != -1 and c.listening is not None and not c.read.raw.accept
        ]
        nos.setsockopt(conn.raw.fd, socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        assert files.get("/d/big.bin") == first
        assert files.in_c == 1
        assert files.get("/small.txt").endswith(SMALL)  # and the connection goes on
    finally:
        files.close()


def test_the_descriptors_held_count_against_the_limit() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert fd_budget(10**9, 0) == soft - FD_RESERVE
    assert fd_budget(10, 0) == 10
    assert fd_budget(10**9, soft) == soft // 16  # worker_connections = the limit


def test_a_path_through_a_symlink_is_served_but_not_cached(
    files: Files, root: Path
) -> None:
    """root/x -> y/z -> ../f: a change of y/z, in a directory on neither the path
    asked for nor the file's real one, must show at once."""
    (root / "f1").write_bytes(b"one\n")
    (root / "f2").write_bytes(b"two, longer\n")
    (root / "y").mkdir()
    (root / "y" / "z").symlink_to("../f1")
    (root / "x").symlink_to("y/z")
    assert files.get("/x").endswith(b"one\n")
    assert files.get("/x").endswith(b"one\n")
    (root / "y" / "z").unlink()
    (root / "y" / "z").symlink_to("../f2")
    assert files.get("/x").endswith(b"two, longer\n")
    assert files.cache is not None and files.cache.get("/x") is None


def test_an_eviction_does_not_take_the_new_entrys_watches(root: Path) -> None:
    files = Files(root, max_entries=1)
    try:
        files.get("/d/large.bin")
        for _ in range(3):  # evicts large.bin; its last watch of the root was shared
            assert files.get("/small.txt").endswith(SMALL)
        assert files.cache is not None and list(files.cache.entries) == ["/small.txt"]
        assert files.in_c == 2
    finally:
        files.close()


def test_no_descriptor_for_a_cached_file_is_a_500(files: Files) -> None:
    files.get("/d/large.bin")  # cached with a descriptor (not inline)
    lowest = os.dup(0)  # the descriptor dup() would get next
    os.close(lowest)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
    try:
        answer = files.get("/d/large.bin", method="HEAD")  # Python's: dup() fails
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert files.get("/d/large.bin").endswith(LARGE)  # and it goes on


def test_a_graceful_shutdown_is_not_held_by_the_cache(root: Path) -> None:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ngxffi",
            "serve",
            "--listen=127.0.0.1:0",
            f"--root={root}",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        port = int(re.findall(r":(\d+)/", server.stderr.readline())[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        server.send_signal(signal.SIGQUIT)
        assert server.wait(timeout=10) == 0
    finally:
        server.kill()
        server.wait()
