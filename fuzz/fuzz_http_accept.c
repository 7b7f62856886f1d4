/*
 * libFuzzer target: the C accept handler, ngxffi_http_accept, on a listening
 * TCP socket on 127.0.0.1 (made once), as the epoll module calls it when the
 * socket is readable: per input, a client connects and writes the input's
 * first part, the handler runs, then the rest is written.
 *
 * Input: 5 header bytes, then the request bytes.
 *   [0] the listening socket's SO_SNDBUF, which the accepted socket inherits
 *       (0: the default, autotuned; else b * 256 bytes, raised by the kernel
 *       to its minimum), so that the answer's send may be partial;
 *   [1] the body's length, b * 257 bytes (the largest answers do not fit the
 *       64 KiB output buffer: Python's);
 *   [2] the read buffer's size, 16 + b * 32 bytes;
 *   [3] bit 0: the answers come from a files table ("/a" inline with that
 *       body, "/b" a file's fd, which C leaves to Python, not "/c") instead of
 *       the fixed response; bit 1: the client's SO_RCVBUF at its minimum;
 *   [4] how much of the input is written before the handler runs: all for 0,
 *       else b - 1 bytes.
 *
 * Checks: either the handler answered and closed the connection, and then
 * the first part was exactly one plain request with Connection: close whose
 * answer C has (no file to send, the output buffer big enough), shorter than
 * the read buffer (a full read may have more behind it), the client received
 * exactly that answer (head, Date, the close line, body) and then EOF, and
 * the counters moved by one; or it handed the socket over (x.fd != -1, the
 * handler's 0) with what it read as x.stash, which followed by what the
 * socket still holds is exactly the input (and then nothing was answered,
 * and what was read is not such a request), or with the rest of that answer
 * (stash_out), which after what the client received is exactly the answer.
 * ngxffi_http_accept_drop then closes it. No descriptor outlives a run.
 */

#include "ngxffi.h" /* first: it sets _GNU_SOURCE (accept4, in ngx_fault.h) */

#include <arpa/inet.h>
#include <dirent.h>

#define INPUT_MAX 16384
#define OUT_SIZE  65536
#define BODY_MAX  (255 * 257)
#define WAIT_MS   2000 /* loopback delivers at once: only a bug waits */

static const char fixed_head[] = "HTTP/1.1 200 OK\r\nServer: ngxffi\r\n"
                                 "Content-Type: text/plain\r\n";
static const char close_line[] = "Connection: close\r\n\r\n";

static char body[BODY_MAX];
static int listeners[2] = {-1, -1}; /* SO_SNDBUF left alone, and set */
static struct sockaddr_in addr[2];

static ngxffi_http_file_t inline_a, fd_b;
static ngxffi_http_file_t *buckets[2];
static ngxffi_http_files_t table = {buckets, 2, 0};

static int
fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;

    if (d == NULL) abort();
    while (readdir(d) != NULL) n++;
    closedir(d);
    return n;
}

/* libFuzzer's SIGALRM (-timeout) interrupts a blocking call: the client is
   non-blocking, and waits here, again after EINTR. */
static void
wait_for(int fd, short events)
{
    struct pollfd p = {fd, events, 0};
    int n;

    while ((n = poll(&p, 1, WAIT_MS)) == -1 && errno == EINTR) continue;
    if (n != 1) abort();
}

static int
listener(struct sockaddr_in *a)
{
    socklen_t len = sizeof(*a);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    memset(a, 0, sizeof(*a));
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || bind(s, (struct sockaddr *) a, sizeof(*a)) != 0
        || listen(s, 16) != 0 || getsockname(s, (struct sockaddr *) a, &len))
    {
        abort();
    }
    return s;
}

static void
init(void)
{
    size_t i;

    for (i = 0; i < BODY_MAX; i++)
        body[i] = (char) ('a' + (i * 7 + i / 26) % 26);
    listeners[0] = listener(&addr[0]);
    listeners[1] = listener(&addr[1]);
    inline_a.key = "/a";
    inline_a.key_len = 2;
    inline_a.head = fixed_head;
    inline_a.head_len = sizeof(fixed_head) - 1;
    inline_a.body = body;
    inline_a.fd = -1;
    fd_b.key = "/b";
    fd_b.key_len = 2;
    fd_b.head = fixed_head;
    fd_b.head_len = sizeof(fixed_head) - 1;
    fd_b.size = 1;
    fd_b.fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* never read here */
    if (fd_b.fd < 0) abort();
}

/* A client connected to listener i, resetting on close (no TIME_WAIT left
   by thousands of runs). */
static int
client(int i, int small_rcvbuf)
{
    struct linger lg = {1, 0};
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1, err = 0;
    socklen_t len = sizeof(err);

    if (s < 0) abort();
    if (small_rcvbuf) setsockopt(s, SOL_SOCKET, SO_RCVBUF, &one, sizeof(one));
    if (setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) != 0) abort();
    if (connect(s, (struct sockaddr *) &addr[i], sizeof(addr[i])) != 0) {
        if (errno != EINPROGRESS) abort();
        wait_for(s, POLLOUT);
        if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err) {
            abort();
        }
    }
    return s;
}

static void
send_all(int s, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(s, p, n, MSG_NOSIGNAL);

        if (k < 0 && errno == EAGAIN) {
            wait_for(s, POLLOUT);
            continue;
        }
        if (k <= 0) abort();
        p += k;
        n -= (size_t) k;
    }
}

/* n bytes from s (which may be non-blocking), or up to EOF when eof is set;
   what came, in a buffer of cap bytes. */
static size_t
recv_n(int s, char *p, size_t n, size_t cap, int eof)
{
    size_t got = 0;
    ssize_t k;

    while (eof || got < n) {
        wait_for(s, POLLIN);
        k = recv(s, p + got, cap - got, MSG_DONTWAIT);
        if (k == 0 && eof) break;
        if (k <= 0) abort();
        got += (size_t) k;
        if (got == cap) abort(); /* more than the answer */
    }
    return got;
}

/* The answer C gives to the n bytes at p when they are one plain close
   request it answers, from its read of them: its length, or 0. */
static size_t
answers(const ngxffi_http_fast_t *f, const char *p, size_t n)
{
    ngxffi_http_answer_t a;

    if (n == 0 || ngxffi_http_next(f, p, n, &a) != n || !a.close || a.file
        || ngxffi_http_out_len(f, &a) > f->out_size)
    {
        return 0;
    }
    return ngxffi_http_out_len(f, &a);
}

/* p is the answer to a close request for the body of body_len bytes. */
static void
check_answer(const char *p, size_t len, size_t body_len)
{
    size_t head_len = sizeof(fixed_head) - 1,
           close_len = sizeof(close_line) - 1;
    const char *date = p + head_len, *eol;

    if (len < head_len + 6 || memcmp(p, fixed_head, head_len) != 0
        || memcmp(date, "Date: ", 6) != 0)
    {
        abort();
    }
    eol = memchr(date, '\n', len - head_len);
    if (eol == NULL || eol - date < 10 || memcmp(eol - 4, "GMT\r\n", 5) != 0) {
        abort();
    }
    eol++;
    if ((size_t) (p + len - eol) != close_len + body_len
        || memcmp(eol, close_line, close_len) != 0
        || memcmp(eol + close_len, body, body_len) != 0)
    {
        abort();
    }
}

typedef struct {
    ngxffi_http_fast_t f;
    ngxffi_http_accept_t x;
    int64_t accepted, handled, requests;
    const char *input;
    size_t len, first; /* the input, and how much came before the handler */
    int client;
} run_t;

/* C answered and closed: the whole answer, then EOF, for exactly one close
   request. */
static void
check_closed(run_t *r, char *got)
{
    size_t out = answers(&r->f, r->input, r->first), n;

    if (out == 0 || r->first >= r->f.size || r->f.answered != 1
        || r->accepted != 1 || r->handled != 1 || r->requests != 1)
    {
        abort();
    }
    n = recv_n(r->client, got, 0, OUT_SIZE, 1);
    if (n != out) abort();
    check_answer(got, n,
                 out - (sizeof(fixed_head) - 1) - r->f.date_len
                     - (sizeof(close_line) - 1));
}

/* Handed over with its input: the stash, then what the socket holds, is the
   input; nothing was answered. */
static void
check_input(run_t *r, char *got)
{
    ngxffi_http_accept_t *x = &r->x;
    size_t n;

    if (r->f.answered != 0 || r->requests != 0 || r->accepted != 0 || x->lost
        || x->stash_len > r->first || (x->stash_len != 0) != (x->stash != NULL)
        || memcmp(x->stash ? x->stash : "", r->input, x->stash_len) != 0)
    {
        abort();
    }
    /* read whole and under the buffer's size, one close request C answers */
    if (x->stash_len == r->first && r->first < r->f.size
        && answers(&r->f, r->input, r->first))
    {
        abort();
    }
    send_all(r->client, r->input + r->first, r->len - r->first);
    n = recv_n(x->fd, got, r->len - x->stash_len, INPUT_MAX + 1, 0);
    if (n != r->len - x->stash_len
        || memcmp(got, r->input + x->stash_len, n) != 0) {
        abort();
    }
    if (recv(r->client, got, 1, MSG_DONTWAIT) != -1) abort(); /* no answer */
}

/* Handed over with the rest of the answer: what the client received, then
   the stash, is it. */
static void
check_output(run_t *r, char *got)
{
    ngxffi_http_accept_t *x = &r->x;
    size_t out = answers(&r->f, r->input, r->first), n;

    if (out == 0 || r->first >= r->f.size || r->f.answered != 1
        || r->requests != 1 || r->accepted != 0 || x->lost || x->stash == NULL
        || x->stash_len == 0 || x->stash_len > out)
    {
        abort();
    }
    n = recv_n(r->client, got, out - x->stash_len, OUT_SIZE, 0);
    if (n != out - x->stash_len) abort();
    memcpy(got + n, x->stash, x->stash_len);
    check_answer(got, out,
                 out - (sizeof(fixed_head) - 1) - r->f.date_len
                     - (sizeof(close_line) - 1));
}

static void
configure(run_t *r, const uint8_t *data)
{
    size_t body_len = (size_t) data[1] * 257;

    memset(r, 0, sizeof(*r));
    r->f.enabled = 1;
    if (data[3] & 1) {
        inline_a.size = body_len;
        if (ngxffi_http_file_link(&table, &inline_a) != 0
            || ngxffi_http_file_link(&table, &fd_b) != 0)
        {
            abort();
        }
        r->f.files = &table;
    } else {
        r->f.head = fixed_head;
        r->f.head_len = sizeof(fixed_head) - 1;
        r->f.body = body;
        r->f.body_len = body_len;
    }
    r->f.skip_path = "/status";
    r->f.skip_path_len = 7;
    r->f.keepalive_requests = 100;
    r->f.requests = &r->requests;
    r->f.size = 16 + (size_t) data[2] * 32;
    r->f.buf = malloc(r->f.size);
    r->f.out_size = OUT_SIZE;
    r->f.out = malloc(OUT_SIZE);
    if (r->f.buf == NULL || r->f.out == NULL) abort();
    r->x.fast = &r->f;
    r->x.accepted = &r->accepted;
    r->x.handled = &r->handled;
    r->x.accept_max = 4;
    r->x.fd = -1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char got[OUT_SIZE + INPUT_MAX + 1];
    ngx_connection_t lc;
    ngx_event_t rev;
    ngxffi_cycle_t cy;
    run_t r;
    int fds, i, sndbuf, rc;

    if (size < 5 || size - 5 > INPUT_MAX) return 0;
    if (listeners[0] == -1) init();
    fds = fd_count();
    i = data[0] != 0;
    if (i) {
        sndbuf = data[0] * 256;
        setsockopt(listeners[1], SOL_SOCKET, SO_SNDBUF, &sndbuf,
                   sizeof(sndbuf));
    }
    configure(&r, data);
    r.input = (const char *) data + 5;
    r.len = size - 5;
    r.first = data[4] == 0 || data[4] - 1u > r.len ? r.len : data[4] - 1u;
    r.client = client(i, data[3] & 2);
    send_all(r.client, r.input, r.first);

    memset(&cy, 0, sizeof(cy));
    memset(&lc, 0, sizeof(lc));
    memset(&rev, 0, sizeof(rev));
    lc.fd = listeners[i];
    lc.read = &rev;
    rev.data = &lc;
    rev.accept = 1;
    rev.ready = 1;
    rev.c_handler = ngxffi_http_accept;
    rev.c_ctx = &r.x;
    wait_for(lc.fd, POLLIN); /* as epoll would report it */
    rc = rev.c_handler(&cy, &rev);
#ifdef FUZZ_VERBOSE /* what an input did: -DFUZZ_VERBOSE, run on one file */
    fprintf(stderr, "handler %d, %s, stash %s %u\n", rc,
            r.x.fd == -1 ? "closed" : "handed over",
            r.x.stash_out ? "output" : "input", r.x.stash_len);
#endif

    if (rc == 1 && r.x.fd == -1 && !rev.ready) {
        check_closed(&r, got);
    } else if (rc == 0 && r.x.fd != -1 && !r.x.stash_out) {
        check_input(&r, got);
    } else if (rc == 0 && r.x.fd != -1) {
        check_output(&r, got);
    } else {
        abort(); /* a failed accept, or nothing accepted */
    }
    ngxffi_http_accept_drop(&r.x);
    if (r.x.fd != -1 || r.x.stash != NULL || r.x.stash_len != 0) abort();

    close(r.client);
    if (r.f.files) {
        ngxffi_http_file_unlink(&table, &inline_a);
        ngxffi_http_file_unlink(&table, &fd_b);
    }
    free(r.f.buf);
    free(r.f.out);
    if (fd_count() != fds) abort(); /* a descriptor leaked */
    return 0;
}
