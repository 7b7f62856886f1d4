/*
 * The epoll module's hot paths (nginx's ngx_epoll_module.c): tagged pointers
 * in epoll_data, their decoding and stale checks, and the decision on a whole
 * batch of events in one call; the selector's wait and the poll module's
 * ready scan beside them.
 */

#ifndef NGX_EPOLL_H_INCLUDED
#define NGX_EPOLL_H_INCLUDED

#define NGXFFI_TAG_ADDRESS_BITS 48 /* strong tags: generation above */
/* Distinct bits above every code and count (and NGXFFI_BATCH_ERRORS, 1 << 28,
   in ngx_uring.h): codes are below 1 << 29 as the
   pool is at most NGXFFI_CONNECTIONS_MAX, counts (at most 2 * nevents) as
   nevents is at most NGXFFI_EVENTS_MAX. */
#define NGXFFI_ACCEPT_QUEUE  (1 << 30) /* decide: post to the accept queue */
#define NGXFFI_BATCH_INVALID (1 << 29) /* process: the batch had bad tags */
#define NGXFFI_EVENTS_MAX    ((1 << 27) - 1)
/* ngxffi_epoll_select's codes are fd << 2 | mask in an int32_t */
#define NGXFFI_SELECT_FD_MAX ((1 << 29) - 1)

/* per half-event verdicts */
enum {
    NGXFFI_NONE,
    NGXFFI_DISPATCHED,
    NGXFFI_POSTED,
    NGXFFI_STALE_CLOSED,
    NGXFFI_STALE_REUSED,
    NGXFFI_INVALID
};

/* cffi cdef: begin */
uint64_t ngxffi_tag(const ngxffi_cycle_t *cy, const ngx_connection_t *c,
                    unsigned instance);
int ngxffi_tag_fits(const ngxffi_cycle_t *cy);
intptr_t ngxffi_tag_slot(const ngxffi_cycle_t *cy, uint64_t tag);
int ngxffi_epoll_ctl(const ngxffi_cycle_t *cy, int ep, int op,
                     ngx_connection_t *c, uint32_t events, unsigned instance);
int ngxffi_epoll_decide(ngxffi_cycle_t *cy, int from, int post, int trace);
int ngxffi_epoll_process(ngxffi_cycle_t *cy, int timer, int post, int trace);
int ngxffi_poll_ready(const struct pollfd *list, int n, int32_t *out);
int ngxffi_epoll_select(int ep, struct epoll_event *list, int maxevents,
                        int64_t timeout_ns, int32_t *codes);
/* Whether waits use epoll_pwait2 (Linux 5.11+, a timespec timeout): use -1
   asks (the first time, NGXFFI_EPOLL_PWAIT2=0 in the environment says no, or
   the kernel is probed), 0 turns it off, 1 on where the kernel has it;
   returns the answer, 0 or 1. A wait that finds it refused since (a seccomp
   filter) turns it off for good. */
int ngxffi_epoll_pwait2(int use);
/* Whether the kernel has epoll_pwait2 (1) or not (0), found by trying. */
int ngxffi_epoll_pwait2_probe(void);
/* epoll_wait with a timeout in nanoseconds (< 0: forever): epoll_pwait2
   where it is in use, else epoll_wait with the timeout rounded up to whole
   milliseconds (at most INT_MAX). */
int ngxffi_epoll_wait_ns(int ep, struct epoll_event *list, int maxevents,
                         int64_t timeout_ns);
/* cffi cdef: end */

#endif /* NGX_EPOLL_H_INCLUDED */
