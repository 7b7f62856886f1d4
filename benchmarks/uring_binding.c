/*
 * The io_uring binding choice, measured (make bench's uring_binding section:
 * benchmarks/uring_binding.py). ngxffi's io_uring event module calls
 * io_uring_setup and io_uring_enter as raw syscalls on rings it maps itself
 * (src/ngx_uring.c), one enter per loop turn; this program times that way of
 * making a turn against liburing making the same turn, epoll beside them.
 *
 * Workloads:
 *   turn  an eventfd written, then the wait for its readiness: epoll_wait on
 *         an EPOLLET registration, or a multishot IORING_OP_POLL_ADD's
 *         completion.
 *   life  a connection's life as the event core sees it: a fresh socketpair
 *         with a byte to read, its registration, one wait, close. On io_uring
 *         the close queues an IORING_OP_ASYNC_CANCEL (a poll holds the file),
 *         submitted with the next turn's poll in its one enter, as the
 *         module's close does; on epoll the close deregisters.
 *
 * Methods (the io_uring ones in uring_binding_rings.c): floor, no event
 * method at all, what the others pay too; epoll; raw, the module's calls (not
 * its code): a registration is an SQE written at once, a turn takes what the
 * completion queue holds and enters only when it holds nothing or SQEs are
 * queued, with io_uring_enter(to_submit, 1 + cancels queued, GETEVENTS |
 * EXT_ARG), each cancel posting once; liburing, the same requests through
 * liburing's io_uring_submit_and_wait_timeout. Both rings are set up alike:
 * SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL, or SUBMIT_ALL alone where the
 * kernel refuses the first two (as the module falls back).
 *
 * Usage: uring_binding WORKLOAD METHOD TURNS. It runs TURNS / 10 turns
 * untimed, then TURNS timed, and prints one JSON object: workload, method,
 * setup, turns, ns (per turn), cpu_ns (the process's CPU time per turn) and
 * enters (io_uring_enter calls per turn, raw only: liburing makes its own);
 * or error, and exits 1. The section builds it with -DNGXFFI_LIBURING
 * -luring where liburing.h is installed, without the liburing method
 * otherwise.
 */

#include "uring_binding.h"

int
bench_fail(bench_t *b, const char *call, int err)
{
    b->failed = call;
    b->err = err;
    return -1;
}

/* epoll */

static int
epoll_open(bench_t *b)
{
    b->ep = epoll_create1(EPOLL_CLOEXEC);
    return b->ep == -1 ? bench_fail(b, "epoll_create1", errno) : 0;
}

static int
epoll_add(bench_t *b, int fd, uint64_t ud)
{
    struct epoll_event ev = {.events = BENCH_EVENTS | EPOLLET, .data.u64 = ud};

    if (epoll_ctl(b->ep, EPOLL_CTL_ADD, fd, &ev) == -1) {
        return bench_fail(b, "epoll_ctl", errno);
    }
    return 0;
}

static int
epoll_wait_for(bench_t *b, uint64_t ud)
{
    struct epoll_event out[8];

    for (;;) {
        int i, n = epoll_wait(b->ep, out, 8, 1000);
        if (n == 0) return bench_fail(b, "epoll_wait", ETIME);
        /* a ring closed earlier in this thread can interrupt a wait once */
        if (n == -1 && errno != EINTR) {
            return bench_fail(b, "epoll_wait", errno);
        }
        for (i = 0; i < n; i++) {
            if (out[i].data.u64 == ud) return 0;
        }
    }
}

static void
epoll_close(bench_t *b)
{
    close(b->ep);
}

static const method_t bench_floor = {.name = "floor"};

/* forget nothing: the close deregisters (nginx's NGX_CLOSE_EVENT) */
static const method_t bench_epoll = {
    .name = "epoll",
    .open = epoll_open,
    .add = epoll_add,
    .wait = epoll_wait_for,
    .close = epoll_close,
};

static const method_t *const methods[] = {
    &bench_floor,
    &bench_epoll,
    &bench_raw,
#ifdef NGXFFI_LIBURING
    &bench_liburing,
#endif
};

/* Workloads. The turn's registration is user_data 1; turn i of a life
   registers user_data i + 2, so that no request of a closed connection
   (its poll posts the hang-up of the peer's close until its cancel) is
   taken for the next one's, whose fd has the same number. */

static int
method_add(bench_t *b, const method_t *m, int fd, uint64_t ud)
{
    return m->add == NULL ? 0 : m->add(b, fd, ud);
}

static int
method_wait(bench_t *b, const method_t *m, uint64_t ud)
{
    return m->wait == NULL ? 0 : m->wait(b, ud);
}

static int
method_forget(bench_t *b, const method_t *m, uint64_t ud)
{
    return m->forget == NULL ? 0 : m->forget(b, ud);
}

static int
turn_open(bench_t *b, const method_t *m)
{
    b->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (b->efd == -1) return bench_fail(b, "eventfd", errno);
    return method_add(b, m, b->efd, 1);
}

static int
turn_turn(bench_t *b, const method_t *m, uint64_t i)
{
    static const uint64_t one = 1;

    (void) i; /* the counter is never read: every write is an edge */
    if (write(b->efd, &one, sizeof(one)) != sizeof(one)) {
        return bench_fail(b, "write", errno);
    }
    return method_wait(b, m, 1);
}

static int
life_turn(bench_t *b, const method_t *m, uint64_t i)
{
    int s[2];

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, s)
        == -1) {
        return bench_fail(b, "socketpair", errno);
    }
    if (send(s[1], "x", 1, 0) != 1) return bench_fail(b, "send", errno);
    if (method_add(b, m, s[0], i + 2) == -1 || method_wait(b, m, i + 2) == -1
        || method_forget(b, m, i + 2) == -1)
    {
        return -1;
    }
    if (close(s[0]) == -1 || close(s[1]) == -1) {
        return bench_fail(b, "close", errno);
    }
    return 0;
}

static const workload_t bench_turn = {"turn", turn_open, turn_turn};

static const workload_t bench_life = {"life", NULL, life_turn};

static const workload_t *const workloads[] = {&bench_turn, &bench_life};

static double
now_ns(clockid_t clock)
{
    struct timespec t;

    clock_gettime(clock, &t);
    return (double) t.tv_sec * 1e9 + (double) t.tv_nsec;
}

/* TURNS / 10 untimed, then TURNS timed: ns per turn in ns[0], of the
   process's CPU time in ns[1] (which leaves out the time another process
   had the CPU; the turns' work, wakeups and task work included, is all done
   in this one), enters too. */
static int
bench_run(bench_t *b, const workload_t *w, const method_t *m, uint64_t turns,
          double ns[2])
{
    uint64_t i, warm = turns / 10;
    double t0 = 0, c0 = 0;

    if ((m->open != NULL && m->open(b) == -1)
        || (w->open != NULL && w->open(b, m) == -1))
    {
        return -1;
    }
    for (i = 0; i < warm + turns; i++) {
        if (i == warm) {
            b->enters = 0;
            t0 = now_ns(CLOCK_MONOTONIC);
            c0 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
        }
        if (w->turn(b, m, i) == -1) return -1;
    }
    ns[0] = (now_ns(CLOCK_MONOTONIC) - t0) / (double) turns;
    ns[1] = (now_ns(CLOCK_PROCESS_CPUTIME_ID) - c0) / (double) turns;
    return 0;
}

/* found: the entry of table, an array of pointers to structs with a name,
   whose name is key; NULL when there is none */
#define BENCH_FIND(table, key, found)                                          \
    do {                                                                       \
        size_t i_;                                                             \
        (found) = NULL;                                                        \
        for (i_ = 0; i_ < sizeof(table) / sizeof(*(table)); i_++) {            \
            if (strcmp((table)[i_]->name, (key)) == 0) (found) = (table)[i_];  \
        }                                                                      \
    } while (0)

int
main(int argc, char **argv)
{
    bench_t b = {.ep = -1, .efd = -1, .setup = ""};
    unsigned long long turns = 0;
    const workload_t *w = NULL;
    const method_t *m = NULL;
    double ns[2];

    if (argc == 4) {
        BENCH_FIND(workloads, argv[1], w);
        BENCH_FIND(methods, argv[2], m);
        turns = strtoull(argv[3], NULL, 10);
    }
    if (w == NULL || m == NULL || turns == 0) {
        fprintf(stderr, "usage: %s turn|life floor|epoll|raw|liburing TURNS\n",
                argv[0]);
        return 2;
    }
    printf("{\"workload\": \"%s\", \"method\": \"%s\", ", w->name, m->name);
    if (bench_run(&b, w, m, turns, ns) == -1) {
        printf("\"error\": \"%s: %s\"}\n", b.failed, strerror(b.err));
        return 1;
    }
    printf("\"setup\": \"%s\", \"turns\": %llu, \"ns\": %.1f, \"cpu_ns\": %.1f",
           b.setup, turns, ns[0], ns[1]);
    if (m->counts_enters) {
        printf(", \"enters\": %.3f", (double) b.enters / (double) turns);
    }
    printf("}\n");
    if (m->close != NULL) m->close(&b);
    return 0;
}
