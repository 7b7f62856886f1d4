/*
 * The epoll module's hot paths (see ngx_epoll.h).
 */

#include "ngxffi.h"

#include <limits.h> /* INT_MAX */

/* (uintptr_t) c | instance, as ngx_epoll_add_event writes it into data.ptr;
   strong tags add the connection's generation in the bits above the user
   address space. */
uint64_t
ngxffi_tag(const ngxffi_cycle_t *cy, const ngx_connection_t *c,
           unsigned instance)
{
    uint64_t tag = (uint64_t) (uintptr_t) c | (instance & 1);

    if (cy == NULL || c == NULL) return 0; /* names no connection */
    if (cy->strong_tags) {
        tag |= (uint64_t) (c->generation & 0xffff) << NGXFFI_TAG_ADDRESS_BITS;
    }
    return tag;
}

/* 1 when strong tags can work for this cycle: the generation goes above bit
   NGXFFI_TAG_ADDRESS_BITS, so every slot's address (the last one's end) and
   the notify connection's must lie below it. Pointer tagging (top-byte
   ignore, LAM) or 5-level paging can hand out higher addresses, and every
   event would then be dropped as not ours. Always 1 without strong tags. */
int
ngxffi_tag_fits(const ngxffi_cycle_t *cy)
{
    uint64_t limit = (uint64_t) 1 << NGXFFI_TAG_ADDRESS_BITS;
    uint64_t base = (uint64_t) (uintptr_t) cy->connections;
    uint64_t notify;

    if (cy == NULL) return 0;
    notify = (uint64_t) (uintptr_t) cy->notify;
    if (!cy->strong_tags) return 1;
    if (base >= limit
        || cy->connection_n > (limit - base) / sizeof(ngx_connection_t))
    {
        return 0;
    }
    return notify < limit - sizeof(ngx_connection_t);
}

/* The connection a tag names, or NULL: the address must be one of this cycle's
   slots (exactly, not inside one) or its static notify connection. This is what
   nginx does not check; a NULL here means the value is never dereferenced. */
static ngx_connection_t *
ngxffi_decode(const ngxffi_cycle_t *cy, uint64_t tag, intptr_t *slot)
{
    uint64_t mask = cy->strong_tags
                        ? (((uint64_t) 1 << NGXFFI_TAG_ADDRESS_BITS) - 2)
                        : ~(uint64_t) 1;
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

intptr_t
ngxffi_tag_slot(const ngxffi_cycle_t *cy, uint64_t tag)
{
    intptr_t slot = -1;
    if (cy == NULL) return -1;
    ngxffi_decode(cy, tag, &slot);
    return slot;
}

int
ngxffi_epoll_ctl(const ngxffi_cycle_t *cy, int ep, int op, ngx_connection_t *c,
                 uint32_t events, unsigned instance)
{
    struct epoll_event ee;

    if (cy == NULL || c == NULL) {
        errno = EINVAL;
        return -1;
    }
    ee.events = events;
    ee.data.u64 = (op == EPOLL_CTL_DEL) ? 0 : ngxffi_tag(cy, c, instance);
    return ngxffi_sys_epoll_ctl(ep, op, c->fd, &ee);
}

/* The stale test of ngx_epoll_process_events: closed (fd -1) or closed and
   reused (instance flipped; with strong tags, also a different generation). */
static int
ngxffi_stale(const ngxffi_cycle_t *cy, const ngx_connection_t *c,
             const ngx_event_t *ev, unsigned instance, uint64_t tag)
{
    if (c->fd == -1) return NGXFFI_STALE_CLOSED;
    if (ev->instance != instance) return NGXFFI_STALE_REUSED;
    if (cy->strong_tags
        && (c->generation & 0xffff)
               != (uint32_t) (tag >> NGXFFI_TAG_ADDRESS_BITS))
    {
        return NGXFFI_STALE_REUSED;
    }
    return 0;
}

/* The body of ngx_epoll_process_events' loop for half-events from..2n-1
   (half-event h is the read side of list[h/2] when even, its write side when
   odd). Marks events ready as nginx does and, instead of calling handlers,
   appends slot*2+write to cy->out (with NGXFFI_ACCEPT_QUEUE for an accept event
   when posting) and h to cy->out_half. The epoll module calls the handlers, and
   calls this again from the next half-event after one that changed the pool
   (ngxffi/event/modules/epoll.py, _dispatch). With trace, cy->verdicts[h] gets
   the verdict of every half-event. -1 (EINVAL) for a from outside 0..2n, a
   batch larger than the event list, or arrays missing. */
int
ngxffi_epoll_decide(ngxffi_cycle_t *cy, int from, int post, int trace)
{
    const struct epoll_event *list;
    int32_t *out, *out_half;
    uint8_t *verdicts;
    int h, k = 0, n;

    if (cy == NULL || cy->batch_n < 0 || cy->batch_n > cy->nevents
        || cy->nevents > NGXFFI_EVENTS_MAX || from < 0 || from > 2 * cy->batch_n
        || (cy->batch_n
            && (cy->event_list == NULL || cy->out == NULL
                || cy->out_half == NULL || (trace && cy->verdicts == NULL))))
    {
        errno = EINVAL;
        return -1;
    }
    list = cy->event_list;
    out = cy->out;
    out_half = cy->out_half;
    verdicts = trace ? cy->verdicts : NULL;
    n = cy->batch_n;

    for (h = from; h < 2 * n; h++) {
        int i = h >> 1, write = h & 1, verdict;
        uint64_t tag = list[i].data.u64;
        uint32_t revents = list[i].events;
        unsigned instance = (unsigned) (tag & 1);
        intptr_t slot;
        ngx_connection_t *c = ngxffi_decode(cy, tag, &slot);
        ngx_event_t *ev;

        if (c == NULL) {
            if (!write && from == 0) cy->invalid_events++; /* once per batch */
            if (verdicts) verdicts[h] = NGXFFI_INVALID;
            continue;
        }

        if (revents & (EPOLLERR | EPOLLHUP)) {
            revents |= EPOLLIN | EPOLLOUT;
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
                && !(revents & (EPOLLRDHUP | EPOLLERR | EPOLLHUP))
                && ev->c_handler(cy, ev))
            {
                continue; /* done in C: no Python call for this half-event */
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

/* epoll_pwait2's number where the headers predate it (Linux 5.11): since
   5.1 a new syscall has one number on every architecture but alpha. */
#if !defined(SYS_epoll_pwait2) && !defined(__alpha__)
#define SYS_epoll_pwait2 441
#endif

/* The kernel's timespec (struct __kernel_timespec): two 64-bit fields on
   every architecture, where a libc's struct timespec may have a 32-bit
   time_t. */
typedef struct {
    int64_t tv_sec;
    int64_t tv_nsec;
} ngxffi_kernel_timespec_t;

/* Whether waits go through epoll_pwait2: -1 until the first wait or
   ngxffi_epoll_pwait2 finds out, then 0 or 1. */
static int ngxffi_pwait2 = -1;

static int
ngxffi_pwait2_raw(int ep, struct epoll_event *list, int maxevents,
                  int64_t timeout_ns)
{
#ifdef SYS_epoll_pwait2
    ngxffi_kernel_timespec_t ts, *t = NULL;

    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        t = &ts;
    }
    return (int) syscall(SYS_epoll_pwait2, ep, list, maxevents, t, NULL,
                         (size_t) 0);
#else
    (void) ep, (void) list, (void) maxevents, (void) timeout_ns;
    errno = ENOSYS;
    return -1;
#endif
}

/* With no events to take and a bad fd, epoll_pwait2 fails at once: EBADF
   where it is there (or EINVAL, had the kernel checked maxevents first);
   ENOSYS without it, EPERM (or another errno of its choice) from a seccomp
   filter older than it. The raw call: a fault rule must not change the
   answer. */
int
ngxffi_epoll_pwait2_probe(void)
{
    int err;

    if (ngxffi_pwait2_raw(-1, NULL, 0, 0) == 0) return 1;
    err = errno;
    return err == EBADF || err == EINVAL;
}

/* The first answer, unless ngxffi_epoll_pwait2 gave one meanwhile:
   NGXFFI_EPOLL_PWAIT2=0 in the environment says no without trying (under a
   seccomp filter that kills on calls it does not know, trying would kill). */
static int
ngxffi_pwait2_first(void)
{
    const char *env = getenv("NGXFFI_EPOLL_PWAIT2");
    int have, unknown = -1;

    have =
        env != NULL && strcmp(env, "0") == 0 ? 0 : ngxffi_epoll_pwait2_probe();
    if (!__atomic_compare_exchange_n(&ngxffi_pwait2, &unknown, have, 0,
                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED))
    {
        have = unknown;
    }
    return have;
}

int
ngxffi_epoll_pwait2(int use)
{
    int have = __atomic_load_n(&ngxffi_pwait2, __ATOMIC_RELAXED);

    if (use < 0) return have < 0 ? ngxffi_pwait2_first() : have;
    have = use > 0 && ngxffi_epoll_pwait2_probe();
    __atomic_store_n(&ngxffi_pwait2, have, __ATOMIC_RELAXED);
    return have;
}

/* Whole milliseconds for epoll_wait, rounded up so that the wait is never
   short, and at most INT_MAX of them; -1 (forever) for a negative wait. */
static int
ngxffi_ns_to_ms(int64_t timeout_ns)
{
    int64_t ms;

    if (timeout_ns < 0) return -1;
    ms = timeout_ns / 1000000 + (timeout_ns % 1000000 != 0);
    return ms > INT_MAX ? INT_MAX : (int) ms;
}

int
ngxffi_epoll_wait_ns(int ep, struct epoll_event *list, int maxevents,
                     int64_t timeout_ns)
{
    int n, have = __atomic_load_n(&ngxffi_pwait2, __ATOMIC_RELAXED);

    if (have < 0) have = ngxffi_pwait2_first();
    if (!have) {
        return ngxffi_sys_epoll_wait(ep, list, maxevents,
                                     ngxffi_ns_to_ms(timeout_ns));
    }
    /* the "epoll_wait" fault rule covers epoll_pwait2: the same wait */
    if (NGXFFI_FAULT_ON()
        && ngxffi_fault_maxevents(NGXFFI_SYS_EPOLL_WAIT, &maxevents))
    {
        return -1;
    }
    n = ngxffi_pwait2_raw(ep, list, maxevents, timeout_ns);
    if (n >= 0 || (errno != ENOSYS && errno != EPERM)) return n;
    /* A seccomp filter installed since the probe refuses it (the call itself
       never fails so): epoll_wait from now on, this wait included. */
    __atomic_store_n(&ngxffi_pwait2, 0, __ATOMIC_RELAXED);
    return epoll_wait(ep, list, maxevents, ngxffi_ns_to_ms(timeout_ns));
}

/* epoll_wait and the first decision on its batch in one call: the per-batch
   cost of crossing from Python to C is paid once. Returns -1 (errno set by
   epoll_wait), or the number of handlers to call, with NGXFFI_BATCH_INVALID
   added when some tag was not ours; cy->batch_n says how many events the kernel
   returned. -1 (EINVAL) as well for more than NGXFFI_EVENTS_MAX events or a
   missing array. */
int
ngxffi_epoll_process(ngxffi_cycle_t *cy, int timer, int post, int trace)
{
    uint64_t invalid;
    int k, n;

    if (cy == NULL || cy->nevents > NGXFFI_EVENTS_MAX || cy->event_list == NULL)
    {
        errno = EINVAL;
        return -1;
    }
    invalid = cy->invalid_events;
    n = ngxffi_epoll_wait_ns(cy->ep, cy->event_list, cy->nevents,
                             timer < 0 ? -1 : (int64_t) timer * 1000000);
    cy->batch_n = n < 0 ? 0 : n;
    if (n <= 0) return n;
    k = ngxffi_epoll_decide(cy, 0, post, trace);
    if (k < 0) return k;
    return cy->invalid_events == invalid ? k : k | NGXFFI_BATCH_INVALID;
}

/* For ngxffi.selector: the wait (ngxffi_epoll_wait_ns), then one code per
   event, fd << 2 | the selectors module's mask, computed as
   EpollSelector.select does: EVENT_WRITE (2) for anything but EPOLLIN,
   EVENT_READ (1) for anything but EPOLLOUT. -1 and errno on failure: EINVAL
   without arrays, EOVERFLOW for an fd above NGXFFI_SELECT_FD_MAX, whose code
   would not fit (its events stay for the next wait: they are level-triggered).
 */
int
ngxffi_epoll_select(int ep, struct epoll_event *list, int maxevents,
                    int64_t timeout_ns, int32_t *codes)
{
    int i, n;

    if (list == NULL || codes == NULL) {
        errno = EINVAL;
        return -1;
    }
    n = ngxffi_epoll_wait_ns(ep, list, maxevents, timeout_ns);
    for (i = 0; i < n; i++) {
        uint32_t e = list[i].events;
        if (list[i].data.u64 > NGXFFI_SELECT_FD_MAX) {
            errno = EOVERFLOW;
            return -1;
        }
        codes[i] = ((int32_t) list[i].data.u64 << 2)
                   | ((e & ~(uint32_t) EPOLLIN) ? 2 : 0)
                   | ((e & ~(uint32_t) EPOLLOUT) ? 1 : 0);
    }
    return n;
}

/* The indexes of the pollfd entries with revents (ngx_poll_process_events). */
int
ngxffi_poll_ready(const struct pollfd *list, int n, int32_t *out)
{
    int i, k = 0;

    if (n > 0 && (list == NULL || out == NULL)) {
        errno = EINVAL;
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (list[i].revents) out[k++] = i;
    }
    return k;
}
