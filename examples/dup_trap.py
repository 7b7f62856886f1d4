"""The dup trap: epoll follows open file descriptions, not fd numbers.

Registers a pipe's read end, dup()s it, closes the registered number, then writes to
the pipe: the event still arrives, tagged with the closed number, and neither number
can delete it. nginx does a real EPOLL_CTL_DEL for listening sockets for this reason.
Run: python examples/dup_trap.py
"""

from ngxffi import lib
from ngxffi import os as nos

ep = nos.epoll_create1()
r, w = nos.pipe2()
r2 = nos.dup(r)
nos.epoll_ctl(ep, lib.EPOLL_CTL_ADD, r, lib.EPOLLIN, data=r)
nos.close(r)
nos.write(w, b"x")
events = nos.new_events(1)
n = nos.epoll_wait(ep, events, 0)
print(f"registered fd {r}, closed it, kept its dup {r2} open")
print(f"epoll_wait: {n} event(s), data.u64 = {events[0].data.u64} (the closed number)")
for fd in (r, r2):
    try:
        nos.epoll_ctl(ep, lib.EPOLL_CTL_DEL, fd)
    except OSError as e:
        print(f"EPOLL_CTL_DEL fd {fd}: {e}")
nos.close(r2)
print(f"after closing the dup too: {nos.epoll_wait(ep, events, 0)} event(s)")
for fd in (w, ep):
    nos.close(fd)
