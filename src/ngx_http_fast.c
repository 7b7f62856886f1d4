/*
 * The plain-GET recogniser and the C read handler (see ngx_http_fast.h).
 */

#include "ngxffi.h"
#include "ngx_http_class.h"

#define ngxffi_is(ch, cls) (ngxffi_http_class[(unsigned char) (ch)] & (cls))

static int
ngxffi_name_is(const char *p, size_t n, const char *name, size_t len)
{
    return n == len && strncasecmp(p, name, n) == 0;
}

#define ngxffi_name(p, n, name) ngxffi_name_is(p, n, name, sizeof(name) - 1)

#define NGXFFI_HTTP_LINE_MAX 8000 /* below large_client_header_buffers' 8k */

/* A Connection value that is exactly "keep-alive" (1: it changes nothing for
   llhttp, as many HTTP/1.1 clients send it) or "close" (2), in any case, OWS
   around it; 0 for anything else. */
static int
ngxffi_connection(const char *value, const char *end)
{
    while (value < end && (*value == ' ' || *value == '\t')) value++;
    while (end > value && (end[-1] == ' ' || end[-1] == '\t')) end--;
    if (end - value == 10 && strncasecmp(value, "keep-alive", 10) == 0)
        return 1;
    if (end - value == 5 && strncasecmp(value, "close", 5) == 0) return 2;
    return 0;
}

/* The length of one complete request at p that is a plain GET:
   request line "GET <target> HTTP/1.1", header lines "name: value", exactly one
   Host, none of the headers that change how a request is framed or answered
   (Content-Length, Transfer-Encoding, Proxy-Connection, Upgrade, Expect;
   Connection unless it says keep-alive or close; If-Modified-Since when
   answering from files, which may make the answer a 304), target not the
   skipped path. 0 for anything else, complete or not: Python decides then.
   *path gets the length of the target's path (the target up to its query),
   *close whether the request said Connection: close. */
static size_t
ngxffi_http_request(const ngxffi_http_fast_t *f, const char *p, size_t n,
                    size_t *path, int *close)
{
    const char *end = p + n, *q = p + 4, *target, *line, *query, *value;
    size_t path_len, len;
    int host = 0, connection, how;

    *close = 0;

    if (n < 5 || memcmp(p, "GET /", 5) != 0) return 0;
    target = q;
    while (q < end && ngxffi_is(*q, NGXFFI_TARGET)) q++;
    if (q - target > NGXFFI_HTTP_LINE_MAX) return 0;
    if (end - q < 11 || memcmp(q, " HTTP/1.1\r\n", 11) != 0) return 0;
    query = memchr(target, '?', (size_t) (q - target));
    path_len = (size_t) ((query ? query : q) - target);
    if (f->skip_path_len == path_len
        && memcmp(target, f->skip_path, path_len) == 0) {
        return 0;
    }
    q += 11;

    for (;;) {
        if (end - q < 2) return 0;
        if (q[0] == '\r') {
            if (q[1] != '\n') return 0;
            q += 2;
            break;
        }
        line = q;
        while (q < end && ngxffi_is(*q, NGXFFI_TCHAR)) q++;
        if (q == line || q == end || *q != ':') return 0;
        len = (size_t) (q - line);
        connection = ngxffi_name(line, len, "connection");
        if (ngxffi_name(line, len, "host")) {
            host++;
        } else if (ngxffi_name(line, len, "content-length")
                   || ngxffi_name(line, len, "transfer-encoding")
                   || ngxffi_name(line, len, "proxy-connection")
                   || ngxffi_name(line, len, "upgrade")
                   || ngxffi_name(line, len, "expect")
                   || (f->files && ngxffi_name(line, len, "if-modified-since")))
        {
            return 0;
        }
        value = ++q;
        while (q < end && ngxffi_is(*q, NGXFFI_VALUE)) q++;
        if (end - q < 2 || q[0] != '\r' || q[1] != '\n') return 0;
        if (q - line > NGXFFI_HTTP_LINE_MAX) return 0;
        if (connection) {
            how = ngxffi_connection(value, q);
            if (how == 0) return 0;
            *close |= how == 2;
        }
        q += 2;
    }
    *path = path_len;
    return host == 1 ? (size_t) (q - p) : 0;
}

size_t
ngxffi_http_simple(const ngxffi_http_fast_t *f, const char *p, size_t n)
{
    size_t path, len;
    int close;

    if (f == NULL || p == NULL) return 0;
    len = ngxffi_http_request(f, p, n, &path, &close);
    return close ? 0 : len;
}

/* "Date: Mon, 23 Nov 2026 14:13:05 GMT\r\n", as nginx's ngx_cached_http_time
   and email.utils.formatdate(usegmt=True) print it (names in English, whatever
   the locale). 0, or -1 with date_len 0 (the C handler then leaves every
   request to Python) for a time gmtime_r cannot convert or whose year is not
   the four digits of an HTTP date: a failed gmtime_r leaves struct tm unset
   (tm_wday would index the names wildly), and tm_year + 1900 overflows near
   INT_MAX. */
int
ngxffi_http_date(ngxffi_http_fast_t *f, int64_t sec)
{
    static const char days[] = "SunMonTueWedThuFriSat";
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    time_t t = (time_t) sec;
    struct tm tm;
    int n;

    if (f == NULL) return -1;
    f->date_len = 0;
    f->date_sec = sec;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year < -1900
        || tm.tm_year > 9999 - 1900 || tm.tm_wday < 0 || tm.tm_wday > 6
        || tm.tm_mon < 0 || tm.tm_mon > 11)
    {
        return -1;
    }
    n = snprintf(f->date, sizeof(f->date),
                 "Date: %.3s, %02d %.3s %04d %02d:%02d:%02d GMT\r\n",
                 days + 3 * tm.tm_wday, tm.tm_mday, months + 3 * tm.tm_mon,
                 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (n <= 0 || (size_t) n >= sizeof(f->date)) return -1;
    f->date_len = (size_t) n;
    return 0;
}

static uint64_t
ngxffi_msec(const ngxffi_cycle_t *cy)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000
           + cy->clock_offset;
}

#define NGXFFI_KEEP_ALIVE "Connection: keep-alive\r\n\r\n"
#define NGXFFI_CLOSE      "Connection: close\r\n\r\n"
#define NGXFFI_LEN(s)     (sizeof(s) - 1)

/* The length of the plain request at p if C has its answer (then in *a), else
   0: the fixed answer of `return`, or a cached file found by the path. */
size_t
ngxffi_http_next(const ngxffi_http_fast_t *f, const char *p, size_t n,
                 ngxffi_http_answer_t *a)
{
    const ngxffi_http_file_t *e;
    size_t path, len;
    int close;

    memset(a, 0, sizeof(*a));
    len = ngxffi_http_request(f, p, n, &path, &close);
    if (len == 0) return 0;
    a->close = close;
    if (f->files == NULL) {
        a->head = f->head;
        a->head_len = f->head_len;
        a->body = f->body;
        a->body_len = f->body_len;
        return len;
    }
    e = ngxffi_http_file_find(f->files, p + 4, path);
    if (e == NULL) return 0;
    a->head = e->head;
    a->head_len = e->head_len;
    if (e->body) {
        a->body = e->body;
        a->body_len = e->size;
    } else {
        a->file = e;
    }
    return len;
}

/* An answer's length in the output buffer: all of it but a file's body. */
size_t
ngxffi_http_out_len(const ngxffi_http_fast_t *f, const ngxffi_http_answer_t *a)
{
    return a->head_len + f->date_len + a->body_len
           + (a->close ? NGXFFI_LEN(NGXFFI_CLOSE)
                       : NGXFFI_LEN(NGXFFI_KEEP_ALIVE));
}

/* Write the answer at o (ngxffi_http_out_len(f, a) bytes, which the caller
   made room for); its length. */
size_t
ngxffi_http_put(const ngxffi_http_fast_t *f, char *o,
                const ngxffi_http_answer_t *a)
{
    const char *line = a->close ? NGXFFI_CLOSE : NGXFFI_KEEP_ALIVE;
    size_t len =
        a->close ? NGXFFI_LEN(NGXFFI_CLOSE) : NGXFFI_LEN(NGXFFI_KEEP_ALIVE);

    memcpy(o, a->head, a->head_len);
    memcpy(o + a->head_len, f->date, f->date_len);
    o += a->head_len + f->date_len;
    memcpy(o, line, len);
    if (a->body_len) memcpy(o + len, a->body, a->body_len);
    return ngxffi_http_out_len(f, a);
}

/* The Date line, formatted again when the second changed. */
void
ngxffi_http_clock(ngxffi_http_fast_t *f)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    if ((int64_t) now.tv_sec != f->date_sec) ngxffi_http_date(f, now.tv_sec);
}

/* The stash for what Python must finish: *n bytes; when that allocation fails
   and rest (0: none) is smaller, rest bytes with c->error set (the answers
   after the one the send cut are lost: Python closes after it); NULL with
   c->error set when nothing can be kept. The bytes were taken from the socket
   (or answers counted and partly sent), so they must not be dropped silently:
   c->error tells Python to close the connection (ngxffi/http/connection.py,
   read). The C handler stays off until Python puts it back. */
static char *
ngxffi_http_stash(ngx_event_t *rev, size_t *n, size_t rest, int output)
{
    ngx_connection_t *c = rev->data;

    rev->c_handler = NULL;
    c->stash = ngxffi_alloc(*n ? *n : 1);
    if (c->stash == NULL && rest != 0 && rest < *n) {
        c->stash = ngxffi_alloc(rest);
        *n = rest;
        c->error = 1;
    }
    if (c->stash == NULL) {
        c->error = 1;
        return NULL;
    }
    c->stash_len = 0;
    c->stash_out = (unsigned) output & 1; /* as the 1-bit field keeps it */
    return c->stash;
}

/* Input Python must parse: the n bytes read. */
static int
ngxffi_http_leave_input(ngx_event_t *rev, const char *p, size_t n)
{
    ngx_connection_t *c = rev->data;
    char *stash = ngxffi_http_stash(rev, &n, 0, 0);

    if (stash == NULL) return 0;
    memcpy(stash, p, n);
    c->stash_len = (uint32_t) n;
    return 0;
}

/* How much is left, from byte `sent` on, of the answer that byte falls in:
   the answers are rebuilt from the n bytes of input in the order they were
   made. */
static size_t
ngxffi_http_rest(const ngxffi_http_fast_t *f, size_t n, size_t sent)
{
    ngxffi_http_answer_t a;
    size_t used = 0, end = 0, len;

    while (used < n) {
        len = ngxffi_http_next(f, f->buf + used, n - used, &a);
        if (len == 0) break;
        end += ngxffi_http_out_len(f, &a) + (a.file ? a.file->size : 0);
        if (end > sent) return end - sent;
        used += len;
    }
    return 0;
}

/* Output the socket did not take: the rest of the out bytes, then of the
   file (read into the stash: the cache links only files small enough for
   that, ngxffi/http/cache.py). A file that reads short (it shrank before
   the cache heard of it) makes the answer a lie: c->error, so that Python
   closes after sending what there is. */
static int
ngxffi_http_leave_output(ngx_event_t *rev, const ngxffi_http_fast_t *f,
                         size_t out, size_t sent,
                         const ngxffi_http_file_t *file, size_t n)
{
    ngx_connection_t *c = rev->data;
    size_t total = out + (file ? file->size : 0), left = total - sent, k = 0;
    char *stash =
        ngxffi_http_stash(rev, &left, ngxffi_http_rest(f, n, sent), 1);
    ssize_t r;
    int tries = 0;

    if (stash == NULL) return 0;
    if (sent < out) {
        k = out - sent < left ? out - sent : left;
        memcpy(stash, f->out + sent, k);
    }
    while (k < left) {
        r = ngxffi_sys_pread(file->fd, stash + k, left - k,
                             (off_t) (sent + k - out));
        if (r < 0 && errno == EINTR && ++tries < NGXFFI_EINTR_TRIES) continue;
        if (r <= 0) {
            c->error = 1;
            break;
        }
        k += (size_t) r;
    }
    c->stash_len = (uint32_t) k;
    return 0;
}

/* Send the out bytes, then the file, if any, from its cached fd (MSG_MORE
   puts the head in the file's first segment, as nginx's tcp_nopush would);
   1 when all is sent, else what is left goes to Python. */
static int
ngxffi_http_send(ngx_event_t *rev, const ngxffi_http_fast_t *f, size_t out,
                 const ngxffi_http_file_t *file, size_t n)
{
    ngx_connection_t *c = rev->data;
    size_t sent;
    ssize_t k;
    off_t off = 0;

    k = ngxffi_sys_send(c->fd, f->out, out,
                        MSG_NOSIGNAL | (file ? MSG_MORE : 0));
    sent = k < 0 ? 0 : (size_t) k; /* EAGAIN, or an error Python will see */
    if (file != NULL && sent == out) {
        while ((size_t) off < file->size) {
            k = ngxffi_sys_sendfile(c->fd, file->fd, &off,
                                    file->size - (size_t) off);
            if (k <= 0) break;
        }
        sent += (size_t) off;
    }
    if (sent == out + (file ? file->size : 0)) return 1;
    return ngxffi_http_leave_output(rev, f, out, sent, file, n);
}

/* The read handler of an idle keep-alive connection whose answers C knows
   (ngx_http_keepalive_handler plus `return`, or static files the open-file
   cache holds, for the plain case): read once; if what came is whole plain
   requests C can answer, answer them all in one send (a cached file's
   sendfile after it: only the read's last request may be one), count them,
   make the connection the most recently used reusable one and note the time
   for its keep-alive timer. Anything else, EOF and errors too, is Python's:
   the bytes read are stashed on the connection. */
int
ngxffi_http_fast_read(ngxffi_cycle_t *cy, ngx_event_t *rev)
{
    ngxffi_http_answer_t a;
    const ngxffi_http_file_t *file = NULL;
    ngxffi_http_fast_t *f;
    ngx_connection_t *c;
    size_t used = 0, len, out = 0, each = 0;
    uint64_t served = 0;
    ssize_t n;

    if (cy == NULL || rev == NULL) return 0; /* Python's, as anything else */
    f = rev->c_ctx;
    c = rev->data;
    if (f == NULL || c == NULL || !f->enabled || c->stash) return 0;
    n = ngxffi_sys_recv(c->fd, f->buf, f->size, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        rev->ready = 0;
        return 1;
    }
    if (n <= 0) return 0; /* EOF or an error: Python reads again, closes */
    /* a full read, or one a fault rule capped: there may be more */
    if ((size_t) n == f->size || NGXFFI_FAULT_CAPPED()) {
        return ngxffi_http_leave_input(rev, f->buf, (size_t) n);
    }
    rev->ready = 0; /* a short read drained the socket (EPOLLRDHUP is in use) */

    ngxffi_http_clock(f);
    while (used < (size_t) n) {
        /* a close, or the last request keepalive_requests allows, ends the
           connection: Python's, as C never closes one */
        len = ngxffi_http_next(f, f->buf + used, (size_t) n - used, &a);
        if (len != 0) each = ngxffi_http_out_len(f, &a);
        if (len == 0 || a.close || f->date_len == 0 || out + each > f->out_size
            || c->requests + served + 1 >= f->keepalive_requests
            || (a.file && used + len != (size_t) n))
        {
            return ngxffi_http_leave_input(rev, f->buf, (size_t) n);
        }
        ngxffi_http_put(f, f->out + out, &a);
        out += each;
        used += len;
        served++;
        file = a.file;
    }

    f->answered += served;
    c->requests += served;
    ngxffi_atomic_add(f->requests, (int64_t) served);
    c->c_msec = ngxffi_msec(cy);
    c->c_answered = 1;
    ngxffi_reusable_connection(cy, c, 1);
    return ngxffi_http_send(rev, f, out, file, (size_t) n);
}
