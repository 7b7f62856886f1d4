/*
 * libFuzzer target: tag decoding, ngxffi_tag_slot, and the batch decision,
 * ngxffi_epoll_decide, on arbitrary data.u64 and events values over a small
 * pool.
 *
 * Input: a header byte (pool size 1..8, strong tags, notify, post, trace,
 * and whether a byte follows that chooses the half-event the decision starts
 * from: 0 as after epoll_wait, a later one as after a handler that changed
 * the pool, or one outside the batch, negative too, which must be refused),
 * then per connection one byte (taken or free, read/write active), then events
 * of 13 bytes each: a selector byte, events (4 bytes), data.u64 (8 bytes). An
 * odd selector makes data the tag of a connection of the pool XOR the given
 * value's low byte, so that valid and nearly valid tags are both common.
 *
 * Checks: a tag decodes to a slot of the pool (or the notify slot) only when
 * its address is exactly that connection's; every tag ngxffi_tag makes decodes
 * back to its slot; the decision never calls a handler for an event whose tag
 * is not ours, names only slots of the pool, counts each invalid event once,
 * and with trace marks it NGXFFI_INVALID.
 */

#include "fuzz_pool.h"

#define EVENT_MAX 16

static int
decodes_to(const ngxffi_cycle_t *cy, uint64_t tag, intptr_t slot)
{
    uint64_t mask = cy->strong_tags
                        ? (((uint64_t) 1 << NGXFFI_TAG_ADDRESS_BITS) - 2)
                        : ~(uint64_t) 1;
    uintptr_t addr = (uintptr_t) (tag & mask);

    if (slot == (intptr_t) cy->connection_n) {
        return cy->notify != NULL && addr == (uintptr_t) cy->notify;
    }
    return slot >= 0 && slot < (intptr_t) cy->connection_n
           && addr == (uintptr_t) &cy->connections[slot];
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_pool_t pool;
    ngx_connection_t *connections = pool.connections;
    struct epoll_event list[EVENT_MAX];
    int32_t out[2 * EVENT_MAX], out_half[2 * EVENT_MAX];
    uint8_t verdicts[2 * EVENT_MAX];
    unsigned header, i, n, inst;
    int k, j, post, trace, from = 0, invalid;
    uint64_t before;

    header = (unsigned) fuzz_take(&data, &size, 1);
    fuzz_pool(&pool, header);
    n = (unsigned) pool.cy.connection_n;
    post = (header >> 5) & 1;
    trace = (header >> 6) & 1;
    if (header & 0x80) from = (int) (int8_t) fuzz_take(&data, &size, 1);
    for (i = 0; i < n; i++) {
        unsigned b = (unsigned) fuzz_take(&data, &size, 1);

        connections[i].read->active = b & 1;
        connections[i].write->active = (b >> 1) & 1;
        connections[i].read->accept = (b >> 2) & 1;
        if (b & 8) { /* closed: fd -1, back on the free list */
            connections[i].fd = -1;
            ngxffi_free_connection(&pool.cy, i);
        }
        for (inst = 0; inst < 2; inst++) {
            intptr_t slot = ngxffi_tag_slot(
                &pool.cy, ngxffi_tag(&pool.cy, &connections[i], inst));
            if (slot != (intptr_t) i) abort();
        }
    }

    pool.cy.event_list = list;
    pool.cy.nevents = EVENT_MAX;
    pool.cy.out = out;
    pool.cy.out_half = out_half;
    pool.cy.verdicts = verdicts;
    memset(verdicts, 0xff, sizeof(verdicts));

    for (k = 0; k < EVENT_MAX && size > 0; k++) {
        unsigned sel = (unsigned) fuzz_take(&data, &size, 1);
        uint32_t events = (uint32_t) fuzz_take(&data, &size, 4);
        uint64_t value = fuzz_take(&data, &size, 8);
        intptr_t slot;

        if (sel & 1) {
            value = ngxffi_tag(&pool.cy, &connections[(sel >> 1) % n],
                               (sel >> 5) & 1)
                    ^ (value & 0xff);
        }
        list[k].events = events;
        list[k].data.u64 = value;
        slot = ngxffi_tag_slot(&pool.cy, value);
        if (slot != -1 && !decodes_to(&pool.cy, value, slot)) abort();
    }
    pool.cy.batch_n = k;

    before = pool.cy.invalid_events;
    j = ngxffi_epoll_decide(&pool.cy, from, post, trace);
    if (from < 0 || from > 2 * pool.cy.batch_n)
    { /* outside the batch: refused */
        if (j != -1 || pool.cy.invalid_events != before) abort();
        return 0;
    }
    if (j < 0 || j > 2 * pool.cy.batch_n) abort();

    invalid = 0;
    for (k = 0; k < pool.cy.batch_n; k++) {
        if (ngxffi_tag_slot(&pool.cy, list[k].data.u64) == -1) {
            invalid++;
            if (trace
                && ((2 * k >= from && verdicts[2 * k] != NGXFFI_INVALID)
                    || (2 * k + 1 >= from
                        && verdicts[2 * k + 1] != NGXFFI_INVALID)))
            {
                abort();
            }
        }
    }
    if (pool.cy.invalid_events - before != (uint64_t) (from == 0 ? invalid : 0))
    {
        abort();
    }

    for (k = 0; k < j; k++) {
        int h = out_half[k];
        int32_t code = out[k] & ~(int32_t) NGXFFI_ACCEPT_QUEUE;
        intptr_t slot;

        if (h < from || h >= 2 * pool.cy.batch_n
            || (k > 0 && h <= out_half[k - 1])) {
            abort();
        }
        slot = ngxffi_tag_slot(&pool.cy, list[h / 2].data.u64);
        if (slot == -1 || code != (int32_t) (slot * 2 + (h & 1))) abort();
        if (trace && verdicts[h] != (post ? NGXFFI_POSTED : NGXFFI_DISPATCHED))
        {
            abort();
        }
    }
    return 0;
}
