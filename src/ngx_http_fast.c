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

/* A Connection value that is exactly "keep-alive" (any case, OWS around it), as
   many HTTP/1.1 clients send: it changes nothing for llhttp. */
static int
ngxffi_keep_alive(const char *value, const char *end)
{
    while (value < end && (*value == ' ' || *value == '\t')) value++;
    while (end > value && (end[-1] == ' ' || end[-1] == '\t')) end--;
    return end - value == 10 && strncasecmp(value, "keep-alive", 10) == 0;
}

/* The length of one complete request at p that is a plain keep-alive GET:
   request line "GET <target> HTTP/1.1", header lines "name: value", exactly one
   Host, none of the headers that change how a request is framed or answered
   (Content-Length, Transfer-Encoding, Proxy-Connection, Upgrade, Expect;
   Connection unless it says keep-alive), target not the skipped path. 0 for
   anything else, complete or not: Python decides then. */
size_t
ngxffi_http_simple(const ngxffi_http_fast_t *f, const char *p, size_t n)
{
    const char *end = p + n, *q = p + 4, *target, *line, *query, *value;
    size_t path_len, len;
    int host = 0, connection;

    if (f == NULL || p == NULL || n < 5 || memcmp(p, "GET /", 5) != 0) return 0;
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
                   || ngxffi_name(line, len, "expect"))
        {
            return 0;
        }
        value = ++q;
        while (q < end && ngxffi_is(*q, NGXFFI_VALUE)) q++;
        if (end - q < 2 || q[0] != '\r' || q[1] != '\n') return 0;
        if (q - line > NGXFFI_HTTP_LINE_MAX) return 0;
        if (connection && !ngxffi_keep_alive(value, q)) return 0;
        q += 2;
    }
    return host == 1 ? (size_t) (q - p) : 0;
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

/* Keep what Python must finish: input to parse, or output still to send. The C
   handler stays off until Python puts it back. The bytes were taken from the
   socket (or answers counted and partly sent), so they must not be dropped:
   when the stash cannot be made, c->error tells Python to close the connection
   (ngxffi/http/connection.py, read). For output, a second, smaller try keeps
   just the rest of the answer the send cut, so that the client still gets
   whole answers before the close (rest: what the send left of the answer it
   cut; 0 for input). */
static int
ngxffi_http_leave(ngx_event_t *rev, const char *p, size_t n, int output,
                  size_t rest)
{
    ngx_connection_t *c = rev->data;

    rev->c_handler = NULL;
    c->stash = ngxffi_alloc(n ? n : 1);
    if (c->stash == NULL && rest != 0 && rest < n) {
        c->stash = ngxffi_alloc(rest);
        n = rest;
        c->error = 1; /* the answers after this one are lost: close after it */
    }
    if (c->stash == NULL) {
        c->error = 1; /* nothing kept: Python logs and closes */
        return 0;
    }
    memcpy(c->stash, p, n);
    c->stash_len = (uint32_t) n;
    c->stash_out = (unsigned) output & 1; /* as the 1-bit field kept it */
    return 0;
}

/* The read handler of an idle keep-alive connection whose server answers every
   request with one fixed response (ngx_http_keepalive_handler plus `return`,
   for the plain case): read once; if what came is whole plain requests, answer
   them all in one send, count them, make the connection the most recently used
   reusable one and note the time for its keep-alive timer. Anything else, EOF
   and errors too, is Python's: the bytes read are stashed on the connection. */
int
ngxffi_http_fast_read(ngxffi_cycle_t *cy, ngx_event_t *rev)
{
    ngxffi_http_fast_t *f;
    ngx_connection_t *c;
    size_t used = 0, len, out = 0, each;
    uint64_t served = 0;
    ssize_t n, sent;
    struct timespec now;

    if (cy == NULL || rev == NULL) return 0; /* Python's, as anything else */
    f = rev->c_ctx;
    c = rev->data;
    if (f == NULL || c == NULL || !f->enabled || c->stash) return 0;
    n = recv(c->fd, f->buf, f->size, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        rev->ready = 0;
        return 1;
    }
    if (n <= 0) return 0; /* EOF or an error: Python reads again, closes */
    if ((size_t) n == f->size) {
        return ngxffi_http_leave(rev, f->buf, (size_t) n, 0, 0);
    }

    clock_gettime(CLOCK_REALTIME, &now);
    if ((int64_t) now.tv_sec != f->date_sec) ngxffi_http_date(f, now.tv_sec);
    each = f->head_len + f->date_len + 26 + f->body_len;
    while (used < (size_t) n) {
        len = ngxffi_http_simple(f, f->buf + used, (size_t) n - used);
        if (len == 0 || f->date_len == 0 || out + each > f->out_size
            || c->requests + served + 1 >= f->keepalive_requests)
        {
            rev->ready = 0; /* drained: the short read says so */
            return ngxffi_http_leave(rev, f->buf, (size_t) n, 0, 0);
        }
        memcpy(f->out + out, f->head, f->head_len);
        memcpy(f->out + out + f->head_len, f->date, f->date_len);
        memcpy(f->out + out + f->head_len + f->date_len,
               "Connection: keep-alive\r\n\r\n", 26);
        memcpy(f->out + out + f->head_len + f->date_len + 26, f->body,
               f->body_len);
        out += each;
        used += len;
        served++;
    }

    rev->ready = 0; /* a short read drained the socket (EPOLLRDHUP is in use) */
    f->answered += served;
    c->requests += served;
    ngxffi_atomic_add(f->requests, (int64_t) served);
    c->c_msec = ngxffi_msec(cy);
    c->c_answered = 1;
    ngxffi_reusable_connection(cy, c, 1);

    sent = send(c->fd, f->out, out, MSG_NOSIGNAL);
    if (sent == (ssize_t) out) return 1;
    if (sent < 0) sent = 0; /* EAGAIN, or an error Python's write will see */
    return ngxffi_http_leave(rev, f->out + sent, out - (size_t) sent, 1,
                             each - (size_t) sent % each);
}
