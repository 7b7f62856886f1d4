"""The Python face of one ``ngx_connection_t`` slot (≈ src/core/ngx_connection.h).

A cycle makes one ``Connection`` per slot when it starts and keeps it for its whole
life, so nothing is allocated per connection or per event. The C fields (``fd``,
``number``, ``reusable``, ``close``, …) live in the cycle's connections array and are
read and written through properties (or ``c.raw`` directly); what C cannot hold —
the protocol context ``data``, the listening socket, the peer address text — lives on
the proxy. Deliberate difference: nginx's ``c->data`` doubles as the free-list link;
here the link stays in C (``c.raw.data``) and ``c.data`` is the protocol context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ngxffi import os as nos
from ngxffi import sockaddr
from ngxffi._ngx import ffi, lib
from ngxffi.core.cfield import cfield

if TYPE_CHECKING:
    from ngxffi.event.cycle import Cycle
    from ngxffi.event.event import Event


class Connection:
    """One slot of the pool: ``read`` and ``write`` are its two events, for life."""

    __slots__ = (
        "_addr_text",
        "cycle",
        "data",
        "index",
        "listening",
        "raw",
        "read",
        "write",
    )

    def __init__(
        self, cycle: Cycle, raw: Any, index: int, read: Event, write: Event
    ) -> None:
        self.cycle = cycle
        self.raw = raw
        self.index = index
        self.read = read
        self.write = write
        self.data: Any = None
        self.listening: Any = None
        self._addr_text: str | None = None

    @property
    def addr_text(self) -> str | None:
        """The peer's address without the port, as nginx's ``c->addr_text``. Read
        from the socket when first asked for (an access log line, say), not at
        accept: most connections never need it, and the many idle ones would each
        hold a string."""
        if self._addr_text is None and self.raw.fd != -1:
            try:
                peer = nos.getpeername(int(self.raw.fd))
            except OSError:
                return None  # the peer is gone
            self._addr_text = sockaddr.to_text(peer, port=False)
        return self._addr_text

    @addr_text.setter
    def addr_text(self, text: str | None) -> None:
        self._addr_text = text

    def take_stash(self) -> tuple[bytes, bool]:
        """What a C handler left on this connection (``raw.stash_len`` bytes), freed
        there: the bytes, and True when they are output still to send, False when
        input still to parse."""
        raw = self.raw
        data: bytes = ffi.buffer(raw.stash, raw.stash_len)[:]
        output = bool(raw.stash_out)
        lib.ngxffi_stash_free(raw)
        return data, output

    def reset(self) -> None:
        """Forget the previous user's Python state (get_connection zeroes C's)."""
        self.data = None
        self.listening = None
        self._addr_text = None

    def __repr__(self) -> str:
        return f"<Connection #{self.index} fd={self.raw.fd}>"

    fd = cfield("ngx_connection_t", "fd")
    number = cfield("ngx_connection_t", "number")
    requests = cfield("ngx_connection_t", "requests")
    sent = cfield("ngx_connection_t", "sent")
    generation = cfield("ngx_connection_t", "generation")
    log_error = cfield("ngx_connection_t", "log_error")
    timedout = cfield("ngx_connection_t", "timedout")
    error = cfield("ngx_connection_t", "error")
    destroyed = cfield("ngx_connection_t", "destroyed")
    idle = cfield("ngx_connection_t", "idle")
    reusable = cfield("ngx_connection_t", "reusable")
    close = cfield("ngx_connection_t", "close")
    shared = cfield("ngx_connection_t", "shared")
