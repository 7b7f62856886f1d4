"""Your own handler on the event core: ``ngxffi serve --app app_hello:app``.

An app is a callable that takes a :class:`ngxffi.http.Request` (method, uri,
version, headers with lower-case names, keep_alive) and returns a
:class:`ngxffi.http.Response` (status, body bytes, content_type, headers). ``ngxffi
serve`` runs it in its workers with all it has: keep-alive, timeouts, stub_status on
``/status``, the access log, SIGHUP and SIGQUIT. If it raises, the client gets a 500
and the error log the traceback. Serve it yourself, from this directory (the current
directory is importable)::

    ../.venv/bin/ngxffi serve --app app_hello:app --workers 2

Run as a script, it does just that on a free port, sends four requests, prints what
came back and what the error log said, and stops the server.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ngxffi.http import Request, Response


def app(request: Request) -> Response:
    url = urlsplit(request.uri)
    if url.path == "/fail":
        raise RuntimeError("a bug in the handler")  # a 500, and the traceback logged
    name = parse_qs(url.query).get("name", ["world"])[0]
    agent = request.headers.get("user-agent", "no user agent")
    return Response(200, f"hello, {name} ({request.method} from {agent})\n".encode())


def main() -> int:
    serve = ["serve", "--app", "app_hello:app", "--listen", "127.0.0.1:0"]
    server = subprocess.Popen(
        [sys.executable, "-m", "ngxffi", *serve, "--workers", "2"],
        cwd=Path(__file__).resolve().parent,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    announced = server.stderr.readline()  # "listening on http://127.0.0.1:PORT/ ..."
    match = re.search(r":(\d+)/", announced)
    if match is None:
        print(announced + server.stderr.read(), file=sys.stderr)
        return 1
    for path in ("/", "/?name=ngxffi", "/fail", "/status"):
        conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=10)
        conn.request("GET", path, headers={"User-Agent": "app_hello.py"})
        r = conn.getresponse()
        first = r.read().decode().splitlines()[0]
        print(f"GET {path} -> {r.status} {r.reason}: {first}")
        conn.close()
    server.terminate()
    _, log = server.communicate(timeout=10)
    for line in log.splitlines():
        if "[error]" in line:  # the date and pid cut off
            print("error log:", line.split(": ", 1)[1], "(and its traceback)")
    return server.returncode


if __name__ == "__main__":
    sys.exit(main())
