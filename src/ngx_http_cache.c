/*
 * The open-file cache's table (see ngx_http_cache.h).
 */

#include "ngxffi.h"

/* FNV-1a: keys are short paths, and the table is only ever as full as the
   cache's max, so chains stay short without a stronger hash. */
static uint64_t
ngxffi_hash(const char *key, size_t len)
{
    uint64_t h = 14695981039346656037ULL;
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= (unsigned char) key[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int
ngxffi_table_ok(const ngxffi_http_files_t *t)
{
    return t != NULL && t->buckets != NULL && t->n != 0
           && (t->n & (t->n - 1)) == 0;
}

/* Link e at the head of its bucket; 0, or -1 (EINVAL) for a bad table, an
   entry without a key, or one linked already (a second link would make the
   chain a loop). The key, the head and the body must stay valid until the
   entry is unlinked. */
int
ngxffi_http_file_link(ngxffi_http_files_t *t, ngxffi_http_file_t *e)
{
    ngxffi_http_file_t **bucket;

    if (!ngxffi_table_ok(t) || e == NULL || e->key == NULL || e->linked
        || (e->body == NULL && e->fd < 0) || (e->head == NULL && e->head_len))
    {
        errno = EINVAL;
        return -1;
    }
    e->hash = ngxffi_hash(e->key, e->key_len);
    bucket = &t->buckets[e->hash & (t->n - 1)];
    e->next = *bucket;
    *bucket = e;
    e->linked = 1;
    t->linked++;
    return 0;
}

/* Unlink e from its bucket; 0, or -1 (EINVAL) for a bad table or an entry
   that is not in it. */
int
ngxffi_http_file_unlink(ngxffi_http_files_t *t, ngxffi_http_file_t *e)
{
    ngxffi_http_file_t **p;

    if (!ngxffi_table_ok(t) || e == NULL || !e->linked) {
        errno = EINVAL;
        return -1;
    }
    for (p = &t->buckets[e->hash & (t->n - 1)]; *p; p = &(*p)->next) {
        if (*p == e) {
            *p = e->next;
            e->next = NULL;
            e->linked = 0;
            t->linked--;
            return 0;
        }
    }
    errno = EINVAL;
    return -1;
}

/* The entry for key, or NULL. */
const ngxffi_http_file_t *
ngxffi_http_file_find(const ngxffi_http_files_t *t, const char *key, size_t len)
{
    const ngxffi_http_file_t *e;
    uint64_t h;

    if (!ngxffi_table_ok(t) || key == NULL) return NULL;
    h = ngxffi_hash(key, len);
    for (e = t->buckets[h & (t->n - 1)]; e; e = e->next) {
        if (e->hash == h && e->key_len == len && memcmp(e->key, key, len) == 0)
        {
            return e;
        }
    }
    return NULL;
}
