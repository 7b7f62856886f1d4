/*
 * libFuzzer target: the C read handler, ngxffi_http_fast_read, over a
 * socketpair, as the epoll module calls it on an idle keep-alive connection,
 * answering with the fixed response (`return`) or from an open-file cache
 * table.
 *
 * Input: 5 header bytes, the split, then the request bytes.
 *   [0] the server side's SO_SNDBUF (0: the default; else b * 256 bytes, which
 *       the kernel raises to its minimum), so that the answers' send (or a
 *       file's sendfile) may be partial and their tail stashed as output;
 *   [1] the read buffer's size, 16 + b * 32 bytes (a full read goes to Python);
 *   [2] keepalive_requests, 1 + b (at the limit, Python answers);
 *   [3] how many writes the request bytes are split into, 1 + b % 8;
 *   [4] the answers: even, the fixed response; odd, a files table holding
 *       "/a" inline and "/b" as the fd of a temporary file of k * k * 64 + k
 *       bytes (k = b >> 1: 0 to 1 MiB, the cache's largest), and not "/c"
 *       (a request for it is Python's);
 *   then one byte per write but the last, its length minus 1 (the last write
 *   has the rest).
 * After each write, the handler runs while the socket has unread bytes and
 * the C handler is still on (it turns itself off when it leaves the rest to
 * Python).
 *
 * Checks, at the end: what the client received, followed by an output stash,
 * is exactly the answers to the first `answered` requests of the input, as
 * ngxffi_http_simple splits them, in order (head, a Date line, the keep-alive
 * line, then the fixed body, or by the request's path the inline body or the
 * file's bytes); an input stash holds exactly the bytes after those that the
 * handler read; nothing is lost (answered bytes + stash + unread + unwritten =
 * the input) and no error is flagged (no allocation fails, no file shrinks).
 */

#include "ngxffi.h" /* first: it sets _GNU_SOURCE (accept4, in ngx_fault.h) */

#include <sys/ioctl.h>

#define INPUT_MAX 16384
#define OUT_SIZE  65536
#define FILE_MAX  (127 * 127 * 64 + 127)

static const char head[] = "HTTP/1.1 200 OK\r\nServer: ngxffi\r\n"
                           "Content-Type: text/plain\r\n"
                           "Content-Length: 3\r\n";
static const char body[] = "ok\n";
static const char keepalive[] = "Connection: keep-alive\r\n\r\n";

/* The files: "/a" inline (its body the first bytes of the file's), "/b" from
   file_fd, whose bytes are file_bytes (no period a misplaced offset would
   hide behind). */
static char file_bytes[FILE_MAX];
static int file_fd = -1;
static char head_a[128], head_b[128];
static ngxffi_http_file_t file_a, file_b;
static ngxffi_http_file_t *buckets[4];
static ngxffi_http_files_t table = {buckets, 4, 0};

/* One expected answer: its head up to Date, its body. */
typedef struct {
    const char *head;
    size_t head_len;
    const char *body;
    size_t body_len;
} answer_t;

/* What the client received: grown as it comes, up to max. */
typedef struct {
    char *p;
    size_t len, cap, max;
} got_t;

static size_t
unread(int fd)
{
    int n = 0;

    if (ioctl(fd, FIONREAD, &n) != 0 || n < 0) abort();
    return (size_t) n;
}

static void
got_append(got_t *g, const char *p, size_t n)
{
    if (n > g->max - g->len) abort(); /* more than the answers can be */
    if (g->len + n > g->cap) {
        g->cap = g->len + n > 2 * g->cap ? g->len + n : 2 * g->cap;
        g->p = realloc(g->p, g->cap);
        if (g->p == NULL) abort();
    }
    memcpy(g->p + g->len, p, n);
    g->len += n;
}

/* Everything the client can read now. */
static void
drain(int fd, got_t *g)
{
    static char chunk[65536];
    ssize_t n;

    while ((n = recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT)) > 0) {
        got_append(g, chunk, (size_t) n);
    }
}

static void
make_head(ngxffi_http_file_t *e, char *h, size_t size)
{
    int n = snprintf(h, 128,
                     "HTTP/1.1 200 OK\r\nServer: ngxffi\r\n"
                     "Content-Length: %zu\r\n",
                     size);

    if (n <= 0 || n >= 128) abort();
    e->head = h;
    e->head_len = (size_t) n;
    e->size = size;
}

/* The table for this input, "/b" being size bytes long. */
static void
link_files(size_t size)
{
    uint32_t x = 2463534242u;
    size_t i;

    if (file_fd == -1) {
        char path[] = "/tmp/fuzz_http_fast_read.XXXXXX";

        for (i = 0; i < FILE_MAX; i++) { /* xorshift32 */
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            file_bytes[i] = (char) x;
        }
        file_fd = mkstemp(path);
        if (file_fd < 0 || unlink(path) != 0
            || write(file_fd, file_bytes, FILE_MAX) != FILE_MAX)
        {
            abort();
        }
        file_a.key = "/a";
        file_a.key_len = 2;
        file_a.body = file_bytes;
        file_a.fd = -1;
        make_head(&file_a, head_a, 300);
        file_b.key = "/b";
        file_b.key_len = 2;
        file_b.fd = file_fd;
    }
    make_head(&file_b, head_b, size);
    if (ngxffi_http_file_link(&table, &file_a) != 0
        || ngxffi_http_file_link(&table, &file_b) != 0 || table.linked != 2)
    {
        abort();
    }
}

static void
unlink_files(void)
{
    if (ngxffi_http_file_unlink(&table, &file_a) != 0
        || ngxffi_http_file_unlink(&table, &file_b) != 0 || table.linked != 0
        || ngxffi_http_file_unlink(&table, &file_b) != -1)
    {
        abort();
    }
}

/* The answer to the request at p: the fixed one, or by its path the file's
   (the target up to its query); only "/a" and "/b" may be answered. */
static answer_t
expected(const ngxffi_http_fast_t *f, const char *p)
{
    const ngxffi_http_file_t *e;
    answer_t a = {head, sizeof(head) - 1, body, sizeof(body) - 1};
    size_t path = strcspn(p + 4, "? ");

    if (f->files == NULL) return a;
    if (path == 2 && memcmp(p + 4, "/a", 2) == 0) {
        e = &file_a;
    } else if (path == 2 && memcmp(p + 4, "/b", 2) == 0) {
        e = &file_b;
    } else {
        abort();
    }
    a.head = e->head;
    a.head_len = e->head_len;
    a.body = file_bytes;
    a.body_len = e->size;
    return a;
}

/* p holds the answer a: its length, or abort. */
static size_t
check_answer(const char *p, size_t len, const answer_t *a)
{
    size_t ka_len = sizeof(keepalive) - 1;
    const char *date = p + a->head_len, *eol;

    if (len < a->head_len + 6 || memcmp(p, a->head, a->head_len) != 0
        || memcmp(date, "Date: ", 6) != 0)
    {
        abort();
    }
    eol = memchr(date, '\n', len - a->head_len);
    if (eol == NULL || eol - date < 10 || memcmp(eol - 4, "GMT\r\n", 5) != 0) {
        abort();
    }
    eol++;
    if ((size_t) (p + len - eol) < ka_len + a->body_len
        || memcmp(eol, keepalive, ka_len) != 0
        || memcmp(eol + ka_len, a->body, a->body_len) != 0)
    {
        abort();
    }
    return (size_t) (eol - p) + ka_len + a->body_len;
}

/* The output is exactly the answers to the first `answered` requests of the
   input: the length of those requests. */
static size_t
check_output(const ngxffi_http_fast_t *f, const got_t *g, const char *input,
             size_t len)
{
    size_t off = 0, at = 0, n;
    uint64_t k;
    answer_t a;

    for (k = 0; k < f->answered; k++) {
        n = ngxffi_http_simple(f, input + off, len - off);
        if (n == 0) abort();
        a = expected(f, input + off);
        at += check_answer(g->p + at, g->len - at, &a);
        off += n;
    }
    if (at != g->len) abort();
    return off;
}

/* Write the input as the header says and run the handler after each write
   while it is on; the bytes written. */
static size_t
run(const uint8_t *data, const char *input, size_t len, unsigned splits,
    ngxffi_cycle_t *cy, ngx_event_t *rev, int client, got_t *g)
{
    ngx_connection_t *c = rev->data;
    ngxffi_http_fast_t *f = rev->c_ctx;
    size_t written = 0;
    unsigned i;

    for (i = 0; i < splits && rev->c_handler != NULL; i++) {
        /* the end of this write: the last takes the rest */
        size_t end = len;

        if (i + 1 < splits && written < len) {
            end = written + 1 + (size_t) data[5 + i];
            if (end > len) end = len;
        }
        while (rev->c_handler != NULL) {
            size_t progress = written;

            while (written < end) {
                ssize_t n =
                    send(client, input + written, end - written, MSG_NOSIGNAL);
                if (n <= 0) break; /* the server's side is full: read first */
                written += (size_t) n;
            }
            while (rev->c_handler != NULL && unread(c->fd) > 0) {
                uint64_t before = f->answered;
                int r = rev->c_handler(cy, rev);

                if (r != 0 && r != 1) abort();
                drain(client, g);
                if (r == 0 && c->stash == NULL) abort();    /* lost */
                if (r == 1 && f->answered == before) break; /* EAGAIN */
                progress = (size_t) -1;
            }
            if (written == end || progress == written) break;
        }
    }
    drain(client, g);
    return written;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_connection_t connection;
    ngx_event_t rev, wev;
    ngxffi_cycle_t cy;
    ngxffi_http_fast_t f;
    int64_t requests = 0;
    int fd[2], sndbuf;
    unsigned splits;
    size_t len, written, answered_len, rest, k;
    char *input;
    got_t got = {NULL, 0, 0, 0};

    if (size < 5) return 0;
    splits = 1 + data[3] % 8;
    if (size < 4 + splits || size - 4 - splits > INPUT_MAX) return 0;
    len = size - 4 - splits;
    input = malloc(len ? len : 1);
    if (input == NULL) abort();
    memcpy(input, data + 4 + splits, len);

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd) != 0) abort();
    if (data[0]) {
        sndbuf = data[0] * 256;
        setsockopt(fd[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    }

    memset(&cy, 0, sizeof(cy));
    memset(&connection, 0, sizeof(connection));
    memset(&rev, 0, sizeof(rev));
    memset(&wev, 0, sizeof(wev));
    cy.connections = &connection;
    cy.read_events = &rev;
    cy.write_events = &wev;
    cy.connection_n = 1;
    ngxffi_init_connections(&cy);
    if (ngxffi_get_connection(&cy, fd[0]) != 0) abort();

    memset(&f, 0, sizeof(f));
    f.enabled = 1;
    if (data[4] & 1) {
        k = data[4] >> 1;
        link_files(k * k * 64 + k);
        f.files = &table;
    } else {
        f.head = head;
        f.head_len = sizeof(head) - 1;
        f.body = body;
        f.body_len = sizeof(body) - 1;
    }
    f.skip_path = "/status";
    f.skip_path_len = 7;
    f.keepalive_requests = 1 + (uint64_t) data[2];
    f.requests = &requests;
    f.size = 16 + (size_t) data[1] * 32;
    f.buf = malloc(f.size);
    f.out_size = OUT_SIZE;
    f.out = malloc(f.out_size);
    if (f.buf == NULL || f.out == NULL) abort();
    /* at most keepalive_requests answers, none longer than 512 bytes and a
       body */
    got.max = f.keepalive_requests * (512 + (f.files ? FILE_MAX : 0));

    rev.active = 1;
    rev.c_handler = ngxffi_http_fast_read;
    rev.c_ctx = &f;
    written = run(data, input, len, splits, &cy, &rev, fd[1], &got);

    /* the output: received, then the output stash */
    if (connection.stash != NULL && connection.stash_out) {
        got_append(&got, connection.stash, connection.stash_len);
    }
#ifdef FUZZ_VERBOSE /* what an input did: -DFUZZ_VERBOSE, run on one file */
    fprintf(stderr, "answered %llu, received %zu, stash %s %u\n",
            (unsigned long long) f.answered, got.len,
            connection.stash == NULL ? "none"
            : connection.stash_out   ? "output"
                                     : "input",
            connection.stash_len);
#endif
    answered_len = check_output(&f, &got, input, len);
    if ((uint64_t) requests != f.answered || connection.requests != f.answered
        || connection.error)
    {
        abort();
    }

    /* the input: after the answered requests, what was read is stashed */
    rest = written - unread(fd[0]) - answered_len;
    if (connection.stash != NULL && !connection.stash_out) {
        if (connection.stash_len != rest
            || memcmp(connection.stash, input + answered_len, rest) != 0)
        {
            abort();
        }
    } else if (rest != 0) {
        abort(); /* read, neither answered nor stashed */
    }

    if (f.files) unlink_files();
    if (connection.stash) ngxffi_stash_free(&connection);
    close(fd[0]);
    close(fd[1]);
    free(f.buf);
    free(f.out);
    free(got.p);
    free(input);
    return 0;
}
