"""``ngxffi serve``: a small nginx on ngxffi's event core (single process for now).

Serves the files under ``root`` (default: a small bundled page), or answers every
request with ``return`` (nginx's); ``status_path`` (default ``/status``) is
stub_status. Settings come from nginx's defaults, then ``-c FILE`` (TOML, see
:mod:`ngxffi.core.config`), then the command-line flags. ``-t`` tests the
configuration and exits, as ``nginx -t``. Stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ngxffi import Cycle, process_events_and_timers, sockaddr
from ngxffi import os as nos
from ngxffi._ngx import lib
from ngxffi.core import log
from ngxffi.core.config import Config, ConfigError, Listen, load, msec
from ngxffi.core.listening import Listening, open_listening_sockets
from ngxffi.event.accept import add_listening, close_listening_sockets
from ngxffi.event.event import EXCLUSIVE_EVENT, LEVEL_EVENT, Event
from ngxffi.event.stats import Stats
from ngxffi.http.request import HttpConfig, HttpServer, Request, Response
from ngxffi.http.static import Static
from ngxffi.http.status import stub_status
from ngxffi.process.master import Master
from ngxffi.process.shm import SharedStats
from ngxffi.process.shmtx import AcceptMutex, force_unlock

BUNDLED = Path(__file__).resolve().parent.parent / "http" / "html"


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
        "--return",
        dest="ret",
        nargs=2,
        metavar=("STATUS", "BODY"),
        help="answer every request with this status and body",
    )
    p.add_argument("--status-path", metavar="PATH")
    p.add_argument("--use", choices=("epoll", "poll"))
    p.add_argument("--multi-accept", action="store_true", default=None)
    p.add_argument("--access-log", metavar="FILE")
    for name in ("keepalive-timeout", "client-header-timeout", "send-timeout"):
        p.add_argument(
            f"--{name}",
            metavar="TIME",
            help=f"nginx's {name.replace('-', '_')} (e.g. 75s, 500ms)",
        )
    p.set_defaults(run=run)


def configure(args: argparse.Namespace) -> Config:
    """nginx's defaults, then the file, then the flags."""
    config = load(args.config) if args.config else Config()
    flags = {
        "worker_processes": args.workers,
        "worker_connections": args.worker_connections,
        "root": args.root,
        "status_path": args.status_path,
        "use": args.use,
        "multi_accept": args.multi_accept,
        "access_log": args.access_log,
    }
    for key, value in flags.items():
        if value is not None:
            setattr(config, key, value)
    if args.listen:
        config.listen = Listen(
            args.listen,
            config.listen.backlog,
            config.listen.reuseport,
            config.listen.deferred,
            config.listen.emfile_policy,
        )
    for name in ("keepalive_timeout", "client_header_timeout", "send_timeout"):
        value = getattr(args, name)
        if value is not None:
            try:
                setattr(config, name, msec(value))
            except ValueError as e:
                raise ConfigError(f"--{name.replace('_', '-')}: {e}") from None
    if args.ret:
        status, body = args.ret
        if not status.isdigit() or not 100 <= int(status) <= 599:
            raise ConfigError(f"invalid --return status {status!r}")
        config.return_ = (int(status), body)
    check(config)
    return config


def check(config: Config) -> None:
    """What can be refused before starting."""
    parse_listen(config.listen.address)
    if config.root is not None and not Path(config.root).is_dir():
        raise ConfigError(f'root "{config.root}" is not a directory')


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6]:PORT`` or ``PORT`` (all addresses), as nginx's listen."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "0.0.0.0", text
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port
        raise ConfigError(f"invalid port in listen {text!r}")
    return host, int(port)


def fixed_response(config: Config) -> Response | None:
    """The ``return`` directive's answer, if there is one."""
    if config.return_ is None:
        return None
    return Response(config.return_[0], config.return_[1].encode())


def make_handler(config: Config, server: list[HttpServer]) -> Any:
    ret = fixed_response(config)
    if ret is not None:
        content: Any = lambda request: ret  # noqa: E731
    else:
        content = Static(config.root or BUNDLED)

    def handler(request: Request) -> Response:
        if request.uri.split("?", 1)[0] == config.status_path:
            server[0].commit_stats()
            return stub_status(server[0].cycle.stats, request)
        response: Response = content(request)
        return response

    return handler


def run(args: argparse.Namespace) -> int:
    name = args.config or "(command line)"
    try:
        config = configure(args)
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
    log.configure(*config.error_log)
    if config.worker_rlimit_nofile:
        hard = nos.getrlimit(lib.RLIMIT_NOFILE)[1]
        nos.setrlimit(lib.RLIMIT_NOFILE, (config.worker_rlimit_nofile, hard))
    return serve(config, args)


def serve(config: Config, args: argparse.Namespace | None = None) -> int:
    """Open the listening socket(s), then serve in this process or, with
    worker_processes above 1, in workers under a master (which re-reads the
    configuration on SIGHUP when there is ``args`` to read it from)."""
    single = config.worker_processes == 1 or not config.master_process
    listening = open_listening(config, 1 if single else config.worker_processes)
    with contextlib.ExitStack() as stack:
        stack.callback(close_all, listening)
        if config.pid:
            Path(config.pid).write_text(f"{os.getpid()}\n")
            stack.callback(Path(config.pid).unlink, missing_ok=True)
        bound = sockaddr.to_text(nos.getsockname(listening[0].fd))
        print(
            f"ngxffi serve: listening on http://{bound}/ (status at "
            f"{config.status_path}); Ctrl-C or SIGTERM stops it",
            file=sys.stderr,
            flush=True,
        )
        if single:  # nginx's `master_process off` too, whatever worker_processes says
            return run_worker(config, listening[0], Stats(), exclusive=False)
        stats = SharedStats()  # before fork: one set of counters for all workers
        current = {"config": config}

        def on_quit() -> None:
            close_all(listening)

        def on_reopen() -> None:
            log.configure(*current["config"].error_log)

        def on_exit(pid: int) -> None:
            if force_unlock(stats, pid):
                log.log_error(log.ALERT, f"shared memory lock of {pid} forced free")

        def reload() -> tuple[int, Callable[[int], int]] | None:
            """SIGHUP: the new configuration, or None (the old workers stay)."""
            try:
                new = configure(args) if args is not None else None
                if new is None:
                    raise ConfigError("no configuration to re-read")
                if new.worker_processes == 1 or not new.master_process:
                    raise ConfigError("cannot leave the master process by a reload")
                old = current["config"]
                per_worker = len(listening) > 1  # reuseport: one socket per worker
                if new.listen != old.listen or (
                    per_worker and new.worker_processes != old.worker_processes
                ):
                    fresh = open_listening(new, new.worker_processes)
                    on_quit()  # the old workers keep their own copies
                    listening[:] = fresh
            except (ConfigError, OSError) as e:
                log.log_error(log.EMERG, f"reconfiguring failed: {e}")
                return None
            current["config"] = new
            log.configure(*new.error_log)
            return new.worker_processes, worker_for(new, listening, stats)

        master = Master(
            config.worker_processes,
            worker_for(config, listening, stats),
            on_quit,
            on_reopen,
            on_exit,
            reload,
        )
        return master.run()


def close_all(listening: list[Listening]) -> None:
    for ls in listening:
        ls.close()


def worker_for(
    config: Config, listening: list[Listening], stats: Stats
) -> Callable[[int], int]:
    """What a worker of this configuration runs, given its slot."""
    sockets = list(listening)  # as they are now: a reload may replace the list's items

    def worker(slot: int) -> int:
        if len(sockets) == 1:  # shared: the accept mutex, or EPOLLEXCLUSIVE
            return run_worker(
                config, sockets[0], stats, exclusive=True, mutex=config.accept_mutex
            )
        for i, other in enumerate(sockets):  # reuseport: this worker's own
            if i != slot:
                nos.close(other.fd)
        return run_worker(config, sockets[slot], stats, exclusive=False)

    return worker


def open_listening(config: Config, workers: int) -> list[Listening]:
    """One listening socket, or with ``reuseport`` one per worker, all bound to the
    same address (nginx's ngx_clone_listening); opened here, before any fork."""
    host, port = parse_listen(config.listen.address)
    listen = config.listen
    count = workers if listen.reuseport else 1
    listening: list[Listening] = []
    for _ in range(count):
        ls = Listening(
            (host, port),
            lambda c: None,  # each worker installs its server's handler
            backlog=listen.backlog,
            reuseport=listen.reuseport,
            deferred_accept=listen.deferred,
            emfile_policy=listen.emfile_policy,
        )
        try:
            open_listening_sockets([ls])
        except BaseException:
            for opened in listening:
                opened.close()
            raise
        listening.append(ls)
        address = nos.getsockname(ls.fd)
        assert isinstance(address, tuple)
        port = address[1]  # port 0: the clones take the port the first one got
    return listening


def run_worker(
    config: Config, ls: Listening, stats: Stats, exclusive: bool, mutex: bool = False
) -> int:
    """One event loop serving ``ls``: the whole server in one process, or a worker.
    Imitates ngx_worker_process_cycle: loop until SIGTERM/SIGINT (at once) or SIGQUIT
    (gracefully); SIGUSR1 reopens the log files."""
    holder: list[HttpServer] = []
    handler = make_handler(config, holder)
    http = HttpConfig(
        client_header_timeout=config.client_header_timeout,
        keepalive_timeout=config.keepalive_timeout,
        keepalive_requests=config.keepalive_requests,
        send_timeout=config.send_timeout,
    )
    with Cycle(config.worker_connections, use=config.use, stats=stats) as cycle:
        cycle.multi_accept = config.multi_accept
        cycle.accept_mutex_delay = config.accept_mutex_delay
        server = HttpServer(
            cycle,
            handler,
            http,
            open_access_log(config),
            fixed=fixed_response(config),  # what the handler answers, for C to send
            fixed_except=config.status_path,
        )
        holder.append(server)
        ls.handler = server.init_connection
        if mutex:  # the holder registers the listener, level-triggered
            cycle.accept_mutex = AcceptMutex(stats)
            add_listening(cycle, [ls], register=False)
        else:
            add_listening(cycle, [ls], EXCLUSIVE_EVENT if exclusive else LEVEL_EVENT)
        stop: list[int] = []
        reopen: list[int] = []
        note_signals(cycle, (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT), stop)
        note_signals(cycle, (signal.SIGUSR1,), reopen)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())  # a worker's were blocked
        try:
            while not stop:
                process_events_and_timers(cycle)
                if reopen:
                    reopen.clear()
                    reopen_logs(config, server)
            if stop[0] == signal.SIGQUIT:
                graceful_shutdown(server, config.worker_shutdown_timeout)
        finally:
            if server.access_log is not None:
                server.access_log.close()
    return 0


def note_signals(cycle: Cycle, signums: tuple[int, ...], noted: list[int]) -> None:
    """Handlers that append the signal to ``noted`` and wake the loop.

    nginx's handlers only set a flag (ngx_quit…) that the loop reads after
    epoll_wait returns; a signal that comes just before the wait leaves it asleep
    until some event. Python runs its handlers between bytecodes, which widens that
    window to the whole Python part of a turn, so the handler also notifies the event
    module (ngx_notify's eventfd): the next epoll_wait returns at once."""
    notify = cycle.actions.notify

    def handler(signum: int, frame: object) -> None:
        noted.append(signum)
        if notify is not None:
            notify(_woken)

    for signum in signums:
        signal.signal(signum, handler)


def _woken(ev: Event) -> None:
    """The wake-up itself is all a signal's notification is for."""


def open_access_log(config: Config) -> TextIO | None:
    """Line-buffered: each request is on disk at once."""
    return open(config.access_log, "a", buffering=1) if config.access_log else None


def reopen_logs(config: Config, server: HttpServer) -> None:
    """SIGUSR1, as nginx's ngx_reopen_files: after a rotation, write to new files."""
    log.configure(*config.error_log)
    if server.access_log is not None:
        server.access_log.close()
        server.access_log = open_access_log(config)


def graceful_shutdown(server: HttpServer, timeout: int = 0) -> None:
    """SIGQUIT, as nginx handles it in a worker: stop accepting, close the idle
    keep-alive connections, let the others finish (their responses carry
    ``Connection: close``), then return; after ``timeout`` ms (worker_shutdown_timeout,
    0: none) close whatever is left, as ngx_shutdown_timer_handler does."""
    cycle = server.cycle
    server.shutting_down = True
    close_listening_sockets(cycle)
    cycle.close_idle_connections()
    if timeout:
        cycle.timers.add_timer(Event.standalone(cycle, _close_all), timeout)
    # this process's own connections (the counters may be shared with other workers)
    while cycle.free_connection_n < cycle.connection_n:
        process_events_and_timers(cycle)


def _close_all(ev: Event) -> None:
    """worker_shutdown_timeout ran out: every connection closes now."""
    for c in ev.cycle.connections:
        if c.raw.fd != -1:
            c.raw.close = 1
            c.raw.error = 1
            c.read.handler(c.read)
