"""``ngxffi exhaust``: the fd-exhaustion lab (:mod:`ngxffi.lab`), on the built-in
servers or any command.

``ngxffi exhaust [OPTIONS] [--server NAME | --server NAME=COMMAND]... [-- CMD ARG...]``
runs the experiment on each server in turn and prints one table, a column per server
(or, with ``--json``, one JSON object per server and line). A server is a preset
(``ngxffi``, ``asyncio``, ``nginx``), ``NAME=COMMAND`` (split as a shell would, no
shell run), or the command after ``--``; ``{port}`` in a command becomes a free port,
or ``--port`` says where a command without it listens. No server given: ``ngxffi``.

Exit status: 0 when every server started, 1 when one never listened (the table says
why), 2 for a usage error, 130 when interrupted (Ctrl-C, SIGTERM, SIGHUP: the servers
are stopped, and the table shows those that finished).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from ngxffi.event.listening import EMFILE_POLICIES, Listening
from ngxffi.lab import plot, report
from ngxffi.lab.experiment import exhaust
from ngxffi.lab.options import START_TIMEOUT_S, Options
from ngxffi.lab.presets import PRESETS, preset
from ngxffi.lab.result import ExhaustResult
from ngxffi.lab.target import LabError, Target

EPILOG = "built-in servers (--server NAME):\n" + "\n".join(
    f"  {name:<8} {what}" for name, what in PRESETS.items()
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "exhaust",
        help="fd-exhaustion lab: a server under ulimit -n, any server",
        usage="%(prog)s [options] [--server NAME[=COMMAND]]... [-- CMD ARG...]",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="NAME[=COMMAND]",
        help="a built-in server, or a name and a command; repeat for a side-by-side "
        "table",
    )
    p.add_argument("--name", help="the name of the server after -- (default: CMD)")
    p.add_argument(
        "--port",
        type=_port,
        help="where a command without {port} listens (on 127.0.0.1)",
    )
    p.add_argument(
        "--nofile",
        default="64",
        metavar="SOFT[:HARD]",
        help="the server's RLIMIT_NOFILE (default 64; HARD defaults to SOFT, as "
        "`ulimit -n` sets both)",
    )
    p.add_argument(
        "--policy",
        choices=EMFILE_POLICIES,
        default=Listening.emfile_policy,
        help="EMFILE policy of the ngxffi server (default: nginx's backoff)",
    )
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="the ngxffi server re-enables accepting only when the back-off timer "
        "fires, as nginx does (default: as soon as a connection closes)",
    )
    p.add_argument("--clients", type=int, default=300, help="clients in the first wave")
    p.add_argument(
        "--hold",
        type=float,
        default=2.0,
        help="seconds each client holds its connection after the response",
    )
    p.add_argument(
        "--second-wave",
        type=int,
        default=20,
        metavar="N",
        help="clients of the health-check wave (default 20)",
    )
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds a client waits for it all"
    )
    p.add_argument("--path", default="/", help="what the clients GET (default /)")
    p.add_argument(
        "--start-timeout",
        type=float,
        default=START_TIMEOUT_S,
        help=f"seconds a server has to listen (default {START_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="CALL:ERRNO[:WHEN]",
        help="fault injection in the server (ngxffi's own calls only), e.g. "
        "accept4:ECONNABORTED:0.1; repeatable (see docs: fault injection)",
    )
    p.add_argument(
        "--inject-seed",
        type=_seed,
        default=0,
        help="the faults' seed (read as NGXFFI_INJECT_SEED is: 10, 0x10)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per server")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the timelines")
    p.add_argument(
        "--verbose", action="store_true", help="show the servers' stdout and stderr"
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(run=run, parser=p)


def _seed(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1..65535)")
    return port


def _nofile(text: str) -> tuple[int, int | None]:
    soft, sep, hard = text.partition(":")
    try:
        return int(soft), int(hard) if sep else None
    except ValueError:
        raise LabError(f"--nofile {text!r}: SOFT or SOFT:HARD, integers") from None


def _target(spec: str, args: argparse.Namespace) -> Target:
    name, sep, command = spec.partition("=")
    if not sep:
        return preset(name, args.policy, args.resume, _nofile(args.nofile)[0])
    if not name:
        raise LabError(f"--server {spec!r}: NAME=COMMAND needs a name")
    try:
        return Target(name, tuple(shlex.split(command)), port=args.port)
    except ValueError as e:
        raise LabError(f"--server {spec!r}: {e}") from None


def targets(args: argparse.Namespace) -> list[Target]:
    """The servers to run, in order: each --server, then the command after --."""
    chosen = [_target(spec, args) for spec in args.server]
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command:
        name = args.name or os.path.basename(command[0])
        chosen.append(Target(name, tuple(command), port=args.port))
    elif args.command:
        raise LabError("-- is followed by no command")
    elif args.name:
        raise LabError("--name names the command after --, and there is none")
    if args.port is not None and not any(t.port for t in chosen):
        raise LabError("--port is for a command without {port}, not for a preset")
    if not chosen:
        chosen = [preset("ngxffi", args.policy, args.resume, _nofile(args.nofile)[0])]
    names = [t.name for t in chosen]
    if len(set(names)) < len(names):
        raise LabError(f"two servers have the same name in {names}: use NAME=COMMAND")
    return chosen


def options(args: argparse.Namespace) -> Options:
    """The flags of the same names as Options' fields; --nofile split in two."""
    soft, hard = _nofile(args.nofile)
    same = {f.name for f in dataclasses.fields(Options)} - {"nofile", "nofile_hard"}
    given = {name: getattr(args, name) for name in same}
    given["inject"] = tuple(given["inject"])
    return Options(nofile=soft, nofile_hard=hard, **given)


def _announce(target: Target, opts: Options) -> None:
    print(
        f"{target.name}: {shlex.join(target.argv)}\n  RLIMIT_NOFILE "
        f"{opts.nofile}:{opts.hard}; {opts.clients} clients holding {opts.hold:g} s, "
        f"then {opts.second_wave}",
        file=sys.stderr,
    )


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM and SIGHUP stop the run as Ctrl-C does, through SIGINT's handler of
    the moment: while the clients run, asyncio.run's, which cancels them cleanly (a
    KeyboardInterrupt raised in the middle of the event loop can leave it half
    made). Where SIGINT is ignored (a background job's), the KeyboardInterrupt is
    raised here."""
    if not callable(signal.getsignal(signal.SIGINT)):
        raise KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)


def _experiments(
    chosen: list[Target], opts: Options, args: argparse.Namespace
) -> list[ExhaustResult]:
    """Each server in turn; on an interrupt, those that finished."""
    live = not args.json and sys.stderr.isatty()
    results: list[ExhaustResult] = []
    for target in chosen:
        if not args.json:
            _announce(target, opts)
        progress = report.Progress(target.name) if live else None
        try:
            results.append(exhaust(target, opts, progress))
        except KeyboardInterrupt:
            print(f"\n{target.name}: interrupted, its server stopped", file=sys.stderr)
            break
        finally:
            if progress is not None:
                progress.done()
    return results


def run(args: argparse.Namespace) -> int:
    try:
        chosen, opts = targets(args), options(args)
        opts.check()
        for target in chosen:
            target.check()
        if args.plot is not None:
            plot.require(args.plot)
    except LabError as e:
        args.parser.error(str(e))  # exit 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        results = _experiments(chosen, opts, args)
    except LabError as e:  # a command that could not run after all
        args.parser.error(str(e))
    if results:
        print(report.json_lines(results) if args.json else report.table(results))
    if len(results) < len(chosen):
        return 130
    status = 0 if all(r.started for r in results) else 1
    if args.plot is not None:
        try:
            plot.plot(results, args.plot)
        except LabError as e:
            print(f"ngxffi exhaust: {e}", file=sys.stderr)
            return 1
        if not args.json:
            print(f"timeline: {args.plot}", file=sys.stderr)
    return status
