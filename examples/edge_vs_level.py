"""Edge- vs level-triggered epoll on a socketpair, with the raw binding.

Writes 10 bytes, reads 4, and asks epoll again: level-triggered reports the 6 unread
bytes again, edge-triggered stays silent until new data arrives. This is why nginx's
edge-triggered handlers read until EAGAIN. Run: python examples/edge_vs_level.py
"""

from typing import Any

from ngxffi import lib
from ngxffi import os as nos


def wait_once(ep: int, events: Any) -> str:
    n = nos.epoll_wait(ep, events, 0)
    return "readable" if n else "silent"


def demo(mode: str, flags: int) -> None:
    ep = nos.epoll_create1()
    a, b = nos.socketpair(type=lib.SOCK_STREAM | lib.SOCK_NONBLOCK)
    events = nos.new_events(4)
    nos.epoll_ctl(ep, lib.EPOLL_CTL_ADD, a, lib.EPOLLIN | flags)
    nos.send(b, b"0123456789")
    first = wait_once(ep, events)
    nos.recv(a, 4)
    again = wait_once(ep, events)
    nos.send(b, b"!")
    after_new_data = wait_once(ep, events)
    print(
        f"{mode:<17} first wait: {first:<9} after a partial read: {again:<9} "
        f"after new data: {after_new_data}"
    )
    for fd in (a, b, ep):
        nos.close(fd)


if __name__ == "__main__":
    demo("level-triggered", 0)
    demo("edge-triggered", lib.EPOLLET)
