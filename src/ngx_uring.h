/*
 * The io_uring event module's C (there is no nginx original): the ring made
 * with raw syscalls and mapped (ngx_uring.c), and the registrations, the one
 * io_uring_enter per loop turn and the conversion of completions into the
 * epoll module's event records, so that ngxffi_epoll_decide makes the same
 * decision on them (ngx_uring_events.c).
 *
 * Readiness is a poll request per connection (IORING_OP_POLL_ADD), multishot
 * and so edge-triggered for EPOLLET registrations, oneshot and re-armed
 * before every wait for level ones. Its user_data is the connection's tag,
 * exactly epoll's data.u64. The module's own requests (cancels) carry
 * NGXFFI_URING_INTERNAL, a value no tag has: tags are an 8-aligned slot
 * address plus the instance bit.
 */

#ifndef NGX_URING_H_INCLUDED
#define NGX_URING_H_INCLUDED

#include <linux/io_uring.h>

/* ngxffi_uring_ctl's op beside EPOLL_CTL_ADD, _MOD and _DEL: the fd is being
   closed. Its request is cancelled (closing the fd alone would not release
   the socket: the request holds a reference to the file), and its
   registration forgotten; no error when there was none. */
#define NGXFFI_URING_CTL_CLOSE 4
#define NGXFFI_URING_INTERNAL  2 /* user_data of the module's own requests */
#define NGXFFI_URING_CLOSING   6 /* and of the cancel of everything at close */
/* ngxffi_uring_process: poll requests failed (ngxffi_uring_errors) */
#define NGXFFI_BATCH_ERRORS     (1 << 28)
#define NGXFFI_URING_ERRORS_MAX 16 /* kept per turn; the rest only counted */

/* ngxffi_uring_open's setup: the first the kernel takes, from DEFER */
enum {
    NGXFFI_URING_AUTO,
    NGXFFI_URING_DEFER, /* SINGLE_ISSUER | DEFER_TASKRUN (Linux 6.1) */
    NGXFFI_URING_COOP,  /* COOP_TASKRUN (5.19) */
    NGXFFI_URING_PLAIN
};

/* cffi cdef: begin */

typedef struct {
    int setup_errno;    /* 0: io_uring_setup works */
    uint32_t features;  /* IORING_FEAT_* */
    int usable;         /* everything the module needs (Linux 5.19) */
    int multishot_poll; /* IORING_POLL_ADD_MULTI keeps a poll armed */
    int cancel_all;     /* IORING_ASYNC_CANCEL_ALL */
    int defer_taskrun;  /* SINGLE_ISSUER | DEFER_TASKRUN */
    int coop_taskrun;
    int msg_ring;        /* IORING_OP_MSG_RING */
    int recv;            /* IORING_OP_RECV */
    int provide_buffers; /* IORING_OP_PROVIDE_BUFFERS */
} ngxffi_uring_probe_t;

typedef struct {
    uint64_t turns;      /* ngxffi_uring_process calls */
    uint64_t enters;     /* io_uring_enter calls */
    uint64_t sqes;       /* requests submitted */
    uint64_t polls;      /* of them, poll requests */
    uint64_t cancels;    /* of them, cancels */
    uint64_t cqes;       /* completions reaped */
    uint64_t readiness;  /* of them, events handed to the decision */
    uint64_t rearms;     /* poll requests that ended and were armed again */
    uint64_t sq_full;    /* enters only to make room in the submission queue */
    uint64_t errors;     /* failed poll requests and cancels */
    uint64_t unexpected; /* completions for no request of ours */
} ngxffi_uring_stats_t;

/* What the kernel offers, found on a small ring of its own. 0, or -1 when
   p is NULL. NGXFFI_IO_URING=0 in the environment answers "not there"
   (setup_errno ENOSYS) without trying: under a seccomp filter that kills on
   calls it does not know, trying would kill. */
int ngxffi_uring_probe(ngxffi_uring_probe_t *p);
/* The cycle's ring, its size taken from cy->nevents and cy->connection_n,
   and its registration table; -1 and errno on failure (ENOTSUP: the kernel
   lacks what ngxffi_uring_probe calls usable). */
int ngxffi_uring_open(ngxffi_cycle_t *cy, int setup);
/* The setup the ring got (NGXFFI_URING_DEFER, _COOP or _PLAIN), or -1. */
int ngxffi_uring_setup(const ngxffi_cycle_t *cy);
/* Cancel every request, wait briefly for the sockets to be let go, unmap and
   close the ring. Safe on a cycle without one. */
void ngxffi_uring_close(ngxffi_cycle_t *cy);
/* epoll_ctl's contract for the ring: records what c wants (events: EPOLL*
   bits, EPOLLET for multishot), to be submitted by the next
   ngxffi_uring_process. EEXIST, ENOENT and EINVAL as epoll_ctl. */
int ngxffi_uring_ctl(ngxffi_cycle_t *cy, int op, ngx_connection_t *c,
                     uint32_t events, unsigned instance);
/* ngxffi_epoll_process for the ring: submit, wait up to timer ms (-1:
   forever), convert the completions and decide. */
int ngxffi_uring_process(ngxffi_cycle_t *cy, int timer, int post, int trace);
/* The poll requests that failed in the last turn: up to max fds and
   negative errnos; returns how many. */
int ngxffi_uring_errors(const ngxffi_cycle_t *cy, int *fds, int *errs, int max);
int ngxffi_uring_stats(const ngxffi_cycle_t *cy, ngxffi_uring_stats_t *out);
/* For tests: a poll request with any user_data, outside the registrations
   (multishot when events has EPOLLET). It counts as the pending request of
   the slot its user_data names, if any: that slot is not re-armed while it
   lasts, and a close does not cancel it (the cycle's close does). */
int ngxffi_uring_poll_raw(ngxffi_cycle_t *cy, int fd, uint32_t events,
                          uint64_t user_data);

/* cffi cdef: end */

/* Shared by the two files. */

typedef struct {
    uint64_t tag;     /* the live request's user_data */
    uint64_t wtag;    /* the tag the next request is to carry */
    uint32_t want;    /* wanted EPOLL* mask (EPOLLET: multishot); 0: none */
    uint32_t armed;   /* the live request's mask */
    uint32_t pending; /* our poll requests on this slot not yet ended */
    int fd;
    unsigned live:1;   /* a request of the current registration is armed */
    unsigned dirty:1;  /* on the dirty list */
    unsigned added:1;  /* registered (epoll_ctl ADD), want may be 0 */
    unsigned failed:1; /* its request failed: not re-armed until re-added */
} ngxffi_uring_reg_t;

struct ngxffi_uring_s {
    int fd;
    int setup;      /* NGXFFI_URING_DEFER, _COOP or _PLAIN */
    int disabled;   /* created IORING_SETUP_R_DISABLED, not yet enabled */
    unsigned forks; /* the process's fork count when it was made */
    unsigned to_submit;
    unsigned cancels_queued; /* of them, cancels: each posts at least once */
    void *ring;
    size_t ring_size;
    struct io_uring_sqe *sqes;
    size_t sqes_size;
    unsigned *sq_head, *sq_tail, *sq_flags, *sq_array;
    unsigned sq_mask, sq_entries, sq_local_tail;
    unsigned *cq_head, *cq_tail;
    unsigned cq_mask, cq_entries;
    struct io_uring_cqe *cqes;

    ngxffi_uring_reg_t *reg; /* connection_n + 1: the last one is notify's */
    uint32_t *dirty;
    uintptr_t dirty_n, reg_n;

    int error_n;
    int error_fd[NGXFFI_URING_ERRORS_MAX];
    int error_res[NGXFFI_URING_ERRORS_MAX];
    ngxffi_uring_stats_t stats;
};

struct io_uring_sqe *ngxffi_uring_sqe(ngxffi_uring_t *u);
/* 1 (errno EEXIST) in a child the ring was inherited by. */
int ngxffi_uring_foreign(const ngxffi_uring_t *u);
/* Convert completions into cy->event_list from position n on, as long as
   there is room; the rest stay queued for the next turn, as epoll keeps
   events beyond maxevents. Returns the new count; *other counts the
   completions that were not events. */
int ngxffi_uring_reap(ngxffi_cycle_t *cy, ngxffi_uring_t *u, int n, int *other);
int ngxffi_uring_enter(ngxffi_uring_t *u, unsigned min_complete,
                       int64_t timeout_ns);
void ngxffi_uring_cancel(ngxffi_uring_t *u, struct io_uring_sqe *sqe,
                         uint64_t tag, unsigned flags);

#endif /* NGX_URING_H_INCLUDED */
