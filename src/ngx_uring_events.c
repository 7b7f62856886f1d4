/*
 * The io_uring module's registrations and its loop turn (see ngx_uring.h).
 *
 * What a connection wants is recorded by ngxffi_uring_ctl without a syscall
 * and written as a poll request just before the turn's one io_uring_enter;
 * cancels are written at once, so that the queue's order puts them before
 * any later request for the same slot. A completion's user_data is only ever
 * decoded by ngxffi_tag_slot, arithmetic that never dereferences it.
 *
 * Every request of ours on a slot, whichever connection it was for, ends
 * with one completion without IORING_CQE_F_MORE: a oneshot's event, a
 * multishot ended by the kernel (a full completion queue ends it), a
 * failure, or the ECANCELED of a cancel. reg.pending counts the requests
 * not yet ended, of any connection the slot had, so that a registration is
 * re-armed only when none is left: a re-arm never doubles a request still
 * armed. (A mask change's cancel and its new request do share a tag for a
 * while; the cancel, earlier in the queue, ends only the old one.)
 */

#include "ngxffi.h"

/* poll's bits are epoll's here (x86, arm, riscv, ...); the completions'
   res holds the former, the decision reads the latter */
_Static_assert(POLLIN == EPOLLIN && POLLOUT == EPOLLOUT && POLLPRI == EPOLLPRI
                   && POLLERR == EPOLLERR && POLLHUP == EPOLLHUP
                   && POLLRDHUP == EPOLLRDHUP,
               "poll and epoll event bits differ on this architecture");

#define NGXFFI_URING_EVENTS (EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLRDHUP)

static void
ngxffi_reg_dirty(ngxffi_uring_t *u, uintptr_t slot)
{
    if (!u->reg[slot].dirty) {
        u->reg[slot].dirty = 1;
        u->dirty[u->dirty_n++] = (uint32_t) slot;
    }
}

static int
ngxffi_reg_cancel(ngxffi_uring_t *u, ngxffi_uring_reg_t *r)
{
    struct io_uring_sqe *sqe;

    if (!r->live) return 0;
    sqe = ngxffi_uring_sqe(u);
    if (sqe == NULL) return -1;
    /* ALL: an older request with the same tag may not have ended yet */
    ngxffi_uring_cancel(u, sqe, r->tag, IORING_ASYNC_CANCEL_ALL);
    r->live = 0;
    return 0;
}

static void
ngxffi_reg_forget(ngxffi_uring_reg_t *r)
{
    r->added = 0;
    r->failed = 0;
    r->want = 0;
}

int
ngxffi_uring_ctl(ngxffi_cycle_t *cy, int op, ngx_connection_t *c,
                 uint32_t events, unsigned instance)
{
    ngxffi_uring_t *u = cy == NULL ? NULL : cy->uring;
    intptr_t slot = c == NULL || u == NULL
                        ? -1
                        : ngxffi_tag_slot(cy, (uint64_t) (uintptr_t) c);
    ngxffi_uring_reg_t *r;
    uint64_t tag;

    if (slot < 0 || (uintptr_t) slot >= u->reg_n) {
        errno = EINVAL;
        return -1;
    }
    r = &u->reg[slot];
    tag = ngxffi_tag(cy, c, instance);
    switch (op) {
        case EPOLL_CTL_ADD:
            if (r->added) {
                if (r->wtag == tag && r->fd == c->fd) {
                    errno = EEXIST;
                    return -1;
                }
                /* an earlier connection in this slot, freed without a close
                   (epoll would see another fd): its request goes */
                if (ngxffi_reg_cancel(u, r) == -1) return -1;
            }
            break;
        case EPOLL_CTL_MOD:
            if (!r->added) {
                errno = ENOENT;
                return -1;
            }
            break;
        case EPOLL_CTL_DEL:
            if (!r->added) {
                errno = ENOENT;
                return -1;
            }
            /* fall through */
        case NGXFFI_URING_CTL_CLOSE:
            if (ngxffi_reg_cancel(u, r) == -1) return -1;
            ngxffi_reg_forget(r);
            return 0;
        default:
            errno = EINVAL;
            return -1;
    }
    r->added = 1;
    r->failed = 0;
    r->want = events;
    r->wtag = tag;
    r->fd = c->fd;
    ngxffi_reg_dirty(u, (uintptr_t) slot);
    return 0;
}

static void
ngxffi_prep_poll(struct io_uring_sqe *sqe, int fd, uint32_t events,
                 uint64_t user_data)
{
    uint32_t mask = events & ~(uint32_t) (EPOLLET | EPOLLONESHOT);

#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    mask = mask << 16 | mask >> 16; /* the kernel swaps the half-words */
#endif
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = fd;
    sqe->poll32_events = mask;
    /* multishot is edge-triggered (the kernel adds EPOLLET); oneshot,
       re-armed before each wait, is level-triggered: Linux refuses
       IORING_POLL_ADD_LEVEL. EPOLLONESHOT is a oneshot not re-armed. */
    sqe->len = (events & EPOLLET) && !(events & EPOLLONESHOT)
                   ? IORING_POLL_ADD_MULTI
                   : 0;
    sqe->user_data = user_data;
}

/* The request a registration needs, if it has none or a different one. */
static int
ngxffi_reg_arm(ngxffi_uring_t *u, ngxffi_uring_reg_t *r)
{
    struct io_uring_sqe *sqe;

    if (!r->added || r->failed) return 0;
    if (r->live && (r->armed != r->want || r->tag != r->wtag)) {
        /* a new mask: a cancel and a new request, which re-reports what is
           ready (IORING_POLL_UPDATE_EVENTS can fail with EALREADY midway) */
        if (ngxffi_reg_cancel(u, r) == -1) return -1;
    }
    if (r->live || !(r->want & NGXFFI_URING_EVENTS)) return 0;
    sqe = ngxffi_uring_sqe(u);
    if (sqe == NULL) return -1;
    ngxffi_prep_poll(sqe, r->fd, r->want, r->wtag);
    r->live = 1;
    r->armed = r->want;
    r->tag = r->wtag;
    r->pending++;
    u->stats.polls++;
    return 0;
}

static int
ngxffi_uring_flush(ngxffi_uring_t *u)
{
    uintptr_t i;

    for (i = 0; i < u->dirty_n; i++) {
        ngxffi_uring_reg_t *r = &u->reg[u->dirty[i]];
        if (ngxffi_reg_arm(u, r) == -1) {
            /* keep the rest for the next turn */
            memmove(u->dirty, u->dirty + i,
                    (u->dirty_n - i) * sizeof(*u->dirty));
            u->dirty_n -= i;
            return -1;
        }
        r->dirty = 0;
    }
    u->dirty_n = 0;
    return 0;
}

static void
ngxffi_uring_error(ngxffi_uring_t *u, int fd, int32_t res)
{
    u->stats.errors++;
    if (u->error_n < NGXFFI_URING_ERRORS_MAX) {
        u->error_fd[u->error_n] = fd;
        u->error_res[u->error_n++] = res;
    }
}

/* A request on this slot ended: re-arm the registration when none is left. */
static void
ngxffi_reg_ended(ngxffi_uring_t *u, uintptr_t slot)
{
    ngxffi_uring_reg_t *r = &u->reg[slot];

    if (r->pending == 0) {
        u->stats.unexpected++; /* a request we did not make */
        return;
    }
    if (--r->pending || !r->live) return;
    r->live = 0;
    /* EPOLLONESHOT: disarmed until a MOD, as epoll leaves it */
    if (r->added && !r->failed && !(r->want & EPOLLONESHOT)) {
        ngxffi_reg_dirty(u, slot);
        u->stats.rearms++;
    }
}

/* One completion into an event record for the decision, or 0 when it is
   not an event (a cancel's, or an ended request's without readiness). */
static int
ngxffi_uring_convert(ngxffi_cycle_t *cy, ngxffi_uring_t *u,
                     const struct io_uring_cqe *cqe, struct epoll_event *ev)
{
    uint64_t ud = cqe->user_data;
    int32_t res = cqe->res;
    intptr_t slot;
    ngxffi_uring_reg_t *r;
    int deliver = res >= 0;

    if (ud == NGXFFI_URING_INTERNAL) {
        if (res < 0) ngxffi_uring_error(u, -1, res);
        return 0; /* a cancel's: how many requests it found */
    }
    slot = ngxffi_tag_slot(cy, ud);
    if (slot < 0 || (uintptr_t) slot >= u->reg_n) {
        /* not ours: the decision counts it, Python logs it */
        ev->events = res >= 0 ? (uint32_t) res : EPOLLERR;
        ev->data.u64 = ud;
        return 1;
    }
    r = &u->reg[slot];
    if (res < 0 && res != -ECANCELED) {
        ngxffi_uring_error(u, r->fd, res);
        if (r->live && r->tag == ud) {
            /* the connection's own request: its handler meets the error in
               its read or write, as after epoll's EPOLLERR */
            r->failed = 1;
            deliver = 1;
        }
    }
    if (!(cqe->flags & IORING_CQE_F_MORE))
        ngxffi_reg_ended(u, (uintptr_t) slot);
    if (!deliver) return 0;
    ev->events = res >= 0 ? (uint32_t) res : EPOLLERR | EPOLLHUP;
    ev->data.u64 = ud;
    return 1;
}

int
ngxffi_uring_reap(ngxffi_cycle_t *cy, ngxffi_uring_t *u, int n, int *other)
{
    unsigned head = *u->cq_head;
    unsigned tail = __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE);

    if (tail - head > u->cq_entries) {
        u->stats.unexpected++; /* the kernel never does this */
        tail = head + u->cq_entries;
    }
    for (; head != tail && n < cy->nevents; head++) {
        struct io_uring_cqe cqe = u->cqes[head & u->cq_mask]; /* read once */
        u->stats.cqes++;
        if (ngxffi_uring_convert(cy, u, &cqe, &cy->event_list[n])) {
            n++;
        } else {
            (*other)++;
        }
    }
    __atomic_store_n(u->cq_head, head, __ATOMIC_RELEASE);
    return n;
}

static int64_t
ngxffi_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Since Linux 6.13 an enter on a DEFER_TASKRUN ring runs at most
   max(20, min_complete) of the deferred completions it finds ("io_uring:
   limit local tw done"), and leaves the rest for the next enter: a turn
   would then see 20 events however many are ready. */
#define NGXFFI_URING_TW_BUDGET 20

/* Submit and wait up to timeout_ns (< 0: forever; 0: do not block) for
   events. When it submitted something, io_uring_enter hides how its wait
   ended (it returns the count submitted): a wait that brings only the
   module's own completions goes on for the time left, one that brings
   nothing before the deadline was interrupted (EINTR). Registrations that
   such completions re-arm are submitted before waiting again. */
static int
ngxffi_uring_wait(ngxffi_cycle_t *cy, ngxffi_uring_t *u, int64_t timeout_ns,
                  int n)
{
    int64_t deadline = timeout_ns > 0 ? ngxffi_now_ns() + timeout_ns : 0;

    for (;;) {
        int other = 0, r;
        unsigned room = (unsigned) (cy->nevents - n), min, before;

        if (ngxffi_uring_flush(u) == -1) return -1;
        /* A wait that may block waits for one completion more than the
           cancels queued will post (each posts once). One that may not asks
           for room for a whole batch, which is also how many deferred
           completions the kernel then runs (it returns ETIME). */
        min = timeout_ns == 0 ? room : 1 + u->cancels_queued;
        before = __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE);
        r = ngxffi_uring_enter(u, min, timeout_ns);
        if (r == -1 && errno != ETIME) return -1;
        if (timeout_ns != 0 && room > NGXFFI_URING_TW_BUDGET
            && __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE) - before
                   >= NGXFFI_URING_TW_BUDGET
            && ngxffi_uring_enter(u, room, 0) == -1 && errno != ETIME)
        {
            return -1; /* the kernel may have stopped at its budget: the
                          rest, without waiting */
        }
        n = ngxffi_uring_reap(cy, u, n, &other);
        if (n > 0 || timeout_ns == 0 || r == -1) return n;
        if (timeout_ns > 0) {
            timeout_ns = deadline - ngxffi_now_ns();
            if (timeout_ns <= 0) return 0;
        }
        if (other == 0) {
            errno = EINTR;
            return -1;
        }
    }
}

int
ngxffi_uring_process(ngxffi_cycle_t *cy, int timer, int post, int trace)
{
    ngxffi_uring_t *u = cy == NULL ? NULL : cy->uring;
    uint64_t invalid;
    int k, n, other = 0;

    if (u == NULL || cy->nevents <= 0 || cy->nevents > NGXFFI_EVENTS_MAX
        || cy->event_list == NULL)
    {
        errno = EINVAL;
        return -1;
    }
    if (ngxffi_uring_foreign(u)) return -1; /* the queues are shared */
    invalid = cy->invalid_events;
    u->error_n = 0;
    u->stats.turns++;
    cy->batch_n = 0;
    /* what is left first: it may end requests, whose re-arms go with this
       turn's submissions */
    n = ngxffi_uring_reap(cy, u, 0, &other);
    if (ngxffi_uring_flush(u) == -1) return -1;
    if (n == 0 || u->to_submit
        || (__atomic_load_n(u->sq_flags, __ATOMIC_RELAXED)
            & IORING_SQ_CQ_OVERFLOW))
    {
        n = ngxffi_uring_wait(cy, u,
                              n           ? 0
                              : timer < 0 ? -1
                                          : (int64_t) timer * 1000000,
                              n);
        if (n < 0) return -1;
    }
    u->stats.readiness += (uint64_t) n;
    cy->batch_n = n;
    k = n ? ngxffi_epoll_decide(cy, 0, post, trace) : 0;
    if (k < 0) return k;
    if (cy->invalid_events != invalid) k |= NGXFFI_BATCH_INVALID;
    return u->error_n ? k | NGXFFI_BATCH_ERRORS : k;
}

int
ngxffi_uring_errors(const ngxffi_cycle_t *cy, int *fds, int *errs, int max)
{
    const ngxffi_uring_t *u = cy == NULL ? NULL : cy->uring;
    int i;

    if (u == NULL || fds == NULL || errs == NULL || max < 0) {
        errno = EINVAL;
        return -1;
    }
    for (i = 0; i < u->error_n && i < max; i++) {
        fds[i] = u->error_fd[i];
        errs[i] = u->error_res[i];
    }
    return i;
}

int
ngxffi_uring_stats(const ngxffi_cycle_t *cy, ngxffi_uring_stats_t *out)
{
    if (cy == NULL || cy->uring == NULL || out == NULL) {
        errno = EINVAL;
        return -1;
    }
    *out = cy->uring->stats;
    return 0;
}

int
ngxffi_uring_poll_raw(ngxffi_cycle_t *cy, int fd, uint32_t events,
                      uint64_t user_data)
{
    ngxffi_uring_t *u = cy == NULL ? NULL : cy->uring;
    struct io_uring_sqe *sqe;
    intptr_t slot;

    if (u == NULL) {
        errno = EINVAL;
        return -1;
    }
    sqe = ngxffi_uring_sqe(u);
    if (sqe == NULL) return -1;
    ngxffi_prep_poll(sqe, fd, events, user_data);
    slot = ngxffi_tag_slot(cy, user_data);
    if (slot >= 0 && (uintptr_t) slot < u->reg_n) u->reg[slot].pending++;
    return 0;
}
