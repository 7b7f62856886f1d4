"""Syscall fault injection (ngxffi.faults, src/ngx_fault.c), and with it the error
paths nginx handles that Linux will not produce on demand: ECONNABORTED and EMFILE
on accept, ENOBUFS, EINTR in the middle of a batch, partial writes on every write
path. Real sockets and real servers throughout; only the injected errno is not the
kernel's."""

from __future__ import annotations

import errno
import math
import os
import select
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_cache import LARGE, SMALL, Files
from test_http_accept import CLOSE, answer_and_close, stats
from test_http_fast import KEEP_ALIVE, PLAIN, Loop, undated
from test_serve import Server, closed, read_response

from ngxffi import faults, ffi, lib
from ngxffi import os as nos
from ngxffi.event.event import process_events_and_timers
from ngxffi.http.core import HttpCoreConf
from ngxffi.http.message import Response

BIG = Response(200, bytes(range(256)) * 40)  # 10,240 bytes: many short writes


@pytest.fixture(autouse=True)
def no_rule_left() -> Iterator[None]:
    """Every test starts and ends with nothing armed."""
    faults.disarm()
    yield
    left = faults.armed()
    faults.disarm()
    assert not left, f"rules left armed: {left}"


# --- the C interface: every argument Python can pass ----------------------------------


def raw_rule(**fields: object) -> object:
    rule = ffi.new("ngxffi_fault_rule_t *")
    rule.active = 1
    for name, value in fields.items():
        setattr(rule, name, value)
    return rule


BAD_RULES = [
    {"err": -1, "times": 1},
    {"err": 0, "short_n": 0, "times": 1},  # neither
    {"err": lib.EPIPE, "short_n": 5, "times": 1},  # both
    {"short_n": -1, "times": 1},
    {"err": lib.EPIPE, "times": -1},
    {"err": lib.EPIPE, "times": 2, "probability": 0.5},  # both whens
    {"err": lib.EPIPE, "probability": -0.1},
    {"err": lib.EPIPE, "probability": 1.5},
    {"err": lib.EPIPE, "probability": math.nan},
    {"err": lib.EPIPE, "probability": math.inf},
    {"err": lib.EPIPE, "times": 1, "hits": -1},
]


@pytest.mark.parametrize("fields", BAD_RULES)
def test_c_refuses_a_bad_rule_with_einval(fields: dict[str, object]) -> None:
    assert lib.ngxffi_fault_set(lib.NGXFFI_SYS_SEND, raw_rule(**fields)) == -1
    assert ffi.errno == errno.EINVAL
    assert faults.armed() == []


def test_c_refuses_bad_calls_and_short_calls_without_a_length() -> None:
    good = raw_rule(err=lib.EPIPE, times=1)
    for call in (-2, lib.NGXFFI_SYS_N, 1 << 30, -(1 << 31)):
        assert lib.ngxffi_fault_set(call, good) == -1 and ffi.errno == errno.EINVAL
        assert lib.ngxffi_fault_get(call, good) == -1 and ffi.errno == errno.EINVAL
    assert lib.ngxffi_fault_set(-1, good) == -1  # -1 is "every call", to disarm only
    assert lib.ngxffi_fault_set(lib.NGXFFI_SYS_SEND, ffi.NULL) == -1
    assert lib.ngxffi_fault_get(lib.NGXFFI_SYS_SEND, ffi.NULL) == -1
    for call in ("accept4", "accept", "epoll_ctl", "eventfd", "openat"):
        short = raw_rule(short_n=1, times=1)
        assert lib.ngxffi_fault_set(faults.CALLS.index(call), short) == -1
        with pytest.raises(ValueError, match="no length"):
            faults.Rule(call, short=1)
    assert faults.armed() == []


def test_the_enum_and_the_names_agree() -> None:
    for i, call in enumerate(faults.CALLS):
        assert getattr(lib, f"NGXFFI_SYS_{call.upper()}") == i
    assert len(faults.CALLS) == lib.NGXFFI_SYS_N
    assert lib.ngxffi_fault_compiled() == 1


# --- the grammar ----------------------------------------------------------------------

GOOD_SPECS = {
    "accept4:ECONNABORTED:0.1": faults.Rule(
        "accept4", errno.ECONNABORTED, probability=0.1
    ),
    "send:short=100:5": faults.Rule("send", short=100, times=5),
    "epoll_wait:EINTR": faults.Rule("epoll_wait", errno.EINTR, times=1),
    "recv:short": faults.Rule("recv", short=1, times=1),
    "writev:EAGAIN:1.0": faults.Rule("writev", errno.EAGAIN, probability=1.0),
    "openat:EMFILE:3": faults.Rule("openat", errno.EMFILE, times=3),
    "eventfd:ENFILE:0.0": faults.Rule("eventfd", errno.ENFILE, probability=0.0),
    "sendfile:EXDEV": faults.Rule("sendfile", errno.EXDEV),  # any errno name
}


@pytest.mark.parametrize("spec", GOOD_SPECS)
def test_specs_parse_to_their_rules_and_back(spec: str) -> None:
    rule = faults.parse(spec)
    assert rule == GOOD_SPECS[spec]
    assert faults.parse(rule.spec) == rule


BAD_SPECS = {
    "": "CALL:WHAT",
    "send": "CALL:WHAT",
    "send:EPIPE:1:2": "CALL:WHAT",
    "send::1": "CALL:WHAT",
    "connect:EPIPE": "valid calls are accept4, accept, recv",
    "send:EWHAT": "valid errnos are EMFILE, ENFILE, ECONNABORTED",
    "send:epipe": "valid errnos",
    "send:short=0": "N >= 1",
    "send:short=x": "N >= 1",
    "accept4:short": "no length",
    "send:EPIPE:0": "an integer N >= 1",
    "send:EPIPE:-3": "an integer N >= 1",
    "send:EPIPE:1.5": "a probability",
    "send:EPIPE:nan.": "a probability",
    "send:EPIPE:often": "an integer N >= 1",
}


@pytest.mark.parametrize("spec", BAD_SPECS)
def test_bad_specs_say_what_is_wrong(spec: str) -> None:
    with pytest.raises(ValueError, match=BAD_SPECS[spec].replace("[", r"\[")):
        faults.parse(spec)


def test_one_rule_per_call_in_a_list() -> None:
    assert len(faults.parse_all("send:EPIPE, recv:EINTR:0.5,")) == 2
    with pytest.raises(ValueError, match="send has more than one rule"):
        faults.parse_all("send:EPIPE,send:short")


# --- what a rule does -----------------------------------------------------------------


def test_the_next_n_calls_fail_then_the_rule_is_gone(fds: list[int]) -> None:
    r, w = nos.pipe2()
    fds += [r, w]
    with faults.inject("write", "EPIPE", times=2) as fault:
        for _ in range(2):
            with pytest.raises(BrokenPipeError, match=r"write: Broken pipe"):
                nos.write(w, b"x")
        assert faults.armed() == []  # spent: the off path again
        assert nos.write(w, b"abc") == 3
    assert fault.hits == 2
    assert nos.read(r, 10) == b"abc"  # the failed calls wrote nothing


def pattern(w: int, n: int = 256) -> list[bool]:
    """Which of n writes failed under the rule armed now."""
    out = []
    for _ in range(n):
        try:
            nos.write(w, b"")
            out.append(False)
        except OSError as e:
            assert e.errno == errno.ENOBUFS
            out.append(True)
    return out


def test_a_seed_gives_the_same_faults(fds: list[int]) -> None:
    r, w = nos.pipe2()
    fds += [r, w]
    runs = {}
    for run, seed in (("a", 42), ("b", 42), ("c", 43)):
        with faults.inject("write", "ENOBUFS", probability=0.25, seed=seed) as fault:
            runs[run] = pattern(w)
        assert fault.hits == sum(runs[run])
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]
    assert 32 < sum(runs["a"]) < 96  # about a quarter of 256
    with faults.inject("write", "ENOBUFS", probability=0.0) as fault:
        assert not any(pattern(w))
    with faults.inject("write", "ENOBUFS", probability=1.0) as fault:
        assert all(pattern(w))
    assert fault.hits == 256


def test_inject_gives_the_call_back_its_previous_rule(fds: list[int]) -> None:
    r, w = nos.pipe2()
    fds += [r, w]
    faults.arm("write:EPIPE:5")
    with pytest.raises(BrokenPipeError):
        nos.write(w, b"x")
    with faults.inject("write", short=1) as inner:
        assert nos.write(w, b"xyz") == 1
        assert faults.hits("write") == 1
    assert inner.hits == 1
    assert faults.armed() == [faults.Rule("write", errno.EPIPE, times=4)]
    assert faults.hits("write") == 1  # the outer rule's count, back
    faults.disarm("write")
    assert faults.armed() == [] and faults.hits("write") == 0


def test_short_calls_are_real_partial_calls(
    pair: tuple[int, int], ep: int, fds: list[int], tmp_path: Path
) -> None:
    a, b = pair
    with faults.inject("send", short=3):
        assert nos.send(a, b"abcdef") == 3
    assert nos.recv(b, 100) == b"abc"
    with faults.inject("writev", short=5):
        assert nos.writev(a, [b"ab", b"", b"cd", b"efgh"]) == 5
    assert nos.recv(b, 100) == b"abcde"
    with faults.inject("write", short=2):
        assert nos.write(a, b"xyz") == 2
    nos.send(a, b"0123456789")
    with faults.inject("recv", short=4):
        assert nos.recv(b, 100) == b"xy01"
    with faults.inject("read", short=2):
        assert nos.read(b, 100) == b"23"
    buffers = [bytearray(3), bytearray(3)]
    with faults.inject("readv", short=4):
        assert nos.readv(b, buffers) == 4
    assert buffers == [bytearray(b"456"), bytearray(b"7\0\0")]
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    fds.append(fd)
    with faults.inject("sendfile", short=6):
        assert nos.sendfile(a, fd, 0, 10) == 6
    assert nos.recv(b, 100) == b"89" + b"012345"
    for fd in (a, b):
        nos.epoll_ctl(ep, lib.EPOLL_CTL_ADD, fd, lib.EPOLLOUT)
    events = nos.new_events(8)
    with faults.inject("epoll_wait", short=1):
        assert nos.epoll_wait(ep, events, 0) == 1
    assert nos.epoll_wait(ep, events, 0) == 2
    with faults.inject("epoll_pwait", short=1):
        assert nos.epoll_pwait(ep, events, 0) == 1


def test_every_named_call_fails_through_ngxffi_os(
    pair: tuple[int, int],
    ep: int,
    listener: tuple[int, tuple[str, int]],
    fds: list[int],
) -> None:
    a, _ = pair
    ls, _ = listener
    root = os.open("/", os.O_PATH)
    fds.append(root)
    cases: dict[str, Callable[[], object]] = {
        "accept4": lambda: nos.accept4(ls),
        "accept": lambda: nos.accept(ls),
        "recv": lambda: nos.recv(a, 1),
        "read": lambda: nos.read(a, 1),
        "send": lambda: nos.send(a, b"x"),
        "write": lambda: nos.write(a, b"x"),
        "writev": lambda: nos.writev(a, [b"x"]),
        "readv": lambda: nos.readv(a, [bytearray(1)]),
        "sendfile": lambda: nos.sendfile(a, a, 0, 1),
        "epoll_wait": lambda: nos.epoll_wait(ep, nos.new_events(1), 0),
        "epoll_pwait": lambda: nos.epoll_pwait(ep, nos.new_events(1), 0),
        "epoll_ctl": lambda: nos.epoll_ctl(ep, lib.EPOLL_CTL_ADD, a, lib.EPOLLIN),
        "eventfd": lambda: nos.eventfd(),
        "openat": lambda: nos.openat(root, "etc", lib.O_RDONLY),
    }
    for call, make in cases.items():
        with faults.inject(call, "ENOMEM") as fault, pytest.raises(OSError) as info:
            make()
        assert info.value.errno == errno.ENOMEM, call
        assert fault.hits == 1, call


def test_eintr_is_retried_by_ngxffi_os(pair: tuple[int, int]) -> None:
    a, b = pair
    with faults.inject("send", "EINTR", times=3) as fault:
        assert nos.send(a, b"hello") == 5
    assert fault.hits == 3
    assert nos.recv(b, 10) == b"hello"


# --- the environment hook -------------------------------------------------------------


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NGXFFI_INJ")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_environment_arms_a_process_and_its_forked_children() -> None:
    code = """
        import os
        import ngxffi
        print(sorted(r.spec for r in ngxffi.faults.armed()))
        pid = os.fork()
        if pid == 0:
            os._exit(0 if ngxffi.faults.armed() else 1)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        r, w = ngxffi.os.pipe2()
        got = []
        for _ in range(64):
            try:
                ngxffi.os.write(w, b"")
                got.append("0")
            except OSError:
                got.append("1")
        print("".join(got))
    """
    env = {"NGXFFI_INJECT": "send:EPIPE:3, write:ENOBUFS:0.5"}
    first = run_python(code, **env, NGXFFI_INJECT_SEED="7")
    assert first.returncode == 0, first.stderr
    child, draws = first.stdout.split()[-2:]
    assert first.stdout.startswith("['send:EPIPE:3', 'write:ENOBUFS:0.5']")
    assert child == "0"
    again = run_python(code, **env, NGXFFI_INJECT_SEED="7")
    other = run_python(code, **env, NGXFFI_INJECT_SEED="8")
    assert again.stdout.split()[-1] == draws != other.stdout.split()[-1]
    assert run_python("import ngxffi; print(ngxffi.faults.armed())").stdout == "[]\n"
    made = faults.environment(["send:EPIPE:3", faults.Rule("write", short=2)], seed=9)
    assert made == {
        "NGXFFI_INJECT": "send:EPIPE:3,write:short=2:1",
        "NGXFFI_INJECT_SEED": "9",
    }
    done = run_python(
        "import ngxffi; print([r.spec for r in ngxffi.faults.armed()])", **made
    )
    assert done.stdout == "['send:EPIPE:3', 'write:short=2:1']\n"
    with pytest.raises(ValueError, match="more than one rule"):
        faults.environment(["send:EPIPE", "send:short"])
    with pytest.raises(ValueError, match="a seed"):
        faults.environment(["send:EPIPE"], seed=-1)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NGXFFI_INJECT": "sned:EPIPE"}, "NGXFFI_INJECT='sned:EPIPE': unknown call"),
        ({"NGXFFI_INJECT": "send:EPIPE:0"}, "bad WHEN"),
        (
            {"NGXFFI_INJECT": "send:EPIPE", "NGXFFI_INJECT_SEED": "x"},
            "NGXFFI_INJECT_SEED='x': not an integer",
        ),
    ],
)
def test_a_bad_environment_fails_the_import(env: dict[str, str], message: str) -> None:
    done = run_python("import ngxffi", **env)
    assert done.returncode != 0
    assert message in done.stderr


def test_the_environment_reaches_ngxffi_serve_and_its_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ngxffi serve`` (a master and two workers) under short sends and writes and
    accepts that fail half the time answers every request whole."""
    body = "z" * 30_000
    plain = Server("--return", "200", body)
    try:
        s = plain.connect()
        s.sendall(KEEP_ALIVE)
        expected = undated(b"\r\n\r\n".join(read_response(s)))
        s.close()
    finally:
        plain.stop()
    monkeypatch.setenv(
        "NGXFFI_INJECT",
        "send:short=1000:1.0,write:short=700:1.0,accept4:ECONNABORTED:0.5",
    )
    monkeypatch.setenv("NGXFFI_INJECT_SEED", "3")
    server = Server("--return", "200", body, "--workers", "2")
    try:
        for _ in range(6):
            s = server.connect()
            for request in (KEEP_ALIVE, PLAIN, PLAIN):
                s.sendall(request)
                assert undated(b"\r\n\r\n".join(read_response(s))) == expected
            s.close()
    finally:
        server.stop()


# --- the event core's error paths, in a server of this process ------------------------


def answer(loop: Loop, s: socket.socket, request: bytes) -> bytes:
    s.sendall(request)
    return undated(loop.response(s))


def test_partial_sends_on_the_c_fast_path_lose_no_byte() -> None:
    """C's send takes 100 bytes at a time, Python's write() the rest 7 at a time:
    the keep-alive answer is byte-exact, and the connection goes on."""
    with Loop(HttpCoreConf(), response=BIG) as loop:
        s = loop.connect()
        expected = answer(loop, s, PLAIN)  # Python's: the connection is new
        before = loop.server.fast.answered
        with (
            faults.inject("send", short=100, probability=1.0) as send,
            faults.inject("write", short=7, probability=1.0) as write,
        ):
            got = answer_all(loop, s, PLAIN, len(expected))
        assert got == expected
        assert loop.server.fast.answered == before + 1  # answered in C
        assert send.hits >= 1 and write.hits > 100
        assert answer(loop, s, PLAIN) == expected


def answer_all(loop: Loop, s: socket.socket, request: bytes, size: int) -> bytes:
    """The answer to request, read until size bytes came (Date's length is fixed)."""
    s.sendall(request)
    data = b""
    deadline = time.monotonic() + 10
    while len(undated(data)) < size:
        assert time.monotonic() < deadline, f"{len(data)} bytes only"
        loop.turn_until(s)
        chunk = s.recv(1 << 20)
        assert chunk, "closed"
        data += chunk
    return undated(data)


def test_partial_sends_of_the_plain_response_lose_no_byte() -> None:
    """Python's answers (ngxffi_http_plain_send in src/ngx_http_parse.c, then
    write.py's flush) under one-byte sends and three-byte writes."""
    with Loop(HttpCoreConf(), fast=False, response=BIG) as loop:
        s = loop.connect()
        expected = answer(loop, s, PLAIN)
        with (
            faults.inject("send", short=1, probability=1.0) as send,
            faults.inject("write", short=3, probability=1.0),
        ):
            assert answer_all(loop, s, PLAIN, len(expected)) == expected
            assert answer_all(loop, s, PLAIN * 3, 3 * len(expected)) == expected * 3
        assert send.hits == 1  # the three answers of one read went by write()


def until_closed(loop: Loop, s: socket.socket) -> bytes:
    """Everything the server sends on s before it closes, the loop turning."""
    data = b""
    while True:
        loop.turn_until(s)
        chunk = s.recv(1 << 20)
        if not chunk:
            return undated(data)
        data += chunk


def test_partial_sends_of_the_c_accept_handler_lose_no_byte() -> None:
    """The C accept handler answers a close request; its send takes 50 bytes, the
    rest goes to Python with the close after it."""
    small = Response(200, b"q" * 1000)  # one C accept answers whole
    with Loop(HttpCoreConf(), response=small, c_accept=True) as loop:
        s = loop.connect()
        s.sendall(CLOSE)
        expected = until_closed(loop, s)
        assert expected.endswith(small.body)
        with (
            faults.inject("send", short=50, probability=1.0) as send,
            faults.inject("write", short=99, probability=1.0) as write,
        ):
            s = loop.connect()
            s.sendall(CLOSE)
            assert until_closed(loop, s) == expected
        assert send.hits == 1 and write.hits > 5
        assert loop.server.fast.answered == 2  # both answered in C
        assert stats(loop)[2] == 2


def test_eintr_on_the_c_accept_handler_s_send_loses_no_answer() -> None:
    """Fixed: an EINTR on the C accept handler's send was taken for a peer that is
    gone, and the connection closed with no answer; it is now handed to Python, as
    EAGAIN is."""
    with Loop(HttpCoreConf(), c_accept=True) as loop:
        s = loop.connect()
        s.sendall(CLOSE)
        expected = answer_and_close(loop, s)
        with faults.inject("send", "EINTR") as fault:
            s = loop.connect()
            s.sendall(CLOSE)
            assert answer_and_close(loop, s) == expected
        assert fault.hits == 1


def test_partial_sendfile_and_pread_on_the_c_fast_path(root: Path) -> None:
    """A cached file from C: sendfile 1,000 bytes at a time and interrupted now and
    then, what is left read into the stash 100 bytes at a time, then written by
    Python 333 at a time; and Python's own sendfile, uncached, 999 at a time."""
    files = Files(root)
    try:
        first = files.get("/d/large.bin")  # Python's, and now cached
        assert first.endswith(LARGE)
        in_c = files.in_c
        with (
            faults.inject("sendfile", short=1000, probability=1.0) as sendfile,
            faults.inject("pread", short=100, probability=1.0) as pread,
            faults.inject("write", short=333, probability=1.0),
        ):
            assert files.get("/d/large.bin") == first
            assert files.in_c == in_c + 1
            assert sendfile.hits > 10 and pread.hits == 0  # the socket took it all
            with faults.inject("sendfile", "EINTR", times=1):
                assert files.get("/d/large.bin") == first
            assert pread.hits > 100  # what EINTR left was read into the stash
            assert files.get("/small.txt").endswith(SMALL)
    finally:
        files.close()
    plain = Files(root, max_entries=0)
    try:
        with faults.inject("sendfile", short=999, probability=1.0) as sendfile:
            assert plain.get("/d/large.bin") == first
        assert sendfile.hits >= len(LARGE) // 999
    finally:
        plain.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "d").mkdir()
    (tmp_path / "small.txt").write_bytes(SMALL)
    (tmp_path / "d" / "large.bin").write_bytes(LARGE)
    return tmp_path


def queues(port: int, state: str) -> list[int]:
    """From /proc/net/tcp, the rx_queue of each IPv4 socket on local port ``port``
    in ``state`` (0A: LISTEN, where it is the accept queue's length; 01:
    ESTABLISHED, where it is the bytes not read yet)."""
    found = []
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
                found.append(int(fields[4].split(":")[1], 16))
    return found


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "the kernel never showed it"


def connected(loop: Loop, n: int) -> list[socket.socket]:
    """n clients, all in the listener's accept queue before the next turn."""
    clients = [loop.connect() for _ in range(n)]
    until(lambda: queues(loop.port, "0A") == [n])
    return clients


@pytest.mark.parametrize("multi_accept", [True, False])
def test_the_accept_loop_goes_on_after_econnaborted(multi_accept: bool) -> None:
    """nginx's ngx_event_accept: ECONNABORTED is logged and skipped, the loop goes on
    while ``available`` (multi_accept); without it, the next turn accepts (the
    listener is level-triggered). Every client is answered."""
    with Loop(HttpCoreConf()) as loop:
        loop.cycle.multi_accept = multi_accept
        clients = connected(loop, 3)
        with faults.inject("accept4", "ECONNABORTED", times=1) as fault:
            process_events_and_timers(loop.cycle)
        assert fault.hits == 1
        assert loop.cycle.stats.accepted == (3 if multi_accept else 0)
        for s in clients:
            assert answer(loop, s, PLAIN).startswith(b"HTTP/1.1 200 OK")
        assert loop.cycle.stats.accepted == 3


@pytest.mark.parametrize("err", ["ECONNABORTED", "EINTR", "ENOBUFS", "ENOMEM"])
def test_the_c_accept_handler_leaves_a_failed_accept_to_python(err: str) -> None:
    """C's accept4 fails: Python's accept loop takes over (and accepts the next).
    Under a fault on one accept in two, seeded, every client is answered."""
    with Loop(HttpCoreConf(), c_accept=True) as loop:
        s = loop.connect()
        s.sendall(CLOSE)
        expected = answer_and_close(loop, s)
        with faults.inject("accept4", err, probability=0.5, seed=11) as fault:
            for _ in range(16):
                s = loop.connect()
                s.sendall(CLOSE)
                assert answer_and_close(loop, s) == expected
        assert fault.hits > 2


def test_emfile_backs_off_and_accepts_again() -> None:
    """EMFILE: the listener leaves the kernel set (nginx's back-off), then comes
    back (at once with resume_accept when a connection closes, else the
    accept_mutex_delay timer); the waiting client is served."""
    with Loop(HttpCoreConf()) as loop:
        loop.cycle.resume_accept = False
        loop.cycle.accept_mutex_delay = 50
        listening = loop.ls.connection
        assert listening is not None
        (s,) = connected(loop, 1)
        with faults.inject("accept4", "EMFILE") as fault:
            process_events_and_timers(loop.cycle)
        assert fault.hits == 1
        assert not listening.read.raw.active and listening.read.raw.timer_set
        start = time.monotonic()
        assert answer(loop, s, PLAIN).startswith(b"HTTP/1.1 200 OK")
        assert time.monotonic() - start >= 0.04
        assert listening.read.raw.active


def test_enobufs_on_a_send_closes_that_connection_only() -> None:
    """A send that fails (ENOBUFS: no memory for the socket's buffers) ends its
    connection, as nginx's ngx_unix_send error does; the next is served."""
    with Loop(HttpCoreConf(), fast=False) as loop:
        s = loop.connect()
        expected = answer(loop, s, PLAIN)
        with faults.inject("send", "ENOBUFS") as fault:
            s.sendall(PLAIN)
            loop.turn_until(s)
            assert closed(s)
        assert fault.hits == 1
        s = loop.connect()
        assert answer(loop, s, PLAIN) == expected


def test_eintr_mid_batch_loses_no_event() -> None:
    """Eight idle keep-alive connections send at once: one batch, in which about
    half the reads are interrupted (EINTR, C's and Python's), and a wait or two as
    well. Each connection gets exactly its answer, and the loop goes on."""
    with Loop(HttpCoreConf()) as loop:
        clients = [loop.connect() for _ in range(8)]
        expected = [answer(loop, s, PLAIN) for s in clients]
        with (
            faults.inject("recv", "EINTR", probability=0.5, seed=5) as recv,
            faults.inject("epoll_wait", "EINTR", times=2) as wait,
        ):
            for s in clients:
                s.sendall(PLAIN)
            # every request in its server socket before the turn: one batch
            until(lambda: sum(q > 0 for q in queues(loop.port, "01")) == 8)
            for s, want in zip(clients, expected, strict=True):
                loop.turn_until(s)
                assert undated(b"\r\n\r\n".join(read_response(s))) == want
        assert recv.hits > 0 and wait.hits == 2
        ready = select.select(clients, [], [], 0)[0]
        assert ready == []  # no second answer anywhere
        for s in clients:
            assert answer(loop, s, PLAIN) == expected[0]
