"""The compiled binding: constants and layouts are what the C compiler saw."""

from __future__ import annotations

import errno
import fcntl
import importlib.util
import os
import platform
import resource
import select
import signal
import socket
import time
import types
from pathlib import Path

import pytest

from ngxffi import ffi, lib

STDLIB = (select, socket, errno, os, fcntl, resource, time, signal)
SRC = Path(__file__).resolve().parents[1] / "src"

# Not in the stdlib: the values are Linux's ABI (include/uapi/linux/eventpoll.h).
KERNEL_ABI = {
    "EPOLL_CTL_ADD": 1,
    "EPOLL_CTL_DEL": 2,
    "EPOLL_CTL_MOD": 3,
    "EPOLLWAKEUP": 1 << 29,
    # include/uapi/linux/inotify.h; IN_CLOEXEC and IN_NONBLOCK are O_CLOEXEC's and
    # O_NONBLOCK's
    "IN_MODIFY": 0x2,
    "IN_ATTRIB": 0x4,
    "IN_CLOSE_WRITE": 0x8,
    "IN_MOVED_FROM": 0x40,
    "IN_MOVED_TO": 0x80,
    "IN_CREATE": 0x100,
    "IN_DELETE": 0x200,
    "IN_DELETE_SELF": 0x400,
    "IN_MOVE_SELF": 0x800,
    "IN_UNMOUNT": 0x2000,
    "IN_Q_OVERFLOW": 0x4000,
    "IN_IGNORED": 0x8000,
    "IN_ONLYDIR": 0x0100_0000,
    "IN_DONT_FOLLOW": 0x0200_0000,
    "IN_MASK_ADD": 0x2000_0000,
    "IN_ISDIR": 0x4000_0000,
    "IN_CLOEXEC": os.O_CLOEXEC,
    "IN_NONBLOCK": os.O_NONBLOCK,
    # openat2(2)'s, which the stdlib does not have (linux/openat2.h)
    "RESOLVE_NO_XDEV": 0x01,
    "RESOLVE_NO_MAGICLINKS": 0x02,
    "RESOLVE_NO_SYMLINKS": 0x04,
    "RESOLVE_BENEATH": 0x08,
    "RESOLVE_IN_ROOT": 0x10,
}

# ngxffi's own (NGXFFI_*) have no stdlib counterpart; the event-core tests cover them.
CONSTANTS = sorted(
    name for name in dir(lib) if name.isupper() and not name.startswith("NGXFFI_")
)


def stdlib_values(name: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for module in STDLIB:
        value = getattr(module, name, None)
        if isinstance(value, int):
            found[module.__name__] = int(value)
    return found


def test_the_binding_exposes_the_constants_the_issue_lists() -> None:
    wanted = {
        "EPOLLEXCLUSIVE",
        "EPOLLRDHUP",
        "EPOLLONESHOT",
        "EPOLLET",
        "EPOLL_CLOEXEC",
        "EPOLL_CTL_ADD",
        "EPOLL_CTL_MOD",
        "EPOLL_CTL_DEL",
        "SOCK_NONBLOCK",
        "SOCK_CLOEXEC",
        "O_NONBLOCK",
        "F_GETFL",
        "F_SETFL",
        "FD_CLOEXEC",
        "RLIMIT_NOFILE",
        "SO_REUSEADDR",
        "SO_REUSEPORT",
        "SO_ERROR",
        "TCP_NODELAY",
        "TCP_DEFER_ACCEPT",
        "EAGAIN",
        "EMFILE",
        "ENFILE",
        "ECONNABORTED",
        "ENOSYS",
        "EINTR",
        "CLOCK_MONOTONIC",
    }
    assert wanted <= set(CONSTANTS)


@pytest.mark.parametrize("name", CONSTANTS)
def test_constant_equals_the_stdlib(name: str) -> None:
    value = getattr(lib, name)
    if name in KERNEL_ABI:
        assert value == KERNEL_ABI[name]
        return
    found = stdlib_values(name)
    assert found, f"{name} has no stdlib counterpart to check against"
    if name == "RLIM_INFINITY":  # the resource module spells it -1
        found = {m: v & 0xFFFF_FFFF_FFFF_FFFF for m, v in found.items()}
    assert set(found.values()) == {value}, (name, value, found)


def test_epoll_event_layout_comes_from_the_compiler() -> None:
    # Packed on x86-64 (12 bytes, data at offset 4), natural alignment elsewhere.
    packed = platform.machine() == "x86_64"
    assert ffi.sizeof("struct epoll_event") == (12 if packed else 16)
    assert ffi.offsetof("struct epoll_event", "data") == (4 if packed else 8)
    assert ffi.sizeof("epoll_data_t") == 8


@pytest.mark.parametrize("ctype", ["ngx_connection_t", "ngx_event_t"])
def test_core_structs_leave_the_low_bit_free_for_the_instance_tag(ctype: str) -> None:
    assert ffi.alignof(ctype) >= 2
    array = ffi.new(f"{ctype}[]", 4)
    for i in range(4):
        assert int(ffi.cast("uintptr_t", ffi.addressof(array, i))) & 1 == 0


def test_event_bitfields_are_independent_bits() -> None:
    ev = ffi.new("ngx_event_t *")
    names = [name for name, f in ffi.typeof("ngx_event_t").fields if f.bitsize == 1]
    assert {"instance", "active", "ready", "posted", "closed", "cancelable"} <= set(
        names
    )
    for name in names:
        setattr(ev, name, 1)
        assert [n for n in names if getattr(ev, n)] == [name]
        setattr(ev, name, 0)


def test_fcntl_helpers_are_not_variadic() -> None:
    # Variadic functions show up as "..." in cffi's type; ours must have fixed arity.
    for name in (
        "ngxffi_nonblocking",
        "ngxffi_blocking",
        "ngxffi_get_status_flags",
        "ngxffi_set_status_flags",
        "ngxffi_get_fd_flags",
        "ngxffi_set_cloexec",
        "ngxffi_pdeathsig",
    ):
        fn = ffi.typeof(getattr(lib, name))
        assert not fn.ellipsis, name


def test_the_package_reexports_the_raw_binding() -> None:
    import ngxffi._ngx

    import ngxffi

    assert ngxffi.ffi is ngxffi._ngx.ffi
    assert ngxffi.lib is ngxffi._ngx.lib
    assert isinstance(ngxffi.os, types.ModuleType)


def load(path: Path) -> types.ModuleType:
    """A module of the source tree that is not installed (the build's scripts)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_byte_class_table_is_what_its_generator_writes() -> None:
    generator = load(SRC / "gen_http_class.py")
    assert (SRC / "ngx_http_class.h").read_text() == generator.header()


@pytest.mark.parametrize(
    ("value", "werror"), [(None, False), ("0", False), ("1", True)]
)
def test_warnings_are_errors_only_through_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, werror: bool
) -> None:
    build = load(SRC.parent / "build_ffi.py")
    if value is None:
        monkeypatch.delenv("NGXFFI_WERROR", raising=False)
    else:
        monkeypatch.setenv("NGXFFI_WERROR", value)
    args = build.compile_args()
    assert ("-Werror" in args) is werror
    assert {"-Wall", "-Wextra", "-Wshadow", "-Wconversion", "-fno-wrapv"} <= set(args)


@pytest.mark.parametrize(
    ("value", "sanitize"), [(None, False), ("0", False), ("1", True)]
)
def test_sanitizers_only_through_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, sanitize: bool
) -> None:
    """`make sanitize`'s build: ASan and UBSan, fatal, in compile and link flags;
    the warnings, -Werror and -fno-wrapv stay as they are."""
    build = load(SRC.parent / "build_ffi.py")
    monkeypatch.setenv("NGXFFI_WERROR", "1")
    if value is None:
        monkeypatch.delenv("NGXFFI_SANITIZE", raising=False)
    else:
        monkeypatch.setenv("NGXFFI_SANITIZE", value)
    flags = {"-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"}
    args, link = build.compile_args(), build.link_args()
    assert (flags | {"-fno-omit-frame-pointer"} <= set(args)) is sanitize
    assert (flags <= set(link)) is sanitize
    assert {"-Werror", "-fno-wrapv", "-Wall", "-Wconversion"} <= set(args)
