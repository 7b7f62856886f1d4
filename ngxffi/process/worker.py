"""The worker process (≈ ngx_worker_process_init and ngx_worker_process_cycle in
src/os/unix/ngx_process_cycle.c).

A worker builds its cycle from the event directives, starts the service it runs (the
HTTP server, for ``ngxffi serve``) on its listening socket, and turns the event loop
until a signal stops it: SIGTERM or SIGINT at once, SIGQUIT gracefully; SIGUSR1
reopens the log files. The process layer knows nothing of HTTP: the service is
anything with the four methods of :class:`Service`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ngxffi import os as nos
from ngxffi._ngx import lib
from ngxffi.core import log
from ngxffi.core.conf import Conf
from ngxffi.event.accept import add_listening, close_listening_sockets
from ngxffi.event.conf import EventConf
from ngxffi.event.connection import Connection
from ngxffi.event.cycle import Cycle
from ngxffi.event.event import (
    EXCLUSIVE_EVENT,
    LEVEL_EVENT,
    Event,
    handle_read_event,
    process_events_and_timers,
)
from ngxffi.event.listening import Listening
from ngxffi.event.stats import Stats
from ngxffi.process.conf import CoreConf
from ngxffi.process.shmtx import AcceptMutex

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
REOPEN_SIGNALS = (signal.SIGUSR1,)


class Service(Protocol):
    """What a worker serves, made in the worker once its cycle exists (≈ the
    modules' ``init_process``)."""

    def init_listening(self, ls: Listening) -> None:
        """The listening socket is open and registered in this worker (its
        connection exists): the service may put a C handler on its read event."""

    def init_connection(self, c: Connection) -> None:
        """The listening socket's handler: take an accepted connection."""

    def shutdown(self) -> None:
        """A graceful shutdown began: answers from now on close their connection."""

    def reopen(self) -> None:
        """SIGUSR1: reopen the service's log files (ngx_reopen_files)."""

    def close(self) -> None:
        """The worker is done: release the service's files."""


@dataclass
class Configuration:
    """What the process layer needs of one configuration: the directives (it reads
    the process and event ones), the listening socket to open (not open yet; its
    handler is set in each worker) and how a worker makes its service."""

    conf: Conf
    listening: Listening
    service: Callable[[Cycle], Service]


class WorkerSignals:
    """What a worker's signal handlers noted (≈ ngx_terminate, ngx_quit, ngx_reopen).

    nginx's handlers only set a flag that the loop reads after epoll_wait returns; a
    signal that comes just before the wait leaves it asleep until some event. Python
    widens that window: its handlers run between bytecodes, after the C-level
    handler has noted the signal. Two wake-ups close it. A handler that runs before
    the wait notifies the event module (ngx_notify's eventfd), so that the next
    wait returns at once; and a signal caught in C after the loop's last bytecode,
    whose Python handler only runs once the wait returns, has CPython's C handler
    write to a pipe the cycle watches (``signal.set_wakeup_fd``), so that it does
    return. The pipe takes a pool slot, as nginx's channel to the master does."""

    def __init__(self, cycle: Cycle) -> None:
        self.cycle = cycle
        self.notify = cycle.actions.notify
        self.stop = 0  # the signal that ends the loop, 0 until one comes
        self.reopen = False
        self.wakeup: Connection | None = None  # the pipe's read end, watched
        self._wakeup_w = -1
        self._previous_wakeup = -1

    def install(
        self,
        stop: tuple[int, ...] = STOP_SIGNALS,
        reopen: tuple[int, ...] = REOPEN_SIGNALS,
    ) -> None:
        for signum in stop:
            signal.signal(signum, self._stop)
        for signum in reopen:
            signal.signal(signum, self._reopen)
        self._watch_wakeup_fd()

    def _watch_wakeup_fd(self) -> None:
        """The pipe CPython's C signal handler writes to, its read end in the cycle
        (only the main thread may set it; without a free slot, notify alone)."""
        if self.wakeup is not None or threading.current_thread() is not (
            threading.main_thread()
        ):
            return
        r, w = nos.pipe2(lib.O_CLOEXEC | lib.O_NONBLOCK)
        c = self.cycle.get_connection(r)
        if c is None:
            nos.close(r)
            nos.close(w)
            return
        c.read.handler = _drain_wakeup
        handle_read_event(c.read)
        self._previous_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        self.wakeup, self._wakeup_w = c, w

    def uninstall(self) -> None:
        """Stop watching the wake-up pipe (the handlers stay)."""
        if self.wakeup is None:
            return
        signal.set_wakeup_fd(self._previous_wakeup)
        self.cycle.close_connection(self.wakeup)
        nos.close(self._wakeup_w)
        self.wakeup = None

    @property
    def slots(self) -> int:
        """The pool slots the signals hold (the pipe's): not a connection to wait
        for when shutting down."""
        return int(self.wakeup is not None)

    def _stop(self, signum: int, frame: object) -> None:
        if signum != signal.SIGQUIT or not self.stop:  # terminating beats quitting
            self.stop = signum
        self._wake()

    def _reopen(self, signum: int, frame: object) -> None:
        self.reopen = True
        self._wake()

    def _wake(self) -> None:
        if self.notify is not None:
            self.notify(_woken)


def _drain_wakeup(ev: Event) -> None:
    """The wake-up pipe is readable: empty it (the signal numbers in it are the
    Python handlers' business). Not closed by worker_shutdown_timeout's ``close``."""
    c: Connection = ev.data
    c.raw.close = 0
    while True:
        try:
            if not nos.read(c.raw.fd, 512):
                break
        except BlockingIOError:
            ev.raw.ready = 0
            break
    handle_read_event(ev)


def _woken(ev: Event) -> None:
    """The wake-up itself is all a signal's notification is for."""


class Worker:
    """One event loop serving ``listening``: the whole server in one process, or a
    worker under a master. ``accept`` is how listeners shared with other workers are
    registered: ``"level"`` (not shared), ``"exclusive"`` (EPOLLEXCLUSIVE) or
    ``"mutex"`` (the accept mutex's holder registers them)."""

    def __init__(
        self,
        configuration: Configuration,
        listening: Listening,
        stats: Stats,
        accept: str = "level",
    ) -> None:
        self.configuration = configuration
        self.listening = listening
        self.stats = stats
        self.accept = accept

    def run(self) -> int:
        """Imitates ngx_worker_process_cycle."""
        conf = self.configuration.conf
        events = conf[EventConf]
        with Cycle(events.worker_connections, use=events.use, stats=self.stats) as cy:
            cy.multi_accept = events.multi_accept
            cy.accept_mutex_delay = events.accept_mutex_delay
            service = self.configuration.service(cy)
            signals = None
            try:
                self._listen(cy, service)
                signals = WorkerSignals(cy)
                signals.install()
                signal.pthread_sigmask(signal.SIG_SETMASK, set())  # blocked at fork
                while not signals.stop:
                    process_events_and_timers(cy)
                    if signals.reopen:
                        signals.reopen = False
                        log.configure(*conf[CoreConf].error_log)
                        service.reopen()
                if signals.stop == signal.SIGQUIT:
                    timeout = conf[CoreConf].worker_shutdown_timeout
                    graceful_shutdown(cy, service, timeout, signals)
            finally:
                if signals is not None:
                    signals.uninstall()
                service.close()
        return 0

    def _listen(self, cy: Cycle, service: Service) -> None:
        ls = self.listening
        ls.handler = service.init_connection
        if self.accept == "mutex":  # the holder registers the listener
            cy.accept_mutex = AcceptMutex(self.stats)
            add_listening(cy, [ls], register=False)
        else:
            flags = EXCLUSIVE_EVENT if self.accept == "exclusive" else LEVEL_EVENT
            add_listening(cy, [ls], flags)
        service.init_listening(ls)


def graceful_shutdown(
    cy: Cycle,
    service: Service,
    timeout: int = 0,
    signals: WorkerSignals | None = None,
) -> None:
    """SIGQUIT, as nginx handles it in a worker (ngx_worker_process_cycle's
    ngx_exiting): stop accepting, close the idle keep-alive connections, let the
    others finish (their answers close them), then return; after ``timeout`` ms
    (worker_shutdown_timeout, 0: none) close whatever is left, as
    ngx_shutdown_timer_handler does. A SIGTERM or SIGINT noted in ``signals``
    meanwhile ends it at once, as ngx_terminate does."""
    service.shutdown()
    close_listening_sockets(cy)
    cy.close_idle_connections()
    if timeout:
        cy.timers.add_timer(Event.standalone(cy, shutdown_timer_handler), timeout)
    # this process's own connections (the counters may be shared with other workers)
    held = signals.slots if signals is not None else 0
    while cy.free_connection_n < cy.connection_n - held:
        if signals is not None and signals.stop != signal.SIGQUIT:
            return
        process_events_and_timers(cy)


def shutdown_timer_handler(ev: Event) -> None:
    """worker_shutdown_timeout ran out: every connection closes now. Imitates
    ngx_shutdown_timer_handler."""
    for c in ev.cycle.connections:
        if c.raw.fd != -1:
            c.raw.close = 1
            c.raw.error = 1
            c.read.handler(c.read)
