/*
 * libFuzzer target: the C read handler, ngxffi_http_fast_read, over a
 * socketpair, as the epoll module calls it on an idle keep-alive connection.
 *
 * Input: 4 header bytes, the split, then the request bytes.
 *   [0] the server side's SO_SNDBUF (0: the default; else b * 256 bytes, which
 *       the kernel raises to its minimum), so that the answers' send may be
 *       partial and their tail stashed as output;
 *   [1] the read buffer's size, 16 + b * 32 bytes (a full read goes to Python);
 *   [2] keepalive_requests, 1 + b (at the limit, Python answers);
 *   [3] how many writes the request bytes are split into, 1 + b % 8;
 *   then one byte per write but the last, its length minus 1 (the last write
 *   has the rest).
 * After each write, the handler runs while the socket has unread bytes and
 * the C handler is still on (it turns itself off when it leaves the rest to
 * Python).
 *
 * Checks, at the end: what the client received, followed by an output stash,
 * is exactly `answered` whole fixed answers (head, a Date line, the keep-alive
 * line, body); the answered requests are exactly the first bytes of the input,
 * as ngxffi_http_simple splits them; an input stash holds exactly the bytes
 * after those that the handler read; and nothing is lost: answered bytes +
 * stash + unread + unwritten = the input.
 */

#include <sys/ioctl.h>

#include "ngxffi.h"

#define INPUT_MAX 16384
#define OUT_SIZE  65536

static const char head[] = "HTTP/1.1 200 OK\r\nServer: ngxffi\r\n"
                           "Content-Type: text/plain\r\n"
                           "Content-Length: 3\r\n";
static const char body[] = "ok\n";
static const char keepalive[] = "Connection: keep-alive\r\n\r\n";

static size_t
unread(int fd)
{
    int n = 0;

    if (ioctl(fd, FIONREAD, &n) != 0 || n < 0) abort();
    return (size_t) n;
}

/* Everything the client can read now, appended at got + *len. */
static void
drain(int fd, char *got, size_t *len, size_t cap)
{
    for (;;) {
        ssize_t n;

        if (*len == cap) abort(); /* more than the answers can be */
        n = recv(fd, got + *len, cap - *len, MSG_DONTWAIT);
        if (n <= 0) return;
        *len += (size_t) n;
    }
}

static void
check_answers(const char *p, size_t len, uint64_t answered)
{
    size_t head_len = sizeof(head) - 1, ka_len = sizeof(keepalive) - 1;
    size_t body_len = sizeof(body) - 1;
    uint64_t i;

    for (i = 0; i < answered; i++) {
        const char *date = p + head_len, *eol;

        if (len < head_len + 6 || memcmp(p, head, head_len) != 0
            || memcmp(date, "Date: ", 6) != 0)
        {
            abort();
        }
        eol = memchr(date, '\n', len - head_len);
        if (eol == NULL || eol - date < 10
            || memcmp(eol - 4, "GMT\r\n", 5) != 0) {
            abort();
        }
        eol++;
        if ((size_t) (p + len - eol) < ka_len + body_len
            || memcmp(eol, keepalive, ka_len) != 0
            || memcmp(eol + ka_len, body, body_len) != 0)
        {
            abort();
        }
        eol += ka_len + body_len;
        len -= (size_t) (eol - p);
        p = eol;
    }
    if (len != 0) abort();
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
    unsigned splits, i;
    size_t len, written = 0, answered_len = 0, got_len = 0, off, rest;
    char *input, *got;
    uint64_t k;

    if (size < 4) return 0;
    splits = 1 + data[3] % 8;
    if (size < 3 + splits || size - 3 - splits > INPUT_MAX) return 0;
    len = size - 3 - splits;
    input = malloc(len ? len : 1);
    if (input == NULL) abort();
    memcpy(input, data + 3 + splits, len);

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
    f.head = head;
    f.head_len = sizeof(head) - 1;
    f.body = body;
    f.body_len = sizeof(body) - 1;
    f.skip_path = "/status";
    f.skip_path_len = 7;
    f.keepalive_requests = 1 + (uint64_t) data[2];
    f.requests = &requests;
    f.size = 16 + (size_t) data[1] * 32;
    f.buf = malloc(f.size);
    f.out_size = OUT_SIZE;
    f.out = malloc(f.out_size);
    got = malloc(OUT_SIZE);
    if (f.buf == NULL || f.out == NULL || got == NULL) abort();

    rev.active = 1;
    rev.c_handler = ngxffi_http_fast_read;
    rev.c_ctx = &f;

    for (i = 0; i < splits && rev.c_handler != NULL; i++) {
        /* the end of this write: the last takes the rest */
        size_t end = len;

        if (i + 1 < splits && written < len) {
            end = written + 1 + (size_t) data[4 + i];
            if (end > len) end = len;
        }
        while (rev.c_handler != NULL) {
            size_t progress = written;

            while (written < end) {
                ssize_t n =
                    send(fd[1], input + written, end - written, MSG_NOSIGNAL);
                if (n <= 0) break; /* the server's side is full: read first */
                written += (size_t) n;
            }
            while (rev.c_handler != NULL && unread(fd[0]) > 0) {
                uint64_t before = f.answered;
                int r = rev.c_handler(&cy, &rev);

                if (r != 0 && r != 1) abort();
                drain(fd[1], got, &got_len, OUT_SIZE);
                if (r == 0 && connection.stash == NULL) abort(); /* lost */
                if (r == 1 && f.answered == before) break;       /* EAGAIN */
                progress = (size_t) -1;
            }
            if (written == end || progress == written) break;
        }
    }
    drain(fd[1], got, &got_len, OUT_SIZE);

    /* the output: received, then the output stash */
    if (connection.stash != NULL && connection.stash_out) {
        if (got_len + connection.stash_len > OUT_SIZE) abort();
        memcpy(got + got_len, connection.stash, connection.stash_len);
        got_len += connection.stash_len;
    }
#ifdef FUZZ_VERBOSE /* what an input did: -DFUZZ_VERBOSE, run on one file */
    fprintf(stderr, "answered %llu, received %zu, stash %s %u\n",
            (unsigned long long) f.answered, got_len,
            connection.stash == NULL ? "none"
            : connection.stash_out   ? "output"
                                     : "input",
            connection.stash_len);
#endif
    check_answers(got, got_len, f.answered);
    if ((uint64_t) requests != f.answered || connection.requests != f.answered)
    {
        abort();
    }

    /* the input: the answered requests, in order, as the recogniser splits
       them */
    for (off = 0, k = 0; k < f.answered; k++) {
        size_t n = ngxffi_http_simple(&f, input + off, len - off);

        if (n == 0) abort();
        off += n;
    }
    answered_len = off;
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

    if (connection.stash) ngxffi_stash_free(&connection);
    close(fd[0]);
    close(fd[1]);
    free(f.buf);
    free(f.out);
    free(got);
    free(input);
    return 0;
}
