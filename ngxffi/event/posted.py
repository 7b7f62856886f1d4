"""Posted event queues (≈ src/event/ngx_event_posted.c).

nginx links posted events through ``ev->queue``; here a queue is an insertion-ordered
dict of event proxies, which gives the same O(1) append, O(1) removal from the middle
(``ngx_delete_posted_event``) and FIFO processing. The C ``posted`` bit is kept in step,
so code reading ``ev.posted`` sees what nginx code would.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ngxffi.event.cycle import Cycle
    from ngxffi.event.event import Event


class PostedQueue:
    """A FIFO of posted events; true when not empty."""

    __slots__ = ("events", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: OrderedDict[Event, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __repr__(self) -> str:
        return f"<PostedQueue {self.name}: {len(self.events)} events>"


def post_event(ev: Event, queue: PostedQueue) -> None:
    """Append ``ev`` unless it is already posted. Imitates ngx_post_event."""
    if not ev.raw.posted:
        ev.raw.posted = 1
        ev.posted_in = queue
        queue.events[ev] = None


def delete_posted_event(ev: Event) -> None:
    """Take ``ev`` out of its queue. Imitates ngx_delete_posted_event."""
    ev.raw.posted = 0
    queue = ev.posted_in
    if queue is not None:
        queue.events.pop(ev, None)
        ev.posted_in = None


def event_process_posted(cycle: Cycle, queue: PostedQueue) -> None:
    """Run the queue's handlers, head first, until it is empty; events posted meanwhile
    run in the same pass. Imitates ngx_event_process_posted."""
    events = queue.events
    while events:
        ev, _ = events.popitem(last=False)
        ev.raw.posted = 0
        ev.posted_in = None
        ev.handler(ev)


def event_move_posted_next(cycle: Cycle) -> None:
    """Move the posted_next events (e.g. a handler that stopped early to be fair to
    others) to the posted queue, marked ready. Imitates ngx_event_move_posted_next."""
    posted = cycle.posted_events
    for ev in cycle.posted_next_events.events:
        ev.raw.ready = 1
        ev.raw.available = -1
        ev.posted_in = posted
        posted.events[ev] = None
    cycle.posted_next_events.events.clear()
