/*
 * The connection pool and the reusable queue (see ngx_connection.h).
 */

#include "ngxffi.h"

/* ngx_event_process_init: every slot free, fd -1, both events closed, read
   instance 1; the free list runs c[0] -> c[1] -> ... so c[0] is taken first.
   0, or -1 (EINVAL) for no arrays or a pool of 0 slots (the countdown would
   wrap around) or of more than NGXFFI_CONNECTIONS_MAX. */
int
ngxffi_init_connections(ngxffi_cycle_t *cy)
{
    ngx_connection_t *next = NULL;
    uintptr_t i;

    if (cy == NULL || cy->connections == NULL || cy->read_events == NULL
        || cy->write_events == NULL || cy->connection_n == 0
        || cy->connection_n > NGXFFI_CONNECTIONS_MAX)
    {
        errno = EINVAL;
        return -1;
    }
    i = cy->connection_n;
    do {
        i--;
        cy->read_events[i].closed = 1;
        cy->read_events[i].instance = 1;
        cy->write_events[i].closed = 1;
        cy->connections[i].data = next;
        cy->connections[i].read = &cy->read_events[i];
        cy->connections[i].write = &cy->write_events[i];
        cy->connections[i].fd = -1;
        cy->connections[i].is_free = 1;
        next = &cy->connections[i];
    } while (i);

    cy->free_connections = next;
    cy->free_connection_n = cy->connection_n;
    return 0;
}

/* Drop what a C handler left for Python (taken, or the connection is gone). */
void
ngxffi_stash_free(ngx_connection_t *c)
{
    if (c == NULL) return;
    free(c->stash);
    c->stash = NULL;
    c->stash_len = 0;
    c->stash_out = 0;
    c->stash_close = 0;
}

/* ngx_reusable_connection's queue: idle connections, oldest first, that
   ngx_drain_connections may close. Intrusive, as nginx's ngx_queue_t in the
   connection, so that the many idle connections cost no memory beyond their
   slot. */
static void
ngxffi_queue_unlink(ngxffi_cycle_t *cy, ngx_connection_t *c)
{
    if (!c->queued) return;
    if (c->queue_prev) {
        c->queue_prev->queue_next = c->queue_next;
    } else {
        cy->reusable_oldest = c->queue_next;
    }
    if (c->queue_next) {
        c->queue_next->queue_prev = c->queue_prev;
    } else {
        cy->reusable_newest = c->queue_prev;
    }
    c->queue_prev = c->queue_next = NULL;
    c->queued = 0;
    cy->reusable_n--;
}

/* 0, or -1 (EINVAL) for a connection that is not one of the pool's slots: the
   queue links only those (ngxffi_reusable_slots gives their indexes). */
int
ngxffi_reusable_connection(ngxffi_cycle_t *cy, ngx_connection_t *c,
                           unsigned reusable)
{
    if (cy == NULL || c == NULL || c < cy->connections
        || c >= cy->connections + cy->connection_n)
    {
        errno = EINVAL;
        return -1;
    }
    ngxffi_queue_unlink(cy, c);
    c->reusable = reusable & 1; /* the low bit: what the 1-bit field kept */
    if (!reusable) return 0;
    c->queue_prev = cy->reusable_newest;
    c->queue_next = NULL;
    if (cy->reusable_newest) {
        cy->reusable_newest->queue_next = c;
    } else {
        cy->reusable_oldest = c;
    }
    cy->reusable_newest = c;
    c->queued = 1;
    cy->reusable_n++;
    return 0;
}

/* Up to n slots of the queue, oldest first; returns how many (-1, EINVAL,
   without a cycle or, for n > 0, an array). */
intptr_t
ngxffi_reusable_slots(const ngxffi_cycle_t *cy, int32_t *out, intptr_t n)
{
    intptr_t i = 0;
    const ngx_connection_t *c;

    if (cy == NULL || (out == NULL && n > 0)) {
        errno = EINVAL;
        return -1;
    }
    for (c = cy->reusable_oldest; c != NULL && i < n; c = c->queue_next) {
        out[i++] = (int32_t) (c - cy->connections);
    }
    return i;
}

/* ngx_get_connection, without the drain and the files[] bookkeeping (done by
   the caller): pop the free list, zero the connection and both events, flip the
   instance bit on both. Returns the slot, -1 when the pool is empty, -2
   (EINVAL) for a negative fd or no cycle. */
intptr_t
ngxffi_get_connection(ngxffi_cycle_t *cy, int fd)
{
    ngx_connection_t *c;
    ngx_event_t *rev, *wev;
    unsigned instance;
    uint32_t generation;

    if (cy == NULL || fd < 0) {
        errno = EINVAL;
        return -2;
    }
    c = cy->free_connections;
    if (c == NULL) return -1;

    ngxffi_queue_unlink(cy, c); /* freed without close_connection: forget it */
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

/* ngx_free_connection: push on the free list (LIFO); fd and instance stay.
   0, or -1 (EINVAL) for a slot outside the pool or one already free: a second
   push would make a cycle in the list and hand the slot out twice. */
int
ngxffi_free_connection(ngxffi_cycle_t *cy, uintptr_t slot)
{
    ngx_connection_t *c;

    if (cy == NULL || slot >= cy->connection_n || cy->connections[slot].is_free)
    {
        errno = EINVAL;
        return -1;
    }
    c = &cy->connections[slot];
    ngxffi_stash_free(c);
    c->is_free = 1;
    c->data = cy->free_connections;
    cy->free_connections = c;
    cy->free_connection_n++;
    return 0;
}
