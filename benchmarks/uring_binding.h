/*
 * The declarations benchmarks/uring_binding.c and uring_binding_rings.c
 * share: the event methods' interface and the state of a run.
 */

#ifndef URING_BINDING_H
#define URING_BINDING_H

#define _GNU_SOURCE

#ifdef NGXFFI_LIBURING
#include <liburing.h> /* its copy of linux/io_uring.h has the same guard */
#endif
#include <errno.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BENCH_ENTRIES  64
#define BENCH_INTERNAL UINT64_MAX /* a cancel's user_data */
#define BENCH_EVENTS   (EPOLLIN | EPOLLRDHUP)
#define BENCH_DEFER    (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN)

typedef struct {
    int fd;
    char *ring;
    size_t ring_size;
    struct io_uring_sqe *sqes;
    size_t sqes_size;
    unsigned *sq_head, *sq_tail, *sq_array, sq_mask, sq_entries, sq_local;
    unsigned *cq_head, *cq_tail, cq_mask;
    struct io_uring_cqe *cqes;
    unsigned to_submit;
} raw_ring_t;

typedef struct {
    int ep;         /* epoll */
    raw_ring_t raw; /* raw */
#ifdef NGXFFI_LIBURING
    struct io_uring lib; /* liburing */
#endif
    unsigned cancels; /* queued by closes, not yet submitted */
    unsigned long enters;
    const char *setup;  /* "defer" or "plain" */
    int efd;            /* the turn workload's eventfd */
    const char *failed; /* the call that failed, errno in err */
    int err;
} bench_t;

/* What an event method does for the workloads: open and close itself,
   register an fd under a user_data, wait for that registration's event, and
   forget a registration whose fd is about to be closed. Each returns -1 on
   failure (bench_fail); NULL does nothing (the floor's are all NULL: what
   every method pays too, the eventfd write or the socketpair's making). */
typedef struct {
    const char *name;
    int counts_enters; /* b->enters is its io_uring_enter calls */
    int (*open)(bench_t *b);
    int (*add)(bench_t *b, int fd, uint64_t ud);
    int (*wait)(bench_t *b, uint64_t ud);
    int (*forget)(bench_t *b, uint64_t ud);
    void (*close)(bench_t *b);
} method_t;

/* A workload: its set-up (or NULL), and turn i (unique in a run). */
typedef struct {
    const char *name;
    int (*open)(bench_t *b, const method_t *m);
    int (*turn)(bench_t *b, const method_t *m, uint64_t i);
} workload_t;

int bench_fail(bench_t *b, const char *call, int err);

extern const method_t bench_raw;
#ifdef NGXFFI_LIBURING
extern const method_t bench_liburing;
#endif

#endif
