/*
 * Syscall fault injection: the rule table, the PRNG and the armed path of
 * the wrappers (see ngx_fault.h).
 */

#include "ngxffi.h"

#include <limits.h> /* IOV_MAX */
#include <math.h>
#include <pthread.h>

/* The most iovec entries a short readv/writev passes on. */
#define NGXFFI_FAULT_IOV 64

typedef struct {
    int active;
    int err;
    uint64_t short_n;
    int64_t times; /* as armed: 0 for a probability */
    int64_t left;  /* of times */
    double probability;
    uint64_t threshold; /* a draw below it fails; unused when always */
    int always;
    int64_t hits;
} ngxffi_fault_state_t;

int ngxffi_fault_armed;
_Thread_local int ngxffi_fault_capped;
int ngxffi_fault_capped_ever;

/* The table's lock: taken on the armed path only (the off path reads
   ngxffi_fault_armed alone), so that a rule is never read half written and
   the armed flag never misses a rule armed by another thread meanwhile. */
static pthread_mutex_t ngxffi_fault_lock = PTHREAD_MUTEX_INITIALIZER;
static ngxffi_fault_state_t ngxffi_faults[NGXFFI_SYS_N];
static uint64_t ngxffi_fault_stream; /* splitmix64's state */

/* The calls whose length, count or maxevents a short rule can cap. */
static const unsigned char ngxffi_fault_has_length[NGXFFI_SYS_N] = {
    [NGXFFI_SYS_RECV] = 1,       [NGXFFI_SYS_READ] = 1,
    [NGXFFI_SYS_READV] = 1,      [NGXFFI_SYS_PREAD] = 1,
    [NGXFFI_SYS_SEND] = 1,       [NGXFFI_SYS_WRITE] = 1,
    [NGXFFI_SYS_WRITEV] = 1,     [NGXFFI_SYS_SENDFILE] = 1,
    [NGXFFI_SYS_EPOLL_WAIT] = 1, [NGXFFI_SYS_EPOLL_PWAIT] = 1,
};

/* splitmix64 (Steele, Lea and Flood): one atomic step of the state per draw,
   so that threads never draw the same value. */
static uint64_t
ngxffi_fault_draw(void)
{
    uint64_t z = __atomic_add_fetch(&ngxffi_fault_stream, 0x9E3779B97F4A7C15ULL,
                                    __ATOMIC_RELAXED);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Under the lock. */
static void
ngxffi_fault_rearm(void)
{
    int i, any = 0;

    for (i = 0; i < NGXFFI_SYS_N; i++) any |= ngxffi_faults[i].active;
    __atomic_store_n(&ngxffi_fault_armed, any, __ATOMIC_RELEASE);
}

/* Under the lock: whether the rule applies to this call. */
static int
ngxffi_fault_applies(ngxffi_fault_state_t *r)
{
    if (!r->active) return 0;
    if (r->times > 0) {
        if (--r->left == 0) {
            r->active = 0;
            ngxffi_fault_rearm();
        }
    } else if (!r->always && ngxffi_fault_draw() >= r->threshold) {
        return 0;
    }
    r->hits++;
    return 1;
}

int
ngxffi_fault_hit(int call, size_t *cap)
{
    ngxffi_fault_state_t *r;
    int err = 0;

    ngxffi_fault_capped = 0;
    if (call < 0 || call >= NGXFFI_SYS_N) return 0;
    r = &ngxffi_faults[call];
    pthread_mutex_lock(&ngxffi_fault_lock);
    if (ngxffi_fault_applies(r)) {
        err = r->err;
        if (!err && cap != NULL && *cap > r->short_n) {
            *cap = (size_t) r->short_n;
            ngxffi_fault_capped = 1;
            __atomic_store_n(&ngxffi_fault_capped_ever, 1, __ATOMIC_RELAXED);
        }
    }
    pthread_mutex_unlock(&ngxffi_fault_lock);
    if (err) errno = err; /* after the unlock, which may set errno */
    return err != 0;
}

static int
ngxffi_fault_valid(int call, const ngxffi_fault_rule_t *rule)
{
    double p = rule->probability;

    if (rule->hits < 0 || !rule->active) return rule->hits >= 0;
    if (rule->err < 0 || rule->short_n < 0 || rule->times < 0) return 0;
    if ((rule->err == 0) == (rule->short_n == 0)) return 0;
    if (rule->short_n && !ngxffi_fault_has_length[call]) return 0;
    if (isnan(p) || p < 0.0 || p > 1.0) return 0;
    return rule->times == 0 || p == 0.0;
}

int
ngxffi_fault_set(int call, const ngxffi_fault_rule_t *rule)
{
    ngxffi_fault_state_t *r;
    int i;

    if (rule == NULL || call < -1 || call >= NGXFFI_SYS_N
        || (call == -1 && rule->active)
        || !ngxffi_fault_valid(call < 0 ? 0 : call, rule))
    {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&ngxffi_fault_lock);
    if (call == -1) {
        for (i = 0; i < NGXFFI_SYS_N; i++) {
            ngxffi_faults[i].active = 0;
            ngxffi_faults[i].hits = rule->hits;
        }
        ngxffi_fault_rearm();
        pthread_mutex_unlock(&ngxffi_fault_lock);
        return 0;
    }
    r = &ngxffi_faults[call];
    r->err = rule->err;
    r->short_n = (uint64_t) rule->short_n;
    r->times = rule->times;
    r->left = rule->times;
    r->probability = rule->probability;
    r->always = rule->probability >= 1.0;
    /* below 1, p * 2**64 is below 2**64: the conversion is defined */
    r->threshold =
        r->always ? UINT64_MAX
                  : (uint64_t) (rule->probability * 18446744073709551616.0);
    r->hits = rule->hits;
    r->active = rule->active != 0;
    ngxffi_fault_rearm();
    pthread_mutex_unlock(&ngxffi_fault_lock);
    return 0;
}

int
ngxffi_fault_get(int call, ngxffi_fault_rule_t *rule)
{
    const ngxffi_fault_state_t *r;
    int64_t left;

    if (rule == NULL || call < 0 || call >= NGXFFI_SYS_N) {
        errno = EINVAL;
        return -1;
    }
    r = &ngxffi_faults[call];
    pthread_mutex_lock(&ngxffi_fault_lock);
    rule->active = r->active;
    rule->err = r->err;
    rule->short_n = (int64_t) r->short_n;
    left = r->left;
    rule->times = r->times > 0 ? (left > 0 ? left : 0) : 0;
    rule->probability = r->probability;
    rule->hits = r->hits;
    pthread_mutex_unlock(&ngxffi_fault_lock);
    return 0;
}

void
ngxffi_fault_seed(uint64_t seed)
{
    __atomic_store_n(&ngxffi_fault_stream, seed, __ATOMIC_RELAXED);
}

int
ngxffi_fault_compiled(void)
{
#ifdef NGXFFI_NO_FAULTS
    return 0;
#else
    return 1;
#endif
}

/* The first entries of iov, the last one cut, holding at most cap bytes. */
static int
ngxffi_fault_short_iov(const struct iovec *iov, int iovcnt, size_t cap,
                       struct iovec *out)
{
    int i, n = 0;

    for (i = 0; i < iovcnt && n < NGXFFI_FAULT_IOV && cap > 0; i++) {
        out[n] = iov[i];
        if (out[n].iov_len > cap) out[n].iov_len = cap;
        cap -= out[n].iov_len;
        n++;
    }
    return n;
}

ssize_t
ngxffi_fault_iov(int call, int fd, const struct iovec *iov, int iovcnt)
{
    struct iovec v[NGXFFI_FAULT_IOV];
    size_t cap = SIZE_MAX;
    int out = call == NGXFFI_SYS_WRITEV;

    if (ngxffi_fault_hit(call, &cap)) return -1;
    /* not short, or what the kernel refuses, which it refuses as it would */
    if (cap != SIZE_MAX && iov != NULL && iovcnt > 0 && iovcnt <= IOV_MAX) {
        iovcnt = ngxffi_fault_short_iov(iov, iovcnt, cap, v);
        iov = v;
    }
    return out ? writev(fd, iov, iovcnt) : readv(fd, iov, iovcnt);
}
