"""The lab's clients: each connects, sends one GET, reads the whole response and holds
the connection open, so that the server holds a descriptor for it.

Every client ends as exactly one of: served (a complete HTTP response, whatever its
status: a server that sheds with a 503 still answered), refused (connect refused),
reset (reset or closed before a complete response, or an answer that is not HTTP),
timed out (no complete response within the timeout, connect included), or a lab
error: the lab itself could not run the client (its own EMFILE or ENFILE, no
ephemeral port left), which says nothing about the server. Responses are read with
httptools (llhttp, as ``ngxffi serve`` parses requests): Content-Length, chunked, or
delimited by the close; a 101 Switching Protocols ends at its head.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from dataclasses import dataclass, field

import httptools

# the lab's own failures, not the server's
_LAB_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.EADDRNOTAVAIL, errno.ENOBUFS}


@dataclass
class Outcome:
    """A wave's clients, counted by how each ended, and when (monotonic)."""

    served: int = 0
    refused: int = 0
    reset: int = 0
    timed_out: int = 0
    lab_errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    first_response: float | None = None
    ends: list[tuple[float, str]] = field(default_factory=list)

    def count(self, kind: str) -> None:
        """One more client ended as ``kind`` (a field's name), now."""
        setattr(self, kind, getattr(self, kind) + 1)
        now = time.monotonic()
        self.ends.append((now, kind))
        if kind == "served" and self.first_response is None:
            self.first_response = now


class _Response:
    """httptools' callbacks: complete when the message is, or at EOF when the body
    is delimited by the close (no Content-Length, not chunked)."""

    def __init__(self) -> None:
        self.head_done = False
        self.complete = False
        self.framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_message_complete(self) -> None:
        self.complete = True


async def _read_response(reader: asyncio.StreamReader) -> int:
    """The status of the response, once it is whole; ConnectionError if the server
    closes before, or answers something that is not HTTP."""
    response = _Response()
    parser = httptools.HttpResponseParser(response)
    while not response.complete:
        data = await reader.read(65536)
        if not data:
            if response.head_done and not response.framed:
                break  # delimited by the close
            raise ConnectionResetError("closed before a complete response")
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            break  # 101: the response is its head
        except httptools.HttpParserError as e:
            raise ConnectionResetError(f"not an HTTP response: {e}") from e
    status: int = parser.get_status_code()
    return status


async def client(
    port: int, path: str, hold: float, timeout: float, out: Outcome
) -> None:
    """One client: connect, ask, read the whole answer, hold ``hold`` seconds."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status = await _read_response(reader)
        out.statuses[status] = out.statuses.get(status, 0) + 1
        out.count("served")
        await asyncio.sleep(hold)
    except ConnectionRefusedError:
        out.count("refused")
    except TimeoutError:
        out.count("timed_out")
    except OSError as e:  # reset, EPIPE, or a connect that failed another way
        out.count("lab_errors" if e.errno in _LAB_ERRNOS else "reset")
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def wave(
    port: int, path: str, clients: int, hold: float, timeout: float, out: Outcome
) -> None:
    """``clients`` clients at once; returns when every one has ended."""
    await asyncio.gather(
        *(client(port, path, hold, timeout, out) for _ in range(clients))
    )
