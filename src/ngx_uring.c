/*
 * The ring (see ngx_uring.h): io_uring_setup, io_uring_enter and
 * io_uring_register called as raw syscalls, the queues mapped with one mmap
 * (IORING_FEAT_SINGLE_MMAP) plus the SQE array. liburing does the same; it
 * would add a build and run-time dependency and decide on its own when to
 * enter, and the module wants one enter per turn, as a rule.
 */

#include "ngxffi.h"

#include <pthread.h>
#include <sys/mman.h>

/* The minimum the module builds on (Linux 5.19): one mapping, completions
   never dropped, timeouts in the enter itself; IORING_ASYNC_CANCEL_ALL and
   multishot poll are probed by trying. */
#define NGXFFI_URING_FEATURES                                                  \
    (IORING_FEAT_SINGLE_MMAP | IORING_FEAT_NODROP | IORING_FEAT_EXT_ARG)

static int
ngxffi_sys_uring_setup(unsigned entries, struct io_uring_params *p)
{
    return (int) syscall(__NR_io_uring_setup, entries, p);
}

static int
ngxffi_sys_uring_enter(int fd, unsigned to_submit, unsigned min_complete,
                       unsigned flags, const void *arg, size_t size)
{
    return (int) syscall(__NR_io_uring_enter, fd, to_submit, min_complete,
                         flags, arg, size);
}

static int
ngxffi_sys_uring_register(int fd, unsigned op, void *arg, unsigned n)
{
    return (int) syscall(__NR_io_uring_register, fd, op, arg, n);
}

static unsigned
ngxffi_setup_flags(int setup)
{
    switch (setup) {
        case NGXFFI_URING_DEFER:
            /* disabled until the first turn, so that the thread that runs the
               loop, not the one that made the cycle, is the ring's one issuer
             */
            return IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
                   | IORING_SETUP_R_DISABLED;
        case NGXFFI_URING_COOP:
            return IORING_SETUP_COOP_TASKRUN;
        default:
            return 0;
    }
}

static void
ngxffi_ring_unmap(ngxffi_uring_t *u)
{
    if (u->ring != NULL) munmap(u->ring, u->ring_size);
    if (u->sqes != NULL) munmap(u->sqes, u->sqes_size);
    if (u->fd >= 0) close(u->fd);
    u->ring = NULL;
    u->sqes = NULL;
    u->fd = -1;
}

static int
ngxffi_ring_map(ngxffi_uring_t *u, const struct io_uring_params *p)
{
    char *ring;
    size_t sq = p->sq_off.array + p->sq_entries * sizeof(unsigned);
    size_t cq = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);

    u->ring_size = sq > cq ? sq : cq;
    ring = mmap(NULL, u->ring_size, PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_POPULATE, u->fd, (off_t) IORING_OFF_SQ_RING);
    if (ring == MAP_FAILED) return -1;
    u->ring = ring;
    u->sqes_size = p->sq_entries * sizeof(struct io_uring_sqe);
    u->sqes = mmap(NULL, u->sqes_size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, u->fd, (off_t) IORING_OFF_SQES);
    if (u->sqes == MAP_FAILED) {
        u->sqes = NULL;
        return -1;
    }
    u->sq_head = (unsigned *) (ring + p->sq_off.head);
    u->sq_tail = (unsigned *) (ring + p->sq_off.tail);
    u->sq_flags = (unsigned *) (ring + p->sq_off.flags);
    u->sq_array = (unsigned *) (ring + p->sq_off.array);
    u->sq_mask = *(unsigned *) (ring + p->sq_off.ring_mask);
    u->sq_entries = p->sq_entries;
    u->sq_local_tail = *u->sq_tail;
    u->cq_head = (unsigned *) (ring + p->cq_off.head);
    u->cq_tail = (unsigned *) (ring + p->cq_off.tail);
    u->cq_mask = *(unsigned *) (ring + p->cq_off.ring_mask);
    u->cq_entries = p->cq_entries;
    u->cqes = (struct io_uring_cqe *) (ring + p->cq_off.cqes);
    return 0;
}

/* A ring of sq entries and a completion queue of cq (clamped by the
   kernel); the first setup from `setup` down to PLAIN that the kernel takes.
   -1 and errno. */
static int
ngxffi_ring_open(ngxffi_uring_t *u, unsigned sq, unsigned cq, int setup)
{
    struct io_uring_params p;
    int err;

    u->fd = -1;
    for (;;) {
        memset(&p, 0, sizeof(p));
        p.flags = ngxffi_setup_flags(setup) | IORING_SETUP_SUBMIT_ALL
                  | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
        p.cq_entries = cq;
        u->fd = ngxffi_sys_uring_setup(sq, &p);
        if (u->fd >= 0 || errno != EINVAL || setup == NGXFFI_URING_PLAIN) {
            break;
        }
        setup++; /* a kernel older than the flags: the next setup down */
    }
    if (u->fd < 0) return -1;
    if ((p.features & NGXFFI_URING_FEATURES) != NGXFFI_URING_FEATURES) {
        close(u->fd);
        u->fd = -1;
        errno = ENOTSUP;
        return -1;
    }
    u->setup = setup;
    u->disabled = (p.flags & IORING_SETUP_R_DISABLED) != 0;
    if (ngxffi_ring_map(u, &p) == -1) {
        err = errno;
        ngxffi_ring_unmap(u);
        errno = err;
        return -1;
    }
    return 0;
}

/* Bumped in every child fork makes: a ring inherited across a fork shares
   its queues with the parent's, which a child must not touch (under
   SINGLE_ISSUER the kernel refuses it anyway; under COOP or PLAIN it would
   take the parent's completions). */
static unsigned ngxffi_forks;
static pthread_once_t ngxffi_forks_once = PTHREAD_ONCE_INIT;

static void
ngxffi_forked(void)
{
    __atomic_add_fetch(&ngxffi_forks, 1, __ATOMIC_RELAXED);
}

static void
ngxffi_watch_forks(void)
{
    pthread_atfork(NULL, NULL, ngxffi_forked);
}

int
ngxffi_uring_foreign(const ngxffi_uring_t *u)
{
    if (__atomic_load_n(&ngxffi_forks, __ATOMIC_RELAXED) == u->forks) return 0;
    errno = EEXIST; /* as SINGLE_ISSUER says it */
    return 1;
}

/* The next free SQE, zeroed, or NULL when the queue is full even after
   submitting what it holds. The tail is published at once: only this thread
   writes it, and the kernel reads it only inside io_uring_enter. */
struct io_uring_sqe *
ngxffi_uring_sqe(ngxffi_uring_t *u)
{
    struct io_uring_sqe *sqe;
    unsigned head;

    if (ngxffi_uring_foreign(u)) return NULL;
    head = __atomic_load_n(u->sq_head, __ATOMIC_ACQUIRE);
    if (u->sq_local_tail - head >= u->sq_entries) {
        u->stats.sq_full++;
        if (ngxffi_uring_enter(u, 0, 0) < 0) return NULL;
        head = __atomic_load_n(u->sq_head, __ATOMIC_ACQUIRE);
        if (u->sq_local_tail - head >= u->sq_entries) {
            errno = EAGAIN; /* the kernel took none of them */
            return NULL;
        }
    }
    sqe = &u->sqes[u->sq_local_tail & u->sq_mask];
    memset(sqe, 0, sizeof(*sqe));
    u->sq_array[u->sq_local_tail & u->sq_mask] = u->sq_local_tail & u->sq_mask;
    u->sq_local_tail++;
    __atomic_store_n(u->sq_tail, u->sq_local_tail, __ATOMIC_RELEASE);
    u->to_submit++;
    u->stats.sqes++;
    return sqe;
}

void
ngxffi_uring_cancel(ngxffi_uring_t *u, struct io_uring_sqe *sqe, uint64_t tag,
                    unsigned flags)
{
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->addr = tag;
    sqe->cancel_flags = flags;
    /* Not IOSQE_CQE_SKIP_SUCCESS: every cancel then posts exactly once (how
       many requests it found, as ALL counts), so that a wait can count on
       it; a cancel that skips its success would post nothing for a request
       that had just ended. */
    sqe->user_data = NGXFFI_URING_INTERNAL;
    u->stats.cancels++;
    u->cancels_queued++;
}

/* One io_uring_enter: submit what is queued, run the completions' deferred
   work (GETEVENTS, always: under DEFER_TASKRUN nothing completes otherwise)
   and, with min_complete, wait up to timeout_ns (< 0: forever) until the
   queue holds that many. The syscall's result: how many it submitted, or -1
   and errno (ETIME: the wait ended). */
int
ngxffi_uring_enter(ngxffi_uring_t *u, unsigned min_complete, int64_t timeout_ns)
{
    struct __kernel_timespec ts;
    struct io_uring_getevents_arg arg;
    int n;

    if (u->disabled) {
        if (ngxffi_sys_uring_register(u->fd, IORING_REGISTER_ENABLE_RINGS, NULL,
                                      0)
            == -1)
        {
            return -1;
        }
        u->disabled = 0;
    }
    memset(&arg, 0, sizeof(arg));
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        arg.ts = (uint64_t) (uintptr_t) &ts;
    }
    u->stats.enters++;
    n = ngxffi_sys_uring_enter(u->fd, u->to_submit, min_complete,
                               IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
                               &arg, sizeof(arg));
    if (n >= 0) {
        /* SUBMIT_ALL: all of them, unless the queue itself was refused */
        u->to_submit -=
            (unsigned) n < u->to_submit ? (unsigned) n : u->to_submit;
        /* at most that many cancels are left: a wait may count on fewer
           completions than come, never on more */
        if (u->cancels_queued > u->to_submit) u->cancels_queued = u->to_submit;
    }
    return n;
}

/* The first completion of user_data ud within 100 ms, or -ETIME. */
static int
ngxffi_ring_wait_for(ngxffi_uring_t *u, uint64_t ud, uint32_t *flags)
{
    int i;

    for (i = 0; i < 10; i++) {
        unsigned head = *u->cq_head;
        unsigned tail = __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++) {
            const struct io_uring_cqe *cqe = &u->cqes[head & u->cq_mask];
            if (cqe->user_data == ud) {
                int res = cqe->res;
                *flags = cqe->flags;
                __atomic_store_n(u->cq_head, head + 1, __ATOMIC_RELEASE);
                return res;
            }
        }
        __atomic_store_n(u->cq_head, head, __ATOMIC_RELEASE);
        if (ngxffi_uring_enter(u, 1, 10000000) == -1 && errno != ETIME) break;
    }
    return -ETIME;
}

/* Cancel every request and take the completions until the outstanding
   requests have all ended (each ends with one completion without
   IORING_CQE_F_MORE), 100 ms at most: another thread may own the ring.
   Closing a ring with requests left would end them later, from a kernel
   worker: the files they hold (sockets) would stay open meanwhile. */
static void
ngxffi_ring_quiesce(ngxffi_uring_t *u, uintptr_t outstanding)
{
    struct io_uring_sqe *sqe = ngxffi_uring_sqe(u);
    uintptr_t ended = 0;
    int i, counted = 0;

    if (sqe == NULL) return;
    ngxffi_uring_cancel(u, sqe, 0,
                        IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
    sqe->user_data = NGXFFI_URING_CLOSING;
    for (i = 0; i < 10 && (!counted || ended < outstanding); i++) {
        unsigned head = *u->cq_head, tail;
        /* a large min: it is also the budget of deferred completions run */
        unsigned min = outstanding - ended < u->cq_entries
                           ? (unsigned) (outstanding - ended) + 1
                           : u->cq_entries;

        if (ngxffi_uring_enter(u, min, 10000000) == -1 && errno != ETIME) {
            return;
        }
        tail = __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++) {
            const struct io_uring_cqe *cqe = &u->cqes[head & u->cq_mask];
            if (cqe->user_data == NGXFFI_URING_CLOSING) {
                counted = 1;
            } else if (cqe->user_data != NGXFFI_URING_INTERNAL
                       && !(cqe->flags & IORING_CQE_F_MORE))
            {
                ended++;
            }
        }
        __atomic_store_n(u->cq_head, head, __ATOMIC_RELEASE);
    }
}

/* The kernel tears a closed ring down in a worker, after an RCU grace
   period (15-60 ms here), and then asks every thread that used it, by task
   work flagged like a signal, to forget it: that interrupts the thread's next
   blocking call, an epoll_wait's say, with a spurious EINTR. So the thread
   waits for that request, 100 ms at most, in an epoll_wait of its own, which
   returns EINTR when it comes and is not restarted. */
static void
ngxffi_ring_settle(void)
{
    struct epoll_event ev;
    int i, ep = epoll_create1(EPOLL_CLOEXEC);

    if (ep == -1) return;
    for (i = 0; i < 100; i++) {
        if (epoll_wait(ep, &ev, 1, 1) == -1 && errno == EINTR) break;
    }
    close(ep);
}

/* Whether setup takes these flags (an older kernel says EINVAL). */
static int
ngxffi_setup_takes(unsigned flags)
{
    struct io_uring_params p;
    int fd;

    memset(&p, 0, sizeof(p));
    p.flags = flags;
    fd = ngxffi_sys_uring_setup(4, &p);
    if (fd >= 0) close(fd);
    return fd >= 0;
}

/* The operations the module and the completion experiment use, as
   IORING_REGISTER_PROBE lists them. */
static void
ngxffi_probe_ops(ngxffi_uring_t *u, ngxffi_uring_probe_t *p)
{
    struct io_uring_probe *probe =
        calloc(1, sizeof(*probe) + 256 * sizeof(struct io_uring_probe_op));

    if (probe == NULL) return;
    if (ngxffi_sys_uring_register(u->fd, IORING_REGISTER_PROBE, probe, 256)
        == 0) {
#define NGXFFI_HAS_OP(op)                                                      \
    ((op) <= probe->last_op && (probe->ops[op].flags & IO_URING_OP_SUPPORTED))
        p->msg_ring = NGXFFI_HAS_OP(IORING_OP_MSG_RING);
        p->recv = NGXFFI_HAS_OP(IORING_OP_RECV);
        p->provide_buffers = NGXFFI_HAS_OP(IORING_OP_PROVIDE_BUFFERS);
#undef NGXFFI_HAS_OP
    }
    free(probe);
}

/* Multishot poll keeps its request: an eventfd written once posts a
   completion flagged IORING_CQE_F_MORE. */
static int
ngxffi_probe_multishot(ngxffi_uring_t *u)
{
    static const uint64_t one = 1;
    struct io_uring_sqe *sqe;
    uint32_t flags = 0;
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), res;

    if (efd == -1 || (sqe = ngxffi_uring_sqe(u)) == NULL) {
        if (efd >= 0) close(efd);
        return 0;
    }
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = efd;
    sqe->poll32_events = POLLIN;
    sqe->len = IORING_POLL_ADD_MULTI;
    sqe->user_data = 1;
    res = write(efd, &one, sizeof(one)) == sizeof(one)
              ? ngxffi_ring_wait_for(u, 1, &flags)
              : -EIO;
    close(efd); /* the request holds it until ngxffi_ring_quiesce */
    return res > 0 && (flags & IORING_CQE_F_MORE);
}

/* IORING_ASYNC_CANCEL_ALL is known: a cancel of nothing says it cancelled
   0 requests, where an older kernel refuses the flag (EINVAL). */
static int
ngxffi_probe_cancel_all(ngxffi_uring_t *u)
{
    struct io_uring_sqe *sqe = ngxffi_uring_sqe(u);
    uint32_t flags;

    if (sqe == NULL) return 0;
    ngxffi_uring_cancel(u, sqe, 3, IORING_ASYNC_CANCEL_ALL); /* none has 3 */
    return ngxffi_ring_wait_for(u, NGXFFI_URING_INTERNAL, &flags) == 0;
}

static void *
ngxffi_probe_rings(void *arg)
{
    ngxffi_uring_probe_t *p = arg;
    struct io_uring_params params;
    ngxffi_uring_t u;
    int fd;

    memset(&params, 0, sizeof(params));
    fd = ngxffi_sys_uring_setup(4, &params);
    if (fd == -1) {
        p->setup_errno = errno;
        return NULL;
    }
    close(fd);
    p->features = params.features;
    p->defer_taskrun = ngxffi_setup_takes(IORING_SETUP_SINGLE_ISSUER
                                          | IORING_SETUP_DEFER_TASKRUN);
    p->coop_taskrun = ngxffi_setup_takes(IORING_SETUP_COOP_TASKRUN);
    memset(&u, 0, sizeof(u));
    if ((params.features & NGXFFI_URING_FEATURES) != NGXFFI_URING_FEATURES
        || ngxffi_ring_open(&u, 8, 16, NGXFFI_URING_DEFER) == -1)
    {
        return NULL;
    }
    ngxffi_probe_ops(&u, p);
    p->multishot_poll = ngxffi_probe_multishot(&u);
    p->cancel_all = ngxffi_probe_cancel_all(&u);
    ngxffi_ring_quiesce(&u, 1); /* the multishot poll */
    ngxffi_ring_unmap(&u);
    p->usable = p->multishot_poll && p->cancel_all; /* SUBMIT_ALL: taken */
    return NULL;
}

int
ngxffi_uring_probe(ngxffi_uring_probe_t *p)
{
    const char *env = getenv("NGXFFI_IO_URING");
    pthread_t thread;

    if (p == NULL) {
        errno = EINVAL;
        return -1;
    }
    memset(p, 0, sizeof(*p));
    if (env != NULL && strcmp(env, "0") == 0) {
        p->setup_errno = ENOSYS;
        return 0;
    }
    /* In a thread of its own: see ngxffi_ring_settle. Its rings die with it. */
    if (pthread_create(&thread, NULL, ngxffi_probe_rings, p) != 0) {
        ngxffi_probe_rings(p);
        return 0;
    }
    pthread_join(thread, NULL);
    return 0;
}

/* Whether ngxffi_uring_probe calls the kernel usable, asked once per
   process; 0 with errno the reason otherwise (ENOTSUP: too old). */
static int
ngxffi_uring_usable(void)
{
    static int usable = -1, setup_errno;
    ngxffi_uring_probe_t p;
    int have = __atomic_load_n(&usable, __ATOMIC_ACQUIRE);
    const char *env = getenv("NGXFFI_IO_URING");

    if (env != NULL && strcmp(env, "0") == 0) {
        errno = ENOSYS;
        return 0;
    }
    if (have < 0) {
        ngxffi_uring_probe(&p);
        __atomic_store_n(&setup_errno, p.setup_errno, __ATOMIC_RELAXED);
        have = p.usable;
        __atomic_store_n(&usable, have, __ATOMIC_RELEASE);
    }
    if (!have) {
        errno = __atomic_load_n(&setup_errno, __ATOMIC_RELAXED);
        if (errno == 0) errno = ENOTSUP;
    }
    return have;
}

int
ngxffi_uring_open(ngxffi_cycle_t *cy, int setup)
{
    ngxffi_uring_t *u;
    const char *env = getenv("NGXFFI_URING_SETUP");
    unsigned sq = 64, cq;
    int err;

    if (cy == NULL || cy->uring != NULL || cy->nevents <= 0
        || cy->connection_n > NGXFFI_CONNECTIONS_MAX)
    {
        errno = EINVAL;
        return -1;
    }
    if (env != NULL) {
        setup = strcmp(env, "plain") == 0  ? NGXFFI_URING_PLAIN
                : strcmp(env, "coop") == 0 ? NGXFFI_URING_COOP
                                           : setup;
    }
    if (setup <= NGXFFI_URING_AUTO || setup > NGXFFI_URING_PLAIN) {
        setup = NGXFFI_URING_DEFER;
    }
    while (sq < 4096 && sq < (unsigned) cy->nevents) sq <<= 1;
    /* room for a completion of every slot's two requests (a cancelled one
       and its successor) beside a full queue's; the kernel clamps */
    cq =
        (unsigned) (cy->connection_n < 32768 ? 2 * cy->connection_n + 2 : 65536)
        + 2 * sq;
    if (!ngxffi_uring_usable()) return -1;
    u = calloc(1, sizeof(*u));
    if (u == NULL) return -1;
    u->reg_n = cy->connection_n + 1;
    u->reg = calloc(u->reg_n, sizeof(*u->reg));
    u->dirty = calloc(u->reg_n, sizeof(*u->dirty));
    if (u->reg == NULL || u->dirty == NULL) {
        err = ENOMEM;
        goto failed;
    }
    pthread_once(&ngxffi_forks_once, ngxffi_watch_forks);
    u->forks = __atomic_load_n(&ngxffi_forks, __ATOMIC_RELAXED);
    if (ngxffi_ring_open(u, sq, cq, setup) == -1) {
        err = errno;
        goto failed;
    }
    cy->uring = u;
    return 0;

failed:
    free(u->reg);
    free(u->dirty);
    free(u);
    errno = err;
    return -1;
}

int
ngxffi_uring_setup(const ngxffi_cycle_t *cy)
{
    return cy == NULL || cy->uring == NULL ? -1 : cy->uring->setup;
}

void
ngxffi_uring_close(ngxffi_cycle_t *cy)
{
    ngxffi_uring_t *u;

    if (cy == NULL || cy->uring == NULL) return;
    u = cy->uring;
    cy->uring = NULL;
    if (ngxffi_uring_foreign(u)) {
        ngxffi_ring_unmap(u); /* the parent's: not ours to cancel or wait on */
    } else {
        uintptr_t i, outstanding = 0;
        for (i = 0; i < u->reg_n; i++) outstanding += u->reg[i].pending;
        if (!u->disabled) ngxffi_ring_quiesce(u, outstanding);
        ngxffi_ring_unmap(u);
        ngxffi_ring_settle();
    }
    free(u->reg);
    free(u->dirty);
    free(u);
}
