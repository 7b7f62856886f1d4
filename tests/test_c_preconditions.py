"""The exported C functions are safe for any argument Python can pass (issue 13,
"Defects"): each bad argument gets an error code, never a crash or a wrong result.
Calls that crashed before their fix run in a subprocess, so that a SIGSEGV fails the
test instead of killing pytest."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
