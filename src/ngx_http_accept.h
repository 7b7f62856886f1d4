/*
 * Beyond nginx: the listening socket's C read handler for the HTTP servers
 * whose answers C knows (`return`, cached files). A new connection whose
 * first read is one whole plain request with Connection: close is accepted,
 * answered and closed inside the epoll batch: no pool slot, no Python. Any
 * other connection is handed to Python with what was read from it.
 */

#ifndef NGX_HTTP_ACCEPT_H_INCLUDED
#define NGX_HTTP_ACCEPT_H_INCLUDED

/* cffi cdef: begin */
typedef struct {
    ngxffi_http_fast_t *fast; /* the answers (its enabled gates this too) */
    int64_t *accepted;        /* stub_status's shared counters */
    int64_t *handled;
    int accept_max; /* accepts per event, at most */

    /* a socket accepted here that Python must take (ngxffi/http/accept.py),
       or -1; with what C read from it, or the output the socket did not take
       (stash_out; the connection closes once it is sent) */
    int fd;
    char *stash;
    uint32_t stash_len;
    int stash_out;
    int lost; /* the bytes read could not be kept: Python closes it */
    int more; /* the read was capped by a fault rule: more may be behind it */
} ngxffi_http_accept_t;

int ngxffi_http_accept(ngxffi_cycle_t *cy, ngx_event_t *rev);
int ngxffi_http_accept_give(ngxffi_http_accept_t *x, ngx_connection_t *c);
void ngxffi_http_accept_drop(ngxffi_http_accept_t *x);
/* cffi cdef: end */

#endif /* NGX_HTTP_ACCEPT_H_INCLUDED */
