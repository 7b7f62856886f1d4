/*
 * For the libFuzzer targets: an exact-size heap copy of some bytes, so that
 * ASan reports any access past them (libFuzzer's own buffer may be larger).
 */

#ifndef FUZZ_COPY_H_INCLUDED
#define FUZZ_COPY_H_INCLUDED

#include <stdlib.h>
#include <string.h>

/* A malloc'd copy of the size bytes at data (one byte for none); aborts when
   malloc fails. */
static inline char *
fuzz_copy(const void *data, size_t size)
{
    char *p = malloc(size ? size : 1);

    if (p == NULL) abort();
    if (size) memcpy(p, data, size);
    return p;
}

#endif /* FUZZ_COPY_H_INCLUDED */
