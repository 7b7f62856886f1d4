/*
 * libFuzzer target: the plain-GET recogniser, ngxffi_http_simple, on an
 * exact-size heap copy of the input (so that ASan reports any read past it).
 *
 * Checks: the length it returns is 0 or a prefix of the input that starts with
 * "GET /" and ends with the blank line, and that prefix alone, in its own
 * exact-size copy, is recognised with the same length (a whole request does
 * not depend on what follows it).
 */

#include "ngxffi.h"
#include "fuzz_copy.h"

static size_t
recognise(const ngxffi_http_fast_t *f, const uint8_t *data, size_t size)
{
    char *p = fuzz_copy(data, size);
    size_t n;

    n = ngxffi_http_simple(f, p, size);
    free(p);
    return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngxffi_http_fast_t f;
    size_t n;

    memset(&f, 0, sizeof(f));
    f.enabled = 1;
    f.skip_path = "/status";
    f.skip_path_len = 7;

    n = recognise(&f, data, size);
    if (n == 0) return 0;
    if (n > size || n < 5 + 11 + 2 || memcmp(data, "GET /", 5) != 0
        || memcmp(data + n - 4, "\r\n\r\n", 4) != 0)
    {
        abort();
    }
    if (recognise(&f, data, n) != n) abort();
    return 0;
}
