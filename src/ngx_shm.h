/*
 * Shared counters: what worker processes update in the memory they share
 * with the master (nginx's ngx_stat_* atomics and the accept mutex).
 */

#ifndef NGX_SHM_H_INCLUDED
#define NGX_SHM_H_INCLUDED

/* cffi cdef: begin */

/* stub_status's counters (the ngx_stat_* atomics), in memory shared with the
   workers. */
typedef struct {
    int64_t accepted;
    int64_t handled;
    int64_t active;
    int64_t requests;
    int64_t reading;
    int64_t writing;
    int64_t waiting;
    int64_t drained;      /* ngxffi: closed by drain_connections */
    int64_t reclaimed;    /* ngxffi: slow clients closed (http/reclaim.py) */
    int64_t accept_mutex; /* ngx_accept_mutex: 0, or the pid holding it */
} ngxffi_stats_t;

int64_t ngxffi_atomic_add(int64_t *value, int64_t delta);
void ngxffi_atomic_move(int64_t *from, int64_t *to);
int ngxffi_atomic_cas(int64_t *value, int64_t expected, int64_t desired);

/* cffi cdef: end */

#endif /* NGX_SHM_H_INCLUDED */
