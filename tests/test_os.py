"""Sockets, descriptors, fcntl helpers, limits and clocks through ngxffi.os."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Signaller

from ngxffi import ffi, lib
from ngxffi import os as nos
from ngxffi.os import beneath

Connect = Callable[[tuple[str, int]], int]
Listener = tuple[int, tuple[str, int]]


def is_nonblocking(fd: int) -> bool:
    return bool(nos.get_status_flags(fd) & lib.O_NONBLOCK)


# --- accept ---------------------------------------------------------------------


def test_accept4_gives_a_nonblocking_cloexec_fd_and_the_peer(
    listener: Listener, connect: Connect, fds: list[int]
) -> None:
    lfd, address = listener
    client = connect(address)
    s, peer = nos.accept4(lfd)
    fds.append(s)
    assert is_nonblocking(s)
    assert nos.get_cloexec(s)
    assert (
        os.get_blocking(s) is False and os.get_inheritable(s) is False
    )  # stdlib agrees
    assert peer == nos.getsockname(client)
    assert nos.getpeername(s) == peer


def test_plain_accept_gives_a_blocking_inheritable_fd(
    listener: Listener, connect: Connect, fds: list[int]
) -> None:
    lfd, address = listener
    connect(address)
    s, _ = nos.accept(lfd)
    fds.append(s)
    assert not is_nonblocking(s)
    assert not nos.get_cloexec(s)


def test_nonblocking_accept_with_nothing_pending_raises_eagain(
    listener: Listener,
) -> None:
    with pytest.raises(BlockingIOError) as info:
        nos.accept4(listener[0])
    assert info.value.errno == lib.EAGAIN
    assert "accept4" in str(info.value)


# --- addresses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "host"), [(lib.AF_INET, "127.0.0.1"), (lib.AF_INET6, "::1")]
)
def test_bind_and_getsockname_match_the_socket_module(
    family: int, host: str, fds: list[int]
) -> None:
    fd = nos.socket(family, lib.SOCK_STREAM)
    fds.append(fd)
    nos.bind(fd, (host, 0))
    ours = nos.getsockname(fd)
    with socket.socket(fileno=os.dup(fd)) as theirs:
        assert ours == theirs.getsockname()


def test_unix_socket_paths_and_abstract_names(tmp_path: Path, fds: list[int]) -> None:
    path = str(tmp_path / "sock")
    fd = nos.socket(lib.AF_UNIX, lib.SOCK_STREAM)
    fds.append(fd)
    nos.bind(fd, path)
    assert nos.getsockname(fd) == path
    abstract = b"\0ngxffi-test-%d" % os.getpid()
    fd2 = nos.socket(lib.AF_UNIX, lib.SOCK_STREAM)
    fds.append(fd2)
    nos.bind(fd2, abstract)
    assert nos.getsockname(fd2) == abstract


def test_bad_addresses_are_clear_errors(fds: list[int]) -> None:
    fd = nos.socket(lib.AF_INET, lib.SOCK_STREAM)
    fds.append(fd)
    with pytest.raises(OverflowError, match="port"):
        nos.bind(fd, ("127.0.0.1", 70000))
    with pytest.raises(TypeError, match="AF_INET"):
        nos.bind(fd, "/not/an/inet/address")
    with pytest.raises(OSError, match="too long"):
        nos.bind(nos.socketpair()[0], "x" * 200)


def test_bind_in_use_raises_eaddrinuse(listener: Listener, fds: list[int]) -> None:
    fd = nos.socket(lib.AF_INET, lib.SOCK_STREAM)
    fds.append(fd)
    with pytest.raises(OSError) as info:
        nos.bind(fd, listener[1])
    assert info.value.errno == lib.EADDRINUSE
    assert "bind" in str(info.value)


# --- options, data -------------------------------------------------------------------


def test_socket_options_round_trip(listener: Listener, connect: Connect) -> None:
    client = connect(listener[1])
    nos.setsockopt(client, lib.IPPROTO_TCP, lib.TCP_NODELAY, 1)
    assert nos.getsockopt(client, lib.IPPROTO_TCP, lib.TCP_NODELAY) == 1
    assert nos.getsockopt(client, lib.SOL_SOCKET, lib.SO_ERROR) == 0
    nos.setsockopt(listener[0], lib.IPPROTO_TCP, lib.TCP_DEFER_ACCEPT, 1)
    assert nos.getsockopt(listener[0], lib.IPPROTO_TCP, lib.TCP_DEFER_ACCEPT) > 0
    linger = nos.getsockopt(client, lib.SOL_SOCKET, lib.SO_LINGER, 8)
    assert isinstance(linger, bytes) and len(linger) == 8


def test_send_recv_and_recv_into(pair: tuple[int, int]) -> None:
    a, b = pair
    assert nos.send(a, memoryview(b"hello world")[:5]) == 5
    buf = bytearray(8)
    assert nos.recv_into(b, buf, 3) == 3
    assert bytes(buf[:3]) == b"hel"
    assert nos.recv(b, 100) == b"lo"
    with pytest.raises(BlockingIOError):
        nos.recv(b, 100)
    nos.shutdown(a, lib.SHUT_WR)
    assert nos.recv(b, 100) == b""


def test_readv_and_writev(pair: tuple[int, int]) -> None:
    a, b = pair
    assert nos.writev(a, [b"GET / ", bytearray(b"HTTP/1.1"), memoryview(b"\r\n")]) == 16
    head, tail = bytearray(4), bytearray(32)
    assert nos.readv(b, [head, tail]) == 16
    assert bytes(head) + bytes(tail[:12]) == b"GET / HTTP/1.1\r\n"
    with pytest.raises(TypeError):
        nos.readv(b, [b"read-only"])


def test_sendfile_from_an_offset(tmp_path: Path, pair: tuple[int, int]) -> None:
    a, b = pair
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    with open(path, "rb") as f:
        assert nos.sendfile(a, f, 3, 4) == 4
        assert nos.sendfile(a, f, None, 2) == 2  # from the file position: the start
    assert nos.recv(b, 100) == b"345601"


def test_pipe_read_write_and_eventfd(fds: list[int]) -> None:
    r, w = nos.pipe2(lib.O_CLOEXEC | lib.O_NONBLOCK)
    fds += [r, w]
    assert nos.get_cloexec(r) and is_nonblocking(w)
    assert nos.write(w, b"abc") == 3
    assert nos.read(r, 10) == b"abc"
    with pytest.raises(BlockingIOError) as info:
        nos.read(r, 10)
    assert "read" in str(info.value)
    efd = nos.eventfd(5, lib.EFD_CLOEXEC | lib.EFD_NONBLOCK)
    fds.append(efd)
    assert int.from_bytes(nos.read(efd, 8), sys.byteorder) == 5


# --- signals: PEP 475 for the calls that are not waits ------------------------------


def test_a_blocking_read_is_retried_after_eintr_and_handlers_run_between(
    signaller: Signaller, fds: list[int]
) -> None:
    r, w = nos.pipe2()
    fds += [r, w]

    def third_signal_writes() -> None:
        if len(signaller.fired) == 3:
            nos.write(w, b"x")  # only runs if read lets the handlers run

    signaller.on_signal = third_signal_writes
    signaller.start(0.02)
    assert nos.read(r, 10) == b"x"
    assert len(signaller.fired) >= 3


def test_a_signal_handler_exception_propagates_from_a_blocking_recv(
    signaller: Signaller, fds: list[int]
) -> None:
    class Boom(Exception):
        pass

    def boom() -> None:
        raise Boom

    a, b = nos.socketpair()  # blocking
    fds += [a, b]
    signaller.on_signal = boom
    signaller.start(0.03, times=1)
    with pytest.raises(Boom):
        nos.recv(a, 10)


def test_closing_twice_raises_ebadf() -> None:
    r, w = nos.pipe2()
    nos.close(w)
    nos.close(r)
    with pytest.raises(OSError) as info:
        nos.close(r)
    assert info.value.errno == lib.EBADF
    assert "close" in str(info.value)


def test_fileno_rejects_negative_and_non_int() -> None:
    with pytest.raises(ValueError, match="invalid file descriptor"):
        nos.close(-1)

    class Bad:
        def fileno(self) -> str:
            return "3"

    with pytest.raises(TypeError, match="fileno"):
        nos.close(Bad())  # type: ignore[arg-type]


# --- fcntl ---------------------------------------------------------------------------


def test_nonblocking_on_and_off_keeps_other_status_flags(fds: list[int]) -> None:
    r, w = nos.pipe2()
    fds += [r, w]
    nos.set_status_flags(w, nos.get_status_flags(w) | lib.O_APPEND)
    nos.set_nonblocking(w)
    assert is_nonblocking(w) and nos.get_status_flags(w) & lib.O_APPEND
    nos.set_nonblocking(w)  # already on: no change
    assert is_nonblocking(w)
    nos.set_nonblocking(w, False)
    assert not is_nonblocking(w) and nos.get_status_flags(w) & lib.O_APPEND


def test_cloexec_on_and_off(fds: list[int]) -> None:
    r, w = nos.pipe2(0)
    fds += [r, w]
    assert not nos.get_cloexec(r)
    nos.set_cloexec(r)
    assert nos.get_cloexec(r)
    nos.set_cloexec(r, False)
    assert not nos.get_cloexec(r)


def test_fcntl_on_a_bad_fd_names_the_call() -> None:
    r, w = nos.pipe2()
    nos.close(r)
    nos.close(w)
    with pytest.raises(OSError, match=r"fcntl\(F_GETFL\)") as info:
        nos.get_status_flags(r)
    assert info.value.errno == lib.EBADF


# --- limits and clock -----------------------------------------------------------------


def test_getrlimit_matches_the_resource_module() -> None:
    assert nos.getrlimit(lib.RLIMIT_NOFILE) == resource.getrlimit(
        resource.RLIMIT_NOFILE
    )
    assert nos.getrlimit(lib.RLIMIT_CORE) == resource.getrlimit(resource.RLIMIT_CORE)


def test_setrlimit_in_a_child_process_limits_its_fds() -> None:
    # In a child, so that the test process keeps its own limit.
    code = (
        "from ngxffi import lib\nfrom ngxffi import os as nos\n"
        "soft, hard = nos.getrlimit(lib.RLIMIT_NOFILE)\n"
        "nos.setrlimit(lib.RLIMIT_NOFILE, (16, hard))\n"
        "assert nos.getrlimit(lib.RLIMIT_NOFILE) == (16, hard)\n"
        "fds = []\n"
        "try:\n"
        "    while True: fds.append(nos.eventfd())\n"
        "except OSError as e:\n"
        "    print(e.errno, len(fds) < 16, 'eventfd' in str(e))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert out == [str(lib.EMFILE), "True", "True"]


def test_setrlimit_rejects_soft_above_hard() -> None:
    _, hard = nos.getrlimit(lib.RLIMIT_NOFILE)
    with pytest.raises(ValueError, match="exceeds"):
        nos.setrlimit(lib.RLIMIT_NOFILE, (hard + 1, hard) if hard != -1 else (-1, 10))


def test_monotonic_clock_agrees_with_time_monotonic() -> None:
    before = time.monotonic_ns()
    ours = nos.clock_gettime_ns()
    after = time.monotonic_ns()
    assert before <= ours <= after


# --- opening beneath a directory: openat2 and the walk --------------------------------


@pytest.fixture
def tree(tmp_path: Path, fds: list[int]) -> int:
    """A root's O_PATH descriptor; beside the root, outside/secret.txt."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    (root / "link").symlink_to("a.txt")
    (root / "sub" / "up").symlink_to("../a.txt")  # ".." that stays beneath
    (root / "sublink").symlink_to("sub")
    (root / "out").symlink_to("../outside")
    (root / "abs").symlink_to(root / "a.txt")  # absolute, though inside
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    fds.append(fd)
    return fd


def read_all(fd: int) -> bytes:
    try:
        return nos.read(fd, 100)
    finally:
        nos.close(fd)


BENEATH = nos.RESOLVE_BENEATH | nos.RESOLVE_NO_MAGICLINKS


def test_openat2_beneath_follows_symlinks_that_stay_inside(tree: int) -> None:
    for path, data in [("a.txt", b"a"), ("link", b"a"), ("sub/up", b"a")]:
        assert read_all(nos.openat2(tree, path, os.O_RDONLY, BENEATH)) == data
    assert read_all(nos.openat2(tree, "sublink/../sub/./b.txt", 0, BENEATH)) == b"b"


@pytest.mark.parametrize(
    "path", ["out/secret.txt", "abs", "../outside/secret.txt", "/etc/passwd"]
)
def test_openat2_beneath_refuses_what_leaves_with_exdev(tree: int, path: str) -> None:
    with pytest.raises(OSError, match=r"\] openat2: ") as e:
        nos.openat2(tree, path, os.O_RDONLY, BENEATH)
    assert e.value.errno == lib.EXDEV


@pytest.mark.parametrize("path", ["link", "sub/up", "sublink/b.txt"])
def test_no_symlinks_refuses_every_symlink_with_eloop(tree: int, path: str) -> None:
    with pytest.raises(OSError, match="openat2: ") as e:
        nos.openat2(tree, path, os.O_RDONLY, BENEATH | nos.RESOLVE_NO_SYMLINKS)
    assert e.value.errno == lib.ELOOP


def test_no_magiclinks_refuses_proc_fd_links(tree: int, fds: list[int]) -> None:
    proc = os.open("/proc/self", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    fds.append(proc)
    with pytest.raises(OSError, match="openat2: ") as e:
        nos.openat2(proc, f"fd/{tree}", os.O_PATH, nos.RESOLVE_NO_MAGICLINKS)
    assert e.value.errno == lib.ELOOP
    fds.append(nos.openat2(proc, f"fd/{tree}", os.O_PATH))  # followed without it


def test_openat2_bad_arguments(tree: int, tmp_path: Path) -> None:
    r, w = nos.pipe2()
    nos.close(r)
    nos.close(w)
    with pytest.raises(OSError, match=r"\[Errno 9\] openat2: ") as e:
        nos.openat2(r, "a.txt", os.O_RDONLY)  # closed: EBADF
    assert e.value.errno == lib.EBADF
    with pytest.raises(ValueError, match="null"):
        nos.openat2(tree, "a.txt\0/../x", os.O_RDONLY)
    for flags in (os.O_CREAT | os.O_WRONLY, os.O_TMPFILE | os.O_RDWR):
        with pytest.raises(OSError, match="openat2: ") as e:
            nos.openat2(tree, "new", flags)
        assert e.value.errno == lib.EINVAL
    assert not (tmp_path / "root" / "new").exists()
    with pytest.raises(OverflowError):
        nos.openat2(tree, "a.txt", -1)
    assert lib.ngxffi_openat2(tree, ffi.NULL, 0, 0) == -1 and ffi.errno == lib.EFAULT
    assert lib.ngxffi_openat(tree, ffi.NULL, 0) == -1 and ffi.errno == lib.EFAULT


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    ("path", "err"),
    [
        ("link", lib.ELOOP),
        ("sub/up", lib.ELOOP),
        ("sublink/b.txt", lib.ELOOP),  # a symlinked directory on the way
        ("out/secret.txt", lib.ELOOP),
        ("abs", lib.ELOOP),
        ("../outside/secret.txt", lib.EXDEV),
        ("sub/../a.txt", lib.EXDEV),  # not resolved, even inside
        ("/etc/passwd", lib.EXDEV),
        ("a.txt/x", lib.ENOTDIR),
        ("sub/missing", lib.ENOENT),
    ],
)
def test_the_walk_follows_no_symlink_and_leaks_no_fd(
    tree: int, path: str, err: int
) -> None:
    before = open_fds()
    with pytest.raises(OSError, match="openat: ") as e:
        nos.walk_beneath(tree, path, os.O_RDONLY)
    assert e.value.errno == err
    assert open_fds() == before


def test_the_walk_opens_files_and_directories_beneath(tree: int) -> None:
    before = open_fds()
    assert read_all(nos.walk_beneath(tree, "sub//./b.txt", os.O_RDONLY)) == b"b"
    fd = nos.walk_beneath(tree, "", os.O_RDONLY | os.O_DIRECTORY)  # the root itself
    assert os.path.samestat(os.fstat(fd), os.fstat(tree))
    nos.close(fd)
    assert open_fds() == before


def test_open_beneath_walks_when_openat2_is_switched_off(
    tree: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert read_all(nos.open_beneath(tree, "sub/up", os.O_RDONLY)) == b"a"
    with pytest.raises(OSError, match="openat2: ") as e:
        nos.open_beneath(tree, "sub/up", os.O_RDONLY, symlinks=False)
    assert e.value.errno == lib.ELOOP
    monkeypatch.setattr(beneath, "use_openat2", False)
    with pytest.raises(OSError, match="openat: ") as e:
        nos.open_beneath(tree, "sub/up", os.O_RDONLY)  # symlinks=True, refused anyway
    assert e.value.errno == lib.ELOOP
    assert read_all(nos.open_beneath(tree, "sub/b.txt", os.O_RDONLY)) == b"b"
