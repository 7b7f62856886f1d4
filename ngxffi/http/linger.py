"""Closing a connection the client may still be writing to (≈
ngx_http_set_lingering_close and ngx_http_lingering_close_handler of
src/http/ngx_http_request.c).

Why: close() on a socket with unread input makes the kernel send RST instead of FIN,
and an RST that reaches the client before it has read the answer throws the answer
away (its kernel drops the receive queue). A 400 for a 70 KB header or a 413 for a
body being uploaded would never be seen. So, once the last answer is sent, the write
side is shut down (the client sees the answer, then EOF) and what it still sends is
read and thrown away until it closes, stops for ``lingering_timeout`` or
``lingering_time`` has passed.

``lingering_close``: ``off`` closes at once; ``on`` (the default) lingers when the
client may still be sending (:attr:`HttpConnection.unread
<ngxffi.http.connection.HttpConnection.unread>`: an error answered before all of
the request was read, bytes behind the last request, a body not read to its end, a
socket not known to be empty); ``always`` after every last answer. Differs from
nginx: every error answer counts as input left unread (nginx lets a 400 whose input
happened to be read whole close at once); the cost is a wait for the client's FIN.
And a last answer given while its body is still coming begins the lingering close at
once (the client sees FIN, and the body is read and thrown away by it), where nginx
first discards the body with the connection open, then lingers: the same bytes are
read, but the client knows sooner that nothing more will come.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ngxffi import os as nos
from ngxffi._ngx import lib
from ngxffi.core.times import msec_diff
from ngxffi.event.event import USE_LEVEL_EVENT, WRITE_EVENT, Event, handle_read_event

if TYPE_CHECKING:
    from ngxffi.http.connection import HttpConnection

UNREAD = 1  # HttpConnection.unread: the client may still be sending
BROKEN = -1  # its input is not HTTP: close at once, even with lingering_close always
BUFFER_SIZE = 4096  # NGX_HTTP_LINGERING_BUFFER_SIZE
_discard = bytearray(BUFFER_SIZE)  # what is read goes nowhere: one buffer for all


def finalize(hc: HttpConnection) -> None:
    """The last answer is sent: a lingering close, or a close. Imitates the end of
    ngx_http_finalize_connection."""
    how = hc.server.conf.lingering_close
    if hc.unread != BROKEN and (how == "always" or (how == "on" and hc.unread_input())):
        set_lingering_close(hc)
    else:
        hc.close()


def set_lingering_close(hc: HttpConnection) -> None:
    """Shut the write side, then read and discard under ``lingering_timeout``, for
    ``lingering_time`` at most. The connection is reusable meanwhile: drain may
    close it when slots run out, as nginx's may. Imitates
    ngx_http_set_lingering_close."""
    server = hc.server
    cycle = server.cycle
    c = hc.c
    hc.lingering_until = cycle.current_msec + server.conf.lingering_time
    hc.r = None  # mid-message: not reusable
    rev, wev = c.read, c.write
    if server.fast is not None:
        rev.clear_c_handler()  # no C handler may answer what is discarded now
    rev.handler = lingering_close_handler
    wev.handler = _empty_handler
    if wev.raw.timer_set:
        cycle.timers.del_timer(wev)
    if wev.raw.active and cycle.event_flags & USE_LEVEL_EVENT:
        cycle.actions.delete(wev, WRITE_EVENT, 0)  # it would be reported again
    try:
        nos.shutdown(c.raw.fd, lib.SHUT_WR)
    except OSError:  # the peer is gone already (ENOTCONN)
        hc.close()
        return
    c.raw.close = 0
    cycle.reusable_connection(c, True)
    cycle.timers.add_timer(rev, server.conf.lingering_timeout)
    handle_read_event(rev)
    hc.commit()
    if rev.raw.ready:
        lingering_close_handler(rev)


def lingering_close_handler(rev: Event) -> None:
    """Read and discard until the socket is empty; close on EOF, an error, a
    timeout, drain, or ``lingering_time`` reached; else wait again, for
    ``lingering_timeout`` or what is left of ``lingering_time`` if less. Imitates
    ngx_http_lingering_close_handler."""
    hc: HttpConnection = rev.data.data
    c = hc.c
    cycle = hc.server.cycle
    assert hc.lingering_until is not None
    left = msec_diff(hc.lingering_until, cycle.current_msec)
    if rev.raw.timedout or c.raw.close or left <= 0:
        hc.close()
        return
    fd = c.raw.fd
    while True:
        try:
            n = nos.recv_into(fd, _discard)
        except BlockingIOError:
            rev.raw.ready = 0
            break
        except OSError:  # ECONNRESET and the like: nothing more will come
            hc.close()
            return
        if n == 0:
            hc.close()
            return
    handle_read_event(rev)
    cycle.timers.add_timer(rev, min(left, hc.server.conf.lingering_timeout))


def _empty_handler(ev: Event) -> None:
    """The write side is shut: nothing to do on its events (ngx_http_empty_handler)."""
