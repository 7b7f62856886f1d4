/*
 * libFuzzer target: the io_uring module's registrations and its conversion
 * of completions (ngxffi_uring_ctl, ngxffi_uring_reap), then the batch
 * decision, on arbitrary user_data, res and flags, over a small pool and a
 * ring made of plain memory (no kernel: the submission queue is never
 * submitted, and a full one fails the ctl cleanly).
 *
 * Input: a header byte (pool size 1..8, strong tags, notify, post, trace),
 * then per connection one byte (an op: none, ADD edge or level, MOD, DEL,
 * CLOSE, closed and freed, then whether a poll request of its is armed),
 * then completions of 17 bytes each: a selector byte, res (4 bytes), flags
 * (4), user_data (8). An odd selector makes user_data the tag of a
 * connection of the pool XOR the given value's low byte, or with bit 6 the
 * module's own NGXFFI_URING_INTERNAL.
 *
 * Checks: the conversion writes at most nevents records, each either not
 * ours (decided invalid, counted once) or a tag of the pool; a registration
 * with a live request always has one pending; the dirty list has each slot
 * once; the decision names only slots of the pool; ASan and UBSan stay clean.
 */

#include "fuzz_pool.h"

#define EVENT_MAX 8
#define CQ_N      32
#define SQ_N      8

static void
registrations(ngxffi_cycle_t *cy, ngx_connection_t *connections, unsigned n,
              const uint8_t **data, size_t *size)
{
    static const uint32_t masks[] = {EPOLLIN | EPOLLRDHUP | EPOLLET, EPOLLIN,
                                     EPOLLIN | EPOLLOUT | EPOLLET,
                                     EPOLLOUT | EPOLLET};
    unsigned i;

    for (i = 0; i < n; i++) {
        unsigned b = (unsigned) fuzz_take(data, size, 1);
        ngx_connection_t *c = &connections[i];
        uint32_t mask = masks[(b >> 4) & 3];

        switch (b & 7) {
            case 1:
                ngxffi_uring_ctl(cy, EPOLL_CTL_ADD, c, mask, c->read->instance);
                break;
            case 2:
                ngxffi_uring_ctl(cy, EPOLL_CTL_ADD, c, mask, c->read->instance);
                ngxffi_uring_ctl(cy, EPOLL_CTL_MOD, c, mask ^ EPOLLOUT,
                                 c->read->instance);
                break;
            case 3:
                ngxffi_uring_ctl(cy, EPOLL_CTL_ADD, c, mask, c->read->instance);
                ngxffi_uring_ctl(cy, EPOLL_CTL_DEL, c, 0, 0);
                break;
            case 4:
                ngxffi_uring_ctl(cy, NGXFFI_URING_CTL_CLOSE, c, 0, 0);
                break;
            case 5: /* closed and freed, its request possibly still armed */
                ngxffi_uring_ctl(cy, EPOLL_CTL_ADD, c, mask, c->read->instance);
                ngxffi_uring_ctl(cy, NGXFFI_URING_CTL_CLOSE, c, 0, 0);
                c->fd = -1;
                ngxffi_free_connection(cy, i);
                break;
            default:
                break;
        }
        c->read->active = (b >> 3) & 1;
        c->write->active = (b >> 6) & 1;
        if (b & 0x80) { /* as if flushed: its request armed */
            ngxffi_uring_reg_t *r = &cy->uring->reg[i];
            if (r->added && !r->live) {
                r->live = 1;
                r->tag = r->wtag;
                r->armed = r->want;
                r->pending++;
            }
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_pool_t pool;
    ngx_connection_t *connections = pool.connections;
    struct epoll_event list[EVENT_MAX];
    int32_t out[2 * EVENT_MAX], out_half[2 * EVENT_MAX];
    uint8_t verdicts[2 * EVENT_MAX];
    ngxffi_uring_reg_t reg[FUZZ_POOL_MAX + 1];
    uint32_t dirty[FUZZ_POOL_MAX + 1];
    struct io_uring_sqe sqes[SQ_N];
    struct io_uring_cqe cqes[CQ_N];
    unsigned sq_head = 0, sq_tail = 0, sq_flags = 0, sq_array[SQ_N];
    unsigned cq_head = 0, cq_tail = 0;
    unsigned char seen[FUZZ_POOL_MAX + 1];
    ngxffi_uring_t u;
    unsigned header, i, n;
    int k, j, post, trace, other = 0;

    memset(&u, 0, sizeof(u));
    memset(reg, 0, sizeof(reg));
    memset(seen, 0, sizeof(seen));

    header = (unsigned) fuzz_take(&data, &size, 1);
    fuzz_pool(&pool, header);
    n = (unsigned) pool.cy.connection_n;
    post = (header >> 5) & 1;
    trace = (header >> 6) & 1;

    /* the ring, in memory: fd -1, so a full queue's enter fails (EBADF) */
    u.fd = -1;
    u.sqes = sqes;
    u.sq_head = &sq_head;
    u.sq_tail = &sq_tail;
    u.sq_flags = &sq_flags;
    u.sq_array = sq_array;
    u.sq_mask = SQ_N - 1;
    u.sq_entries = SQ_N;
    u.cq_head = &cq_head;
    u.cq_tail = &cq_tail;
    u.cq_mask = CQ_N - 1;
    u.cq_entries = CQ_N;
    u.cqes = cqes;
    u.reg = reg;
    u.reg_n = n + 1;
    u.dirty = dirty;
    pool.cy.uring = &u;
    registrations(&pool.cy, connections, n, &data, &size);

    for (k = 0; size > 0 && k < CQ_N; k++) {
        unsigned sel = (unsigned) fuzz_take(&data, &size, 1);
        struct io_uring_cqe *cqe = &cqes[k];

        cqe->res = (int32_t) (uint32_t) fuzz_take(&data, &size, 4);
        cqe->flags = (uint32_t) fuzz_take(&data, &size, 4);
        cqe->user_data = fuzz_take(&data, &size, 8);
        if (sel & 0x40) {
            cqe->user_data = NGXFFI_URING_INTERNAL;
        } else if (sel & 1) {
            cqe->user_data = ngxffi_tag(&pool.cy, &connections[(sel >> 1) % n],
                                        (sel >> 5) & 1)
                             ^ (cqe->user_data & 0xff);
        }
    }
    /* a corrupt tail too, sometimes: more than the queue holds */
    cq_tail = (unsigned) k + (header & 0x80 ? 1000u : 0u);

    pool.cy.event_list = list;
    pool.cy.nevents = EVENT_MAX;
    pool.cy.out = out;
    pool.cy.out_half = out_half;
    pool.cy.verdicts = verdicts;
    pool.cy.batch_n = ngxffi_uring_reap(&pool.cy, &u, 0, &other);
    if (pool.cy.batch_n < 0 || pool.cy.batch_n > EVENT_MAX) abort();
    if (cq_head - 0 > CQ_N) abort();

    for (i = 0; i < u.reg_n; i++) {
        if (reg[i].live && reg[i].pending == 0) abort();
    }
    if (u.dirty_n > u.reg_n) abort();
    for (i = 0; i < u.dirty_n; i++) {
        if (dirty[i] >= u.reg_n || seen[dirty[i]]++ || !reg[dirty[i]].dirty) {
            abort();
        }
    }

    j = ngxffi_epoll_decide(&pool.cy, 0, post, trace);
    if (j < 0 || j > 2 * pool.cy.batch_n) abort();
    for (k = 0; k < j; k++) {
        int32_t code = out[k] & ~(int32_t) NGXFFI_ACCEPT_QUEUE;
        intptr_t slot =
            ngxffi_tag_slot(&pool.cy, list[out_half[k] / 2].data.u64);
        if (slot == -1 || code != (int32_t) (slot * 2 + (out_half[k] & 1))) {
            abort();
        }
    }
    return 0;
}
