"""``ngxffi serve``: a small nginx on ngxffi's event core.

Settings come from nginx's defaults, then ``-c FILE`` (TOML, see
:mod:`ngxffi.core.conf`), then the command-line flags, which go through the same
directive checks. ``-t`` tests the configuration and exits, as ``nginx -t``. The
rest is the process layer's (:mod:`ngxffi.process.cycle`): one process, or a master
and workers; SIGINT/SIGTERM stop it, SIGQUIT gracefully, SIGHUP re-reads ``-c``.

``--app MODULE:CALLABLE`` serves a user's handler (:mod:`ngxffi.http.app`). The
current directory goes first on ``sys.path`` so that its modules import, as
``python -m``, uvicorn and gunicorn do; the module is imported here, before any
worker starts, and again on each SIGHUP. ``--app`` with ``--return`` or ``--root``
is a usage error (exit status 2).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from dataclasses import asdict
from typing import Any

from ngxffi import probe
from ngxffi.core import log
from ngxffi.core.conf import Conf, ConfigError, ModuleConf, load
from ngxffi.event.conf import EventConf
from ngxffi.event.modules import MODULES as EVENT_METHODS
from ngxffi.http.app import AppConf
from ngxffi.http.cache import OpenFileCacheConf
from ngxffi.http.core import HttpCoreConf
from ngxffi.http.service import check_content, configuration
from ngxffi.http.static import StaticConf
from ngxffi.http.status import StatusConf
from ngxffi.process.conf import CoreConf
from ngxffi.process.cycle import run as run_processes
from ngxffi.process.worker import Configuration

# the modules of this program and so its directives (≈ nginx's ngx_modules[])
MODULES: tuple[type[ModuleConf], ...] = (
    CoreConf,
    EventConf,
    HttpCoreConf,
    StaticConf,
    OpenFileCacheConf,
    StatusConf,
    AppConf,
)
# flags that set a directive of the same meaning (dest -> directive)
FLAGS = {
    "workers": "worker_processes",
    "worker_connections": "worker_connections",
    "use": "use",
    "multi_accept": "multi_accept",
    "root": "root",
    "app": "app",
    "status_path": "status_path",
    "access_log": "access_log",
    "keepalive_timeout": "keepalive_timeout",
    "client_header_timeout": "client_header_timeout",
    "send_timeout": "send_timeout",
}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="a small nginx: HTTP/1.1 on the event core")
    p.add_argument("-c", dest="config", metavar="FILE", help="a TOML configuration")
    p.add_argument(
        "-t", dest="test", action="store_true", help="test the configuration and exit"
    )
    p.add_argument("--listen", metavar="ADDR:PORT")
    p.add_argument("--workers", type=int, metavar="N", help="worker_processes")
    p.add_argument("--worker-connections", type=int, metavar="N")
    p.add_argument("--root", metavar="DIR", help="serve the files under DIR")
    p.add_argument(
        "--app",
        metavar="MODULE:CALLABLE",
        help="answer with this callable (a Request in, a Response out)",
    )
    p.add_argument(
        "--return",
        dest="ret",
        nargs=2,
        metavar=("STATUS", "BODY"),
        help="answer every request with this status and body",
    )
    p.add_argument("--status-path", metavar="PATH")
    p.add_argument("--use", metavar="METHOD", help=f"one of {', '.join(EVENT_METHODS)}")
    p.add_argument("--multi-accept", action="store_true", default=None)
    p.add_argument("--access-log", metavar="FILE")
    for name in ("keepalive-timeout", "client-header-timeout", "send-timeout"):
        p.add_argument(
            f"--{name}",
            metavar="TIME",
            help=f"nginx's {name.replace('-', '_')} (e.g. 75s, 500ms)",
        )
    p.set_defaults(run=run)


def configure(args: argparse.Namespace) -> Conf:
    """nginx's defaults, then the file, then the flags."""
    conf = load(args.config, MODULES) if args.config else Conf(MODULES)
    for dest, directive in FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            conf.set(directive, value, f" (--{dest.replace('_', '-')})")
    if args.listen:
        listen = asdict(conf[HttpCoreConf].listen)
        conf.set("listen", {**listen, "address": args.listen}, " (--listen)")
    if args.ret:
        status, body = args.ret
        code = int(status) if status.isdigit() else status  # return's check refuses it
        conf.set("return", [code, body], " (--return)")
    check_content(conf)
    check_method(conf)
    return conf


def check_method(conf: Conf) -> None:
    """The event method can run here: io_uring may be missing, disabled or refused
    (a seccomp filter), which is better said once, at start-up, than by every
    worker's failed init (nginx tests its methods' features the same way, when its
    event modules are initialised)."""
    if conf[EventConf].use == "io_uring":
        answer = probe.io_uring()
        if not answer["usable"]:
            raise ConfigError(f'"use io_uring": {answer["reason"]}')


def run(args: argparse.Namespace) -> int:
    name = args.config or "(command line)"
    clash = _clash(args)
    if clash:  # a usage error, as argparse's, in one line
        print(
            f"ngxffi serve: error: --app cannot be used with {clash}", file=sys.stderr
        )
        return 2
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        conf = configure(args)
    except ConfigError as e:
        print(f"ngxffi: [emerg] {e}", file=sys.stderr)
        if args.test:
            print(f"ngxffi: configuration file {name} test failed", file=sys.stderr)
        return 1
    if args.test:
        print(
            f"ngxffi: the configuration file {name} syntax is ok\n"
            f"ngxffi: configuration file {name} test is successful",
            file=sys.stderr,
        )
        return 0
    log.configure(*conf[CoreConf].error_log)

    def reread() -> Configuration:  # SIGHUP: the same arguments, read again
        return configuration(configure(args))

    return run_processes(configuration(conf), reread, functools.partial(announce, conf))


def _clash(args: argparse.Namespace) -> str | None:
    """The flag that cannot go with ``--app``, if one was given with it."""
    if args.app is None:
        return None
    return "--return" if args.ret else "--root" if args.root is not None else None


def announce(conf: Conf, bound: str) -> None:
    """The line that says the server is up (and, to tests, where)."""
    print(
        f"ngxffi serve: listening on http://{bound}/ (status at "
        f"{conf[StatusConf].status_path}); Ctrl-C or SIGTERM stops it",
        file=sys.stderr,
        flush=True,
    )
