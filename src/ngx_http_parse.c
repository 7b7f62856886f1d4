/*
 * The plain-request recogniser, and the read and send of the HTTP module's
 * Python path (see ngx_http_parse.h).
 */

#include "ngxffi.h"
#include "ngx_http_class.h"

#define ngxffi_in(ch, cls) (ngxffi_http_class[(unsigned char) (ch)] & (cls))
#define ngxffi_nelts(a)    (sizeof(a) / sizeof((a)[0]))

/* The methods recognised (llhttp knows more), and their lengths. */
static const struct {
    const char *name;
    size_t len;
} ngxffi_plain_methods[] = {
    {"GET", 3},    {"HEAD", 4},    {"POST", 4},  {"PUT", 3},
    {"DELETE", 6}, {"OPTIONS", 7}, {"PATCH", 5},
};

/* What a header name means to the recogniser. */
enum {
    NGXFFI_PLAIN_OTHER = 0,
    NGXFFI_PLAIN_HOST,
    NGXFFI_PLAIN_CONNECTION,
    NGXFFI_PLAIN_FRAMING /* llhttp's business: left to it */
};

/* The text being written: its parts, a NUL before each but the first. */
typedef struct {
    char *p;
    size_t n;
    size_t size;
} ngxffi_plain_text_t;

static int
ngxffi_plain_kind(const char *name, size_t len)
{
    static const struct {
        const char *name;
        size_t len;
        int kind;
    } known[] = {
        {"host", 4, NGXFFI_PLAIN_HOST},
        {"connection", 10, NGXFFI_PLAIN_CONNECTION},
        {"content-length", 14, NGXFFI_PLAIN_FRAMING},
        {"transfer-encoding", 17, NGXFFI_PLAIN_FRAMING},
        {"proxy-connection", 16, NGXFFI_PLAIN_FRAMING},
        {"upgrade", 7, NGXFFI_PLAIN_FRAMING},
    };

    size_t i;

    for (i = 0; i < ngxffi_nelts(known); i++) {
        if (len == known[i].len && strncasecmp(name, known[i].name, len) == 0) {
            return known[i].kind;
        }
    }
    return NGXFFI_PLAIN_OTHER;
}

/* Append a part of len bytes at s to the text, in lower case with lower
   (names are tchars: ASCII); 0 when there is no room. */
static int
ngxffi_plain_put(ngxffi_plain_text_t *t, const char *s, size_t len, int lower)
{
    size_t i, sep = t->n > 0;
    char ch;

    if (t->size - t->n < sep + len) return 0;
    if (sep) t->p[t->n++] = '\0';
    if (!lower) {
        memcpy(t->p + t->n, s, len);
        t->n += len;
        return 1;
    }
    for (i = 0; i < len; i++) {
        ch = s[i];
        t->p[t->n++] = ch >= 'A' && ch <= 'Z' ? (char) (ch + 32) : ch;
    }
    return 1;
}

/* The length of the known method at p followed by a space; 0 for none. */
static size_t
ngxffi_plain_method(const char *p, size_t n)
{
    const char *space = memchr(p, ' ', n < 8 ? n : 8);
    size_t i, len;

    if (space == NULL) return 0;
    len = (size_t) (space - p);
    for (i = 0; i < ngxffi_nelts(ngxffi_plain_methods); i++) {
        if (len == ngxffi_plain_methods[i].len
            && memcmp(p, ngxffi_plain_methods[i].name, len) == 0)
        {
            return len;
        }
    }
    return 0;
}

/* A Connection value's meaning, OWS around it ignored: 1 keep-alive, 0 close,
   -1 anything else (a list, say: llhttp's business). */
static int
ngxffi_plain_connection(const char *value, const char *end)
{
    while (end > value && (end[-1] == ' ' || end[-1] == '\t')) end--;
    if (end - value == 10 && strncasecmp(value, "keep-alive", 10) == 0) {
        return 1;
    }
    if (end - value == 5 && strncasecmp(value, "close", 5) == 0) return 0;
    return -1;
}

/* One header line at *q ("name:" OWS value CRLF), its name and value appended
   to the text: its kind, or -1 when it is not of the plain shape, over the
   limits (what llhttp and parse.py refuse, they refuse) or a Connection that
   says anything but keep-alive or close (*connection: 1 or 0). */
static int
ngxffi_plain_header(const ngxffi_http_plain_t *pl, const char *end,
                    const char **q, size_t *total, ngxffi_plain_text_t *t,
                    int *connection)
{
    const char *name = *q, *s = *q, *value;
    size_t size;
    int kind;

    while (s < end && ngxffi_in(*s, NGXFFI_TCHAR)) s++;
    if (s == name || s == end || *s != ':') return -1;
    kind = ngxffi_plain_kind(name, (size_t) (s - name));
    if (!ngxffi_plain_put(t, name, (size_t) (s - name), 1)) return -1;
    size = (size_t) (s - name);
    s++;
    while (s < end && (*s == ' ' || *s == '\t')) s++; /* as llhttp, not after */
    value = s;
    while (s < end && ngxffi_in(*s, NGXFFI_VALUE)) s++;
    if (end - s < 2 || s[0] != '\r' || s[1] != '\n') return -1;
    if (!ngxffi_plain_put(t, value, (size_t) (s - value), 0)) return -1;
    /* parse.py's on_header: the name, the value, ": " and CRLF */
    size += (size_t) (s - value) + 4;
    *total += size;
    if (size > pl->line_max || *total > pl->headers_max) return -1;
    if (kind == NGXFFI_PLAIN_CONNECTION) {
        if (*connection >= 0) return -1; /* a second one */
        *connection = ngxffi_plain_connection(value, s);
        if (*connection < 0) return -1;
    }
    *q = s + 2;
    return kind;
}

/* Whether what is at p + start is one complete request that llhttp would read
   exactly so and that needs none of its care: "METHOD /target HTTP/1.x" with a
   known method and a plain origin-form target, header lines "name:" OWS value,
   at most one Host (and one for HTTP/1.1), at most one Connection (keep-alive
   or close), no Content-Length, Transfer-Encoding, Upgrade or
   Proxy-Connection, within the limits. Then its parts are in pl->text and
   out[NGXFFI_PLAIN_TEXT] is their length, else 0, complete or not. It is
   counted on c (NULL: none), and it is the last there when it is not
   keep-alive or when c has had pl->requests_max. */
static void
ngxffi_plain_recognise(const ngxffi_http_plain_t *pl, ngx_connection_t *c,
                       const char *p, size_t n, size_t start)
{
    const char *end = p + n, *q = p + start, *target;
    ngxffi_plain_text_t t = {pl->text, 0, pl->text_size};
    size_t len, total = 0;
    int host = 0, connection = -1, kind, minor;
    int32_t *out = pl->out;

    len = ngxffi_plain_method(q, (size_t) (end - q));
    if (len == 0 || !ngxffi_plain_put(&t, q, len, 0)) return;
    q += len + 1;
    target = q;
    if (q == end || *q != '/') return;
    while (q < end && ngxffi_in(*q, NGXFFI_TARGET)) q++;
    if ((size_t) (q - target) > pl->line_max) return; /* 414 */
    if (end - q < 11 || memcmp(q, " HTTP/1.", 8) != 0
        || (q[8] != '0' && q[8] != '1') || q[9] != '\r' || q[10] != '\n')
    {
        return;
    }
    if (!ngxffi_plain_put(&t, target, (size_t) (q - target), 0)
        || !ngxffi_plain_put(&t, q + 6, 3, 0))
    {
        return;
    }
    minor = q[8] - '0';
    q += 11;

    for (;;) {
        if (end - q < 2) return;
        if (q[0] == '\r') {
            if (q[1] != '\n') return;
            q += 2;
            break;
        }
        kind = ngxffi_plain_header(pl, end, &q, &total, &t, &connection);
        if (kind < 0 || kind == NGXFFI_PLAIN_FRAMING) return;
        if (kind == NGXFFI_PLAIN_HOST && host++) return; /* a duplicate: 400 */
    }
    if (minor == 1 && host == 0) return; /* 400 */
    out[NGXFFI_PLAIN_END] = (int32_t) (q - p);
    out[NGXFFI_PLAIN_KEEP] = minor == 1 ? connection != 0 : connection == 1;
    out[NGXFFI_PLAIN_LAST] = !out[NGXFFI_PLAIN_KEEP];
    if (c != NULL && ++c->requests >= pl->requests_max) {
        out[NGXFFI_PLAIN_LAST] = 1;
    }
    out[NGXFFI_PLAIN_TEXT] = (int32_t) t.n;
}

/* The plain request at p + start, come on c (see ngxffi_plain_recognise):
   the length of its text, also in out[NGXFFI_PLAIN_TEXT]; 0 for none. */
int
ngxffi_http_plain(const ngxffi_http_plain_t *pl, ngx_connection_t *c,
                  const char *p, size_t n, size_t start)
{
    if (pl == NULL || pl->out == NULL || pl->text == NULL) return 0;
    pl->out[NGXFFI_PLAIN_TEXT] = 0;
    if (p != NULL && start < n && n <= INT32_MAX && pl->text_size <= INT32_MAX)
    {
        ngxffi_plain_recognise(pl, c, p, n, start);
    }
    return pl->out[NGXFFI_PLAIN_TEXT];
}

/* Read a connection once into pl->buf, as ngx_unix_recv does: EAGAIN clears
   rev->ready, and so does a short read when it tells the socket is empty
   (out[NGXFFI_PLAIN_DRAINED]); EINTR is retried. A reusable (idle) connection
   that brought something becomes the most recently used, as its keep-alive
   will make it: Python moves it only when it was not idle. Then, with
   recognise (no request begun, one read not over the limit), the plain
   request at its start. The length read, or NGXFFI_PLAIN_AGAIN, _CLOSED (EOF or
   an error, and for arguments that cannot be read), or _UNUSUAL without reading
   when the event timed out, the connection is to close or has a C handler's
   stash: Python's to look at. */
ssize_t
ngxffi_http_plain_read(const ngxffi_http_plain_t *pl, ngx_event_t *rev,
                       int recognise)
{
    ngx_connection_t *c;
    ssize_t n;
    int drained, tries = 0;

    if (pl == NULL || rev == NULL || rev->data == NULL || pl->buf == NULL
        || pl->size == 0 || pl->out == NULL)
    {
        return NGXFFI_PLAIN_CLOSED;
    }
    c = rev->data;
    if (rev->timedout || c->close || c->error || c->stash_len) {
        return NGXFFI_PLAIN_UNUSUAL;
    }
    do {
        n = ngxffi_sys_recv(c->fd, pl->buf, pl->size, 0);
    } while (n == -1 && errno == EINTR && ++tries < NGXFFI_EINTR_TRIES);
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        rev->ready = 0;
        return NGXFFI_PLAIN_AGAIN;
    }
    /* EINTR again and again (only a fault rule does that to a non-blocking
       socket): AGAIN with the event still ready, which Python posts for the
       loop's next turn (signal handlers run in between) */
    if (n == -1 && errno == EINTR) return NGXFFI_PLAIN_AGAIN;
    if (n <= 0) return NGXFFI_PLAIN_CLOSED;
    if (c->reusable && pl->cycle != NULL) {
        ngxffi_reusable_connection(pl->cycle, c, 1);
    }
    drained = (size_t) n < pl->size && pl->short_read_drains
              && !rev->pending_eof && !NGXFFI_FAULT_CAPPED();
    if (drained) rev->ready = 0;
    pl->out[NGXFFI_PLAIN_DRAINED] = drained;
    pl->out[NGXFFI_PLAIN_TEXT] = 0;
    if (recognise && (size_t) n <= pl->unparsed_max) {
        ngxffi_http_plain(pl, c, pl->buf, (size_t) n, 0);
    }
    return n;
}

/* Count `answered` requests in stub_status's counter, then send their answers
   (n bytes at p) on fd: once a client has its answer, its request is counted,
   in any worker. What send() returns (EINTR retried), -1 with errno EINVAL for
   arguments it cannot use. */
ssize_t
ngxffi_http_plain_send(const ngxffi_http_plain_t *pl, int fd, const char *p,
                       size_t n, int64_t answered)
{
    ssize_t sent;
    int tries = 0;

    if (pl == NULL || (p == NULL && n) || answered < 0) {
        errno = EINVAL;
        return -1;
    }
    if (answered && pl->requests != NULL) {
        ngxffi_atomic_add(pl->requests, answered);
    }
    do {
        sent = ngxffi_sys_send(fd, p, n, MSG_NOSIGNAL);
    } while (sent == -1 && errno == EINTR && ++tries < NGXFFI_EINTR_TRIES);
    return sent;
}
