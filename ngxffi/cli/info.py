"""``ngxffi info``: what this kernel and this build support, as text or JSON."""

from __future__ import annotations

import argparse
import json
import platform
import textwrap
from typing import Any

import cffi

from ngxffi import os as nos
from ngxffi import probe
from ngxffi._ngx import lib
from ngxffi._version import __version__

STRUCTS = ("struct epoll_event", "epoll_data_t", "ngx_event_t", "ngx_connection_t")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="print what this kernel and build support")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def collect() -> dict[str, Any]:
    """Everything the report shows, as plain data."""
    soft, hard = nos.getrlimit(lib.RLIMIT_NOFILE)
    uname = platform.uname()
    uring = probe.io_uring()
    return {
        "ngxffi": __version__,
        "kernel": f"{uname.system} {uname.release} {uname.machine}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cffi": cffi.__version__,
        "features": {
            "EPOLLRDHUP": probe.epoll_rdhup(),
            "EPOLLEXCLUSIVE": probe.epoll_exclusive(),
            "accept4": probe.accept4(),
            "epoll_pwait2": probe.epoll_pwait2(),
            "openat2": probe.openat2(),
            "io_uring": uring["usable"],
            "io_uring multishot poll": uring["multishot_poll"],
        },
        "io_uring": uring,
        "RLIMIT_NOFILE": {"soft": soft, "hard": hard},
        "structs": {name: probe.layout(name) for name in STRUCTS},
    }


def _field_text(name: str, f: dict[str, int]) -> str:
    if "bit" in f:
        return f"{name}@{f['offset']}.{f['bit']}:{f['bits']}"
    return f"{name}@{f['offset']}"


def format_text(report: dict[str, Any]) -> str:
    """The human-readable report."""
    yes_no = {True: "yes", False: "no"}
    limit = report["RLIMIT_NOFILE"]
    lines = [
        f"ngxffi {report['ngxffi']}",
        f"kernel          {report['kernel']}",
        f"python          {report['python']}",
        f"cffi            {report['cffi']}",
        "",
        "kernel features (probed)",
    ]
    lines += [f"  {k:<24}{yes_no[v]}" for k, v in report["features"].items()]
    if report["io_uring"]["reason"]:
        lines.append(f"  {'':<24}({report['io_uring']['reason']})")
    lines += [
        "",
        f"RLIMIT_NOFILE   soft {limit['soft']}, hard {limit['hard']}",
        "",
        "C layout (bytes; field@offset, bitfield@byte.bit:width)",
    ]
    for name, s in report["structs"].items():
        lines.append(f"  {name}: size {s['size']}, align {s['align']}")
        fields = " ".join(_field_text(n, f) for n, f in s["fields"].items())
        lines.append(
            textwrap.fill(fields, 88, initial_indent="    ", subsequent_indent="    ")
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = collect()
    print(json.dumps(report, indent=2) if args.json else format_text(report))
    return 0
