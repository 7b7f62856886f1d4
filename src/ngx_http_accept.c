/*
 * The HTTP accept handler (see ngx_http_accept.h).
 */

#include "ngxffi.h"

/* Leave socket s to Python with n bytes from p: input read, or output the
   socket did not take. 0, for the epoll module to call Python's handler. */
static int
ngxffi_http_hand_over(ngxffi_http_accept_t *x, int s, const char *p, size_t n,
                      int output)
{
    x->fd = s;
    x->stash_out = output;
    if (n == 0) return 0;
    x->stash = ngxffi_alloc(n);
    if (x->stash == NULL) {
        x->lost = 1;
        return 0;
    }
    memcpy(x->stash, p, n);
    x->stash_len = (uint32_t) n;
    return 0;
}

/* Serve the new connection s if its first read is one request C answers
   with Connection: close: 1 when it is done and closed, else 0 with s handed
   over. The answer is counted before it is sent: once a client has it,
   stub_status counts its request, as in nginx. */
static int
ngxffi_http_serve_once(ngxffi_http_accept_t *x, int s)
{
    ngxffi_http_fast_t *f = x->fast;
    ngxffi_http_answer_t a;
    size_t len, out;
    ssize_t n, sent;

    n = ngxffi_sys_recv(s, f->buf, f->size, 0);
    x->more = NGXFFI_FAULT_CAPPED();
    if (n < 0) return ngxffi_http_hand_over(x, s, NULL, 0, 0); /* EAGAIN too */
    ngxffi_http_clock(f);
    len = n ? ngxffi_http_next(f, f->buf, (size_t) n, &a) : 0;
    /* a full read may have more behind it, which a close would leave unread
       (a reset, not a FIN): Python's, as in ngxffi_http_fast_read */
    if (len == 0 || len != (size_t) n || (size_t) n == f->size || x->more
        || !a.close || a.file != NULL || f->date_len == 0
        || ngxffi_http_out_len(f, &a) > f->out_size)
    {
        return ngxffi_http_hand_over(x, s, f->buf, (size_t) n, 0);
    }
    out = ngxffi_http_put(f, f->out, &a);
    f->answered++;
    ngxffi_atomic_add(f->requests, 1);
    sent = ngxffi_sys_send(s, f->out, out, MSG_NOSIGNAL);
    if (sent >= 0 && (size_t) sent < out) {
        return ngxffi_http_hand_over(x, s, f->out + sent, out - (size_t) sent,
                                     1);
    }
    /* all sent, or the peer is gone (EPIPE, ECONNRESET): nothing is left to
       do; EAGAIN on a new socket's first send, or EINTR (nothing was sent),
       leaves it all to Python */
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    {
        return ngxffi_http_hand_over(x, s, f->out, out, 1);
    }
    ngxffi_atomic_add(x->accepted, 1);
    ngxffi_atomic_add(x->handled, 1);
    close(s);
    return 1;
}

/* The listening socket's C handler: accept up to accept_max connections and
   serve those C can whole. 1 when the backlog is empty (EAGAIN) or
   accept_max is reached (level-triggered: the rest come with the next
   batch); 0 to have Python's handler called: a connection to take over, a
   failed accept (Python's accept sees the error again and deals with it:
   EMFILE's back-off, ECONNABORTED), or C answering off. */
int
ngxffi_http_accept(ngxffi_cycle_t *cy, ngx_event_t *rev)
{
    ngxffi_http_accept_t *x;
    ngx_connection_t *lc;
    int i, s;

    if (cy == NULL || rev == NULL) return 0;
    x = rev->c_ctx;
    lc = rev->data;
    if (x == NULL || lc == NULL || x->fast == NULL || !x->fast->enabled
        || x->fast->buf == NULL || x->fast->out == NULL || x->fd != -1
        || x->stash != NULL)
    {
        return 0;
    }
    for (i = 0; i < x->accept_max; i++) {
        s = ngxffi_sys_accept4(lc->fd, NULL, NULL,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (s == -1) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) return 0;
            rev->ready = 0;
            return 1;
        }
        if (!ngxffi_http_serve_once(x, s)) return 0;
    }
    return 1;
}

static void
ngxffi_http_accept_reset(ngxffi_http_accept_t *x)
{
    x->fd = -1;
    x->stash = NULL;
    x->stash_len = 0;
    x->stash_out = 0;
    x->lost = 0;
}

/* The handed-over socket's connection c is made (Python made it): what was
   read, or output left with the close after it, goes onto c as a C read
   handler's stash does; bytes that could not be kept make c->error, so that
   Python closes it. 0, or -1 (EINVAL) for c holding a stash already. */
int
ngxffi_http_accept_give(ngxffi_http_accept_t *x, ngx_connection_t *c)
{
    if (x == NULL || c == NULL || c->stash != NULL) {
        errno = EINVAL;
        return -1;
    }
    c->stash = x->stash;
    c->stash_len = x->stash_len;
    c->stash_out = (unsigned) x->stash_out & 1;
    c->stash_close = c->stash_out;
    if (x->lost) c->error = 1;
    ngxffi_http_accept_reset(x);
    return 0;
}

/* Drop a handed-over socket no connection will take: its stash freed, the
   socket closed unless fd was set to -1 (closed already). */
void
ngxffi_http_accept_drop(ngxffi_http_accept_t *x)
{
    if (x == NULL) return;
    free(x->stash);
    if (x->fd >= 0) close(x->fd);
    ngxffi_http_accept_reset(x);
}
