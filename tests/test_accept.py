"""Listening sockets and the accept path (NGINX_EVENT_CORE.md §5)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ngxffi import Connection, Cycle, lib, process_events_and_timers
from ngxffi import os as nos
from ngxffi.core.log import NOTICE
from ngxffi.event import accept
from ngxffi.event.accept import add_listening
from ngxffi.event.listening import Listening, open_listening_sockets


@pytest.fixture
def accepted() -> list[Connection]:
    return []


@pytest.fixture
def served(accepted: list[Connection]) -> Iterator[tuple[Cycle, Listening]]:
    """A cycle with one IPv4 listener whose handler records each connection."""
    ls = Listening(("127.0.0.1", 0), accepted.append)
    open_listening_sockets([ls])
    with Cycle(8) as cy:
        add_listening(cy, [ls])
        yield cy, ls
        for c in cy.connections:
            if c.raw.fd != -1 and c.listening is not ls:
                cy.close_connection(c)
    ls.close()


def port_of(ls: Listening) -> int:
    address = nos.getsockname(ls.fd)
    assert isinstance(address, tuple)
    return address[1]


def test_listening_sockets_are_opened_as_nginx_does(tmp_path: Path) -> None:
    path = str(tmp_path / "sock")
    listening = [
        Listening(("127.0.0.1", 0), print, backlog=7),
        Listening(("::1", 0), print, reuseport=True, rcvbuf=65536),
        Listening(path, print),
    ]
    open_listening_sockets(listening)
    try:
        v4, v6, unix = listening
        for ls in listening:
            assert nos.get_status_flags(ls.fd) & lib.O_NONBLOCK
            assert nos.get_cloexec(ls.fd)
            assert nos.getsockopt(ls.fd, lib.SOL_SOCKET, lib.SO_ACCEPTCONN) == 1
        assert nos.getsockopt(v4.fd, lib.SOL_SOCKET, lib.SO_REUSEADDR) == 1
        assert nos.getsockopt(v6.fd, lib.SOL_SOCKET, lib.SO_REUSEPORT) == 1
        assert nos.getsockopt(v6.fd, lib.IPPROTO_IPV6, lib.IPV6_V6ONLY) == 1
        assert nos.getsockopt(v6.fd, lib.SOL_SOCKET, lib.SO_RCVBUF) >= 65536
        assert v4.addr_text.startswith("127.0.0.1:") and v6.addr_text.startswith(
            "[::1]:"
        )
        assert unix.addr_text == f"unix:{path}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    finally:
        for ls in listening:
            ls.close()
    assert not os.path.exists(path)  # the socket file goes with the socket


def test_bind_in_use_is_retried_then_fails(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        free = Listening(("127.0.0.1", 0), print)
        busy = Listening(taken.getsockname(), print)
        with (
            caplog.at_level(NOTICE, logger="ngxffi"),
            pytest.raises(OSError, match="still could not bind"),
        ):
            open_listening_sockets([free, busy], tries=3, delay=0.01)
    assert free.fd == -1 and busy.fd == -1  # what this call opened, it closed
    text = caplog.text
    assert text.count("failed (98: Address already in use)") == 3
    assert text.count("try again to bind() after 10ms") == 3
    assert "still could not bind()" in text


def test_other_bind_errors_fail_at_once() -> None:
    ls = Listening(("192.0.2.1", 0), print)  # TEST-NET-1: not a local address
    with pytest.raises(OSError) as info:
        open_listening_sockets([ls], delay=10)  # a retry would time the test out
    assert info.value.errno == lib.EADDRNOTAVAIL


def test_listeners_need_pool_slots() -> None:
    ls = Listening(("127.0.0.1", 0), print)
    open_listening_sockets([ls])
    try:
        with Cycle(1) as cy:
            cy.get_connection(nos.eventfd())
            with pytest.raises(
                RuntimeError, match="1 worker_connections are not enough"
            ):
                add_listening(cy, [ls])
            for c in cy.connections:
                if c.raw.fd != -1:
                    cy.close_connection(c)
    finally:
        ls.close()


def test_accept_gives_the_handler_a_ready_connection(
    served: tuple[Cycle, Listening], accepted: list[Connection]
) -> None:
    cy, ls = served
    with socket.create_connection(("127.0.0.1", port_of(ls))) as client:
        process_events_and_timers(cy)
        assert len(accepted) == 1
        c = accepted[0]
        assert c.listening is ls and c.addr_text == "127.0.0.1"
        assert nos.getpeername(c.fd) == client.getsockname()
        assert nos.get_status_flags(c.fd) & lib.O_NONBLOCK and nos.get_cloexec(c.fd)
        assert c.write.ready and not c.read.ready
        assert (cy.stats.accepted, cy.stats.handled, cy.stats.active) == (1, 1, 1)
        cy.close_connection(c)
        assert cy.stats.active == 0
        assert client.recv(10) == b""


def test_connection_numbers_count_accepts(
    served: tuple[Cycle, Listening], accepted: list[Connection]
) -> None:
    cy, ls = served
    clients = [socket.create_connection(("127.0.0.1", port_of(ls))) for _ in range(3)]
    while len(accepted) < 3:
        process_events_and_timers(cy)
    assert [c.number for c in accepted] == [0, 1, 2]
    for s in clients:
        s.close()


@pytest.mark.parametrize("multi_accept", [False, True])
def test_multi_accept(
    served: tuple[Cycle, Listening], accepted: list[Connection], multi_accept: bool
) -> None:
    cy, ls = served
    cy.multi_accept = multi_accept
    clients = [socket.create_connection(("127.0.0.1", port_of(ls))) for _ in range(3)]
    cy.actions.process_events(cy, 1000, 0)
    assert len(accepted) == (3 if multi_accept else 1)
    while len(accepted) < 3:  # level-triggered: the rest come on the next turns
        cy.actions.process_events(cy, 1000, 0)
    for s in clients:
        s.close()


def test_no_free_slot_closes_the_new_socket(accepted: list[Connection]) -> None:
    ls = Listening(("127.0.0.1", 0), accepted.append)
    open_listening_sockets([ls])
    with Cycle(2) as cy:
        add_listening(cy, [ls])
        port = port_of(ls)
        first = socket.create_connection(("127.0.0.1", port))
        second = socket.create_connection(("127.0.0.1", port))
        while cy.stats.accepted < 2:
            process_events_and_timers(cy)
        assert len(accepted) == 1
        assert (cy.stats.accepted, cy.stats.handled, cy.stats.active) == (2, 1, 1)
        second.settimeout(5)
        assert second.recv(10) == b""  # closed cleanly by the server
        cy.close_connection(accepted[0])
        first.close()
        second.close()
    ls.close()


# A seccomp filter that makes accept4 fail with ENOSYS, as on a kernel without it:
# the child installs it with ctypes (stdlib) before running the accept path.
SECCOMP_NO_ACCEPT4 = """
import ctypes, errno, platform
ARCH = {"x86_64": (0xC000003E, 288), "aarch64": (0xC00000B7, 242)}
audit_arch, nr_accept4 = ARCH[platform.machine()]

class Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]

class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]

LD, JEQ, RET = 0x20, 0x15, 0x06
insns = (Insn * 6)(
    Insn(LD, 0, 0, 4), Insn(JEQ, 0, 3, audit_arch),     # other arch: allow
    Insn(LD, 0, 0, 0), Insn(JEQ, 0, 1, nr_accept4),      # accept4?
    Insn(RET, 0, 0, 0x00050000 | errno.ENOSYS),          # then ENOSYS
    Insn(RET, 0, 0, 0x7FFF0000),                         # else allow
)
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0                   # PR_SET_NO_NEW_PRIVS
prog = Prog(6, insns)
assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0  # seccomp filter
"""


def test_accept4_enosys_falls_back_to_accept_for_good() -> None:
    code = SECCOMP_NO_ACCEPT4 + textwrap.dedent("""
        import json, socket
        from ngxffi import Cycle, process_events_and_timers, lib
        from ngxffi import os as nos
        from ngxffi.event.listening import Listening, open_listening_sockets
        from ngxffi.event import accept

        got = []
        ls = Listening(("127.0.0.1", 0), got.append)
        open_listening_sockets([ls])
        with Cycle(8) as cy:
            accept.add_listening(cy, [ls])
            addr = ("127.0.0.1", nos.getsockname(ls.fd)[1])
            clients = [socket.create_connection(addr) for _ in range(2)]
            while len(got) < 2:
                process_events_and_timers(cy)
            print(json.dumps({
                "use_accept4": accept._state.use_accept4,
                "nonblocking": [bool(nos.get_status_flags(c.fd) & lib.O_NONBLOCK)
                                for c in got],
                "cloexec": [nos.get_cloexec(c.fd) for c in got],
            }))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "use_accept4": False,
        "nonblocking": [True, True],
        "cloexec": [True, True],
    }
    # logged once, then plain accept() for good
    assert out.stderr.count("accept4() failed (38: Function not implemented)") == 1


def test_connection_aborted_is_logged_and_skipped(
    served: tuple[Cycle, Listening], caplog: pytest.LogCaptureFixture
) -> None:
    cy, ls = served
    ev = ls.connection.read  # type: ignore[union-attr]
    ev.raw.available = 1
    assert accept._accept_failed(cy, ev, lib.ECONNABORTED) is True  # multi_accept
    ev.raw.available = 0
    assert accept._accept_failed(cy, ev, lib.ECONNABORTED) is False
    assert "accept4() failed (103: Software caused connection abort)" in caplog.text
    assert caplog.records[-1].levelname == "ERROR"


@pytest.mark.parametrize("resume", [False, True])
def test_emfile_backs_off_without_spinning_and_recovers(resume: bool) -> None:
    """In a child with a tiny RLIMIT_NOFILE: EMFILE removes the listener from the
    kernel set (no busy loop: the next turns just wait); then a timer of
    accept_mutex_delay (nginx) or, with resume_accept, the close that frees an fd
    brings it back, and the waiting client is served."""
    code = textwrap.dedent("""
        import json, os, resource, socket, time
        from ngxffi import Cycle, process_events_and_timers
        from ngxffi import os as nos
        from ngxffi.event.listening import Listening, open_listening_sockets
        from ngxffi.event.accept import add_listening

        got = []
        ls = Listening(("127.0.0.1", 0), got.append)
        open_listening_sockets([ls])
        cy = Cycle(16)
        cy.accept_mutex_delay = 200
        cy.resume_accept = RESUME
        add_listening(cy, [ls])
        addr = ("127.0.0.1", nos.getsockname(ls.fd)[1])
        clients = [socket.create_connection(addr) for _ in range(3)]  # before the limit
        used = len(os.listdir("/proc/self/fd")) - 1
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (used + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        cy.multi_accept = True
        process_events_and_timers(cy)  # accepts one, then EMFILE
        out = {"accepted": len(got), "listener_active": ls.connection.read.active,
               "timer": bool(ls.connection.read.timer_set)}
        cpu0, t0 = time.process_time(), time.monotonic()
        turns = 0
        cy.close_connection(got[0])  # an fd is free again
        while len(got) < 2:
            process_events_and_timers(cy)
            turns += 1
        out.update(recovered_ms=round((time.monotonic() - t0) * 1000),
                   cpu_ms=round((time.process_time() - cpu0) * 1000), turns=turns,
                   accepted_after=len(got))
        print(json.dumps(out))
    """)
    code = code.replace("RESUME", str(resume))
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["accepted"] == 1
    assert result["listener_active"] == 0 and result["timer"]
    assert result["accepted_after"] == 2
    if resume:
        assert result["recovered_ms"] < 100  # at once, not after the 200 ms timer
    else:
        assert 150 <= result["recovered_ms"] < 2000  # the 200 ms timer, not a spin
    assert result["turns"] <= 3 and result["cpu_ms"] < 100
    assert "accept4() failed (24: Too many open files)" in out.stderr


def test_reserve_fd_sheds_pending_clients_at_once_and_recovers() -> None:
    code = textwrap.dedent("""
        import json, os, resource, socket
        from ngxffi import Cycle, process_events_and_timers
        from ngxffi import os as nos
        from ngxffi.event.listening import Listening, open_listening_sockets
        from ngxffi.event.accept import add_listening

        got = []
        ls = Listening(("127.0.0.1", 0), got.append, emfile_policy="reserve-fd")
        open_listening_sockets([ls])
        cy = Cycle(16)
        cy.multi_accept = True
        add_listening(cy, [ls])  # opens the spare fd
        addr = ("127.0.0.1", nos.getsockname(ls.fd)[1])
        clients = [socket.create_connection(addr) for _ in range(4)]
        for s in clients:
            s.settimeout(5)
        used = len(os.listdir("/proc/self/fd")) - 1
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (used + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        process_events_and_timers(cy)  # one accepted, EMFILE, the other three shed
        shed = [s.recv(10) == b"" for s in clients[1:]]
        out = {"accepted": len(got), "shed_closed": shed,
               "stats": [cy.stats.accepted, cy.stats.handled],
               "spare": cy.reserve_fd >= 0,
               "listener_active": ls.connection.read.active}
        cy.close_connection(got[0])
        for s in clients[1:]:
            s.close()  # the client side of the shed ones: room for the late client
        late = socket.create_connection(addr)
        while len(got) < 2:
            process_events_and_timers(cy)
        out["served_after"] = len(got)
        print(json.dumps(out))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["accepted"] == 1
    assert result["shed_closed"] == [True, True, True]
    assert result["stats"] == [4, 1]  # accepts - handled = the shed ones
    assert result["spare"] and result["listener_active"] == 1  # no back-off
    assert result["served_after"] == 2
    assert "3 pending connections closed: out of file descriptors" in out.stderr


def test_unknown_emfile_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="emfile_policy must be one of"):
        Listening(("127.0.0.1", 0), print, emfile_policy="panic")


def test_a_full_pool_of_idle_connections_makes_room_for_a_new_client(
    accepted: list[Connection],
) -> None:
    """Keep-alive connections are reusable; when free slots fall to 1/16 a new accept
    drains the oldest idle one (its handler closes it) and the new client is served."""
    ls = Listening(("127.0.0.1", 0), accepted.append)
    open_listening_sockets([ls])
    with Cycle(16) as cy:
        add_listening(cy, [ls])
        port = port_of(ls)

        def idle(ev: object) -> None:
            c = ev.data  # type: ignore[attr-defined]
            if c.close:
                cy.close_connection(c)

        clients = []
        while cy.free_connection_n > 1:  # the listener + 14 idle keep-alive clients
            clients.append(socket.create_connection(("127.0.0.1", port)))
            n = len(accepted)
            while len(accepted) == n:
                process_events_and_timers(cy)
            c = accepted[-1]
            c.read.handler = idle
            cy.reusable_connection(c, True)
        oldest = accepted[0]
        newcomer = socket.create_connection(("127.0.0.1", port))
        n = len(accepted)
        while len(accepted) == n:
            process_events_and_timers(cy)
        assert (
            oldest.raw.fd == -1 or oldest is accepted[-1]
        )  # drained (and maybe reused)
        clients[0].settimeout(5)
        assert clients[0].recv(10) == b""  # the oldest client saw its connection close
        assert accepted[-1].raw.fd != -1
        for s in (*clients, newcomer):
            s.close()
        for c in cy.connections:
            if c.raw.fd != -1 and c.listening is not ls:
                cy.close_connection(c)
    ls.close()


def test_a_client_reset_before_accept_is_survived(
    served: tuple[Cycle, Listening], accepted: list[Connection]
) -> None:
    """Linux hands out a connection reset in the backlog (the first read says
    ECONNRESET) rather than ECONNABORTED; either way the loop goes on."""
    cy, ls = served
    port = port_of(ls)
    rude = socket.create_connection(("127.0.0.1", port))
    rude.setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
    )
    rude.close()  # RST while still in the backlog
    with socket.create_connection(("127.0.0.1", port)):
        while len(accepted) < 2:
            process_events_and_timers(cy)
    with pytest.raises(ConnectionResetError):
        nos.recv(accepted[0].fd, 10)
    assert cy.stats.handled == 2


def test_deferred_accept_and_accept_disabled(accepted: list[Connection]) -> None:
    ls = Listening(("127.0.0.1", 0), accepted.append, deferred_accept=True)
    open_listening_sockets([ls])
    assert nos.getsockopt(ls.fd, lib.IPPROTO_TCP, lib.TCP_DEFER_ACCEPT) > 0
    with Cycle(16) as cy:
        add_listening(cy, [ls])
        with socket.create_connection(("127.0.0.1", port_of(ls))) as client:
            client.sendall(b"GET / HTTP/1.1\r\n\r\n")  # deferred: woken with data
            while not accepted:
                process_events_and_timers(cy)
            c = accepted[0]
            assert c.read.ready and c.read.available == 1  # nginx: data is there
            # connection_n / 8 - free_connection_n, taken before the new slot
            assert cy.accept_disabled == 16 // 8 - 15
            cy.close_connection(c)
    ls.close()


def test_reserve_fd_without_its_spare_backs_off_instead_of_spinning() -> None:
    code = textwrap.dedent("""
        import json, os, resource, socket, time
        from ngxffi import Cycle, process_events_and_timers, lib
        from ngxffi import os as nos
        from ngxffi.event.listening import Listening, open_listening_sockets
        from ngxffi.event.accept import add_listening

        got = []
        ls = Listening(("127.0.0.1", 0), got.append, emfile_policy="reserve-fd")
        open_listening_sockets([ls])
        cy = Cycle(16)
        cy.multi_accept = True
        add_listening(cy, [ls])
        lib.close(cy.reserve_fd)  # the spare is lost...
        cy.reserve_fd = -1
        addr = ("127.0.0.1", nos.getsockname(ls.fd)[1])
        clients = [socket.create_connection(addr) for _ in range(3)]
        used = len(os.listdir("/proc/self/fd")) - 1
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (used + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        cpu = time.process_time()
        process_events_and_timers(cy)  # accepts one, then EMFILE with no spare
        print(json.dumps({"accepted": len(got),
                          "listener_active": ls.connection.read.active,
                          "timer": bool(ls.connection.read.timer_set)}))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "accepted": 1,
        "listener_active": 0,
        "timer": True,
    }


def test_an_exclusive_listener_is_registered_again_every_16_accepts(
    accepted: list[Connection],
) -> None:
    """ngx_reorder_accept_events: DEL + ADD (EXCLUSIVE) on accepts 1, 17, 33…"""
    from ngxffi.event.event import EXCLUSIVE_EVENT

    ls = Listening(("127.0.0.1", 0), accepted.append)
    open_listening_sockets([ls])
    with Cycle(64) as cy:
        add_listening(cy, [ls], EXCLUSIVE_EVENT)
        readds: list[int] = []
        add = cy.actions.add

        def counting_add(ev: object, event: int, flags: int) -> None:
            readds.append(len(accepted))
            add(ev, event, flags)  # type: ignore[arg-type]

        cy.actions.add = counting_add
        clients = []
        for _ in range(33):
            clients.append(socket.create_connection(("127.0.0.1", port_of(ls))))
            n = len(accepted)
            while len(accepted) == n:
                process_events_and_timers(cy)
        assert readds == [1, 17, 33]
        assert ls.connection is not None and ls.connection.read.active
        for s in clients:
            s.close()
        for c in accepted:
            cy.close_connection(c)
    ls.close()
