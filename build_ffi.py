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
    "poll.h": """
        POLLIN POLLPRI POLLOUT POLLERR POLLHUP POLLNVAL
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
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
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

int getrlimit(int resource, struct rlimit *rlim);
int setrlimit(int resource, const struct rlimit *rlim);
int clock_gettime(clockid_t clockid, struct timespec *tp);
"""

# fcntl(2) and prctl(2) are variadic: fixed-signature helpers keep cffi fast.
VARIADIC_HELPERS_CDEF = """
int ngxffi_pdeathsig(int signum);
int ngxffi_nonblocking(int fd);
int ngxffi_blocking(int fd);
int ngxffi_get_status_flags(int fd);
int ngxffi_set_status_flags(int fd, int flags);
int ngxffi_get_fd_flags(int fd);
int ngxffi_set_cloexec(int fd, int on);
"""

VARIADIC_HELPERS_SOURCE = """
static int ngxffi_get_status_flags(int fd) { return fcntl(fd, F_GETFL); }

/* prctl(2) is variadic too: a worker asks for a signal when its master dies. */
static int ngxffi_pdeathsig(int signum) { return prctl(PR_SET_PDEATHSIG, signum); }
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
# ngx_connection_t (src/event/ngx_event.h, src/core/ngx_connection.h). What cannot live
# in C stays on the Python proxies (ngxffi.event.Event, ngxffi.event.connection): the
# handler, the protocol context, the posted and reusable queues (ordered dicts there).
# The same text is compiled and cdef'd, so cffi sees exactly the compiler's layout.
CORE_STRUCTS = """
typedef struct ngx_event_s ngx_event_t;
typedef struct ngx_connection_s ngx_connection_t;
typedef struct ngxffi_cycle_s ngxffi_cycle_t;

/* A handler in C (nginx's ev->handler), run by the epoll module inside the batch:
   1 when it did all there was to do, 0 to have the Python handler called. It may
   not open, close or re-register connections: it runs while the batch is decided. */
typedef int (*ngxffi_c_handler_pt)(ngxffi_cycle_t *cy, ngx_event_t *ev);

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
    unsigned cancelable:1;

    int available;                /* accept: how many; read: bytes, -1 unknown */
    uintptr_t index;              /* poll: slot in the pollfd array */
    uintptr_t timer_key;          /* ngx_current_msec + timer, compared signed */

    ngxffi_c_handler_pt c_handler; /* ngxffi: tried first for a read event, or NULL */
    void *c_ctx;                  /* the C handler's configuration */
};

struct ngx_connection_s {
    void *data;                   /* next free connection while free */
    ngx_event_t *read;
    ngx_event_t *write;
    int fd;
    socklen_t socklen;
    struct sockaddr *sockaddr;
    off_t sent;
    uintptr_t number;             /* global accept counter */
    uintptr_t requests;
    uint32_t generation;          /* ngxffi: bumped by every get_connection */
    ngx_connection_t *queue_prev; /* the reusable queue (nginx's c->queue) */
    ngx_connection_t *queue_next;

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
    unsigned queued:1;            /* ngxffi: linked in the reusable queue */
    unsigned stash_out:1;         /* the stash is output to send, not input to parse */

    char *stash;                  /* ngxffi: what a C handler leaves to Python */
    uint32_t stash_len;
    uint64_t c_msec;              /* when a C handler last answered (monotonic ms) */
};

/* stub_status's counters (the ngx_stat_* atomics); in shared memory with workers. */
typedef struct {
    int64_t accepted;
    int64_t handled;
    int64_t active;
    int64_t requests;
    int64_t reading;
    int64_t writing;
    int64_t waiting;
    int64_t accept_mutex;  /* ngx_accept_mutex: 0, or the pid holding it */
} ngxffi_stats_t;

/* What the C helpers below need of ngx_cycle_t. */
struct ngxffi_cycle_s {
    ngx_connection_t *connections;
    ngx_event_t *read_events;
    ngx_event_t *write_events;
    uintptr_t connection_n;
    ngx_connection_t *free_connections;
    uintptr_t free_connection_n;
    ngx_connection_t *notify;     /* a static connection outside the pool, or NULL */
    int strong_tags;              /* generation in the tag's high 16 bits */
    uint64_t invalid_events;      /* kernel events whose tag was not ours */
    ngx_connection_t *reusable_oldest;  /* reusable_connections_queue, both ends */
    ngx_connection_t *reusable_newest;
    uintptr_t reusable_n;

    /* the epoll module's state, so that its per-batch calls take few arguments */
    int ep;
    struct epoll_event *event_list;
    int nevents;
    int batch_n;                  /* events the last epoll_wait returned */
    int32_t *out;                 /* decided handler calls: slot * 2 + write */
    int32_t *out_half;            /* the half-event each of them came from */
    uint8_t *verdicts;            /* per half-event, for the trace */
    uint64_t clock_offset;        /* added to CLOCK_MONOTONIC, as cycle.clock_offset */
};
"""

# The event core's hot paths, in C because they touch every event of a batch or zero
# whole structs; the logic follows the nginx functions named in each comment.
EVENT_CORE_CDEF = """
#define NGXFFI_INVALID_INDEX ...
#define NGXFFI_TAG_ADDRESS_BITS ...
#define NGXFFI_ACCEPT_QUEUE ...
#define NGXFFI_BATCH_INVALID ...
#define NGXFFI_NONE ...
#define NGXFFI_DISPATCHED ...
#define NGXFFI_POSTED ...
#define NGXFFI_STALE_CLOSED ...
#define NGXFFI_STALE_REUSED ...
#define NGXFFI_INVALID ...

int64_t ngxffi_atomic_add(int64_t *value, int64_t delta);
void ngxffi_atomic_move(int64_t *from, int64_t *to);
int ngxffi_atomic_cas(int64_t *value, int64_t expected, int64_t desired);
void ngxffi_init_connections(ngxffi_cycle_t *cy);
intptr_t ngxffi_get_connection(ngxffi_cycle_t *cy, int fd);
void ngxffi_free_connection(ngxffi_cycle_t *cy, uintptr_t slot);
void ngxffi_stash_free(ngx_connection_t *c);
void ngxffi_reusable_connection(ngxffi_cycle_t *cy, ngx_connection_t *c,
                                unsigned reusable);
intptr_t ngxffi_reusable_slots(const ngxffi_cycle_t *cy, int32_t *out, intptr_t n);
uint64_t ngxffi_tag(const ngxffi_cycle_t *cy, const ngx_connection_t *c,
                    unsigned instance);
intptr_t ngxffi_tag_slot(const ngxffi_cycle_t *cy, uint64_t tag);
int ngxffi_epoll_ctl(const ngxffi_cycle_t *cy, int ep, int op, ngx_connection_t *c,
                     uint32_t events, unsigned instance);
int ngxffi_epoll_decide(ngxffi_cycle_t *cy, int from, int post, int trace);
int ngxffi_epoll_process(ngxffi_cycle_t *cy, int timer, int post, int trace);
int ngxffi_poll_ready(const struct pollfd *list, int n, int32_t *out);
int ngxffi_epoll_select(int ep, struct epoll_event *list, int maxevents, int timeout,
                        int32_t *codes);
"""

EVENT_CORE_SOURCE = """
#define NGXFFI_INVALID_INDEX     0xd0d0d0d0      /* NGX_INVALID_INDEX */
#define NGXFFI_TAG_ADDRESS_BITS  48              /* strong tags: generation above */
#define NGXFFI_ACCEPT_QUEUE      (1 << 30)       /* decide: post to the accept queue */
#define NGXFFI_BATCH_INVALID     (1 << 30)       /* process: the batch had bad tags */

enum {                                            /* per half-event verdicts */
    NGXFFI_NONE, NGXFFI_DISPATCHED, NGXFFI_POSTED, NGXFFI_STALE_CLOSED,
    NGXFFI_STALE_REUSED, NGXFFI_INVALID
};

/* ngx_atomic_fetch_add: safe between processes sharing the memory. */
static int64_t ngxffi_atomic_add(int64_t *value, int64_t delta)
{
    return __atomic_fetch_add(value, delta, __ATOMIC_SEQ_CST);
}

/* ngx_atomic_cmp_set: the accept mutex's trylock (0 -> pid) and unlock (pid -> 0). */
static int ngxffi_atomic_cas(int64_t *value, int64_t expected, int64_t desired)
{
    return __atomic_compare_exchange_n(value, &expected, desired, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* One connection moving between two counters (stub_status reading/writing/waiting),
   in one call from Python. */
static void ngxffi_atomic_move(int64_t *from, int64_t *to)
{
    __atomic_fetch_sub(from, 1, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(to, 1, __ATOMIC_SEQ_CST);
}

/* ngx_event_process_init: every slot free, fd -1, both events closed, read
   instance 1; the free list runs c[0] -> c[1] -> ... so c[0] is taken first. */
static void ngxffi_init_connections(ngxffi_cycle_t *cy)
{
    ngx_connection_t *next = NULL;
    uintptr_t i = cy->connection_n;

    do {
        i--;
        cy->read_events[i].closed = 1;
        cy->read_events[i].instance = 1;
        cy->write_events[i].closed = 1;
        cy->connections[i].data = next;
        cy->connections[i].read = &cy->read_events[i];
        cy->connections[i].write = &cy->write_events[i];
        cy->connections[i].fd = -1;
        next = &cy->connections[i];
    } while (i);

    cy->free_connections = next;
    cy->free_connection_n = cy->connection_n;
}

/* Drop what a C handler left for Python (taken, or the connection is gone). */
static void ngxffi_stash_free(ngx_connection_t *c)
{
    free(c->stash);
    c->stash = NULL;
    c->stash_len = 0;
    c->stash_out = 0;
}

/* ngx_reusable_connection's queue: idle connections, oldest first, that
   ngx_drain_connections may close. Intrusive, as nginx's ngx_queue_t in the
   connection, so that the many idle connections cost no memory beyond their slot. */
static void ngxffi_queue_unlink(ngxffi_cycle_t *cy, ngx_connection_t *c)
{
    if (!c->queued) return;
    if (c->queue_prev) c->queue_prev->queue_next = c->queue_next;
    else cy->reusable_oldest = c->queue_next;
    if (c->queue_next) c->queue_next->queue_prev = c->queue_prev;
    else cy->reusable_newest = c->queue_prev;
    c->queue_prev = c->queue_next = NULL;
    c->queued = 0;
    cy->reusable_n--;
}

static void ngxffi_reusable_connection(ngxffi_cycle_t *cy, ngx_connection_t *c,
                                       unsigned reusable)
{
    ngxffi_queue_unlink(cy, c);
    c->reusable = reusable;
    if (!reusable) return;
    c->queue_prev = cy->reusable_newest;
    c->queue_next = NULL;
    if (cy->reusable_newest) cy->reusable_newest->queue_next = c;
    else cy->reusable_oldest = c;
    cy->reusable_newest = c;
    c->queued = 1;
    cy->reusable_n++;
}

/* Up to n slots of the queue, oldest first; returns how many. */
static intptr_t ngxffi_reusable_slots(const ngxffi_cycle_t *cy, int32_t *out,
                                      intptr_t n)
{
    intptr_t i = 0;
    const ngx_connection_t *c;

    for (c = cy->reusable_oldest; c != NULL && i < n; c = c->queue_next) {
        out[i++] = (int32_t) (c - cy->connections);
    }
    return i;
}

/* ngx_get_connection, without the drain and the files[] bookkeeping (done by the
   caller): pop the free list, zero the connection and both events, flip the instance
   bit on both. Returns the slot, or -1 when the pool is empty. */
static intptr_t ngxffi_get_connection(ngxffi_cycle_t *cy, int fd)
{
    ngx_connection_t *c = cy->free_connections;
    ngx_event_t *rev, *wev;
    unsigned instance;
    uint32_t generation;

    if (c == NULL) return -1;

    ngxffi_queue_unlink(cy, c);   /* freed without close_connection: forget it */
    cy->free_connections = c->data;
    cy->free_connection_n--;

    rev = c->read;
    wev = c->write;
    generation = c->generation + 1;
    memset(c, 0, sizeof(ngx_connection_t));
    c->read = rev;
    c->write = wev;
    c->fd = fd;
    c->generation = generation;

    instance = rev->instance;
    memset(rev, 0, sizeof(ngx_event_t));
    memset(wev, 0, sizeof(ngx_event_t));
    rev->instance = !instance;
    wev->instance = !instance;
    rev->index = NGXFFI_INVALID_INDEX;
    wev->index = NGXFFI_INVALID_INDEX;
    rev->data = c;
    wev->data = c;
    wev->write = 1;

    return c - cy->connections;
}

/* ngx_free_connection: push on the free list (LIFO); fd and instance untouched. */
static void ngxffi_free_connection(ngxffi_cycle_t *cy, uintptr_t slot)
{
    ngx_connection_t *c = &cy->connections[slot];

    ngxffi_stash_free(c);
    c->data = cy->free_connections;
    cy->free_connections = c;
    cy->free_connection_n++;
}

/* (uintptr_t) c | instance, as ngx_epoll_add_event writes it into data.ptr; strong
   tags add the connection's generation in the bits above the user address space. */
static uint64_t ngxffi_tag(const ngxffi_cycle_t *cy, const ngx_connection_t *c,
                           unsigned instance)
{
    uint64_t tag = (uint64_t) (uintptr_t) c | (instance & 1);

    if (cy->strong_tags) {
        tag |= (uint64_t) (c->generation & 0xffff) << NGXFFI_TAG_ADDRESS_BITS;
    }
    return tag;
}

/* The connection a tag names, or NULL: the address must be one of this cycle's slots
   (exactly, not inside one) or its static notify connection. This is what nginx does
   not check; a NULL here means the value is never dereferenced. */
static ngx_connection_t *ngxffi_decode(const ngxffi_cycle_t *cy, uint64_t tag,
                                       intptr_t *slot)
{
    uint64_t mask = cy->strong_tags
                    ? (((uint64_t) 1 << NGXFFI_TAG_ADDRESS_BITS) - 2) : ~(uint64_t) 1;
    uintptr_t addr = (uintptr_t) (tag & mask);
    uintptr_t base = (uintptr_t) cy->connections;
    uintptr_t offset = addr - base;

    if (addr >= base && offset < cy->connection_n * sizeof(ngx_connection_t)
        && offset % sizeof(ngx_connection_t) == 0)
    {
        *slot = (intptr_t) (offset / sizeof(ngx_connection_t));
        return (ngx_connection_t *) addr;
    }
    if (cy->notify != NULL && addr == (uintptr_t) cy->notify) {
        *slot = (intptr_t) cy->connection_n;
        return cy->notify;
    }
    return NULL;
}

static intptr_t ngxffi_tag_slot(const ngxffi_cycle_t *cy, uint64_t tag)
{
    intptr_t slot = -1;
    ngxffi_decode(cy, tag, &slot);
    return slot;
}

static int ngxffi_epoll_ctl(const ngxffi_cycle_t *cy, int ep, int op,
                            ngx_connection_t *c, uint32_t events, unsigned instance)
{
    struct epoll_event ee;

    ee.events = events;
    ee.data.u64 = (op == EPOLL_CTL_DEL) ? 0 : ngxffi_tag(cy, c, instance);
    return epoll_ctl(ep, op, c->fd, &ee);
}

/* The stale test of ngx_epoll_process_events: closed (fd -1) or closed and reused
   (instance flipped; with strong tags, also a different generation). */
static int ngxffi_stale(const ngxffi_cycle_t *cy, const ngx_connection_t *c,
                        const ngx_event_t *ev, unsigned instance, uint64_t tag)
{
    if (c->fd == -1) return NGXFFI_STALE_CLOSED;
    if (ev->instance != instance) return NGXFFI_STALE_REUSED;
    if (cy->strong_tags
        && (c->generation & 0xffff) != (uint32_t) (tag >> NGXFFI_TAG_ADDRESS_BITS))
    {
        return NGXFFI_STALE_REUSED;
    }
    return 0;
}

/* The body of ngx_epoll_process_events' loop for half-events from..2n-1 (half-event
   h is the read side of list[h/2] when even, its write side when odd). Marks events
   ready as nginx does and, instead of calling handlers, appends slot*2+write to
   cy->out (with NGXFFI_ACCEPT_QUEUE for an accept event when posting) and h to
   cy->out_half. The epoll module calls the handlers, and calls this again from the
   next half-event after one that changed the pool (ngxffi/event/modules/epoll.py,
   _dispatch). With trace, cy->verdicts[h] gets the verdict of every half-event. */
static int ngxffi_epoll_decide(ngxffi_cycle_t *cy, int from, int post, int trace)
{
    const struct epoll_event *list = cy->event_list;
    int32_t *out = cy->out, *out_half = cy->out_half;
    uint8_t *verdicts = trace ? cy->verdicts : NULL;
    int h, k = 0, n = cy->batch_n;

    for (h = from; h < 2 * n; h++) {
        int i = h >> 1, write = h & 1, verdict;
        uint64_t tag = list[i].data.u64;
        uint32_t revents = list[i].events;
        unsigned instance = (unsigned) (tag & 1);
        intptr_t slot;
        ngx_connection_t *c = ngxffi_decode(cy, tag, &slot);
        ngx_event_t *ev;

        if (c == NULL) {
            if (!write && from == 0) cy->invalid_events++;  /* once per batch */
            if (verdicts) verdicts[h] = NGXFFI_INVALID;
            continue;
        }

        if (revents & (EPOLLERR|EPOLLHUP)) {
            revents |= EPOLLIN|EPOLLOUT;
        }

        if (!write) {
            ev = c->read;
            verdict = ngxffi_stale(cy, c, ev, instance, tag);
            if (verdict) {
                /* nginx skips the whole event, write side included */
                if (verdicts) verdicts[h] = verdicts[h + 1] = (uint8_t) verdict;
                h++;
                continue;
            }
            if (!(revents & EPOLLIN) || !ev->active) {
                if (verdicts) verdicts[h] = NGXFFI_NONE;
                continue;
            }
            if (revents & EPOLLRDHUP) ev->pending_eof = 1;
            ev->ready = 1;
            ev->available = -1;
            if (ev->c_handler && !post && !verdicts
                && !(revents & (EPOLLRDHUP|EPOLLERR|EPOLLHUP))
                && ev->c_handler(cy, ev))
            {
                continue;  /* done in C: no Python call for this half-event */
            }
            out[k] = (int32_t) (slot * 2)
                     | (post && ev->accept ? NGXFFI_ACCEPT_QUEUE : 0);

        } else {
            ev = c->write;
            if (!(revents & EPOLLOUT) || !ev->active) {
                if (verdicts) verdicts[h] = NGXFFI_NONE;
                continue;
            }
            verdict = ngxffi_stale(cy, c, ev, instance, tag);
            if (verdict) {
                if (verdicts) verdicts[h] = (uint8_t) verdict;
                continue;
            }
            ev->ready = 1;
            out[k] = (int32_t) (slot * 2 + 1);
        }

        out_half[k++] = h;
        if (verdicts) verdicts[h] = post ? NGXFFI_POSTED : NGXFFI_DISPATCHED;
    }
    return k;
}

/* epoll_wait and the first decision on its batch in one call: the per-batch cost of
   crossing from Python to C is paid once. Returns -1 (errno set by epoll_wait), or
   the number of handlers to call, with NGXFFI_BATCH_INVALID added when some tag was
   not ours; cy->batch_n says how many events the kernel returned. */
static int ngxffi_epoll_process(ngxffi_cycle_t *cy, int timer, int post, int trace)
{
    uint64_t invalid = cy->invalid_events;
    int k, n = epoll_wait(cy->ep, cy->event_list, cy->nevents, timer);

    cy->batch_n = n < 0 ? 0 : n;
    if (n <= 0) return n;
    k = ngxffi_epoll_decide(cy, 0, post, trace);
    return cy->invalid_events == invalid ? k : k | NGXFFI_BATCH_INVALID;
}

/* For ngxffi.selector: epoll_wait, then each event as fd << 2 | the selectors
   module's mask, computed as EpollSelector.select does: EVENT_WRITE (2) for anything
   but EPOLLIN, EVENT_READ (1) for anything but EPOLLOUT. -1 and errno on failure. */
static int ngxffi_epoll_select(int ep, struct epoll_event *list, int maxevents,
                               int timeout, int32_t *codes)
{
    int i, n = epoll_wait(ep, list, maxevents, timeout);

    for (i = 0; i < n; i++) {
        uint32_t e = list[i].events;
        codes[i] = ((int32_t) list[i].data.u64 << 2)
                   | ((e & ~(uint32_t) EPOLLIN) ? 2 : 0)
                   | ((e & ~(uint32_t) EPOLLOUT) ? 1 : 0);
    }
    return n;
}

/* The indexes of the pollfd entries with revents, for ngx_poll_process_events. */
static int ngxffi_poll_ready(const struct pollfd *list, int n, int32_t *out)
{
    int i, k = 0;

    for (i = 0; i < n; i++) {
        if (list[i].revents) out[k++] = i;
    }
    return k;
}
"""


def _constant_cdef() -> str:
    return "\n".join(
        f"#define {name} ..." for group in CONSTANTS.values() for name in group.split()
    )


# The HTTP module's C read handler for fixed responses (nginx's `return`): on an idle
# keep-alive connection, requests of a plain shape are answered without Python.
HTTP_FAST_STRUCTS = """
typedef struct {
    int enabled;                  /* 0: every request goes to Python */
    const char *head;             /* the response head up to (without) Date */
    size_t head_len;
    const char *body;
    size_t body_len;
    const char *skip_path;        /* a path Python answers (stub_status) */
    size_t skip_path_len;
    uint64_t keepalive_requests;
    int64_t *requests;            /* stub_status's shared counter */
    uint64_t answered;            /* requests this handler answered (for tests) */
    char *buf;                    /* the read buffer, and the output buffer */
    size_t size;
    char *out;
    size_t out_size;
    int64_t date_sec;             /* the Date line, formatted once a second */
    char date[40];
    size_t date_len;
} ngxffi_http_fast_t;
"""

HTTP_FAST_CDEF = """
size_t ngxffi_http_simple(const ngxffi_http_fast_t *f, const char *p, size_t n);
int ngxffi_http_fast_read(ngxffi_cycle_t *cy, ngx_event_t *rev);
void ngxffi_http_date(ngxffi_http_fast_t *f, int64_t sec);
"""


def _byte_classes() -> str:
    """A C table of the byte classes the request recogniser uses: RFC 9110 tchar
    (header names, 1), what a request target may hold here (unreserved, sub-delims,
    ":@/?%", 2), a header value byte (VCHAR, SP, HTAB, 4). Narrower than what llhttp
    accepts: anything else goes to Python, which parses it with llhttp."""
    alnum = {*range(ord("0"), ord("9") + 1), *range(ord("a"), ord("z") + 1)}
    alnum |= {*range(ord("A"), ord("Z") + 1)}
    tchar = alnum | {ord(ch) for ch in "!#$%&'*+-.^_`|~"}
    target = alnum | {ord(ch) for ch in "-._~!$&'()*+,;=:@/?%"}
    value = {*range(0x20, 0x7F), ord("\t")}
    flags = [(b in tchar) | (b in target) << 1 | (b in value) << 2 for b in range(256)]
    rows = ", ".join(str(flag) for flag in flags)
    return f"static const unsigned char ngxffi_http_class[256] = {{{rows}}};\n"


HTTP_FAST_SOURCE = (
    _byte_classes()
    + r"""
#define NGXFFI_TCHAR   1
#define NGXFFI_TARGET  2
#define NGXFFI_VALUE   4
#define ngxffi_is(ch, cls)  (ngxffi_http_class[(unsigned char) (ch)] & (cls))

static int ngxffi_name_is(const char *p, size_t n, const char *name, size_t len)
{
    return n == len && strncasecmp(p, name, n) == 0;
}

#define ngxffi_name(p, n, name)  ngxffi_name_is(p, n, name, sizeof(name) - 1)

#define NGXFFI_HTTP_LINE_MAX 8000  /* below large_client_header_buffers' 8k */

/* A Connection value that is exactly "keep-alive" (any case, OWS around it), as
   many HTTP/1.1 clients send: it changes nothing for llhttp. */
static int ngxffi_keep_alive(const char *value, const char *end)
{
    while (value < end && (*value == ' ' || *value == '\t')) value++;
    while (end > value && (end[-1] == ' ' || end[-1] == '\t')) end--;
    return end - value == 10 && strncasecmp(value, "keep-alive", 10) == 0;
}

/* The length of one complete request at p that is a plain keep-alive GET: request
   line "GET <target> HTTP/1.1", header lines "name: value", exactly one Host, none
   of the headers that change how a request is framed or answered (Content-Length,
   Transfer-Encoding, Proxy-Connection, Upgrade, Expect; Connection unless it says
   keep-alive), target not the skipped path. 0 for anything else, complete or not:
   Python decides then. */
static size_t ngxffi_http_simple(const ngxffi_http_fast_t *f, const char *p, size_t n)
{
    const char *end = p + n, *q = p + 4, *target, *line, *query, *value;
    size_t path_len, len;
    int host = 0, connection;

    if (n < 5 || memcmp(p, "GET /", 5) != 0) return 0;
    target = q;
    while (q < end && ngxffi_is(*q, NGXFFI_TARGET)) q++;
    if (q - target > NGXFFI_HTTP_LINE_MAX) return 0;
    if (end - q < 11 || memcmp(q, " HTTP/1.1\r\n", 11) != 0) return 0;
    query = memchr(target, '?', (size_t) (q - target));
    path_len = (size_t) ((query ? query : q) - target);
    if (f->skip_path_len == path_len && memcmp(target, f->skip_path, path_len) == 0) {
        return 0;
    }
    q += 11;

    for ( ;; ) {
        if (end - q < 2) return 0;
        if (q[0] == '\r') {
            if (q[1] != '\n') return 0;
            q += 2;
            break;
        }
        line = q;
        while (q < end && ngxffi_is(*q, NGXFFI_TCHAR)) q++;
        if (q == line || q == end || *q != ':') return 0;
        len = (size_t) (q - line);
        connection = ngxffi_name(line, len, "connection");
        if (ngxffi_name(line, len, "host")) {
            host++;
        } else if (ngxffi_name(line, len, "content-length")
                   || ngxffi_name(line, len, "transfer-encoding")
                   || ngxffi_name(line, len, "proxy-connection")
                   || ngxffi_name(line, len, "upgrade")
                   || ngxffi_name(line, len, "expect"))
        {
            return 0;
        }
        value = ++q;
        while (q < end && ngxffi_is(*q, NGXFFI_VALUE)) q++;
        if (end - q < 2 || q[0] != '\r' || q[1] != '\n') return 0;
        if (q - line > NGXFFI_HTTP_LINE_MAX) return 0;
        if (connection && !ngxffi_keep_alive(value, q)) return 0;
        q += 2;
    }
    return host == 1 ? (size_t) (q - p) : 0;
}

/* "Date: Mon, 23 Nov 2026 14:13:05 GMT\r\n", as email.utils.formatdate(usegmt=True)
   and nginx's ngx_cached_http_time print it (names in English, whatever the locale). */
static void ngxffi_http_date(ngxffi_http_fast_t *f, int64_t sec)
{
    static const char days[] = "SunMonTueWedThuFriSat";
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    time_t t = (time_t) sec;
    struct tm tm;
    int n;

    gmtime_r(&t, &tm);
    n = snprintf(f->date, sizeof(f->date),
                 "Date: %.3s, %02d %.3s %d %02d:%02d:%02d GMT\r\n",
                 days + 3 * tm.tm_wday, tm.tm_mday, months + 3 * tm.tm_mon,
                 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    f->date_len = n > 0 && (size_t) n < sizeof(f->date) ? (size_t) n : 0;
    f->date_sec = sec;
}

static uint64_t ngxffi_msec(const ngxffi_cycle_t *cy)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000
           + cy->clock_offset;
}

/* Keep what Python must finish: input to parse, or output still to send. The C
   handler stays off until Python puts it back. */
static int ngxffi_http_leave(ngx_event_t *rev, const char *p, size_t n, int output)
{
    ngx_connection_t *c = rev->data;

    rev->c_handler = NULL;
    c->stash = malloc(n ? n : 1);
    if (c->stash == NULL) return 0;  /* Python reads the socket as usual */
    memcpy(c->stash, p, n);
    c->stash_len = (uint32_t) n;
    c->stash_out = (unsigned) output;
    return 0;
}

/* The read handler of an idle keep-alive connection whose server answers every
   request with one fixed response (ngx_http_keepalive_handler plus `return`, for
   the plain case): read once; if what came is whole plain requests, answer them all
   in one send, count them, make the connection the most recently used reusable one
   and note the time for its keep-alive timer. Anything else, EOF and errors too,
   is Python's: the bytes read are stashed on the connection. */
static int ngxffi_http_fast_read(ngxffi_cycle_t *cy, ngx_event_t *rev)
{
    ngxffi_http_fast_t *f = rev->c_ctx;
    ngx_connection_t *c = rev->data;
    size_t used = 0, len, out = 0, each;
    uint64_t served = 0;
    ssize_t n, sent;
    struct timespec now;

    if (!f->enabled || c->stash) return 0;
    n = recv(c->fd, f->buf, f->size, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        rev->ready = 0;
        return 1;
    }
    if (n <= 0) return 0;  /* EOF or an error: Python reads it again and closes */
    if ((size_t) n == f->size) return ngxffi_http_leave(rev, f->buf, (size_t) n, 0);

    clock_gettime(CLOCK_REALTIME, &now);
    if ((int64_t) now.tv_sec != f->date_sec) ngxffi_http_date(f, now.tv_sec);
    each = f->head_len + f->date_len + 26 + f->body_len;
    while (used < (size_t) n) {
        len = ngxffi_http_simple(f, f->buf + used, (size_t) n - used);
        if (len == 0 || f->date_len == 0 || out + each > f->out_size
            || c->requests + served + 1 >= f->keepalive_requests)
        {
            rev->ready = 0;  /* drained: the short read says so */
            return ngxffi_http_leave(rev, f->buf, (size_t) n, 0);
        }
        memcpy(f->out + out, f->head, f->head_len);
        memcpy(f->out + out + f->head_len, f->date, f->date_len);
        memcpy(f->out + out + f->head_len + f->date_len,
               "Connection: keep-alive\r\n\r\n", 26);
        memcpy(f->out + out + f->head_len + f->date_len + 26, f->body, f->body_len);
        out += each;
        used += len;
        served++;
    }

    rev->ready = 0;  /* a short read drained the socket (EPOLLRDHUP is in use) */
    f->answered += served;
    c->requests += served;
    ngxffi_atomic_add(f->requests, (int64_t) served);
    c->c_msec = ngxffi_msec(cy);
    ngxffi_reusable_connection(cy, c, 1);

    sent = send(c->fd, f->out, out, MSG_NOSIGNAL);
    if (sent == (ssize_t) out) return 1;
    if (sent < 0) sent = 0;  /* EAGAIN, or an error Python's write will see */
    return ngxffi_http_leave(rev, f->out + sent, out - (size_t) sent, 1);
}
"""
)

ffibuilder = FFI()
ffibuilder.cdef(
    SYSCALLS
    + VARIADIC_HELPERS_CDEF
    + CORE_STRUCTS
    + EVENT_CORE_CDEF
    + HTTP_FAST_STRUCTS
    + HTTP_FAST_CDEF
    + _constant_cdef()
)
ffibuilder.set_source(
    "ngxffi._ngx",
    HEADERS
    + VARIADIC_HELPERS_SOURCE
    + CORE_STRUCTS
    + EVENT_CORE_SOURCE
    + HTTP_FAST_STRUCTS
    + HTTP_FAST_SOURCE,
    # cffi's own layout checks take &p->data of the packed struct; that is harmless.
    extra_compile_args=["-O2", "-Wall", "-Wno-address-of-packed-member"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
