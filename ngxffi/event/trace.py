"""The event trace: what the kernel returned and what the event core made of it.

For experiments with stale events and triggering modes. When a cycle has a trace
(``Cycle(trace=True)`` logs each record, ``Cycle(trace=callable)`` calls it), every
event of every batch is reported after the batch, with its raw ``data.u64``, the pool
slot and instance bit decoded from it, ``revents`` and the verdict of each side.
Off by default; when off, the only cost is one ``is None`` test per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

from ngxffi._ngx import lib

VERDICTS = {
    lib.NGXFFI_NONE: "-",
    lib.NGXFFI_DISPATCHED: "dispatched",
    lib.NGXFFI_POSTED: "posted",
    lib.NGXFFI_STALE_CLOSED: "stale: closed",
    lib.NGXFFI_STALE_REUSED: "stale: reused",
    lib.NGXFFI_INVALID: "invalid",
}

logger = logging.getLogger("ngxffi.trace")


class TraceRecord(NamedTuple):
    """One kernel event. ``read``/``write`` are the verdicts of its two sides:
    ``dispatched`` (handler called), ``posted``, ``stale: closed``, ``stale: reused``,
    ``invalid`` (tag not ours, never dereferenced), ``unexpected`` (poll: no open
    connection for the fd) or ``-`` (side not reported, or its event not active)."""

    position: int  # in the batch
    data: int | None  # data.u64 as the kernel returned it; None for poll
    fd: int | None  # poll only: epoll events carry no fd
    slot: int | None  # the pool slot decoded from the tag, None if invalid
    instance: int | None
    revents: int
    read: str
    write: str


Trace = Callable[[TraceRecord], object]


def log_trace(record: TraceRecord) -> None:
    """The default trace: one INFO line per event on the ``ngxffi.trace`` logger."""
    data = "-" if record.data is None else f"{record.data:#x}"
    logger.info(
        "event %d: data %s fd %s slot %s instance %s revents %#x read %s write %s",
        record.position,
        data,
        record.fd,
        record.slot,
        record.instance,
        record.revents,
        record.read,
        record.write,
    )
