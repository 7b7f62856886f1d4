"""The counters stub_status reports (≈ the ngx_stat_* atomics of src/event/ngx_event.c).

accepted: accept() returned a socket; handled: it got a pool slot (accepted - handled
are the connections dropped for lack of slots); active: accepted connections open now;
requests: requests parsed; reading, writing, waiting: connections reading a request
header, processing or answering one, idle in keep-alive.

They live in a C ``ngxffi_stats_t`` and change only by atomic adds, as nginx's do, so
that workers sharing one (in shared memory) count exactly; a cycle on its own gets a
private one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ngxffi._ngx import ffi, lib

FIELDS = (
    "accepted",
    "handled",
    "active",
    "requests",
    "reading",
    "writing",
    "waiting",
    "drained",  # beyond nginx: idle connections drain_connections closed
    "reclaimed",  # slow clients ngxffi.http.reclaim closed
)


class Stats:
    """Read ``stats.accepted`` and the others; change them with :meth:`add`."""

    def __init__(self, raw: Any = None) -> None:
        self.raw = ffi.new("ngxffi_stats_t *") if raw is None else raw
        self._fields = {name: ffi.addressof(self.raw[0], name) for name in FIELDS}

    def add(self, name: str, delta: int) -> None:
        """Atomically add ``delta`` to counter ``name``."""
        lib.ngxffi_atomic_add(self._fields[name], delta)

    def field(self, name: str) -> Any:
        """The ``int64_t *`` of counter ``name``, for C code that counts."""
        return self._fields[name]

    def adder(self, name: str) -> Callable[[int], None]:
        """``add`` bound to one counter, for hot paths: ``adder("requests")(1)``."""
        return functools.partial(lib.ngxffi_atomic_add, self._fields[name])

    def move(self, old: str, new: str) -> None:
        """One connection goes from counter ``old`` to ``new`` (atomically each)."""
        lib.ngxffi_atomic_move(self._fields[old], self._fields[new])

    def __getattr__(self, name: str) -> int:
        if name in FIELDS:
            return int(getattr(self.raw, name))
        raise AttributeError(name)

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self.raw, name)}" for name in FIELDS)
        return f"Stats({values})"
