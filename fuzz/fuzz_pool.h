/*
 * For the libFuzzer targets of the event core: the input read a few bytes at
 * a time, and a small pool of connections, with or without strong tags and
 * the notify connection, as a cycle has them.
 */

#ifndef FUZZ_POOL_H_INCLUDED
#define FUZZ_POOL_H_INCLUDED

#include "ngxffi.h"

#define FUZZ_POOL_MAX 8

/* The next n bytes of the input, little-endian (zeros past its end). */
static inline uint64_t
fuzz_take(const uint8_t **data, size_t *size, size_t n)
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; i<n && * size> 0; i++, (*data)++, (*size)--) {
        v |= (uint64_t) * *data << (8 * i);
    }
    return v;
}

typedef struct {
    ngxffi_cycle_t cy;
    ngx_connection_t connections[FUZZ_POOL_MAX], notify;
    ngx_event_t reads[FUZZ_POOL_MAX], writes[FUZZ_POOL_MAX], nrev, nwev;
} fuzz_pool_t;

/* A pool of 1 + (header & 7) connections, every one taken (fds 100 on);
   header bit 3: strong tags; bit 4: the notify connection (fd 3). */
static inline void
fuzz_pool(fuzz_pool_t *p, unsigned header)
{
    unsigned i, n = 1 + (header & 7);

    memset(p, 0, sizeof(*p));
    p->cy.connections = p->connections;
    p->cy.read_events = p->reads;
    p->cy.write_events = p->writes;
    p->cy.connection_n = n;
    p->cy.strong_tags = (header >> 3) & 1;
    if (header & 0x10) {
        p->notify.read = &p->nrev;
        p->notify.write = &p->nwev;
        p->nrev.data = p->nwev.data = &p->notify;
        p->nwev.write = 1;
        p->nrev.active = 1;
        p->notify.fd = 3;
        p->cy.notify = &p->notify;
    }
    ngxffi_init_connections(&p->cy);
    for (i = 0; i < n; i++) {
        if (ngxffi_get_connection(&p->cy, (int) (100 + i)) != (intptr_t) i) {
            abort();
        }
    }
}

#endif /* FUZZ_POOL_H_INCLUDED */
