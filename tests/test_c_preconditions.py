"""The exported C functions are safe for any argument Python can pass (issue 13,
"Defects"): each bad argument gets an error code, never a crash or a wrong result.
Calls that crashed before their fix run in a subprocess, so that a SIGSEGV fails the
test instead of killing pytest."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from ngxffi._ngx import ffi, lib

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


def run(code: str) -> str:
    """Run ``code`` in a fresh interpreter; its stdout, after checking it exited 0
    (a signal shows as a negative returncode)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    return done.stdout


def http_date(sec: int) -> tuple[int, bytes]:
    f = ffi.new("ngxffi_http_fast_t *")
    rc = lib.ngxffi_http_date(f, sec)
    return rc, ffi.buffer(f.date, f.date_len)[:]


# --- ngxffi_http_date -----------------------------------------------------------------


def test_http_date_of_extreme_times_is_refused_not_crashed() -> None:
    # gmtime_r fails for INT64_MAX (the year does not fit an int): it used to leave
    # struct tm uninitialised and its tm_wday indexed "%.3s" (SIGSEGV); a year near
    # INT_MAX overflowed tm_year + 1900; a year of 5 digits is no HTTP date.
    near_int_max = ((1 << 31) - 1000) * 31556952
    out = run(
        f"""
        from ngxffi._ngx import ffi, lib
        f = ffi.new("ngxffi_http_fast_t *")
        for sec in ({INT64_MAX}, {INT64_MIN}, {near_int_max}, -{near_int_max},
                    253402300800, 1 << 40):
            f.date_len = 99
            rc = lib.ngxffi_http_date(f, sec)
            print(rc, f.date_len, ffi.buffer(f.date, f.date_len)[:])
        """
    )
    assert out.splitlines() == ["-1 0 b''"] * 6


def test_http_date_in_range() -> None:
    assert http_date(0) == (0, b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n")
    assert http_date(253402300799) == (0, b"Date: Fri, 31 Dec 9999 23:59:59 GMT\r\n")
    assert http_date(1795529585) == (0, b"Date: Tue, 24 Nov 2026 14:13:05 GMT\r\n")


# --- strong tags and the address space ------------------------------------------------


def fake_cycle(address: int, n: int, strong: bool = True) -> Any:
    """A cycle state naming ``n`` connections at ``address``: nothing there is read."""
    raw = ffi.new("ngxffi_cycle_t *")
    raw.connections = ffi.cast("ngx_connection_t *", address)
    raw.connection_n = n
    raw.strong_tags = int(strong)
    return raw


def test_tag_fits_only_addresses_below_the_generation_bits() -> None:
    top = 1 << lib.NGXFFI_TAG_ADDRESS_BITS
    size = ffi.sizeof("ngx_connection_t")
    assert lib.ngxffi_tag_fits(fake_cycle(0x7F0000000000, 1000))
    assert lib.ngxffi_tag_fits(fake_cycle(top - 10 * size, 10))
    assert not lib.ngxffi_tag_fits(fake_cycle(top - 10 * size, 11))  # the last slot
    assert not lib.ngxffi_tag_fits(fake_cycle(top, 1))  # 5-level paging
    assert not lib.ngxffi_tag_fits(fake_cycle(0xFF00_7F00_0000_0000, 1))  # a tag byte
    assert lib.ngxffi_tag_fits(fake_cycle(top, 1, strong=False))  # no generation
    raw = fake_cycle(0x7F0000000000, 1)
    raw.notify = ffi.cast("ngx_connection_t *", top + 64)
    assert not lib.ngxffi_tag_fits(raw)


def test_a_cycle_with_strong_tags_refuses_addresses_above_48_bits() -> None:
    from ngxffi.event.cycle import Cycle, check_tag_address

    Cycle(4, strong_tags=True).close()  # this machine's addresses do fit
    check_tag_address(fake_cycle(1 << 48, 4, strong=False))
    with pytest.raises(ValueError, match=r"strong_tags.*0x1000000000000.*48 address"):
        check_tag_address(fake_cycle(1 << 48, 4))


# --- the connection pool --------------------------------------------------------------


def test_init_connections_refuses_an_empty_or_too_large_pool() -> None:
    # connection_n 0: the countdown wrapped around and wrote below the arrays
    out = run(
        """
        from ngxffi._ngx import ffi, lib
        raw = ffi.new("ngxffi_cycle_t *")
        arrays = [ffi.new(t + "[]", 1) for t in
                  ("ngx_connection_t", "ngx_event_t", "ngx_event_t")]
        raw.connections, raw.read_events, raw.write_events = arrays
        for n in (0, getattr(lib, "NGXFFI_CONNECTIONS_MAX", (1 << 28) - 1) + 1):
            raw.connection_n = n
            print(lib.ngxffi_init_connections(raw), ffi.errno == 22)
        print(lib.ngxffi_init_connections(ffi.NULL))
        raw.connection_n = 1
        print(lib.ngxffi_init_connections(raw), raw.free_connection_n)
        """
    )
    assert out.splitlines() == ["-1 True", "-1 True", "-1", "0 1"]


def test_a_pool_too_large_for_the_codes_is_refused() -> None:
    from ngxffi.event.cycle import Cycle

    top = 2 * lib.NGXFFI_CONNECTIONS_MAX + 1  # the notify connection's write code
    assert lib.NGXFFI_ACCEPT_QUEUE != lib.NGXFFI_BATCH_INVALID
    assert not (lib.NGXFFI_ACCEPT_QUEUE | lib.NGXFFI_BATCH_INVALID) & top
    assert top < lib.NGXFFI_BATCH_INVALID and top < lib.NGXFFI_ACCEPT_QUEUE
    assert 2 * lib.NGXFFI_EVENTS_MAX < lib.NGXFFI_BATCH_INVALID  # the count below
    with pytest.raises(ValueError, match="connection_n must be from 1 to"):
        Cycle(lib.NGXFFI_CONNECTIONS_MAX + 1)  # refused before any allocation
    with pytest.raises(ValueError, match="connection_n must be from 1 to"):
        Cycle(0)
    with pytest.raises(ValueError, match="epoll events must be from 1 to"):
        Cycle(4, events=lib.NGXFFI_EVENTS_MAX + 1)  # its count would reach the flag


def test_freeing_a_free_or_foreign_slot_is_refused() -> None:
    # A second free pushed the slot again: the free list had a cycle and handed the
    # slot out twice. Slots past the pool were written out of bounds.
    out = run(
        """
        from ngxffi._ngx import ffi, lib
        n = 4
        raw = ffi.new("ngxffi_cycle_t *")
        arrays = [ffi.new(t + "[]", n) for t in
                  ("ngx_connection_t", "ngx_event_t", "ngx_event_t")]
        raw.connections, raw.read_events, raw.write_events = arrays
        raw.connection_n = n
        lib.ngxffi_init_connections(raw)
        print(lib.ngxffi_free_connection(raw, 0), raw.free_connection_n)
        a = lib.ngxffi_get_connection(raw, 5)
        print(lib.ngxffi_free_connection(raw, a), lib.ngxffi_free_connection(raw, a))
        free, get = lib.ngxffi_free_connection, lib.ngxffi_get_connection
        print(free(raw, n), free(raw, 1 << 63))
        print(sorted(get(raw, 5) for _ in range(n + 1)))
        print(get(raw, -1), get(ffi.NULL, 1))
        """
    )
    assert out.splitlines() == ["-1 4", "0 -1", "-1 -1", "[-1, 0, 1, 2, 3]", "-2 -2"]


def test_reusable_queue_takes_only_the_pools_slots() -> None:
    from ngxffi.event.cycle import Cycle

    cy = Cycle(2)
    try:
        stranger = ffi.new("ngx_connection_t *")
        assert lib.ngxffi_reusable_connection(cy.raw, stranger, 1) == -1
        assert lib.ngxffi_reusable_connection(cy.raw, ffi.NULL, 1) == -1
        assert cy.raw.reusable_n == 0 and not stranger.queued
        assert lib.ngxffi_reusable_connection(cy.raw, cy.raw.connections + 1, 1) == 0
        assert lib.ngxffi_reusable_slots(cy.raw, ffi.NULL, 1) == -1
        out = ffi.new("int32_t[]", 2)
        assert lib.ngxffi_reusable_slots(cy.raw, out, 2) == 1 and out[0] == 1
        assert lib.ngxffi_reusable_slots(cy.raw, out, -5) == 0
        assert lib.ngxffi_reusable_connection(cy.raw, cy.raw.connections + 1, 0) == 0
    finally:
        cy.close()


# --- the epoll module -----------------------------------------------------------------


def test_decide_refuses_a_from_outside_the_batch() -> None:
    # from -1 read list[-1], before the event list
    raw = ffi.new("ngxffi_cycle_t *")
    keep = (
        ffi.new("struct epoll_event[]", 2),
        ffi.new("int32_t[]", 4),
        ffi.new("int32_t[]", 4),
    )
    raw.event_list, raw.out, raw.out_half = keep
    raw.nevents, raw.batch_n = 2, 2
    for bad in (-1, -(1 << 31), 5, (1 << 31) - 1):
        ffi.errno = 0
        assert lib.ngxffi_epoll_decide(raw, bad, 0, 0) == -1, bad
        assert ffi.errno == 22
    assert lib.ngxffi_epoll_decide(raw, 0, 0, 1) == -1  # trace, no verdicts array
    assert [lib.ngxffi_epoll_decide(raw, h, 0, 0) for h in range(5)] == [0] * 5
    raw.batch_n = 3  # more than the list holds
    assert lib.ngxffi_epoll_decide(raw, 0, 0, 0) == -1
    assert lib.ngxffi_epoll_decide(ffi.NULL, 0, 0, 0) == -1
    assert lib.ngxffi_epoll_process(ffi.NULL, 0, 0, 0) == -1
    assert lib.ngxffi_epoll_ctl(raw, -1, lib.EPOLL_CTL_ADD, ffi.NULL, 0, 0) == -1
    assert lib.ngxffi_tag(ffi.NULL, ffi.NULL, 1) == 0
    assert lib.ngxffi_tag_slot(ffi.NULL, 0) == -1


SELECT_FD_MAX = (1 << 29) - 1  # lib.NGXFFI_SELECT_FD_MAX (checked below)


def test_select_refuses_fds_its_codes_cannot_hold(fds: list[int]) -> None:
    # (int32_t) fd << 2 overflowed for fds from 2**29: a negative or wrapped code
    ep = lib.epoll_create1(lib.EPOLL_CLOEXEC)
    efd = lib.eventfd(1, lib.EFD_CLOEXEC)  # readable from the start
    fds += [ep, efd]
    ee = ffi.new("struct epoll_event *")
    ee.events = lib.EPOLLIN
    ee.data.u64 = SELECT_FD_MAX
    assert lib.epoll_ctl(ep, lib.EPOLL_CTL_ADD, efd, ee) == 0
    events = ffi.new("struct epoll_event[]", 1)
    codes = ffi.new("int32_t[]", 1)
    assert lib.ngxffi_epoll_select(ep, events, 1, 0, codes) == 1
    assert codes[0] == SELECT_FD_MAX << 2 | 1  # the largest that fits
    for data in (1 << 29, 1 << 31, (1 << 64) - 1):
        ee.data.u64 = data
        assert lib.epoll_ctl(ep, lib.EPOLL_CTL_MOD, efd, ee) == 0
        codes[0] = 0
        assert lib.ngxffi_epoll_select(ep, events, 1, 0, codes) == -1, codes[0]
        assert ffi.errno == errno.EOVERFLOW
    assert lib.ngxffi_epoll_select(ep, ffi.NULL, 1, 0, codes) == -1
    assert lib.ngxffi_poll_ready(ffi.NULL, 1, codes) == -1
    assert lib.NGXFFI_SELECT_FD_MAX == SELECT_FD_MAX


# --- the HTTP fast path and the counters ----------------------------------------------


def test_http_functions_and_counters_take_null() -> None:
    out = run(
        """
        from ngxffi._ngx import ffi, lib
        print(lib.ngxffi_http_simple(ffi.NULL, b"GET / HTTP/1.1", 14))
        f = ffi.new("ngxffi_http_fast_t *")
        print(lib.ngxffi_http_simple(f, ffi.NULL, 100))
        print(lib.ngxffi_http_date(ffi.NULL, 0))
        print(lib.ngxffi_http_fast_read(ffi.NULL, ffi.NULL))
        rev = ffi.new("ngx_event_t *")
        print(lib.ngxffi_http_fast_read(ffi.new("ngxffi_cycle_t *"), rev))
        print(lib.ngxffi_atomic_add(ffi.NULL, 1), lib.ngxffi_atomic_cas(ffi.NULL, 0, 1))
        lib.ngxffi_atomic_move(ffi.NULL, ffi.NULL)
        lib.ngxffi_stash_free(ffi.NULL)
        print("ok")
        """
    )
    assert out.split() == ["0", "0", "-1", "0", "0", "0", "0", "ok"]
