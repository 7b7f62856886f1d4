/*
 * libFuzzer target: the plain-request recogniser of the Python path,
 * ngxffi_http_plain, on an exact-size heap copy of the request bytes, into an
 * exact-size heap text buffer (so that ASan reports any access past either).
 *
 * Input: 2 header bytes, then the request bytes.
 *   [0] line_max, 16 + b * 32; [1] headers_max, 16 + b * 64 (the limits).
 *
 * Checks: what it returns is out[NGXFFI_PLAIN_TEXT]; for a request, its end
 * is within the input, after a blank line; the text fits, its parts are 3
 * plus a name and a value per header; the last answer is the one that is not
 * keep-alive (no connection counts); the request alone, in its own copy, is
 * recognised with the same end and text (it does not depend on what follows);
 * it is counted on a connection, exactly once; a text buffer one byte too
 * small recognises nothing.
 */

#include "ngxffi.h"
#include "fuzz_copy.h"

static int
recognise(ngxffi_http_plain_t *pl, ngx_connection_t *c, const uint8_t *data,
          size_t size, size_t text_size)
{
    char *p = fuzz_copy(data, size), *text = malloc(text_size ? text_size : 1);
    int k;

    if (text == NULL) abort();
    pl->text = text;
    pl->text_size = text_size;
    k = ngxffi_http_plain(pl, c, p, size, 0);
    free(p);
    free(text);
    return k;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngxffi_http_plain_t pl;
    ngx_connection_t c;
    int32_t out[NGXFFI_PLAIN_OUT], first[NGXFFI_PLAIN_OUT];
    char text[16384];
    size_t n, end, i, nuls = 0;
    int k;

    if (size < 2 || size - 2 > sizeof(text)) return 0;
    memset(&pl, 0, sizeof(pl));
    memset(&c, 0, sizeof(c));
    memset(out, 0, sizeof(out));
    pl.line_max = 16 + (size_t) data[0] * 32;
    pl.headers_max = 16 + (size_t) data[1] * 64;
    pl.out = out;
    pl.requests_max = 1000;
    data += 2;
    n = size - 2;

    /* the text is copied out before its buffer is freed: into text[] */
    pl.text = text;
    pl.text_size = n;
    k = ngxffi_http_plain(&pl, NULL, (const char *) data, n, 0);
    if (k != out[NGXFFI_PLAIN_TEXT] || k < 0 || (size_t) k > n) abort();
    if (recognise(&pl, NULL, data, n, n) != k) abort();
    if (k == 0) return 0;

    end = (size_t) out[NGXFFI_PLAIN_END];
    if (end > n || end < 4 || memcmp(data + end - 4, "\r\n\r\n", 4) != 0) {
        abort();
    }
    for (i = 0; i < (size_t) k; i++) nuls += text[i] == '\0';
    if (nuls < 2 || nuls % 2) abort(); /* method, target, version, pairs */
    if (out[NGXFFI_PLAIN_LAST] != !out[NGXFFI_PLAIN_KEEP]) abort();
    memcpy(first, out, sizeof(first));

    if (recognise(&pl, NULL, data, end, end) != k
        || memcmp(first, out, sizeof(first)) != 0)
    {
        abort();
    }
    if (recognise(&pl, &c, data, n, n) != k || c.requests != 1) abort();
    if (recognise(&pl, &c, data, n, (size_t) k - 1) != 0 || c.requests != 1) {
        abort();
    }
    return 0;
}
