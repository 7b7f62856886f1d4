"""ngxffi: nginx's event core for Python, on the real Linux syscalls through cffi.

The layers, bottom up (each imports only the ones below it):

* ``ngxffi.ffi`` / ``ngxffi.lib``: the raw cffi binding, the C of ``src/`` built by
  ``build_ffi.py`` — syscalls, ``struct epoll_event``, the C-layout
  ``ngx_connection_t``/``ngx_event_t`` and every constant, with the values the C
  compiler saw;
* ``ngxffi.os``, ``ngxffi.sockaddr``, ``ngxffi.probe``: errno-checked, EINTR-safe
  wrappers (≈ nginx's ``src/os/unix``), addresses, what this kernel supports;
  ``ngxffi.faults`` (``ngxffi.os.faults``): syscall fault injection in the same C
  paths, armed in code or by ``NGXFFI_INJECT`` at import;
  ``ngxffi.epoll`` and ``ngxffi.selector``: a plain epoll object and asyncio on it;
* ``ngxffi.core``: the clock, logging, the configuration reader;
* ``ngxffi.event``: nginx's event core — the cycle and its connection pool,
  listening sockets, events and the event-actions table, the epoll and poll modules,
  timers, posted queues, accepting and the loop (the main names re-exported here);
* ``ngxffi.process``: one process or a master and workers;
* ``ngxffi.http``: HTTP/1.1 on all of that; ``ngxffi.cli``: the ``ngxffi`` command.
"""

from ngxffi import os, probe, sockaddr
from ngxffi._ngx import ffi, lib
from ngxffi._version import __version__
from ngxffi.event.accept import add_listening
from ngxffi.event.connection import Connection
from ngxffi.event.cycle import Cycle
from ngxffi.event.event import (
    CLEAR_EVENT,
    CLOSE_EVENT,
    EXCLUSIVE_EVENT,
    LEVEL_EVENT,
    ONESHOT_EVENT,
    POST_EVENTS,
    READ_EVENT,
    UPDATE_TIME,
    WRITE_EVENT,
    Event,
    EventActions,
    handle_read_event,
    handle_write_event,
    process_events_and_timers,
)
from ngxffi.event.listening import Listening, open_listening_sockets
from ngxffi.event.posted import delete_posted_event, post_event
from ngxffi.event.trace import TraceRecord
from ngxffi.os import faults

__all__ = [
    "CLEAR_EVENT",
    "CLOSE_EVENT",
    "EXCLUSIVE_EVENT",
    "LEVEL_EVENT",
    "ONESHOT_EVENT",
    "POST_EVENTS",
    "READ_EVENT",
    "UPDATE_TIME",
    "WRITE_EVENT",
    "Connection",
    "Cycle",
    "Event",
    "EventActions",
    "Listening",
    "TraceRecord",
    "__version__",
    "add_listening",
    "delete_posted_event",
    "faults",
    "ffi",
    "handle_read_event",
    "handle_write_event",
    "lib",
    "open_listening_sockets",
    "os",
    "post_event",
    "probe",
    "process_events_and_timers",
    "sockaddr",
]
