"""``ngxffi serve --app module:callable``: a user's handler, in real servers."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_process import body, listening, processes, workers_of
from test_serve import Server, closed, read_response

from ngxffi.http.message import error_page

WEBAPP = """\
import json
import re
import os

from ngxffi.http import Request, Response


def app(request: Request) -> Response:
    path = request.uri.split("?", 1)[0]
    if path == "/boom":
        raise ZeroDivisionError("on purpose")
    if path == "/str":
        return "not a response"
    if path == "/inject":  # a value taken from the request, say
        return Response(200, headers=(("X-Name", "a\\r\\nSet-Cookie: stolen"),))
    if path == "/pid":
        return Response(200, str(os.getpid()).encode())
    if path == "/echo":
        seen = {
            "method": request.method,
            "uri": request.uri,
            "version": request.version,
            "headers": request.headers,
            "keep_alive": request.keep_alive,
        }
        return Response(200, json.dumps(seen).encode(), "application/json")
    return Response(200, b"hello\\n", headers=(("X-App", "webapp"),))
"""
PAGE_500 = error_page(500, "Internal Server Error", "ngxffi").body


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding webapp.py, made the current one (servers start in it)."""
    (tmp_path / "webapp.py").write_text(WEBAPP)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``ngxffi serve`` that is expected to exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "ngxffi", "serve", "--listen", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )


def ask(s: socket.socket, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request``, read one response (head, body)."""
    s.sendall(request)
    return read_response(s)


GET = b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n"


def test_one_process_serves_the_app_with_logs_status_and_timeouts(cwd: Path) -> None:
    access = cwd / "access.log"
    server = Server(
        "--app",
        "webapp:app",
        "--access-log",
        str(access),
        "--keepalive-timeout",
        "300ms",
    )
    try:
        s = server.connect()
        for _ in range(2):  # one keep-alive connection
            head, data = ask(s, GET % b"/")
            assert data == b"hello\n" and b"X-App: webapp\r\n" in head
            assert b"Connection: keep-alive" in head
        assert server.status().splitlines()[2] == " 2 2 3 "  # stub_status answers
        assert closed(s)  # keepalive_timeout
        s.close()
        lines = access.read_text().splitlines()
        assert len(lines) == 3 and '"GET / HTTP/1.1" 200 6 ' in lines[0]
    finally:
        server.stop()


def test_a_master_and_two_workers_serve_the_app(cwd: Path) -> None:
    server = Server("--app", "webapp:app", "--workers", "2")
    try:
        workers = {p.pid for p in workers_of(server, 2)}
        assert len(workers) == 2
        answered = set()
        for _ in range(10):
            s = server.connect()
            answered.add(int(ask(s, GET % b"/pid")[1]))
            s.close()
        assert answered <= workers  # the handler runs in the workers, not the master
        assert " 11 11 11 " in server.status()  # one set of counters for both
    finally:
        server.stop()


def test_the_handler_sees_method_uri_version_and_headers(cwd: Path) -> None:
    server = Server("--app", "webapp:app")
    try:
        s = server.connect()
        _, data = ask(
            s,
            b"POST /echo?x=1 HTTP/1.1\r\nHost: a\r\nX-Custom: Some Value\r\n"
            b"Content-Length: 3\r\n\r\nabc",
        )
        seen = json.loads(data)
        assert seen["method"] == "POST" and seen["uri"] == "/echo?x=1"
        assert seen["version"] == "1.1" and seen["keep_alive"] is True
        assert seen["headers"]["x-custom"] == "Some Value"  # names in lower case
        assert seen["headers"]["host"] == "a"
        s.close()
        s = server.connect()
        seen = json.loads(ask(s, b"GET /echo HTTP/1.0\r\n\r\n")[1])
        assert seen["version"] == "1.0" and seen["keep_alive"] is False
        s.close()
    finally:
        server.stop()


def test_a_failing_handler_gets_500_logged_and_the_worker_goes_on(cwd: Path) -> None:
    errors = cwd / "error.log"
    (cwd / "logs.toml").write_text(f'error_log = "{errors} error"\n')
    server = Server("-c", "logs.toml", "--app", "webapp:app")
    try:
        s = server.connect()
        for path in (b"/boom", b"/str", b"/inject"):
            head, data = ask(s, GET % path)
            assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
            assert b"stolen" not in head
            assert data == PAGE_500 and b"Connection: keep-alive" in head
        assert ask(s, GET % b"/")[1] == b"hello\n"  # the same connection goes on
        s.close()
        s = server.connect()
        assert ask(s, GET % b"/")[1] == b"hello\n"  # and new ones are served
        s.close()
        assert server.proc.poll() is None
    finally:
        server.stop()
    log = errors.read_text()
    assert re.search(
        r'\[error\] \d+#0: app "webapp:app" raised ZeroDivisionError: on purpose, '
        r'request: "GET /boom HTTP/1.1"\nTraceback \(most recent call last\):\n'
        r'  File ".*webapp.py", line 11, in app\n',
        log,
    ), log
    assert (
        "app \"webapp:app\" returned 'not a response', not a Response, "
        'request: "GET /str HTTP/1.1"'
    ) in log
    assert (
        'returned a header or Content-Type with CR or LF, request: "GET /inject' in log
    )


@pytest.mark.parametrize(
    ("source", "spec", "why"),
    [
        (None, "missing:app", "cannot import missing: ModuleNotFoundError: No module"),
        ("def app(:\n", "broken:app", "cannot import broken: SyntaxError: "),
        ("raise RuntimeError('no\\ndb')\n", "boom:app", "boom: RuntimeError: no db"),
        ("raise SystemExit(3)\n", "leaves:app", "cannot import leaves: SystemExit: 3"),
        ("x = 1\n", "noattr:app", "AttributeError: module 'noattr' has no attribute"),
        ("app = 42\n", "number:app", "app is not callable: 42"),
        (None, "webapp", "expected \"MODULE:CALLABLE\", not 'webapp'"),
    ],
)
def test_an_app_that_cannot_load_is_one_line_and_exit_1(
    cwd: Path, source: str | None, spec: str, why: str
) -> None:
    if source is not None:
        (cwd / f"{spec.split(':')[0]}.py").write_text(source)
    out = serve("--app", spec, cwd=cwd)
    assert out.returncode == 1
    assert out.stderr.startswith('ngxffi: [emerg] invalid value of "app": ')
    assert why in out.stderr and out.stderr.endswith(" (--app)\n")
    assert out.stderr.count("\n") == 1  # one line: no traceback, no server started
    if ":" in spec:
        assert f'"{spec}": ' in out.stderr


def test_app_excludes_return_and_root(cwd: Path) -> None:
    for flags in (["--return", "200", "x"], ["--root", "."]):
        out = serve("--app", "webapp:app", *flags, cwd=cwd)
        assert out.returncode == 2
        assert (
            out.stderr == f"ngxffi serve: error: --app cannot be used with {flags[0]}\n"
        )
    (cwd / "both.toml").write_text('app = "webapp:app"\nroot = "."\n')
    out = serve("-t", "-c", "both.toml", cwd=cwd)
    assert out.returncode == 1
    assert 'ngxffi: [emerg] "app" cannot be used with "root": ' in out.stderr
    (cwd / "return.toml").write_text('return = [200, "x"]\n')
    out = serve("-t", "-c", "return.toml", "--app", "webapp:app", cwd=cwd)
    assert out.returncode == 1 and '"app" cannot be used with "return"' in out.stderr
    (cwd / "app.toml").write_text('app = "webapp:app"\n')  # the directive alone
    assert serve("-t", "-c", "app.toml", cwd=cwd).returncode == 0


def test_the_console_script_imports_from_the_current_directory(cwd: Path) -> None:
    """The script's sys.path[0] is its own directory: serve adds the current one."""
    script = shutil.which("ngxffi", path=str(Path(sys.executable).parent))
    assert script is not None
    out = subprocess.run(
        [script, "serve", "-t", "--app", "webapp:app"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )
    assert out.returncode == 0, out.stderr


def test_sighup_runs_the_new_code_or_keeps_the_old(cwd: Path) -> None:
    errors = cwd / "error.log"
    (cwd / "logs.toml").write_text(f'error_log = "{errors} notice"\n')
    version = cwd / "version.py"
    code = "from ngxffi.http import Response\n\ndef app(request):\n    return {}\n"
    version.write_text(code.format('Response(200, b"one")'))
    server = Server("-c", "logs.toml", "--app", "version:app", "--workers", "2")
    try:
        old = {p.pid for p in workers_of(server, 2)}
        assert body(server) == b"one"
        version.write_text(code.format('Response(200, b"two, reloaded")'))  # new size
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while body(server) != b"two, reloaded":
            assert time.monotonic() < deadline  # each request is a round trip
        _, alive = psutil.wait_procs(processes(old), timeout=10)
        assert not alive  # the old workers, with the old code, are gone
        version.write_text("def app(:\n")
        server.proc.send_signal(signal.SIGHUP)
        while "reconfiguring failed" not in errors.read_text():
            assert time.monotonic() < deadline
            assert body(server) == b"two, reloaded"
        assert '"version:app": cannot import version: SyntaxError' in errors.read_text()
        assert body(server) == b"two, reloaded"  # the workers of the last good code
    finally:
        server.stop()


def test_sigquit_finishes_the_app_s_requests_and_exits(cwd: Path) -> None:
    # deferred off: with it, a request split across reads hangs whatever the content
    # handler but return (root too): a connection accepted ready is not registered
    # for reads once Python has drained it (connection.py's, not the app's)
    (cwd / "nodefer.toml").write_text("listen = { deferred = false }\n")
    server = Server("-c", "nodefer.toml", "--app", "webapp:app")
    busy = server.connect()
    busy.sendall(b"GET / HTTP/1.1\r\n")  # half a request
    server.get()  # the half request has reached the server before the signal
    server.proc.send_signal(signal.SIGQUIT)
    # the signal is acted on at the next turn: the rest sent before it would be
    # answered with keep-alive, so wait until the server has stopped listening
    deadline = time.monotonic() + 10
    while listening(psutil.Process(server.proc.pid)) and time.monotonic() < deadline:
        pass
    head, data = ask(busy, b"Host: a\r\n\r\n")
    assert data == b"hello\n" and b"Connection: close" in head
    assert closed(busy)
    busy.close()
    assert server.proc.wait(timeout=10) == 0
