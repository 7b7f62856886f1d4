"""The ``ngxffi`` command: one module per sub-command, this one dispatches."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ngxffi._version import __version__
from ngxffi.cli import exhaust, info, serve


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ngxffi",
        description="nginx's event core for Python, on the real Linux syscalls.",
    )
    p.add_argument("--version", action="version", version=f"ngxffi {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    info.add_parser(sub)
    exhaust.add_parser(sub)
    serve.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    p = parser()
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help()
        return 2
    status: int = args.run(args)
    return status
