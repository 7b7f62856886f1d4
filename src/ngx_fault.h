/*
 * Syscall fault injection (libfiu's fiu-run, in process): every syscall the
 * event core, the C fast path and ngxffi.os make on a connection's way goes
 * through a wrapper here, ngxffi_sys_<call>, which a test can make fail with
 * an errno of its choice, or make short (its length, count or maxevents
 * capped to N before the real call, so that a partial write is a real one):
 * the next N calls, or each call with probability p drawn from one seeded
 * splitmix64 stream per process (deterministic for a seed and an order of
 * calls). Each call has one rule and a hit counter.
 *
 * Off, a wrapper costs one load of ngxffi_fault_armed and a branch predicted
 * not taken (__builtin_expect); built with -DNGXFFI_NO_FAULTS (build_ffi.py's
 * NGXFFI_NO_FAULTS=1) it is the raw call. The wrappers are static inline:
 * the C hot paths inline them, and cffi (they are in its cdef) compiles its
 * own call to them, so Python and C share one rule table.
 *
 * The table is shared by the threads of a process, behind a lock that only
 * the armed path takes; arming while another thread makes the calls is
 * allowed, with no promise on which of its calls see the new rule first.
 */

#ifndef NGX_FAULT_H_INCLUDED
#define NGX_FAULT_H_INCLUDED

/* The calls: ngxffi.os.faults.CALLS names them in this order. */
enum {
    NGXFFI_SYS_ACCEPT4,
    NGXFFI_SYS_ACCEPT,
    NGXFFI_SYS_RECV,
    NGXFFI_SYS_READ,
    NGXFFI_SYS_READV,
    NGXFFI_SYS_PREAD,
    NGXFFI_SYS_SEND,
    NGXFFI_SYS_WRITE,
    NGXFFI_SYS_WRITEV,
    NGXFFI_SYS_SENDFILE,
    NGXFFI_SYS_EPOLL_WAIT,
    NGXFFI_SYS_EPOLL_PWAIT,
    NGXFFI_SYS_EPOLL_CTL,
    NGXFFI_SYS_EVENTFD,
    NGXFFI_SYS_OPENAT, /* openat(2) and openat2(2) */
    NGXFFI_SYS_N
};

/* Nonzero while any rule is armed: the one load of the off path. */
extern int ngxffi_fault_armed;

/* Whether this thread's last call on the armed path was made short by a rule.
   A stream read shorter than asked has emptied the socket, nginx concludes
   (ngx_unix_recv), and the C read handlers with it; a read a rule capped is
   short with more behind it, which the kernel never does: those handlers ask
   NGXFFI_FAULT_CAPPED() before they conclude the socket is empty. */
extern _Thread_local int ngxffi_fault_capped;
/* Set once a rule has capped a call in this process: until then the question
   costs one load of a plain global, not a thread-local's (a call in a shared
   object), on the C fast path's every request. */
extern int ngxffi_fault_capped_ever;

/* The armed path (ngx_fault.c): 1 when this call is to fail (errno set),
   else 0, with *cap lowered to the rule's short count when it is a short
   one (cap may be NULL for a call without a length). */
int ngxffi_fault_hit(int call, size_t *cap);

/* readv or writev (call) while armed: failed, made short (at most the short
count's bytes of iov, through a copy of its first entries), or as it is. */
ssize_t ngxffi_fault_iov(int call, int fd, const struct iovec *iov, int iovcnt);

/* cffi cdef: begin */

/* One call's rule, as ngxffi_fault_get reads it and ngxffi_fault_set takes
   it: fail with err (an errno above 0), or, with err 0, cap the length to
   short_n bytes (events for epoll_wait); the next `times` calls, or with
   times 0 each call with `probability` (0 to 1). hits: the calls it applied
   to (failed, or capped: also those asking for no more than the cap). */
typedef struct {
    int active;
    int err;
    int64_t short_n;
    int64_t times;
    double probability;
    int64_t hits;
} ngxffi_fault_rule_t;

/* Arm (rule->active) or disarm call's rule, hits set from rule->hits; call -1
   with an inactive rule disarms every call. 0, or -1 with errno EINVAL for a
   bad call, a NULL rule, err below 0, err and short_n both or neither set,
   short_n on a call without a length (accept4, accept, epoll_ctl, eventfd,
   openat), short_n, times or hits below 0, or a probability outside [0, 1]
   (NaN too) or other than 0 with times set. */
int ngxffi_fault_set(int call, const ngxffi_fault_rule_t *rule);
/* Copy call's rule to *rule (times: the calls it has left). 0, or -1 EINVAL. */
int ngxffi_fault_get(int call, ngxffi_fault_rule_t *rule);
/* The PRNG stream's seed: the same seed, the same draws. */
void ngxffi_fault_seed(uint64_t seed);
/* 1 when the wrappers test the rules, 0 in a NGXFFI_NO_FAULTS build. */
int ngxffi_fault_compiled(void);

static inline int ngxffi_sys_accept4(int sockfd, struct sockaddr *addr,
                                     socklen_t *addrlen, int flags);
static inline int ngxffi_sys_accept(int sockfd, struct sockaddr *addr,
                                    socklen_t *addrlen);
static inline ssize_t ngxffi_sys_recv(int sockfd, void *buf, size_t len,
                                      int flags);
static inline ssize_t ngxffi_sys_read(int fd, void *buf, size_t count);
static inline ssize_t ngxffi_sys_readv(int fd, const struct iovec *iov,
                                       int iovcnt);
static inline ssize_t ngxffi_sys_pread(int fd, void *buf, size_t count,
                                       off_t offset);
static inline ssize_t ngxffi_sys_send(int sockfd, const void *buf, size_t len,
                                      int flags);
static inline ssize_t ngxffi_sys_write(int fd, const void *buf, size_t count);
static inline ssize_t ngxffi_sys_writev(int fd, const struct iovec *iov,
                                        int iovcnt);
static inline ssize_t ngxffi_sys_sendfile(int out_fd, int in_fd, off_t *offset,
                                          size_t count);
static inline int ngxffi_sys_epoll_wait(int epfd, struct epoll_event *events,
                                        int maxevents, int timeout);
static inline int ngxffi_sys_epoll_pwait(int epfd, struct epoll_event *events,
                                         int maxevents, int timeout,
                                         const sigset_t *sigmask);
static inline int ngxffi_sys_epoll_ctl(int epfd, int op, int fd,
                                       struct epoll_event *event);
static inline int ngxffi_sys_eventfd(unsigned int initval, int flags);

/* cffi cdef: end */

/* Not in the cdef: Python opens through ngxffi_openat (ngx_os.h), which
   refuses the flags that would need a mode. */
static inline int ngxffi_sys_openat(int dirfd, const char *pathname, int flags);

#ifdef NGXFFI_NO_FAULTS
#define NGXFFI_FAULT_ON() 0
#else
#define NGXFFI_FAULT_ON()                                                      \
    __builtin_expect(__atomic_load_n(&ngxffi_fault_armed, __ATOMIC_RELAXED), 0)
#endif

/* How many times the C retries a call that EINTR interrupted before it hands
   the call to Python (whose retries run the signal handlers): on a
   non-blocking socket only a fault rule repeats EINTR, and a rule of
   probability 1 must not make a loop no signal can break. */
#define NGXFFI_EINTR_TRIES 16

/* Whether this thread's last armed call was capped, and forget it (asked
   right after the read; the rule may have expired with that very call). */
static inline int
ngxffi_fault_take_capped(void)
{
#ifdef NGXFFI_NO_FAULTS
    return 0;
#else
    int capped;

    if (!__builtin_expect(
            __atomic_load_n(&ngxffi_fault_capped_ever, __ATOMIC_RELAXED), 0))
    {
        return 0;
    }
    capped = ngxffi_fault_capped;
    if (capped) ngxffi_fault_capped = 0;
    return capped;
#endif
}

#define NGXFFI_FAULT_CAPPED() ngxffi_fault_take_capped()

/* Whether a call without a length is to fail (errno set). */
static inline int
ngxffi_fault_fails(int call)
{
    return NGXFFI_FAULT_ON() && ngxffi_fault_hit(call, NULL);
}

/* Whether a call with a length is to fail (errno set); *len capped when it is
   to be short. */
static inline int
ngxffi_fault_len(int call, size_t *len)
{
    return NGXFFI_FAULT_ON() && ngxffi_fault_hit(call, len);
}

static inline int
ngxffi_sys_accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen,
                   int flags)
{
    if (ngxffi_fault_fails(NGXFFI_SYS_ACCEPT4)) return -1;
    return accept4(sockfd, addr, addrlen, flags);
}

static inline int
ngxffi_sys_accept(int sockfd, struct sockaddr *addr, socklen_t *addrlen)
{
    if (ngxffi_fault_fails(NGXFFI_SYS_ACCEPT)) return -1;
    return accept(sockfd, addr, addrlen);
}

static inline ssize_t
ngxffi_sys_recv(int sockfd, void *buf, size_t len, int flags)
{
    if (ngxffi_fault_len(NGXFFI_SYS_RECV, &len)) return -1;
    return recv(sockfd, buf, len, flags);
}

static inline ssize_t
ngxffi_sys_read(int fd, void *buf, size_t count)
{
    if (ngxffi_fault_len(NGXFFI_SYS_READ, &count)) return -1;
    return read(fd, buf, count);
}

static inline ssize_t
ngxffi_sys_readv(int fd, const struct iovec *iov, int iovcnt)
{
    if (NGXFFI_FAULT_ON()) {
        return ngxffi_fault_iov(NGXFFI_SYS_READV, fd, iov, iovcnt);
    }
    return readv(fd, iov, iovcnt);
}

static inline ssize_t
ngxffi_sys_pread(int fd, void *buf, size_t count, off_t offset)
{
    if (ngxffi_fault_len(NGXFFI_SYS_PREAD, &count)) return -1;
    return pread(fd, buf, count, offset);
}

static inline ssize_t
ngxffi_sys_send(int sockfd, const void *buf, size_t len, int flags)
{
    if (ngxffi_fault_len(NGXFFI_SYS_SEND, &len)) return -1;
    return send(sockfd, buf, len, flags);
}

static inline ssize_t
ngxffi_sys_write(int fd, const void *buf, size_t count)
{
    if (ngxffi_fault_len(NGXFFI_SYS_WRITE, &count)) return -1;
    return write(fd, buf, count);
}

static inline ssize_t
ngxffi_sys_writev(int fd, const struct iovec *iov, int iovcnt)
{
    if (NGXFFI_FAULT_ON()) {
        return ngxffi_fault_iov(NGXFFI_SYS_WRITEV, fd, iov, iovcnt);
    }
    return writev(fd, iov, iovcnt);
}

static inline ssize_t
ngxffi_sys_sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
    if (ngxffi_fault_len(NGXFFI_SYS_SENDFILE, &count)) return -1;
    return sendfile(out_fd, in_fd, offset, count);
}

/* A short epoll_wait: maxevents capped (a valid maxevents stays at least 1,
   as the short count does). */
static inline int
ngxffi_fault_maxevents(int call, int *maxevents)
{
    size_t cap = *maxevents > 0 ? (size_t) *maxevents : 0;

    if (ngxffi_fault_hit(call, &cap)) return 1;
    if (*maxevents > 0) *maxevents = (int) cap;
    return 0;
}

static inline int
ngxffi_sys_epoll_wait(int epfd, struct epoll_event *events, int maxevents,
                      int timeout)
{
    if (NGXFFI_FAULT_ON()
        && ngxffi_fault_maxevents(NGXFFI_SYS_EPOLL_WAIT, &maxevents))
    {
        return -1;
    }
    return epoll_wait(epfd, events, maxevents, timeout);
}

static inline int
ngxffi_sys_epoll_pwait(int epfd, struct epoll_event *events, int maxevents,
                       int timeout, const sigset_t *sigmask)
{
    if (NGXFFI_FAULT_ON()
        && ngxffi_fault_maxevents(NGXFFI_SYS_EPOLL_PWAIT, &maxevents))
    {
        return -1;
    }
    return epoll_pwait(epfd, events, maxevents, timeout, sigmask);
}

static inline int
ngxffi_sys_epoll_ctl(int epfd, int op, int fd, struct epoll_event *event)
{
    if (ngxffi_fault_fails(NGXFFI_SYS_EPOLL_CTL)) return -1;
    return epoll_ctl(epfd, op, fd, event);
}

static inline int
ngxffi_sys_eventfd(unsigned int initval, int flags)
{
    if (ngxffi_fault_fails(NGXFFI_SYS_EVENTFD)) return -1;
    return eventfd(initval, flags);
}

static inline int
ngxffi_sys_openat(int dirfd, const char *pathname, int flags)
{
    if (ngxffi_fault_fails(NGXFFI_SYS_OPENAT)) return -1;
    return openat(dirfd, pathname, flags);
}

#endif /* NGX_FAULT_H_INCLUDED */
