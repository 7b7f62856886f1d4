/*
 * ngxffi's C: what every source file under src/ and the cffi extension's own
 * file include (nginx's ngx_core.h): the system headers, the event core's C
 * layout, then each area's header.
 *
 * The text between the "cffi cdef" marks of this header and of the area
 * headers is also handed verbatim to cffi's cdef by build_ffi.py, so cffi
 * sees exactly what the compiler compiles and the layouts cannot drift. It
 * holds C declarations only: no preprocessor line (cffi accepts none but
 * "#define NAME ..."), nothing whose size the system headers know.
 */

#ifndef NGXFFI_H_INCLUDED
#define NGXFFI_H_INCLUDED

/* The cffi extension's own file includes Python.h first, whose pyconfig.h
   sets these; the other files set them the same, so that every file sees the
   same declarations and the same off_t. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>

/* cffi cdef: begin */

/* The event core's C layout. Field names and bitfields follow nginx's
   ngx_event_t and ngx_connection_t (src/event/ngx_event.h,
   src/core/ngx_connection.h). What cannot live in C stays on the Python
   proxies (ngxffi.event.Event, ngxffi.event.connection): the handler, the
   protocol context, the posted and reusable queues (ordered dicts there). */

typedef struct ngx_event_s ngx_event_t;
typedef struct ngx_connection_s ngx_connection_t;
typedef struct ngxffi_cycle_s ngxffi_cycle_t;
typedef struct ngxffi_uring_s ngxffi_uring_t; /* ngx_uring.h */

/* A handler in C (nginx's ev->handler), run by the epoll module inside the
   batch: 1 when it did all there was to do, 0 to have the Python handler
   called. It may not open, close or re-register connections: it runs while the
   batch is decided. */
typedef int (*ngxffi_c_handler_pt)(ngxffi_cycle_t *cy, ngx_event_t *ev);

struct ngx_event_s {
    void *data; /* the connection this event belongs to */

    unsigned write:1;
    unsigned accept:1;
    unsigned instance:1; /* stale-event bit: ngx_epoll_process_events */
    unsigned active:1;   /* registered in the kernel */
    unsigned disabled:1;
    unsigned ready:1;
    unsigned oneshot:1;
    unsigned complete:1;
    unsigned eof:1;
    unsigned error:1;
    unsigned timedout:1;
    unsigned timer_set:1;
    unsigned delayed:1;
    unsigned deferred_accept:1;
    unsigned pending_eof:1;
    unsigned posted:1;
    unsigned closed:1;
    unsigned cancelable:1;

    int available;       /* accept: how many; read: bytes, -1 unknown */
    uintptr_t index;     /* poll: slot in the pollfd array */
    uintptr_t timer_key; /* ngx_current_msec + timer, compared signed */

    /* ngxffi: tried first for a read event, or NULL; its configuration */
    ngxffi_c_handler_pt c_handler;
    void *c_ctx;
};

struct ngx_connection_s {
    void *data; /* next free connection while free */
    ngx_event_t *read;
    ngx_event_t *write;
    int fd;
    socklen_t socklen;
    struct sockaddr *sockaddr;
    off_t sent;
    uintptr_t number; /* global accept counter */
    uintptr_t requests;
    uint32_t generation;          /* ngxffi: bumped by every get_connection */
    ngx_connection_t *queue_prev; /* the reusable queue (nginx's c->queue) */
    ngx_connection_t *queue_next;

    unsigned log_error:3;
    unsigned timedout:1;
    unsigned error:1;
    unsigned destroyed:1;
    unsigned idle:1;
    unsigned reusable:1;
    unsigned close:1;
    unsigned shared:1;
    unsigned sendfile:1;
    unsigned tcp_nodelay:2;
    unsigned tcp_nopush:2;
    unsigned queued:1;    /* ngxffi: linked in the reusable queue */
    unsigned stash_out:1; /* the stash is output to send, not input to parse */
    unsigned stash_close:1; /* close once that output is sent */
    unsigned
        is_free:1; /* ngxffi: on the free list (a second free is refused) */
    unsigned c_answered:1; /* c_msec is set (0 is a time too) */

    char *stash; /* ngxffi: what a C handler leaves to Python */
    uint32_t stash_len;
    uint64_t c_msec; /* when it last went idle or a C handler last answered
                        (monotonic ms) */
};

/* What the C helpers need of ngx_cycle_t. */
struct ngxffi_cycle_s {
    ngx_connection_t *connections;
    ngx_event_t *read_events;
    ngx_event_t *write_events;
    uintptr_t connection_n;
    ngx_connection_t *free_connections;
    uintptr_t free_connection_n;
    ngx_connection_t *notify; /* static, outside the pool, or NULL */
    int strong_tags;          /* generation in the tag's high 16 bits */
    uint64_t invalid_events;  /* kernel events whose tag was not ours */

    /* reusable_connections_queue, both ends */
    ngx_connection_t *reusable_oldest;
    ngx_connection_t *reusable_newest;
    uintptr_t reusable_n;

    /* the epoll module's state, so that its per-batch calls take few
       arguments */
    int ep;
    struct epoll_event *event_list;
    int nevents;
    int batch_n;           /* events the last epoll_wait returned */
    int32_t *out;          /* decided handler calls: slot * 2 + write */
    int32_t *out_half;     /* the half-event each of them came from */
    uint8_t *verdicts;     /* per half-event, for the trace */
    uint64_t clock_offset; /* added to CLOCK_MONOTONIC (cycle.clock_offset) */
    ngxffi_uring_t *uring; /* the io_uring module's ring, or NULL */
};

/* cffi cdef: end */

#include "ngx_fault.h"
#include "ngx_os.h"
#include "ngx_shm.h"
#include "ngx_connection.h"
#include "ngx_epoll.h"
#include "ngx_uring.h"
#include "ngx_http_cache.h"
#include "ngx_http_fast.h"
#include "ngx_http_accept.h"
#include "ngx_http_parse.h"

#endif /* NGXFFI_H_INCLUDED */
