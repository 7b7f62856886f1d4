"""``ngxffi serve``: a small nginx on ngxffi's event core (single process for now).

Serves the files under ``--root`` (default: a small bundled page), or answers every
request with ``--return STATUS BODY`` (nginx's ``return``); ``--status-path``
(default ``/status``) is stub_status. Stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from ngxffi import Cycle, process_events_and_timers, sockaddr
from ngxffi import os as nos
from ngxffi.core.listening import Listening, open_listening_sockets
from ngxffi.event.accept import add_listening
from ngxffi.http.request import HttpConfig, HttpServer, Request, Response
from ngxffi.http.static import Static
from ngxffi.http.status import stub_status

BUNDLED = Path(__file__).resolve().parent.parent / "http" / "html"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="a small nginx: HTTP/1.1 on the event core")
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="ADDR:PORT")
    p.add_argument("--worker-connections", type=int, default=512, metavar="N")
    p.add_argument(
        "--return",
        dest="ret",
        nargs=2,
        metavar=("STATUS", "BODY"),
        help="answer every request with this status and body",
    )
    p.add_argument(
        "--root",
        metavar="DIR",
        help="serve the files under DIR (default: the bundled welcome page)",
    )
    p.add_argument("--status-path", default="/status", metavar="PATH")
    p.add_argument("--use", choices=("epoll", "poll"), default="epoll")
    p.add_argument("--multi-accept", action="store_true")
    for name, default in (
        ("keepalive-timeout", 75),
        ("client-header-timeout", 60),
        ("send-timeout", 60),
    ):
        p.add_argument(
            f"--{name}",
            type=float,
            default=default,
            metavar="SECONDS",
            help=f"nginx's {name.replace('-', '_')} (default {default}s)",
        )
    p.set_defaults(run=run)


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6]:PORT`` or ``PORT`` (all addresses), as nginx's listen."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "0.0.0.0", text
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port
        raise SystemExit(f"ngxffi serve: invalid port in --listen {text!r}")
    return host, int(port)


def make_handler(args: argparse.Namespace, server: list[HttpServer]) -> Any:
    if args.ret:
        status, body = args.ret
        if not status.isdigit() or not 100 <= int(status) <= 599:
            raise SystemExit(f"ngxffi serve: invalid --return status {status!r}")
        ret = Response(int(status), body.encode())
        content: Any = lambda request: ret  # noqa: E731
    else:
        try:
            content = Static(args.root or BUNDLED)
        except OSError as e:
            raise SystemExit(f"ngxffi serve: invalid --root: {e}") from None

    def handler(request: Request) -> Response:
        path = request.uri.split("?", 1)[0]
        if path == args.status_path:
            return stub_status(server[0].cycle.stats, request)
        response: Response = content(request)
        return response

    return handler


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s [%(levelname)s] %(message)s",
        datefmt="%Y/%m/%d %H:%M:%S",
    )
    address = parse_listen(args.listen)
    holder: list[HttpServer] = []
    handler = make_handler(args, holder)
    with Cycle(args.worker_connections, use=args.use) as cycle:
        cycle.multi_accept = args.multi_accept
        config = HttpConfig(
            client_header_timeout=round(args.client_header_timeout * 1000),
            keepalive_timeout=round(args.keepalive_timeout * 1000),
            send_timeout=round(args.send_timeout * 1000),
        )
        server = HttpServer(cycle, handler, config)
        holder.append(server)
        ls = Listening(address, server.init_connection)
        open_listening_sockets([ls])
        add_listening(cycle, [ls])
        stop: list[int] = []

        def on_signal(signum: int, frame: Any) -> None:
            stop.append(signum)

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)
        bound = sockaddr.to_text(nos.getsockname(ls.fd))
        print(
            f"ngxffi serve: listening on http://{bound}/ "
            f"(status at {args.status_path}); Ctrl-C or SIGTERM stops it",
            file=sys.stderr,
            flush=True,
        )
        while not stop:
            process_events_and_timers(cycle)
        ls.close()
    return 0
