"""The exported C functions are safe for any argument Python can pass (issue 13,
"Defects"): each bad argument gets an error code, never a crash or a wrong result.
Calls that crashed before their fix run in a subprocess, so that a SIGSEGV fails the
test instead of killing pytest."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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


def fake_cycle(address: int, n: int, strong: bool = True) -> object:
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
