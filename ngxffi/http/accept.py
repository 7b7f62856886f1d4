"""The glue to the C accept handler ``ngxffi_http_accept`` (``src/ngx_http_accept.c``):
beyond nginx, a new connection whose first read is one plain request with
``Connection: close``, for a server whose answers C knows (``return``, cached files),
is accepted, answered and closed inside the epoll batch, with no pool slot and no
Python — what a client opening a connection per request costs.

Any other connection C accepted is handed over: the epoll module calls
:meth:`CAccept.on_accept`, which makes it a connection of the pool as
:func:`ngxffi.event.accept.accepted` does for any accepted socket, with what C read
from it (or the answer the socket did not take, and the close after it) as its stash,
then gives it to the listening socket's handler. EAGAIN on that first read (the
request is not there yet) hands the socket over with nothing read: Python waits for
it as for any new connection. A failed accept leaves everything to Python's
:func:`ngxffi.event.accept.event_accept`, which sees the error again and deals with
it (EMFILE's back-off, the reserve fd).
"""

from __future__ import annotations

from typing import Any

from ngxffi._ngx import ffi, lib
from ngxffi.event.accept import accepted, event_accept, init_connection
from ngxffi.event.cycle import Cycle
from ngxffi.event.event import Event
from ngxffi.event.listening import Listening

ACCEPT_HANDLER = ffi.cast(
    "ngxffi_c_handler_pt", ffi.addressof(lib, "ngxffi_http_accept")
)
# Accepts per listening event, multi_accept or not: nginx's one per event makes sense
# when each costs a turn of the loop; here each costs a few syscalls inside the
# batch, and a turn of the Python loop per connection would cost more than all of
# them. Bounded, so that one batch stays short.
ACCEPT_MAX = 64


class CAccept:
    """The C accept handler's configuration (an ``ngxffi_http_accept_t``) over the C
    read handler's ``fast`` (:func:`ngxffi.http.fast.fast_conf`), and the Python
    handler that takes the sockets it hands over."""

    def __init__(self, cycle: Cycle, fast: Any, short_read_drains: bool) -> None:
        self.cycle = cycle
        self.short_read_drains = short_read_drains  # HttpServer's, see there
        x = self.ctx = ffi.new("ngxffi_http_accept_t *")
        x.fast = fast
        x.accepted = cycle.stats.field("accepted")
        x.handled = cycle.stats.field("handled")
        x.accept_max = ACCEPT_MAX
        x.fd = -1

    def install(self, ls: Listening) -> None:
        """Put the C handler on the listening socket's read event."""
        assert ls.connection is not None
        rev = ls.connection.read
        rev.set_c_handler(ACCEPT_HANDLER, self.ctx)
        rev.handler = self.on_accept

    def on_accept(self, ev: Event) -> None:
        """The listening event's Python handler: the socket C handed over, or, when
        there is none (C failed to accept, or stood aside), nginx's accept."""
        x = self.ctx
        if x.fd == -1:
            event_accept(ev)
            return
        ls = ev.data.listening
        c = accepted(self.cycle, ev, ls, x.fd)
        if c is None:  # the socket is closed: only the stash is left to drop
            x.fd = -1
            lib.ngxffi_http_accept_drop(x)
            return
        # the handler takes the stash (or sees the loss) first; the socket is ready
        # only when C's read filled its buffer (a short one emptied the socket, as
        # ngx_unix_recv concludes): so a last request does not linger for nothing
        full = not x.stash_out and x.stash_len >= x.fast.size
        more = x.lost or full or x.more  # x.more: a fault rule capped the read
        c.read.raw.ready = int(more or not self.short_read_drains)
        lib.ngxffi_http_accept_give(x, c.raw)
        init_connection(self.cycle, ls, c)

    def close(self) -> None:
        """No socket left waiting for Python (the server goes away)."""
        lib.ngxffi_http_accept_drop(self.ctx)
