"""Servers that are not ngxffi's, for the lab's tests: ``python lab_servers.py MODE
PORT``.

* ``serve``: blocking sockets and a thread per connection, answering every request
  and keeping the connection until the client closes it; on EMFILE it retries
  10 ms later;
* ``dies-on-emfile``: the same, but exits with status 3 on its first EMFILE, as a
  careless server does;
* ``never-answers``: listens and accepts, never answers;
* ``forks``: a parent that forks, and a child that serves (the parent holds 4 fds;
  only the child can run out);
* ``raises-limit``: ``serve``, after raising its soft RLIMIT_NOFILE to the hard one;
* ``busy-503``: ``serve``, answering 503 Service Unavailable;
* ``upgrade``: ``serve``, answering 101 Switching Protocols.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import sys
import threading
import time

RESPONSES = {
    "busy-503": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
    "upgrade": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
    b"Connection: Upgrade\r\n\r\n",
}
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"


def _answer(conn: socket.socket, response: bytes) -> None:
    with conn:
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
            while b"\r\n\r\n" in data:
                _, _, data = data.partition(b"\r\n\r\n")
                conn.sendall(response)


def serve(
    listener: socket.socket, die_on_emfile: bool, answer: bool, response: bytes
) -> None:
    held = []
    while True:
        try:
            conn, _ = listener.accept()
        except OSError as e:
            if e.errno != errno.EMFILE:
                raise
            if die_on_emfile:
                os._exit(3)
            time.sleep(0.01)  # a blocking server's back-off: nothing to wait on
            continue
        if answer:
            args = (conn, response)
            threading.Thread(target=_answer, args=args, daemon=True).start()
        else:
            held.append(conn)


def main(mode: str, port: int) -> None:
    if mode == "raises-limit":
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    listener = socket.create_server(("127.0.0.1", port), backlog=128)
    if mode == "forks":
        if os.fork():
            listener.close()
            os.wait()
            return
        mode = "serve"
    response = RESPONSES.get(mode, RESPONSE)
    serve(listener, mode == "dies-on-emfile", mode != "never-answers", response)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
