"""All of ngxffi's C: the cffi (API mode) definition of the ``ngxffi._ngx`` module.

Everything the kernel defines is declared *partially* and filled in by the C compiler
when the module is built: struct layouts with ``...;``, integer types with ``int...``,
constants with ``#define NAME ...``. Nothing here hard-codes a size or a value that the
system headers already know (``struct epoll_event`` is 12 bytes and packed on x86-64,
16 bytes elsewhere: the compiler decides, not us).

Three kinds of declarations:

* the raw syscalls and libc calls, exactly as the man pages declare them;
* small non-variadic C helpers (``ngxffi_*``) around variadic calls such as ``fcntl``,
  because cffi calls variadic functions through libffi, several times slower;
* ``ngx_connection_t`` and ``ngx_event_t``: the C-layout structs the event core keeps in
  its three arrays (connections, read events, write events), modelled on nginx's
  ``src/core/ngx_connection.h`` and ``src/event/ngx_event.h``. They are ours, so the
  same text serves as the cdef and as real C in ``set_source``.

Run ``python build_ffi.py`` to build in place; setuptools runs it through
``cffi_modules`` in ``setup.py``.
"""

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
        EINPROGRESS
    """,
    "fcntl.h": """
        O_RDONLY O_WRONLY O_RDWR O_NONBLOCK O_CLOEXEC O_APPEND O_CREAT O_TRUNC
        O_EXCL O_NOFOLLOW O_DIRECTORY F_GETFL F_SETFL F_GETFD F_SETFD F_DUPFD
        F_DUPFD_CLOEXEC FD_CLOEXEC
    """,
    "sys/eventfd.h": """
        EFD_CLOEXEC EFD_NONBLOCK EFD_SEMAPHORE
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
}

HEADERS = """
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
"""

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
struct rlimit { rlim_t rlim_cur; rlim_t rlim_max; ...; };
struct timespec { time_t tv_sec; long tv_nsec; ...; };

int epoll_create1(int flags);
int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout);
int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout,
                const sigset_t *sigmask);
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
int dup(int oldfd);
int pipe2(int pipefd[2], int flags);
int eventfd(unsigned int initval, int flags);

int getrlimit(int resource, struct rlimit *rlim);
int setrlimit(int resource, const struct rlimit *rlim);
int clock_gettime(clockid_t clockid, struct timespec *tp);
"""

# fcntl(2) is variadic; these fixed-signature helpers keep cffi on its fast path.
FCNTL_HELPERS_CDEF = """
int ngxffi_nonblocking(int fd);
int ngxffi_blocking(int fd);
int ngxffi_get_status_flags(int fd);
int ngxffi_set_status_flags(int fd, int flags);
int ngxffi_get_fd_flags(int fd);
int ngxffi_set_cloexec(int fd, int on);
"""

FCNTL_HELPERS_SOURCE = """
static int ngxffi_get_status_flags(int fd) { return fcntl(fd, F_GETFL); }
static int ngxffi_set_status_flags(int fd, int fl) { return fcntl(fd, F_SETFL, fl); }
static int ngxffi_get_fd_flags(int fd) { return fcntl(fd, F_GETFD); }

/* ngx_nonblocking / ngx_blocking (src/os/unix/ngx_socket.c), with F_GETFL/F_SETFL
   rather than FIONBIO so that they work on any descriptor, not just sockets. */
static int ngxffi_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags == -1) return -1;
    return (flags & O_NONBLOCK) ? 0 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static int ngxffi_blocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags == -1) return -1;
    return (flags & O_NONBLOCK) ? fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) : 0;
}

static int ngxffi_set_cloexec(int fd, int on)
{
    int flags = fcntl(fd, F_GETFD);
    if (flags == -1) return -1;
    flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    return fcntl(fd, F_SETFD, flags);
}
"""

# The event core's C layout. Field names and bitfields follow nginx's ngx_event_t and
# ngx_connection_t; what cannot live in C (a Python handler) is an index into a table
# the event core keeps, and pointers that nginx uses for pools and logs are left out.
# The same text is compiled and cdef'd, so cffi sees exactly the compiler's layout.
CORE_STRUCTS = """
typedef struct ngx_queue_s ngx_queue_t;
struct ngx_queue_s {
    ngx_queue_t *prev;
    ngx_queue_t *next;
};

typedef struct ngx_event_s ngx_event_t;
typedef struct ngx_connection_s ngx_connection_t;

struct ngx_event_s {
    void *data;                   /* the connection this event belongs to */

    unsigned write:1;
    unsigned accept:1;
    unsigned instance:1;          /* stale-event bit: ngx_epoll_process_events */
    unsigned active:1;            /* registered in the kernel */
    unsigned disabled:1;
    unsigned ready:1;
    unsigned oneshot:1;
    unsigned complete:1;
    unsigned eof:1;
    unsigned error:1;
    unsigned timedout:1;
    unsigned timer_set:1;
    unsigned delayed:1;
    unsigned deferred_accept:1;
    unsigned pending_eof:1;
    unsigned posted:1;
    unsigned closed:1;
    unsigned channel:1;
    unsigned cancelable:1;

    int available;                /* accept: how many; read: bytes, -1 unknown */
    uint32_t handler;             /* index into the event core's handler table */
    uintptr_t index;              /* poll: slot in the pollfd array */
    uintptr_t timer_key;          /* ngx_current_msec + timer, compared signed */
    ngx_queue_t queue;            /* link in a posted queue */
};

struct ngx_connection_s {
    void *data;                   /* next free connection, or protocol context */
    ngx_event_t *read;
    ngx_event_t *write;
    int fd;
    socklen_t socklen;
    void *listening;
    struct sockaddr *sockaddr;
    off_t sent;
    uintptr_t number;             /* global accept counter */
    uintptr_t requests;
    ngx_queue_t queue;            /* link in the reusable queue */

    unsigned log_error:3;
    unsigned timedout:1;
    unsigned error:1;
    unsigned destroyed:1;
    unsigned idle:1;
    unsigned reusable:1;
    unsigned close:1;
    unsigned shared:1;
    unsigned sendfile:1;
    unsigned tcp_nodelay:2;
    unsigned tcp_nopush:2;
};
"""


def _constant_cdef() -> str:
    return "\n".join(
        f"#define {name} ..." for group in CONSTANTS.values() for name in group.split()
    )


ffibuilder = FFI()
ffibuilder.cdef(SYSCALLS + FCNTL_HELPERS_CDEF + CORE_STRUCTS + _constant_cdef())
ffibuilder.set_source(
    "ngxffi._ngx",
    HEADERS + FCNTL_HELPERS_SOURCE + CORE_STRUCTS,
    # cffi's own layout checks take &p->data of the packed struct; that is harmless.
    extra_compile_args=["-O2", "-Wall", "-Wno-address-of-packed-member"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
