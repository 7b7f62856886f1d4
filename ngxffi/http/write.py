"""Sending a connection's output (≈ ngx_http_write_filter_module.c and
src/os/unix/ngx_linux_sendfile_chain.c): the answers of one read joined into as few
segments as possible, then bytes with write() and files with sendfile(), as far as
the socket takes them.
"""

from __future__ import annotations

import os
from collections import deque

from ngxffi import os as nos
from ngxffi._ngx import lib
from ngxffi.http.message import FileBody

Output = deque[bytearray | FileBody]  # what waits for the socket, in order


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
        sent = os.write(fd, segment)
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


def release(out: Output) -> None:
    """Close the files of output that will never be sent."""
    for segment in out:
        if isinstance(segment, FileBody):
            nos.close(segment.fd)
