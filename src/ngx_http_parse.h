/*
 * The HTTP module's Python path in C where it counts: reading a connection
 * (ngx_unix_recv) and recognising a complete plain request there, whose parts
 * it copies out so that Python makes its Request of one string instead of
 * llhttp's callbacks (ngxffi/http/parse.py); counting and sending the answers.
 */

#ifndef NGX_HTTP_PARSE_H_INCLUDED
#define NGX_HTTP_PARSE_H_INCLUDED

/* What the recogniser writes to out, by index: the length of the text (0: no
   plain request); where the request ends, just after its blank line (an
   offset from where it was read); whether it is keep-alive (llhttp's
   should_keep_alive); whether the connection closes after its answer; and,
   from ngxffi_http_plain_read, whether the socket is empty. */
#define NGXFFI_PLAIN_TEXT    0
#define NGXFFI_PLAIN_END     1
#define NGXFFI_PLAIN_KEEP    2
#define NGXFFI_PLAIN_LAST    3
#define NGXFFI_PLAIN_DRAINED 4
#define NGXFFI_PLAIN_OUT     5 /* the size of out */

/* ngxffi_http_plain_read's results that are not a length read */
#define NGXFFI_PLAIN_AGAIN   -1 /* nothing read: EAGAIN (not ready), or EINTR */
#define NGXFFI_PLAIN_CLOSED  -2 /* EOF, or recv failed: close */
#define NGXFFI_PLAIN_UNUSUAL -3 /* timed out, to close, a C handler's stash */

/* cffi cdef: begin */
typedef struct {
    size_t line_max;       /* a request or header line: Limits.line */
    size_t headers_max;    /* all header lines: Limits.headers */
    size_t unparsed_max;   /* what one read may bring: Limits.unparsed */
    int32_t *out;          /* NGXFFI_PLAIN_OUT results */
    char *text;            /* the request's parts, each after a NUL but the
                              first: method, target, version ("1.1"), then
                              each header's name (lower case) and value */
    size_t text_size;      /* room in text: a request's length is enough */
    char *buf;             /* ngxffi_http_plain_read's buffer */
    size_t size;           /* its size: what one read asks for */
    int short_read_drains; /* a short read empties the socket (ngx_unix_recv) */
    int64_t *requests;     /* stub_status's shared counter */
    ngxffi_cycle_t *cycle; /* whose reusable queue the connections are in */
    uint64_t requests_max; /* keepalive_requests; 0 while shutting down */
} ngxffi_http_plain_t;

int ngxffi_http_plain(const ngxffi_http_plain_t *pl, ngx_connection_t *c,
                      const char *p, size_t n, size_t start);
ssize_t ngxffi_http_plain_read(const ngxffi_http_plain_t *pl, ngx_event_t *rev,
                               int recognise);
ssize_t ngxffi_http_plain_send(const ngxffi_http_plain_t *pl, int fd,
                               const char *p, size_t n, int64_t answered);
/* cffi cdef: end */

#endif /* NGX_HTTP_PARSE_H_INCLUDED */
