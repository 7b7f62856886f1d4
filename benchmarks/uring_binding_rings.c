/*
 * The io_uring methods of benchmarks/uring_binding.c: raw, io_uring_setup
 * and io_uring_enter as syscalls on rings mapped here, a turn made as
 * ngxffi's io_uring module makes it (src/ngx_uring.c,
 * src/ngx_uring_events.c); and liburing, the same requests through
 * liburing.
 */

#include "uring_binding.h"

/* raw: io_uring_setup and io_uring_enter as syscalls, the rings mapped */

static int
raw_map(raw_ring_t *r, const struct io_uring_params *p)
{
    size_t sq = p->sq_off.array + p->sq_entries * sizeof(unsigned);
    size_t cq = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
    char *ring;

    r->ring_size = sq > cq ? sq : cq;
    ring = mmap(NULL, r->ring_size, PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_POPULATE, r->fd, (off_t) IORING_OFF_SQ_RING);
    if (ring == MAP_FAILED) return -1;
    r->ring = ring;
    r->sqes_size = p->sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, r->fd, (off_t) IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) return -1;
    r->sq_head = (unsigned *) (ring + p->sq_off.head);
    r->sq_tail = (unsigned *) (ring + p->sq_off.tail);
    r->sq_array = (unsigned *) (ring + p->sq_off.array);
    r->sq_mask = *(unsigned *) (ring + p->sq_off.ring_mask);
    r->sq_entries = p->sq_entries;
    r->sq_local = *r->sq_tail;
    r->cq_head = (unsigned *) (ring + p->cq_off.head);
    r->cq_tail = (unsigned *) (ring + p->cq_off.tail);
    r->cq_mask = *(unsigned *) (ring + p->cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *) (ring + p->cq_off.cqes);
    return 0;
}

static int
raw_open(bench_t *b)
{
    raw_ring_t *r = &b->raw;
    unsigned flags = BENCH_DEFER;
    struct io_uring_params p;

    for (;;) {
        memset(&p, 0, sizeof(p));
        p.flags = flags | IORING_SETUP_SUBMIT_ALL;
        r->fd = (int) syscall(__NR_io_uring_setup, BENCH_ENTRIES, &p);
        if (r->fd >= 0 || errno != EINVAL || flags == 0) break;
        flags = 0; /* a kernel older than DEFER_TASKRUN */
    }
    if (r->fd == -1) return bench_fail(b, "io_uring_setup", errno);
    b->setup = flags ? "defer" : "plain";
    /* one mapping for both queues, and the wait's timeout in the enter */
    if ((p.features & (IORING_FEAT_SINGLE_MMAP | IORING_FEAT_EXT_ARG))
        != (IORING_FEAT_SINGLE_MMAP | IORING_FEAT_EXT_ARG))
    {
        return bench_fail(b, "io_uring_setup", ENOTSUP);
    }
    return raw_map(r, &p) == -1 ? bench_fail(b, "mmap", errno) : 0;
}

static int
raw_enter(bench_t *b, unsigned min_complete)
{
    raw_ring_t *r = &b->raw;
    struct __kernel_timespec ts = {.tv_sec = 1};
    struct io_uring_getevents_arg arg = {.ts = (uint64_t) (uintptr_t) &ts};
    int n;

    b->enters++;
    n = (int) syscall(__NR_io_uring_enter, r->fd, r->to_submit, min_complete,
                      IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg,
                      sizeof(arg));
    if (n == -1) {
        /* a ring closed earlier in this thread can interrupt a wait once */
        return errno == EINTR ? 0 : bench_fail(b, "io_uring_enter", errno);
    }
    r->to_submit -= (unsigned) n < r->to_submit ? (unsigned) n : r->to_submit;
    if (r->to_submit == 0) b->cancels = 0;
    return 0;
}

/* The next SQE, zeroed, its tail published at once (the kernel reads it
   only inside io_uring_enter); NULL when the queue is full, which a turn
   that submits everything never leaves it. */
static struct io_uring_sqe *
raw_sqe(bench_t *b)
{
    raw_ring_t *r = &b->raw;
    unsigned i = r->sq_local & r->sq_mask;

    if (r->sq_local - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE)
        >= r->sq_entries)
    {
        return NULL;
    }
    memset(&r->sqes[i], 0, sizeof(r->sqes[i]));
    r->sq_array[i] = i;
    r->sq_local++;
    __atomic_store_n(r->sq_tail, r->sq_local, __ATOMIC_RELEASE);
    r->to_submit++;
    return &r->sqes[i];
}

static int
raw_add(bench_t *b, int fd, uint64_t ud)
{
    struct io_uring_sqe *sqe = raw_sqe(b);

    if (sqe == NULL) return bench_fail(b, "raw_sqe", EBUSY);
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = fd;
    sqe->poll32_events = BENCH_EVENTS;
    sqe->len = IORING_POLL_ADD_MULTI;
    sqe->user_data = ud;
    return 0;
}

/* Take every completion; whether one was the event of ud. */
static int
raw_reap(raw_ring_t *r, uint64_t ud)
{
    unsigned head = *r->cq_head;
    unsigned tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
    int seen = 0;

    for (; head != tail; head++) {
        const struct io_uring_cqe *cqe = &r->cqes[head & r->cq_mask];
        seen |= cqe->user_data == ud && cqe->res >= 0;
    }
    __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
    return seen;
}

/* The module's turn: what the queue holds first; an enter only when that is
   not the event or SQEs wait, not blocking when it is; again while only
   other completions (the cancels') come. */
static int
raw_wait(bench_t *b, uint64_t ud)
{
    int seen = raw_reap(&b->raw, ud);

    while (!seen || b->raw.to_submit) {
        if (raw_enter(b, seen ? 0 : 1 + b->cancels) == -1) return -1;
        seen |= raw_reap(&b->raw, ud);
    }
    return 0;
}

/* A cancel, submitted by the next turn's enter: the poll holds the file. Not
   IOSQE_CQE_SKIP_SUCCESS, as in the module: every cancel posts once. */
static int
raw_forget(bench_t *b, uint64_t ud)
{
    struct io_uring_sqe *sqe = raw_sqe(b);

    if (sqe == NULL) return bench_fail(b, "raw_sqe", EBUSY);
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->addr = ud;
    sqe->cancel_flags = IORING_ASYNC_CANCEL_ALL;
    sqe->user_data = BENCH_INTERNAL;
    b->cancels++;
    return 0;
}

static void
raw_close(bench_t *b)
{
    munmap(b->raw.sqes, b->raw.sqes_size);
    munmap(b->raw.ring, b->raw.ring_size);
    close(b->raw.fd);
}

const method_t bench_raw = {
    .name = "raw",
    .counts_enters = 1,
    .open = raw_open,
    .add = raw_add,
    .wait = raw_wait,
    .forget = raw_forget,
    .close = raw_close,
};

#ifdef NGXFFI_LIBURING

/* liburing: the same requests, and its wait */

static int
lib_open(bench_t *b)
{
    int rc = io_uring_queue_init(BENCH_ENTRIES, &b->lib,
                                 BENCH_DEFER | IORING_SETUP_SUBMIT_ALL);

    b->setup = "defer";
    if (rc == -EINVAL) {
        b->setup = "plain";
        rc = io_uring_queue_init(BENCH_ENTRIES, &b->lib,
                                 IORING_SETUP_SUBMIT_ALL);
    }
    return rc < 0 ? bench_fail(b, "io_uring_queue_init", -rc) : 0;
}

static int
lib_add(bench_t *b, int fd, uint64_t ud)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&b->lib);

    if (sqe == NULL) return bench_fail(b, "io_uring_get_sqe", EBUSY);
    io_uring_prep_poll_multishot(sqe, fd, BENCH_EVENTS);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

static int
lib_reap(struct io_uring *ring, uint64_t ud)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    int seen = 0;

    io_uring_for_each_cqe(ring, head, cqe)
    {
        seen |= cqe->user_data == ud && cqe->res >= 0;
        n++;
    }
    io_uring_cq_advance(ring, n);
    return seen;
}

/* liburing peeks the queue itself and enters when it holds fewer than the
   completions asked for or SQEs wait. */
static int
lib_wait(bench_t *b, uint64_t ud)
{
    struct __kernel_timespec ts = {.tv_sec = 1};
    struct io_uring_cqe *cqe;
    int seen = 0;

    while (!seen) {
        int rc = io_uring_submit_and_wait_timeout(&b->lib, &cqe, 1 + b->cancels,
                                                  &ts, NULL);
        if (rc < 0 && rc != -EINTR) {
            return bench_fail(b, "io_uring_submit_and_wait_timeout", -rc);
        }
        if (io_uring_sq_ready(&b->lib) == 0) b->cancels = 0;
        seen = lib_reap(&b->lib, ud);
    }
    return 0;
}

static int
lib_forget(bench_t *b, uint64_t ud)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&b->lib);

    if (sqe == NULL) return bench_fail(b, "io_uring_get_sqe", EBUSY);
    io_uring_prep_cancel64(sqe, ud, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, BENCH_INTERNAL);
    b->cancels++;
    return 0;
}

static void
lib_close(bench_t *b)
{
    io_uring_queue_exit(&b->lib);
}

const method_t bench_liburing = {
    .name = "liburing",
    .open = lib_open,
    .add = lib_add,
    .wait = lib_wait,
    .forget = lib_forget,
    .close = lib_close,
};

#endif
