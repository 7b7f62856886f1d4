"""ngxffi: nginx's event core for Python, on the real Linux syscalls through cffi.

The layers, bottom up (each only calls the ones below it):

* ``ngxffi.ffi`` / ``ngxffi.lib``: the raw cffi binding built by ``build_ffi.py`` —
  syscalls, ``struct epoll_event``, the C-layout ``ngx_connection_t``/``ngx_event_t``
  and every constant, with the values the C compiler saw;
* ``ngxffi.os``: errno-checked, EINTR-safe wrappers (≈ nginx's ``src/os/unix``);
* ``ngxffi.probe``: what this kernel supports (EPOLLRDHUP, EPOLLEXCLUSIVE, accept4);
* ``ngxffi.core`` and ``ngxffi.event``: nginx's event core — the cycle and its
  connection pool, events and the event-actions table, the epoll and poll modules,
  timers, posted queues and the loop (re-exported here).
"""

from ngxffi import os, probe, sockaddr
from ngxffi._ngx import ffi, lib
from ngxffi._version import __version__
from ngxffi.core.connection import Connection
from ngxffi.core.cycle import Cycle
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
from ngxffi.event.posted import delete_posted_event, post_event
from ngxffi.event.trace import TraceRecord

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
    "TraceRecord",
    "__version__",
    "delete_posted_event",
    "ffi",
    "handle_read_event",
    "handle_write_event",
    "lib",
    "os",
    "post_event",
    "probe",
    "process_events_and_timers",
    "sockaddr",
]
