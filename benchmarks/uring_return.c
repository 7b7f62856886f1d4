/* uring_return: nginx's `return 200 "hello"` in plain C, served two ways, for
   make bench's uring_completion section (benchmarks/uring_completion.py): how
   much kernel time per request completion-based I/O saves against readiness.

   usage: uring_return epoll|uring PORT

   It listens on 127.0.0.1:PORT and answers every GET with the head and body
   `ngxffi serve --return 200 hello` sends (Server, Content-Type,
   Content-Length, Date, Connection), reading requests up to their empty line:
   pipelined ones in one go, split ones across reads. `Connection: close`, or
   HTTP/1.0 without keep-alive, closes after the answer; another method gets a
   400 and the close; a head over HEAD_MAX closes unanswered. While OUT_HIGH
   bytes of answers wait, input is held back (a client that does not read is
   slowed by TCP, as nginx slows it).

   epoll: a readiness server as nginx's epoll module drives one: edge-triggered,
   accept4 to EAGAIN, a read per readiness (a short read means empty, since
   EPOLLRDHUP is asked for: ngx_use_epoll_rdhup), one send of the answers.

   uring: completion-based, through raw io_uring syscalls (no liburing): one
   multishot accept, per connection one multishot recv into a provided buffer
   ring (each buffer back in the ring once parsed; the recv cancelled while
   input is held back) and one send per batch of answers, the close by
   IORING_OP_CLOSE; one io_uring_enter per loop turn. Where the kernel refuses
   a feature it says so and does without: SINGLE_ISSUER|DEFER_TASKRUN, or a
   multishot (then one accept or recv per completion); not the buffer ring.

   Both stop cleanly on SIGTERM and SIGINT: the signals are blocked but during
   the wait, so one arriving while busy ends the next wait. */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX  8192   /* a request head's limit: a longer one closes */
#define OUT_HIGH  65536  /* answers waiting beyond which input is held back */
#define IN_MAX    262144 /* input held back, at most (uring: see take) */
#define BUFS      256    /* provided buffers, each BUF_SIZE bytes */
#define BUF_SIZE  2048
#define BGID      0
#define RING_SIZE 4096

#define HEAD                                                                   \
    "HTTP/1.1 200 OK\r\nServer: uring_return\r\nContent-Type: text/plain\r\n"  \
    "Content-Length: 5\r\n"
#define BODY  "hello"
#define KEEP  "Connection: keep-alive\r\n\r\n"
#define CLOSE "Connection: close\r\n\r\n"
#define BAD                                                                    \
    "HTTP/1.1 400 Bad Request\r\nServer: uring_return\r\n"                     \
    "Content-Length: 0\r\nConnection: close\r\n\r\n"
#define LEN(s) (sizeof(s) - 1)

struct buf {
    char *p;
    size_t len, cap;
};

struct conn {
    int fd;
    int closing;    /* close once the answers queued are sent */
    int eof;        /* the peer closed, or the socket failed: no more input */
    int readable;   /* epoll: input may be waiting */
    int rdhup;      /* epoll: EPOLLRDHUP seen, so a short read is no proof */
    int recv_armed; /* uring: a recv is in flight */
    int cancelled;  /* uring: its cancel is queued */
    int sending;    /* uring: a send of fly is in flight */
    int held;       /* input held back until the answers waiting are sent */
    size_t fly_off; /* uring: the bytes of fly sent so far */
    struct buf in;  /* input not answered yet */
    struct buf out; /* answers queued */
    struct buf fly; /* uring: answers the kernel sends (fly and out swap) */
};

static volatile sig_atomic_t stopping;
/* the signal mask during waits: ours without SIGTERM and SIGINT */
static sigset_t wait_mask;
static struct conn **conns; /* by fd */
static size_t conns_size;
static char date[48];
static size_t date_len;

static void
on_signal(int sig)
{
    (void) sig;
    stopping = 1;
}

static void
die(const char *what)
{
    fprintf(stderr, "uring_return: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* The Date header, formatted again only when the second changes. */
static void
update_date(void)
{
    static time_t last;
    time_t now = time(NULL);
    struct tm tm;

    if (now == last) return;
    last = now;
    gmtime_r(&now, &tm);
    date_len = strftime(date, sizeof(date),
                        "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

/* Whether the request asks to close: Connection: close, or HTTP/1.0 without
   Connection: keep-alive (nginx's keepalive decision). The head ends in
   "\r\n\r\n", so every line has its '\n'. */
static int
wants_close(const char *req, size_t len)
{
    const char *end = req + len, *line = memchr(req, '\n', len), *next;
    int close = line - req >= 9 && memcmp(line - 9, "HTTP/1.0\r", 9) == 0;

    for (; ++line < end; line = next) {
        const char *v, *e;

        next = memchr(line, '\n', (size_t) (end - line));
        if (next - line <= 11 || strncasecmp(line, "connection:", 11) != 0)
            continue;
        for (v = line + 11, e = next;
             e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t');)
            e--;
        while (v < e && (*v == ' ' || *v == '\t')) v++;
        if (e - v == 5 && strncasecmp(v, "close", 5) == 0) close = 1;
        if (e - v == 10 && strncasecmp(v, "keep-alive", 10) == 0) close = 0;
    }
    return close;
}

static void
put(struct conn *c, const char *s, size_t n)
{
    memcpy(c->out.p + c->out.len, s, n);
    c->out.len += n;
}

/* Room for n more bytes in b, which doubles as needed up to max; -1 past it
   (or without memory). */
static int
reserve(struct buf *b, size_t n, size_t max)
{
    size_t cap = b->cap ? b->cap : 1024;
    char *p;

    if (n > max - b->len) return -1;
    if (b->len + n <= b->cap) return 0;
    while (cap < b->len + n) cap *= 2;
    if ((p = realloc(b->p, cap)) == NULL) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Queue the answer to one request (its whole head). */
static void
answer(struct conn *c, const char *req, size_t len)
{
    int get = len > 4 && memcmp(req, "GET ", 4) == 0;
    int close = !get || wants_close(req, len);
    /* KEEP is the longer ending, so room for it is room for either */
    size_t need = get ? LEN(HEAD) + date_len + LEN(KEEP) + LEN(BODY) : LEN(BAD);

    c->closing = close;
    if (reserve(&c->out, need, OUT_HIGH + need) != 0) return; /* no memory */
    if (!get) {
        put(c, BAD, LEN(BAD));
        return;
    }
    put(c, HEAD, LEN(HEAD));
    put(c, date, date_len);
    if (close)
        put(c, CLOSE, LEN(CLOSE));
    else
        put(c, KEEP, LEN(KEEP));
    put(c, BODY, LEN(BODY));
}

/* Answer the whole requests at p; the bytes used. It stops at a partial
   request, after a request that closes, and when OUT_HIGH bytes of answers
   wait (then c->held: the input is held back until they are sent). */
static size_t
consume(struct conn *c, const char *p, size_t n)
{
    size_t done = 0;

    c->held = 0;
    while (!c->closing && done < n) {
        const char *end;
        size_t len;

        if (c->out.len >= OUT_HIGH) {
            c->held = 1;
            break;
        }
        if ((end = memmem(p + done, n - done, "\r\n\r\n", 4)) == NULL) break;
        len = (size_t) (end + 4 - (p + done));
        if (len > HEAD_MAX) { /* closed unanswered, as a partial one */
            c->closing = 1;
            break;
        }
        answer(c, p + done, len);
        done += len;
    }
    return done;
}

/* -1 when what is left of the input is a partial head over HEAD_MAX. */
static int
head_too_large(const struct conn *c)
{
    return !c->held && !c->closing && c->in.len > HEAD_MAX ? -1 : 0;
}

/* Answer what in holds; -1 when it is a head too large. */
static int
drain(struct conn *c)
{
    size_t done = consume(c, c->in.p, c->in.len);

    if (done) {
        c->in.len -= done;
        memmove(c->in.p, c->in.p + done, c->in.len);
    }
    return head_too_large(c);
}

/* New input at p (uring's buffers): parsed in place when nothing is kept
   from before, the rest kept in in; -1 when that makes a head too large, or
   more than IN_MAX held back (input the kernel had read before the recv was
   stopped for c->held). */
static int
take(struct conn *c, const char *p, size_t n)
{
    int fresh = c->in.len == 0 && !c->held;

    if (fresh) {
        size_t done = consume(c, p, n);

        p += done;
        n -= done;
    }
    if (c->closing) return 0; /* what follows a closing request is dropped */
    if (n) {
        if (reserve(&c->in, n, IN_MAX) != 0) return -1;
        memcpy(c->in.p + c->in.len, p, n);
        c->in.len += n;
    }
    return fresh ? head_too_large(c) : drain(c);
}

static struct conn *
new_conn(int fd)
{
    struct conn *c;

    if ((size_t) fd >= conns_size || (c = calloc(1, sizeof(*c))) == NULL) {
        close(fd);
        return NULL;
    }
    c->fd = fd;
    conns[fd] = c;
    return c;
}

static void
free_conn(struct conn *c)
{
    conns[c->fd] = NULL;
    free(c->in.p);
    free(c->out.p);
    free(c->fly.p);
    free(c);
}

static int
listen_on(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t) port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0) die("socket");
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
        die("SO_REUSEADDR");
    if (bind(fd, (struct sockaddr *) &sin, sizeof(sin)) != 0) die("bind");
    if (listen(fd, 511) != 0) die("listen");
    return fd;
}

/* nginx's tcp_nodelay on for keep-alive connections, as ngxffi's too. */
static void
nodelay(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- epoll: readiness ---- */

/* Send out until it is empty or the socket is full; -1 on an error. */
static int
flush(struct conn *c)
{
    while (c->out.len) {
        ssize_t n = send(c->fd, c->out.p, c->out.len, MSG_NOSIGNAL);

        if (n >= 0) {
            c->out.len -= (size_t) n;
            memmove(c->out.p, c->out.p + n, c->out.len);
        } else if (errno == EAGAIN) {
            return 0;
        } else if (errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

/* Read, answer and send until the socket blocks either way or the connection
   ends: edge-triggered, each event must be used up. Input is read only when
   no answers wait, so a client that does not read is slowed by TCP. */
static void
epoll_handle(struct conn *c)
{
    for (;;) {
        size_t room;
        ssize_t n;

        if (drain(c) != 0 || flush(c) != 0) break;
        if (c->out.len) return; /* EPOLLOUT brings us back */
        if (c->held) continue;
        if (c->closing || c->eof) break;
        if (!c->readable) return;
        if (reserve(&c->in, BUF_SIZE, HEAD_MAX + BUF_SIZE) != 0) break;
        room = c->in.cap - c->in.len;
        n = recv(c->fd, c->in.p + c->in.len, room, 0);
        if (n > 0) {
            c->in.len += (size_t) n;
            c->readable = (size_t) n == room || c->rdhup;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            c->eof = 1;
        } else if (errno == EAGAIN) {
            c->readable = 0;
        }
    }
    close(c->fd); /* which also removes it from the epoll set */
    free_conn(c);
}

static void
epoll_accept(int ep, int ls)
{
    for (;;) {
        struct epoll_event ev = {.events =
                                     EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET};
        struct conn *c;
        int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN) perror("uring_return: accept4");
            return;
        }
        if ((c = new_conn(fd)) == NULL) continue;
        nodelay(fd);
        ev.data.fd = fd;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
    }
}

static void
epoll_serve(int ls)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = ls};
    struct epoll_event evs[512];
    int ep = epoll_create1(EPOLL_CLOEXEC);

    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) != 0) die("epoll");
    while (!stopping) {
        int n = epoll_pwait(ep, evs, 512, -1, &wait_mask);

        if (n < 0 && errno != EINTR) die("epoll_pwait");
        update_date();
        for (int i = 0; i < n; i++) {
            struct conn *c;

            if (evs[i].data.fd == ls) {
                epoll_accept(ep, ls);
                continue;
            }
            c = conns[evs[i].data.fd];
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                c->readable = 1;
            if (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                c->rdhup = 1;
            epoll_handle(c);
        }
    }
    close(ep);
}

/* ---- io_uring: completions ---- */

enum op { OP_ACCEPT, OP_RECV, OP_SEND, OP_CANCEL, OP_CLOSE };

#define DATA(fd, op) ((uint64_t) (fd) << 8 | (op))

static struct {
    int fd, ls;
    unsigned *sq_head, *sq_tail, sq_mask, sq_entries, sq_local;
    unsigned *cq_head, *cq_tail, cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    struct io_uring_buf_ring *br;
    uint16_t br_tail;
    char *bufs;
    int multishot_accept, multishot_recv;
} ring = {.multishot_accept = 1, .multishot_recv = 1};

static int
uring_enter(unsigned min_complete)
{
    unsigned flags = min_complete ? IORING_ENTER_GETEVENTS : 0;
    unsigned pending =
        ring.sq_local - __atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE);

    __atomic_store_n(ring.sq_tail, ring.sq_local, __ATOMIC_RELEASE);
    return (int) syscall(__NR_io_uring_enter, ring.fd, pending, min_complete,
                         flags, &wait_mask, _NSIG / 8);
}

/* A zeroed SQE (the queue submitted first when it is full). */
static struct io_uring_sqe *
sqe(int fd, enum op op, uint64_t data)
{
    struct io_uring_sqe *s;

    while (ring.sq_local - __atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE)
           == ring.sq_entries)
        if (uring_enter(0) < 0 && errno != EINTR && errno != EAGAIN)
            die("io_uring_enter");
    s = &ring.sqes[ring.sq_local++ & ring.sq_mask];
    memset(s, 0, sizeof(*s));
    s->fd = fd;
    s->user_data = data;
    s->opcode = (uint8_t) (op == OP_ACCEPT   ? IORING_OP_ACCEPT
                           : op == OP_RECV   ? IORING_OP_RECV
                           : op == OP_SEND   ? IORING_OP_SEND
                           : op == OP_CANCEL ? IORING_OP_ASYNC_CANCEL
                                             : IORING_OP_CLOSE);
    return s;
}

static void *
map(size_t size, off_t off)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, ring.fd, off);

    if (p == MAP_FAILED) die("mmap");
    return p;
}

static void
uring_setup(void)
{
    struct io_uring_params p = {.flags = IORING_SETUP_SUBMIT_ALL
                                         | IORING_SETUP_SINGLE_ISSUER
                                         | IORING_SETUP_DEFER_TASKRUN};
    size_t sq_size, cq_size;
    char *sq, *cq;

    ring.fd = (int) syscall(__NR_io_uring_setup, RING_SIZE, &p);
    if (ring.fd < 0 && errno == EINVAL) {
        fprintf(stderr, "uring_return: SINGLE_ISSUER|DEFER_TASKRUN refused "
                        "(EINVAL): without them\n");
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_SUBMIT_ALL;
        ring.fd = (int) syscall(__NR_io_uring_setup, RING_SIZE, &p);
    }
    if (ring.fd < 0) die("io_uring_setup");
    sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        sq_size = cq_size = sq_size > cq_size ? sq_size : cq_size;
        sq = cq = map(sq_size, IORING_OFF_SQ_RING);
    } else {
        sq = map(sq_size, IORING_OFF_SQ_RING);
        cq = map(cq_size, IORING_OFF_CQ_RING);
    }
    ring.sq_head = (unsigned *) (sq + p.sq_off.head);
    ring.sq_tail = (unsigned *) (sq + p.sq_off.tail);
    ring.sq_mask = *(unsigned *) (sq + p.sq_off.ring_mask);
    ring.sq_entries = p.sq_entries;
    ring.sq_local = *ring.sq_tail;
    /* slot i always holds SQE i, so the index array is filled once */
    for (unsigned i = 0; i < p.sq_entries; i++)
        ((unsigned *) (sq + p.sq_off.array))[i] = i;
    ring.sqes =
        map(p.sq_entries * sizeof(struct io_uring_sqe), IORING_OFF_SQES);
    ring.cq_head = (unsigned *) (cq + p.cq_off.head);
    ring.cq_tail = (unsigned *) (cq + p.cq_off.tail);
    ring.cq_mask = *(unsigned *) (cq + p.cq_off.ring_mask);
    ring.cqes = (struct io_uring_cqe *) (cq + p.cq_off.cqes);
}

static void
buf_return(uint16_t bid)
{
    struct io_uring_buf *b = &ring.br->bufs[ring.br_tail & (BUFS - 1)];

    b->addr = (uint64_t) (uintptr_t) (ring.bufs + (size_t) bid * BUF_SIZE);
    b->len = BUF_SIZE;
    b->bid = bid;
    __atomic_store_n(&ring.br->tail, ++ring.br_tail, __ATOMIC_RELEASE);
}

/* The provided buffer ring: BUFS buffers the kernel picks from for each recv.
   Without it there is no multishot recv, so a refusal ends the server. */
static void
uring_buffers(void)
{
    struct io_uring_buf_reg reg = {.ring_entries = BUFS, .bgid = BGID};
    void *br = mmap(NULL, BUFS * sizeof(struct io_uring_buf),
                    PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    ring.bufs = malloc((size_t) BUFS * BUF_SIZE);
    if (br == MAP_FAILED || ring.bufs == NULL) die("buffers");
    ring.br = br;
    reg.ring_addr = (uint64_t) (uintptr_t) br;
    if (syscall(__NR_io_uring_register, ring.fd, IORING_REGISTER_PBUF_RING,
                &reg, 1)
        != 0)
        die("IORING_REGISTER_PBUF_RING");
    for (uint16_t i = 0; i < BUFS; i++) buf_return(i);
}

static void
arm_accept(void)
{
    struct io_uring_sqe *s = sqe(ring.ls, OP_ACCEPT, DATA(ring.ls, OP_ACCEPT));

    s->ioprio = ring.multishot_accept ? IORING_ACCEPT_MULTISHOT : 0;
    s->accept_flags = SOCK_CLOEXEC;
}

static void
arm_recv(struct conn *c)
{
    struct io_uring_sqe *s = sqe(c->fd, OP_RECV, DATA(c->fd, OP_RECV));

    s->ioprio = ring.multishot_recv ? IORING_RECV_MULTISHOT : 0;
    s->flags = IOSQE_BUFFER_SELECT;
    s->buf_group = BGID;
    c->recv_armed = 1;
}

/* One send at a time: the rest of fly after a short send, else out, which
   becomes fly (the kernel reads fly until the CQE; out may grow meanwhile). */
static void
uring_send(struct conn *c)
{
    struct io_uring_sqe *s;

    if (c->sending) return;
    if (c->fly_off == c->fly.len) {
        struct buf next = c->out;

        if (next.len == 0) return;
        c->out = c->fly;
        c->out.len = 0;
        c->fly = next;
        c->fly_off = 0;
    }
    s = sqe(c->fd, OP_SEND, DATA(c->fd, OP_SEND));
    s->addr = (uint64_t) (uintptr_t) (c->fly.p + c->fly_off);
    s->len = (unsigned) (c->fly.len - c->fly_off);
    s->msg_flags = MSG_NOSIGNAL;
    c->sending = 1;
}

/* The one place that moves a connection on after a completion: send what is
   queued, keep a recv armed, or, once it is done with, cancel its recv and
   close it when nothing of it is in flight any more. */
static void
settle(struct conn *c)
{
    int done = c->closing || c->eof;

    uring_send(c);
    if (!done && !c->held) {
        if (!c->recv_armed) arm_recv(c);
        return;
    }
    /* done with, or held: its recv stops (on_send re-arms a held one) */
    if (c->recv_armed && !c->cancelled) {
        struct io_uring_sqe *s = sqe(-1, OP_CANCEL, DATA(c->fd, OP_CANCEL));

        s->addr = DATA(c->fd, OP_RECV);
        s->flags = IOSQE_CQE_SKIP_SUCCESS;
        c->cancelled = 1;
    }
    if (!done || c->recv_armed || c->sending) return;
    sqe(c->fd, OP_CLOSE, DATA(c->fd, OP_CLOSE))->flags = IOSQE_CQE_SKIP_SUCCESS;
    free_conn(c);
}

static void
on_accept(int res, unsigned flags)
{
    struct conn *c;

    if (res == -EINVAL && ring.multishot_accept) {
        fprintf(stderr, "uring_return: multishot accept refused (EINVAL): "
                        "one accept per connection\n");
        ring.multishot_accept = 0;
    } else if (res < 0) {
        fprintf(stderr, "uring_return: accept: %s\n", strerror(-res));
    } else if ((c = new_conn(res)) != NULL) {
        nodelay(res);
        settle(c);
    }
    if (!(flags & IORING_CQE_F_MORE)) arm_accept();
}

static void
on_recv(struct conn *c, int res, unsigned flags)
{
    if (!(flags & IORING_CQE_F_MORE)) c->recv_armed = c->cancelled = 0;
    if (res > 0 && !c->eof
        && take(c, ring.bufs + (flags >> 16) * BUF_SIZE, (size_t) res) != 0)
        c->closing = 1; /* the answers so far, then the close */
    if (flags & IORING_CQE_F_BUFFER) buf_return((uint16_t) (flags >> 16));
    if (res == -EINVAL && ring.multishot_recv) {
        fprintf(stderr, "uring_return: multishot recv refused (EINVAL): "
                        "one recv per read\n");
        ring.multishot_recv = 0;
    } else if (res == 0 || (res < 0 && res != -ENOBUFS && res != -ECANCELED)) {
        c->eof = 1; /* ENOBUFS: the ring ran dry, settle re-arms */
    }
    settle(c);
}

static void
on_send(struct conn *c, int res)
{
    c->sending = 0;
    if (res < 0) { /* the peer is gone: nothing more to answer or send */
        c->in.len = c->out.len = c->fly.len = c->fly_off = 0;
        c->eof = 1;
    } else {
        c->fly_off += (size_t) res;
    }
    if (drain(c) != 0) c->closing = 1; /* the input held back, if any */
    settle(c);
}

static void
on_cqe(const struct io_uring_cqe *cqe)
{
    int fd = (int) (cqe->user_data >> 8);
    struct conn *c = (size_t) fd < conns_size ? conns[fd] : NULL;

    switch (cqe->user_data & 0xff) {
        case OP_ACCEPT:
            on_accept(cqe->res, cqe->flags);
            return;
        case OP_RECV:
            if (c != NULL)
                on_recv(c, cqe->res, cqe->flags);
            else if (cqe->flags & IORING_CQE_F_BUFFER)
                buf_return((uint16_t) (cqe->flags >> 16));
            return;
        case OP_SEND:
            if (c != NULL) on_send(c, cqe->res);
            return;
        default: /* a cancel that found no recv, a close that failed */
            return;
    }
}

static void
uring_serve(int ls)
{
    ring.ls = ls;
    uring_setup();
    uring_buffers();
    arm_accept();
    while (!stopping) {
        unsigned head = *ring.cq_head;
        unsigned tail;

        if (uring_enter(1) < 0 && errno != EINTR && errno != EAGAIN
            && errno != EBUSY)
            die("io_uring_enter");
        update_date();
        tail = __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++) on_cqe(&ring.cqes[head & ring.cq_mask]);
        __atomic_store_n(ring.cq_head, head, __ATOMIC_RELEASE);
    }
    close(ring.fd);
}

int
main(int argc, char **argv)
{
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART */
    struct rlimit rl;
    sigset_t block;
    int uring, port, ls;

    if (argc != 3
        || (strcmp(argv[1], "epoll") != 0 && strcmp(argv[1], "uring") != 0))
    {
        fprintf(stderr, "usage: uring_return epoll|uring PORT\n");
        return 2;
    }
    uring = strcmp(argv[1], "uring") == 0;
    port = atoi(argv[2]);
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &wait_mask);
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) die("getrlimit");
    conns_size = rl.rlim_cur < (1 << 20) ? rl.rlim_cur : (1 << 20);
    if ((conns = calloc(conns_size, sizeof(*conns))) == NULL) die("calloc");
    update_date();
    /* epoll's listener is non-blocking for accept4 to EAGAIN; io_uring's
       accept waits by itself */
    ls = listen_on(port);
    if (!uring && fcntl(ls, F_SETFL, O_NONBLOCK) != 0) die("fcntl");
    fprintf(stderr, "uring_return: %s, listening on 127.0.0.1:%d\n", argv[1],
            port);
    if (uring)
        uring_serve(ls);
    else
        epoll_serve(ls);
    /* the port free at once: io_uring's accept holds the socket until the
       ring's teardown, which the kernel finishes after we exit */
    shutdown(ls, SHUT_RDWR);
    fprintf(stderr, "uring_return: stopped\n");
    return 0;
}
