"""Static files: what ``ngxffi serve --root`` answers, and that nothing outside the
root is served, even while a directory on the way is swapped for a symlink."""

from __future__ import annotations

import http.client
import os
import re
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_serve import Server, read_response

from ngxffi import os as nos
from ngxffi.core.conf import Conf, ConfigError
from ngxffi.http.message import Request
from ngxffi.http.static import Static, StaticConf


class WalkServer(Server):
    """``ngxffi serve`` with openat2 switched off: the walk that stands in for it."""

    command = (
        sys.executable,
        "-c",
        "import sys; from ngxffi.os import beneath; beneath.use_openat2 = False; "
        "from ngxffi.cli import main; sys.exit(main())",
    )


def build_site(root: Path, outside: Path) -> bytes:
    """Files, directories and symlinks under ``root``; its big file's bytes."""
    (outside / "secret.txt").write_text("secret")
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "a.txt").write_text("plain")
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_text("sub home")
    (root / "empty").mkdir()
    (root / "a b\r\nX-Injected: 1").mkdir()  # a hostile directory name
    big = bytes(range(256)) * 4096  # 1 MiB, sent with sendfile
    (root / "big.bin").write_bytes(big)
    (root / "leak").symlink_to(outside / "secret.txt")
    (root / "leakdir").symlink_to(outside)
    (root / "inside").symlink_to("a.txt")
    (root / "sub" / "up").symlink_to("../a.txt")  # a ".." that stays inside
    (root / "absolute").symlink_to(root / "a.txt")  # inside, but absolute: refused
    return big


@pytest.fixture
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, bytes]]:
    root = tmp_path_factory.mktemp("root")
    big = build_site(root, tmp_path_factory.mktemp("outside"))
    s = Server("--root", str(root))
    yield s, big
    s.stop()


def raw_get(server: Server, target: bytes, extra: bytes = b"") -> tuple[bytes, bytes]:
    s = server.connect()
    s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n" + extra + b"\r\n")
    try:
        return read_response(s)
    finally:
        s.close()


def status_of(server: Server, target: bytes) -> bytes:
    return raw_get(server, target)[0].split(b" ")[1]


def test_static_files(site: tuple[Server, bytes]) -> None:
    server, big = site
    head, body = raw_get(server, b"/")
    assert body == b"<h1>home</h1>" and b"Content-Type: text/html" in head
    head, body = raw_get(server, b"/a.txt")
    assert body == b"plain" and b"Content-Type: text/plain" in head
    assert raw_get(server, b"/sub/")[1] == b"sub home"
    head, _ = raw_get(server, b"/sub")
    assert head.startswith(b"HTTP/1.1 301") and b"Location: /sub/" in head
    assert raw_get(server, b"/empty/")[0].startswith(b"HTTP/1.1 403")
    head, _ = raw_get(server, b"/a%20b%0d%0aX-Injected:%201")
    assert head.startswith(b"HTTP/1.1 301") and b"\r\nX-Injected" not in head
    assert b"Location: /a%20b%0D%0AX-Injected%3A%201/" in head
    assert raw_get(server, b"/missing")[0].startswith(b"HTTP/1.1 404")
    assert raw_get(server, b"/missing/")[0].startswith(b"HTTP/1.1 404")
    assert raw_get(server, b"/a.txt/")[0].startswith(b"HTTP/1.1 404")
    head, body = raw_get(server, b"/big.bin")
    assert body == big and b"Content-Type: application/octet-stream" in head


def test_symlinks_that_stay_inside_are_followed_unless_absolute(
    site: tuple[Server, bytes],
) -> None:
    server, _ = site
    assert raw_get(server, b"/inside")[1] == b"plain"
    head, body = raw_get(server, b"/sub/up")  # typed by the name asked, as nginx does
    assert body == b"plain" and b"Content-Type: application/octet-stream" in head
    assert status_of(server, b"/absolute") == b"403"  # RESOLVE_BENEATH's rule


def test_if_modified_since_and_head(site: tuple[Server, bytes]) -> None:
    server, _ = site
    head, _ = raw_get(server, b"/a.txt")
    modified = re.search(rb"Last-Modified: ([^\r]+)", head).group(1)  # type: ignore[union-attr]
    head, body = raw_get(server, b"/a.txt", b"If-Modified-Since: " + modified + b"\r\n")
    assert head.startswith(b"HTTP/1.1 304") and body == b""
    assert server.get("/a.txt", "HEAD").getheader("Content-Length") == "5"
    assert server.get("/a.txt", "POST").status == 405


@pytest.mark.parametrize(
    ("target", "status"),
    [
        (b"/../../etc/passwd", b"400"),
        (b"/%2e%2e/%2e%2e/etc/passwd", b"400"),
        (b"/sub/../../etc/passwd", b"400"),
        (b"/a.txt%00.html", b"400"),
        (b"/leak", b"403"),
        (b"/leakdir/secret.txt", b"403"),
        (b"http://evil/../../etc/passwd", b"400"),
        (b"/%2Fetc%2Fpasswd", b"404"),
    ],
)
def test_nothing_outside_the_root(
    site: tuple[Server, bytes], target: bytes, status: bytes
) -> None:
    server, _ = site
    head, body = raw_get(server, target)
    assert head.startswith(b"HTTP/1.1 " + status)
    assert b"secret" not in body and b"root:" not in body


def test_absolute_form_target_is_served_by_path(site: tuple[Server, bytes]) -> None:
    server, _ = site
    assert raw_get(server, b"http://example.org/a.txt")[1] == b"plain"


def test_without_openat2_files_are_served_and_every_symlink_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    build_site(tmp_path / "root", tmp_path / "outside")
    server = WalkServer("--root", str(tmp_path / "root"))
    try:
        assert raw_get(server, b"/")[1] == b"<h1>home</h1>"
        assert raw_get(server, b"/sub/")[1] == b"sub home"
        assert status_of(server, b"/sub") == b"301"
        assert status_of(server, b"/empty/") == b"403"
        assert status_of(server, b"/missing") == b"404"
        for link in (b"/inside", b"/sub/up", b"/leak", b"/leakdir/secret.txt"):
            assert status_of(server, link) == b"403", link
    finally:
        server.stop()


def test_disable_symlinks_on_refuses_even_symlinks_inside(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("plain")
    (tmp_path / "inside").symlink_to("a.txt")
    config = tmp_path / "ngxffi.toml"
    config.write_text(f'root = "{tmp_path}"\ndisable_symlinks = "on"\n')
    server = Server("-c", str(config))
    try:
        assert raw_get(server, b"/a.txt")[1] == b"plain"
        assert status_of(server, b"/inside") == b"403"
    finally:
        server.stop()


def test_disable_symlinks_takes_nginx_s_off_and_on() -> None:
    conf = Conf([StaticConf])
    assert conf[StaticConf].disable_symlinks == "off"
    conf.set("disable_symlinks", "on")
    assert conf[StaticConf].disable_symlinks == "on"
    with pytest.raises(ConfigError, match="disable_symlinks"):
        conf.set("disable_symlinks", "if_not_owner")


# --- in process: the handler itself ---------------------------------------------------


def get(static: Static, uri: str) -> tuple[int, bytes]:
    """The status of ``uri``, and the file's bytes for a 200 (its fd closed)."""
    r = static(Request("GET", uri, "1.1", {}, True))
    if r.file < 0:
        return r.status, r.body
    try:
        return r.status, os.pread(r.file, r.length, 0)
    finally:
        nos.close(r.file)


def test_an_unexpected_open_failure_is_500_and_nothing_leaks(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("plain")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))  # open(2) says ENXIO
        static = Static(tmp_path)
        before = set(os.listdir("/proc/self/fd"))
        assert get(static, "/sock")[0] == 500
        assert get(static, "/a.txt") == (200, b"plain")
        assert get(static, "/") == (403, b"")  # the root: no index
        assert set(os.listdir("/proc/self/fd")) == before
    fd = static.fd
    static.close()
    static.close()  # once
    with pytest.raises(OSError):
        os.fstat(fd)


# --- the race -------------------------------------------------------------------------


def run_for(seconds: float, *targets: Callable[[threading.Event], None]) -> None:
    """Each target in a thread until ``seconds`` have passed; their errors raised."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(target: Callable[[threading.Event], None]) -> None:
        try:
            target(stop)
        except BaseException as e:
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    if errors:
        raise errors[0]


@pytest.mark.parametrize("server_class", [Server, WalkServer], ids=["openat2", "walk"])
def test_a_directory_swapped_for_a_symlink_never_leaks_outside(
    tmp_path: Path, server_class: type[Server]
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    d, real, link = root / "d", root / "d.real", root / "d.link"
    d.mkdir(parents=True)
    outside.mkdir()
    (d / "secret.txt").write_text("inside")
    (outside / "secret.txt").write_text("OUTSIDE")
    link.symlink_to("../outside")  # relative: a ".." out of the root, at the root
    counts: list[Counter[tuple[int, bytes]]] = []  # one per client
    swaps = 0

    def swap(stop: threading.Event) -> None:
        nonlocal swaps
        while not stop.is_set():  # d: a directory, missing, the symlink, missing
            os.rename(d, real)
            os.rename(link, d)
            os.rename(d, link)
            os.rename(real, d)
            swaps += 1

    def fetch(stop: threading.Event) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        mine: Counter[tuple[int, bytes]] = Counter()
        while not stop.is_set():
            conn.request("GET", "/d/secret.txt")
            r = conn.getresponse()
            mine[r.status, r.read()] += 1
        conn.close()
        counts.append(mine)

    server = server_class("--root", str(root))
    try:
        run_for(1.5, swap, fetch, fetch, fetch, fetch)
    finally:
        server.stop()
    answers = sum(counts, Counter[tuple[int, bytes]]())
    assert answers[200, b"OUTSIDE"] == 0
    assert answers[200, b"inside"] > 0 and answers[403, b""] > 0, answers
    assert {status for status, _ in answers} <= {200, 403, 404}, answers
    assert swaps > 0
