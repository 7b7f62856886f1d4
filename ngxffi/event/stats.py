"""The counters stub_status reports (≈ the ngx_stat_* atomics of src/event/ngx_event.c).

accepted: accept() returned a socket; handled: it got a pool slot (accepted - handled
are the connections dropped for lack of slots); active: accepted connections open now;
requests: requests parsed; reading, writing, waiting: connections reading a request
header, processing or answering one, idle in keep-alive. Per cycle here; the process
layer will put them in shared memory.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Stats:
    accepted: int = 0
    handled: int = 0
    active: int = 0
    requests: int = 0
    reading: int = 0
    writing: int = 0
    waiting: int = 0
