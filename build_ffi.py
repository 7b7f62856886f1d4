"""The build of the ``ngxffi._ngx`` extension (cffi, API mode): the cdef, and the C.

The C is under ``src/``, one file per area with its header (``src/ngxffi.h`` includes
them all): the syscall wrappers of fault injection, OS helpers, shared counters, the
connection pool, the epoll module's hot paths, the io_uring module's ring and turn, the
HTTP fast path. This file only reads it. The cffi extension's own file is
``#include "ngxffi.h"``; the ``src/*.c`` files are compiled and linked into the same
``ngxffi._ngx``.

The cdef is made of three kinds of declarations:

* the raw syscalls and libc calls, exactly as the man pages declare them (below);
* the text between the ``cffi cdef`` marks of each header under ``src/``, read from
  there: the C-layout structs ``ngx_connection_t`` and ``ngx_event_t`` (modelled on
  nginx's ``src/core/ngx_connection.h`` and ``src/event/ngx_event.h``), the cycle
  state, and the prototypes of the ``ngxffi_*`` functions, among them the small
  non-variadic helpers around variadic calls such as ``fcntl`` (cffi calls variadic
  functions through libffi, several times slower). cffi parses the same text the
  compiler compiles, so the two cannot disagree on a layout;
* the constants, as ``#define NAME ...``.

Everything the kernel defines is declared *partially* and filled in by the C compiler
when the module is built: struct layouts with ``...;``, integer types with ``int...``,
constants with ``#define NAME ...``. Nothing here hard-codes a size or a value that the
system headers already know (``struct epoll_event`` is 12 bytes and packed on x86-64,
16 bytes elsewhere: the compiler decides, not us).

Warnings: every file is compiled with ``-Wall -Wextra -Wshadow -Wconversion``; with
``NGXFFI_WERROR=1`` in the environment (the Makefile sets it, so development and CI
builds have it) they are errors. A plain ``pip install`` leaves them warnings, so that a
newer compiler's new warning cannot fail a user's install.

Run ``python build_ffi.py`` to build in place; setuptools runs it through
``cffi_modules`` in ``setup.py``.
"""

import os
from pathlib import Path

from cffi import FFI

# Constants the compiler fills in, by the header that defines them.
CONSTANTS: dict[str, str] = {
    "sys/epoll.h": """
        EPOLLIN EPOLLPRI EPOLLOUT EPOLLERR EPOLLHUP EPOLLRDNORM EPOLLRDBAND
        EPOLLWRNORM EPOLLWRBAND EPOLLMSG EPOLLRDHUP EPOLLEXCLUSIVE EPOLLWAKEUP
        EPOLLONESHOT EPOLLET EPOLL_CLOEXEC EPOLL_CTL_ADD EPOLL_CTL_DEL
        EPOLL_CTL_MOD
    """,
    "sys/socket.h": """
        AF_UNSPEC AF_INET AF_INET6 AF_UNIX SOCK_STREAM SOCK_DGRAM SOCK_NONBLOCK
        SOCK_CLOEXEC SOL_SOCKET SO_REUSEADDR SO_REUSEPORT SO_ERROR SO_RCVBUF
        SO_SNDBUF SO_KEEPALIVE SO_LINGER SO_TYPE SO_ACCEPTCONN SO_RCVLOWAT
        SOMAXCONN SHUT_RD SHUT_WR SHUT_RDWR MSG_PEEK MSG_DONTWAIT MSG_NOSIGNAL
        MSG_WAITALL
    """,
    "netinet/in.h, netinet/tcp.h": """
        IPPROTO_IP IPPROTO_TCP IPPROTO_IPV6 IPV6_V6ONLY TCP_NODELAY TCP_CORK
        TCP_DEFER_ACCEPT TCP_KEEPIDLE TCP_KEEPINTVL TCP_KEEPCNT TCP_FASTOPEN
    """,
    "errno.h": """
        EPERM ENOENT ESRCH EINTR EIO EBADF ECHILD EAGAIN EWOULDBLOCK ENOMEM
        EACCES EFAULT EBUSY EEXIST ENOTDIR EISDIR EINVAL ENFILE EMFILE ENOSPC
        EPIPE ERANGE ENAMETOOLONG ENOSYS ELOOP ENOTSOCK EOPNOTSUPP EADDRINUSE
        EADDRNOTAVAIL ENETDOWN ENETUNREACH ECONNABORTED ECONNRESET ENOBUFS
        EISCONN ENOTCONN ETIMEDOUT ECONNREFUSED EHOSTUNREACH EALREADY
        EINPROGRESS EXDEV
    """,
    "linux/openat2.h": """
        RESOLVE_NO_XDEV RESOLVE_NO_MAGICLINKS RESOLVE_NO_SYMLINKS RESOLVE_BENEATH
        RESOLVE_IN_ROOT
    """,
    "fcntl.h": """
        O_RDONLY O_WRONLY O_RDWR O_NONBLOCK O_CLOEXEC O_APPEND O_CREAT O_TRUNC
        O_EXCL O_NOFOLLOW O_DIRECTORY O_PATH F_GETFL F_SETFL F_GETFD F_SETFD F_DUPFD
        F_DUPFD_CLOEXEC FD_CLOEXEC
    """,
    "poll.h": """
        POLLIN POLLPRI POLLOUT POLLERR POLLHUP POLLNVAL
    """,
    "sys/eventfd.h": """
        EFD_CLOEXEC EFD_NONBLOCK EFD_SEMAPHORE
    """,
    "sys/inotify.h": """
        IN_NONBLOCK IN_CLOEXEC IN_MODIFY IN_ATTRIB IN_CLOSE_WRITE IN_MOVED_FROM
        IN_MOVED_TO IN_CREATE IN_DELETE IN_DELETE_SELF IN_MOVE_SELF IN_UNMOUNT
        IN_Q_OVERFLOW IN_IGNORED IN_ONLYDIR IN_DONT_FOLLOW IN_MASK_ADD IN_ISDIR
    """,
    "sys/resource.h": """
        RLIMIT_NOFILE RLIMIT_CORE RLIM_INFINITY
    """,
    "time.h": """
        CLOCK_MONOTONIC CLOCK_REALTIME
    """,
    "signal.h": """
        SIGHUP SIGINT SIGQUIT SIGKILL SIGUSR1 SIGUSR2 SIGPIPE SIGALRM SIGTERM
        SIGCHLD SIGWINCH SIGIO
    """,
    # ngxffi's own, macros and an enum in its headers under src/
    "src/ngx_connection.h, src/ngx_epoll.h": """
        NGXFFI_INVALID_INDEX NGXFFI_CONNECTIONS_MAX NGXFFI_EVENTS_MAX
        NGXFFI_SELECT_FD_MAX NGXFFI_TAG_ADDRESS_BITS NGXFFI_ACCEPT_QUEUE
        NGXFFI_BATCH_INVALID NGXFFI_NONE NGXFFI_DISPATCHED NGXFFI_POSTED
        NGXFFI_STALE_CLOSED NGXFFI_STALE_REUSED NGXFFI_INVALID
    """,
    "src/ngx_uring.h": """
        NGXFFI_URING_CTL_CLOSE NGXFFI_URING_INTERNAL NGXFFI_BATCH_ERRORS
        NGXFFI_URING_ERRORS_MAX NGXFFI_URING_AUTO NGXFFI_URING_DEFER
        NGXFFI_URING_COOP NGXFFI_URING_PLAIN
    """,
    "src/ngx_fault.h": """
        NGXFFI_SYS_ACCEPT4 NGXFFI_SYS_ACCEPT NGXFFI_SYS_RECV NGXFFI_SYS_READ
        NGXFFI_SYS_READV NGXFFI_SYS_PREAD NGXFFI_SYS_SEND NGXFFI_SYS_WRITE
        NGXFFI_SYS_WRITEV NGXFFI_SYS_SENDFILE NGXFFI_SYS_EPOLL_WAIT
        NGXFFI_SYS_EPOLL_PWAIT NGXFFI_SYS_EPOLL_CTL NGXFFI_SYS_EVENTFD
        NGXFFI_SYS_OPENAT NGXFFI_SYS_N
    """,
    "src/ngx_http_parse.h": """
        NGXFFI_PLAIN_TEXT NGXFFI_PLAIN_END NGXFFI_PLAIN_KEEP NGXFFI_PLAIN_LAST
        NGXFFI_PLAIN_DRAINED
        NGXFFI_PLAIN_OUT NGXFFI_PLAIN_AGAIN NGXFFI_PLAIN_CLOSED NGXFFI_PLAIN_UNUSUAL
    """,
}

# Types and calls as the man pages declare them. Integer types of unknown width are
# `int...`; structs we only need some fields of end in `...;`.
SYSCALLS = """
typedef int... off_t;
typedef int... time_t;
typedef int... clockid_t;
typedef int... socklen_t;
typedef int... sa_family_t;
typedef int... in_port_t;
typedef int... rlim_t;
typedef struct { ...; } sigset_t;

typedef union epoll_data {
    void *ptr;
    int fd;
    uint32_t u32;
    uint64_t u64;
} epoll_data_t;

struct epoll_event {
    uint32_t events;
    epoll_data_t data;
    ...;
};

struct sockaddr { sa_family_t sa_family; ...; };
struct sockaddr_storage { sa_family_t ss_family; ...; };
struct in_addr { uint32_t s_addr; };
struct sockaddr_in {
    sa_family_t sin_family; in_port_t sin_port; struct in_addr sin_addr; ...;
};
struct in6_addr { unsigned char s6_addr[16]; ...; };
struct sockaddr_in6 {
    sa_family_t sin6_family; in_port_t sin6_port; uint32_t sin6_flowinfo;
    struct in6_addr sin6_addr; uint32_t sin6_scope_id; ...;
};
struct sockaddr_un { sa_family_t sun_family; char sun_path[...]; ...; };
struct iovec { void *iov_base; size_t iov_len; ...; };
struct pollfd { int fd; short events; short revents; ...; };
typedef int... nfds_t;
struct rlimit { rlim_t rlim_cur; rlim_t rlim_max; ...; };
struct timespec { time_t tv_sec; long tv_nsec; ...; };

int epoll_create1(int flags);
int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout);
int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout,
                const sigset_t *sigmask);
int poll(struct pollfd *fds, nfds_t nfds, int timeout);
int sigemptyset(sigset_t *set);
int sigaddset(sigset_t *set, int signum);

int socket(int domain, int type, int protocol);
int socketpair(int domain, int type, int protocol, int sv[2]);
int bind(int sockfd, const struct sockaddr *addr, socklen_t addrlen);
int listen(int sockfd, int backlog);
int accept(int sockfd, struct sockaddr *addr, socklen_t *addrlen);
int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags);
int connect(int sockfd, const struct sockaddr *addr, socklen_t addrlen);
int setsockopt(int sockfd, int level, int optname, const void *optval,
               socklen_t optlen);
int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
int getsockname(int sockfd, struct sockaddr *addr, socklen_t *addrlen);
int getpeername(int sockfd, struct sockaddr *addr, socklen_t *addrlen);
ssize_t recv(int sockfd, void *buf, size_t len, int flags);
ssize_t send(int sockfd, const void *buf, size_t len, int flags);
int shutdown(int sockfd, int how);

ssize_t read(int fd, void *buf, size_t count);
ssize_t write(int fd, const void *buf, size_t count);
ssize_t readv(int fd, const struct iovec *iov, int iovcnt);
ssize_t writev(int fd, const struct iovec *iov, int iovcnt);
ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count);
int close(int fd);
int open(const char *pathname, int flags);
int dup(int oldfd);
int pipe2(int pipefd[2], int flags);
int eventfd(unsigned int initval, int flags);
int inotify_init1(int flags);
int inotify_add_watch(int fd, const char *pathname, uint32_t mask);
int inotify_rm_watch(int fd, int wd);
ssize_t pread(int fd, void *buf, size_t count, off_t offset);

int getrlimit(int resource, struct rlimit *rlim);
int setrlimit(int resource, const struct rlimit *rlim);
int clock_gettime(clockid_t clockid, struct timespec *tp);
"""


# The project's root: paths below are relative to it, as setuptools wants them (it
# builds from there); `python build_ffi.py` compiles there too.
ROOT = Path(__file__).resolve().parent

# The C compiled into ngxffi._ngx beside the file cffi generates.
SOURCES = [
    "src/ngx_fault.c",
    "src/ngx_os.c",
    "src/ngx_shm.c",
    "src/ngx_connection.c",
    "src/ngx_epoll.c",
    "src/ngx_uring.c",
    "src/ngx_uring_events.c",
    "src/ngx_http_cache.c",
    "src/ngx_http_fast.c",
    "src/ngx_http_accept.c",
    "src/ngx_http_parse.c",
]

# The headers whose cdef part cffi reads, in the order of their declarations (each
# one uses the types of those before it: the order in which ngxffi.h includes them).
CDEF_HEADERS = [
    "src/ngxffi.h",
    "src/ngx_fault.h",
    "src/ngx_os.h",
    "src/ngx_shm.h",
    "src/ngx_connection.h",
    "src/ngx_epoll.h",
    "src/ngx_uring.h",
    "src/ngx_http_cache.h",
    "src/ngx_http_fast.h",
    "src/ngx_http_accept.h",
    "src/ngx_http_parse.h",
]

CDEF_BEGIN = "/* cffi cdef: begin */"
CDEF_END = "/* cffi cdef: end */"

# Python's own CFLAGS come first on the compiler's command line and these after them
# (setuptools appends extra_compile_args), so -fno-wrapv overrides the -fwrapv that
# CPython builds with: signed overflow is then undefined again, as in plain C, and
# -fsanitize=undefined can report it. The warnings hold for the file cffi generates
# too, but for the one GENERATED_PRAGMAS turns off (gcc 12 and clang 14 build it
# clean). -Wno-address-of-packed-member: cffi's own layout checks take &p->data of the
# packed struct epoll_event, which is harmless.
WARNINGS = ["-Wall", "-Wextra", "-Wshadow", "-Wconversion"]
WERROR_VAR = "NGXFFI_WERROR"

# For the code cffi generates after this preamble, not for ours (src/*.c and the
# headers above it are still checked): its wrappers for getrlimit/setrlimit pass the
# cdef's `int resource` where glibc declares enum __rlimit_resource, which clang's
# -Wsign-conversion (part of -Wconversion in C) reports and gcc's does not.
GENERATED_PRAGMAS = '#pragma GCC diagnostic ignored "-Wsign-conversion"\n'


# With NGXFFI_SANITIZE=1 (`make sanitize`), the extension is built with ASan and UBSan
# (any UB is fatal, not just reported; frame pointers and -g for whole stacks), in
# addition to the flags above: -Werror and -fno-wrapv stay. Python itself is not
# instrumented, so the process must preload the ASan runtime (the Makefile does).
SANITIZE_VAR = "NGXFFI_SANITIZE"
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
SANITIZE_COMPILE = [*SANITIZE, "-fno-omit-frame-pointer", "-g"]


# With NGXFFI_NO_FAULTS=1, the syscall wrappers of src/ngx_fault.h are the raw calls
# (-DNGXFFI_NO_FAULTS): no fault can be injected. Only `make bench` builds it, into a
# directory of its own, to show what the hooks cost when off.
NO_FAULTS_VAR = "NGXFFI_NO_FAULTS"


def _enabled(var: str) -> bool:
    return os.environ.get(var, "0") not in ("", "0")


def compile_args() -> list[str]:
    """The flags after Python's: -Werror only when NGXFFI_WERROR is set (not 0), the
    sanitizers only when NGXFFI_SANITIZE is."""
    args = ["-O2", *WARNINGS, "-Wno-address-of-packed-member", "-fno-wrapv"]
    if _enabled(WERROR_VAR):
        args.append("-Werror")
    if _enabled(SANITIZE_VAR):
        args += SANITIZE_COMPILE
    if _enabled(NO_FAULTS_VAR):
        args.append("-DNGXFFI_NO_FAULTS")
    return args


def link_args() -> list[str]:
    """The sanitizers' runtimes, when NGXFFI_SANITIZE is set."""
    return list(SANITIZE) if _enabled(SANITIZE_VAR) else []


def _cdef_part(header: str) -> str:
    """The text between the cffi cdef marks of a header, with a line marker so that
    cffi's errors name the header's own lines."""
    text = (ROOT / header).read_text()
    if text.count(CDEF_BEGIN) != 1 or text.count(CDEF_END) != 1:
        raise ValueError(f"{header}: not exactly one {CDEF_BEGIN!r} and {CDEF_END!r}")
    before, rest = text.split(CDEF_BEGIN)
    part = rest.split(CDEF_END)[0]
    if any(line.lstrip().startswith("#") for line in part.splitlines()):
        raise ValueError(f"{header}: a preprocessor line between the cffi cdef marks")
    line = before.count("\n") + 1  # the line of the begin mark
    return f'# {line} "{header}"\n{part}\n'


def _constant_cdef() -> str:
    return '# 1 "build_ffi.py CONSTANTS"\n' + "\n".join(
        f"#define {name} ..." for group in CONSTANTS.values() for name in group.split()
    )


def _headers() -> list[str]:
    """Every header under src/: a change to any of them rebuilds the extension."""
    return sorted(str(path.relative_to(ROOT)) for path in (ROOT / "src").glob("*.h"))


ffibuilder = FFI()
ffibuilder.cdef(
    SYSCALLS + "".join(_cdef_part(header) for header in CDEF_HEADERS) + _constant_cdef()
)
ffibuilder.set_source(
    "ngxffi._ngx",
    '#include "ngxffi.h"\n' + GENERATED_PRAGMAS,
    sources=SOURCES,
    include_dirs=["src"],
    depends=_headers(),
    extra_compile_args=compile_args(),
    extra_link_args=link_args(),
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(ROOT), verbose=True)
