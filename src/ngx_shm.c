/*
 * Atomics on shared memory (see ngx_shm.h).
 */

#include "ngxffi.h"

/* ngx_atomic_fetch_add: safe between processes sharing the memory. */
int64_t
ngxffi_atomic_add(int64_t *value, int64_t delta)
{
    if (value == NULL) return 0; /* no counter (stub_status off) */
    return __atomic_fetch_add(value, delta, __ATOMIC_SEQ_CST);
}

/* ngx_atomic_cmp_set: the accept mutex's trylock (0 -> pid) and unlock
   (pid -> 0). */
int
ngxffi_atomic_cas(int64_t *value, int64_t expected, int64_t desired)
{
    if (value == NULL) return 0;
    return __atomic_compare_exchange_n(value, &expected, desired, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* One connection moving between two counters (stub_status's reading, writing,
   waiting), in one call from Python. */
void
ngxffi_atomic_move(int64_t *from, int64_t *to)
{
    if (from == NULL || to == NULL) return;
    __atomic_fetch_sub(from, 1, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(to, 1, __ATOMIC_SEQ_CST);
}
