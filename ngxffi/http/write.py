"""Sending a connection's output (≈ ngx_http_write_filter_module.c and
src/os/unix/ngx_linux_sendfile_chain.c): the answers of one read joined into as few
segments as possible, then bytes with write() and files with sendfile(), as far as
the socket takes them; what it does not take waits for the write event under
``send_timeout``.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ngxffi import os as nos
from ngxffi._ngx import ffi, lib
from ngxffi.event.event import handle_write_event
from ngxffi.http.message import FileBody

if TYPE_CHECKING:
    from ngxffi.http.connection import HttpConnection

Output = deque[bytearray | FileBody]  # what waits for the socket, in order
WOULD_BLOCK = (lib.EAGAIN, lib.EWOULDBLOCK)
plain_send = lib.ngxffi_http_plain_send


def send_pending(hc: HttpConnection) -> bool:
    """Write what this read answered (the server's ``pending``); False when the
    connection closed or waits for the write event. The requests are counted
    first: once a client has its answer, stub_status (in any worker) counts its
    request, as in nginx; for one answer in memory, the common case, the count and
    the write are one C call (ngxffi_http_plain_send)."""
    server = hc.server
    pending = server.pending
    data = pending[0]
    if len(pending) == 1 and isinstance(data, bytes):
        pending.clear()
        n = len(data)
        sent = plain_send(server.plain.ctx, hc.c.raw.fd, data, n, server.uncounted)
        server.uncounted = 0
        if sent == n:
            return True
        if sent < 0:
            err = ffi.errno
            if err == lib.EINTR:  # C gave up retrying: flush's write retries (PEP 475)
                hc.out = deque([bytearray(data)])
                return flush(hc)
            if err not in WOULD_BLOCK:  # such as EPIPE or ECONNRESET
                hc.close()
                return False
            sent = 0
        hc.out = deque([bytearray(memoryview(data)[sent:])])
        return wait_write(hc)
    server.count_answered()
    hc.out = coalesce(pending)
    pending.clear()
    return flush(hc)


def queue_behind(hc: HttpConnection) -> None:
    """This read's answers go behind the output that waits for the socket."""
    server = hc.server
    assert hc.out is not None
    server.count_answered()
    hc.out.extend(coalesce(server.pending))
    server.pending.clear()


def flush(hc: HttpConnection) -> bool:
    """Send the connection's queued output; True when all is sent and reading may
    go on."""
    out = hc.out
    assert out is not None
    while out:
        try:
            done = send_segment(hc.c.raw.fd, out[0])
        except BlockingIOError:
            return wait_write(hc)
        except OSError:
            hc.close()
            return False
        if done:
            out.popleft()
    hc.out = None
    hc.write_mark = None
    wev = hc.c.write
    if wev.raw.timer_set:
        hc.server.cycle.timers.del_timer(wev)
    return True


def wait_write(hc: HttpConnection) -> bool:
    """The socket is full: wait for the write event, under send_timeout. False.
    The first wait of an answer notes what the client has still to take, and
    when: how fast it takes the rest is what reclaiming slow clients looks at."""
    if hc.write_mark is None:
        left = untaken(hc)
        if left is not None:
            hc.write_mark = (left, hc.server.cycle.current_msec)
            hc.server.reclaimer.watch(hc)
    wev = hc.c.write
    wev.raw.ready = 0
    hc.server.cycle.timers.add_timer(wev, hc.server.conf.send_timeout)
    handle_write_event(wev)
    hc.settle()
    return False


def coalesce(items: list[bytes | FileBody]) -> Output:
    """Queue ``items`` with neighbouring bytes joined: one send for each run."""
    out: Output = deque()
    for item in items:
        if isinstance(item, FileBody):
            out.append(item)
        elif out and isinstance(out[-1], bytearray):
            out[-1] += item
        else:
            out.append(bytearray(item))
    return out


def send_segment(fd: int, segment: bytearray | FileBody) -> bool:
    """Send some of a segment; True when it is all sent (a file is closed then).
    Raises BlockingIOError when the socket takes nothing, OSError when it fails."""
    if isinstance(segment, bytearray):
        sent = nos.write(fd, segment)
        del segment[:sent]
        return not segment
    sent = nos.sendfile(fd, segment.fd, segment.offset, segment.left)
    if sent == 0:  # the file shrank under us: the length sent was a lie
        raise OSError(lib.EIO, "sendfile: file truncated")
    segment.offset += sent
    segment.left -= sent
    if segment.left:
        return False
    nos.close(segment.fd)
    return True


def untaken(hc: HttpConnection) -> int | None:
    """The bytes of the answer its client has still to take: those not sent yet,
    and those in the socket's send queue (the kernel's buffer fills at once, and
    then what it has sent tells nothing of the client: what it holds does). None
    when the socket cannot tell (it failed)."""
    out = hc.out
    unsent = sum(len(s) if isinstance(s, bytearray) else s.left for s in out or ())
    try:
        return unsent + nos.outq(hc.c.raw.fd)
    except OSError:
        return None


def release(out: Output) -> None:
    """Close the files of output that will never be sent."""
    for segment in out:
        if isinstance(segment, FileBody):
            nos.close(segment.fd)
