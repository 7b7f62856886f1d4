/*
 * The connection pool (nginx's ngx_get_connection, ngx_free_connection) and
 * the reusable queue (ngx_reusable_connection) over the cycle's three arrays.
 */

#ifndef NGX_CONNECTION_H_INCLUDED
#define NGX_CONNECTION_H_INCLUDED

#define NGXFFI_INVALID_INDEX 0xd0d0d0d0 /* NGX_INVALID_INDEX */

/* The largest pool: the epoll module's codes (slot * 2 + write, the notify
   connection's slot being connection_n) stay below 1 << 29, under the flags
   NGXFFI_BATCH_INVALID and NGXFFI_ACCEPT_QUEUE (ngx_epoll.h). */
#define NGXFFI_CONNECTIONS_MAX ((1 << 28) - 1)

/* cffi cdef: begin */
int ngxffi_init_connections(ngxffi_cycle_t *cy);
intptr_t ngxffi_get_connection(ngxffi_cycle_t *cy, int fd);
int ngxffi_free_connection(ngxffi_cycle_t *cy, uintptr_t slot);
void ngxffi_stash_free(ngx_connection_t *c);
int ngxffi_reusable_connection(ngxffi_cycle_t *cy, ngx_connection_t *c,
                               unsigned reusable);
intptr_t ngxffi_reusable_slots(const ngxffi_cycle_t *cy, int32_t *out,
                               intptr_t n);
/* cffi cdef: end */

#endif /* NGX_CONNECTION_H_INCLUDED */
