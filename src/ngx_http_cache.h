/*
 * The open-file cache's table as the C read handler sees it (nginx's
 * ngx_open_file_cache_t, reduced to what answering needs): entries keyed by
 * the request target's path as the client sent it. ngxffi/http/cache.py
 * makes, fills and frees the entries and the buckets; C links, unlinks and
 * finds them, and never writes an entry.
 */

#ifndef NGX_HTTP_CACHE_H_INCLUDED
#define NGX_HTTP_CACHE_H_INCLUDED

/* cffi cdef: begin */
typedef struct ngxffi_http_file_s ngxffi_http_file_t;

struct ngxffi_http_file_s {
    ngxffi_http_file_t *next; /* the bucket's chain */
    const char *key;          /* the target's path, as sent */
    size_t key_len;
    uint64_t hash;
    const char *head; /* the 200 answer's head up to (without) Date */
    size_t head_len;
    const char *body; /* the file's bytes, or NULL: sendfile from fd */
    size_t size;      /* the file's length */
    int fd;           /* open while the entry is, or -1 with a body */
    int linked;
};

typedef struct {
    ngxffi_http_file_t **buckets;
    size_t n; /* a power of two */
    size_t linked;
} ngxffi_http_files_t;

int ngxffi_http_file_link(ngxffi_http_files_t *t, ngxffi_http_file_t *e);
int ngxffi_http_file_unlink(ngxffi_http_files_t *t, ngxffi_http_file_t *e);
const ngxffi_http_file_t *ngxffi_http_file_find(const ngxffi_http_files_t *t,
                                                const char *key, size_t len);
/* cffi cdef: end */

#endif /* NGX_HTTP_CACHE_H_INCLUDED */
