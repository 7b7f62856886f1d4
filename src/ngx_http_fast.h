/*
 * The HTTP module's C read handler for fixed responses (nginx's `return`) and
 * files in the open-file cache: on an idle keep-alive connection, requests of
 * a plain shape are answered without Python.
 */

#ifndef NGX_HTTP_FAST_H_INCLUDED
#define NGX_HTTP_FAST_H_INCLUDED

/* cffi cdef: begin */
typedef struct {
    int enabled; /* 0: every request goes to Python */
    /* where the answers come from: files in the open-file cache when files
       is not NULL, else the fixed response (nginx's `return`) below */
    const ngxffi_http_files_t *files;
    const char *head; /* the response head up to (without) Date */
    size_t head_len;
    const char *body;
    size_t body_len;
    const char *skip_path; /* a path Python answers (stub_status) */
    size_t skip_path_len;
    uint64_t keepalive_requests;
    int64_t *requests; /* stub_status's shared counter */
    uint64_t answered; /* requests this handler answered (for tests) */
    char *buf;         /* the read buffer, and the output buffer */
    size_t size;
    char *out;
    size_t out_size;
    int64_t date_sec; /* the Date line, formatted once a second */
    char date[40];
    size_t date_len;
} ngxffi_http_fast_t;

size_t ngxffi_http_simple(const ngxffi_http_fast_t *f, const char *p, size_t n);
int ngxffi_http_fast_read(ngxffi_cycle_t *cy, ngx_event_t *rev);
int ngxffi_http_date(ngxffi_http_fast_t *f, int64_t sec);

/* cffi cdef: end */

/* For the accept handler (ngx_http_accept.c). One answer the C handlers give:
   its head up to Date, then a body in memory (copied into the output with the
   head) or a cached file's, by sendfile; Connection: close when the request
   said so. */
typedef struct {
    const char *head;
    size_t head_len;
    const char *body;
    size_t body_len;
    const ngxffi_http_file_t *file;
    int close;
} ngxffi_http_answer_t;

size_t ngxffi_http_next(const ngxffi_http_fast_t *f, const char *p, size_t n,
                        ngxffi_http_answer_t *a);
size_t ngxffi_http_out_len(const ngxffi_http_fast_t *f,
                           const ngxffi_http_answer_t *a);
size_t ngxffi_http_put(const ngxffi_http_fast_t *f, char *o,
                       const ngxffi_http_answer_t *a);
void ngxffi_http_clock(ngxffi_http_fast_t *f);

#endif /* NGX_HTTP_FAST_H_INCLUDED */
