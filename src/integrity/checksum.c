#include "integrity/checksum.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

smelt_hash128 smelt_hash_bytes(const void *data, size_t len)
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(data, len));
    smelt_hash128 h;
    memcpy(h.b, c.digest, sizeof h.b);
    return h;
}

int smelt_hash_eq(const smelt_hash128 *a, const smelt_hash128 *b)
{
    return memcmp(a->b, b->b, sizeof a->b) == 0;
}

void smelt_hash_hex(const smelt_hash128 *h, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof h->b; i++) {
        hex[2 * i] = digits[h->b[i] >> 4];
        hex[2 * i + 1] = digits[h->b[i] & 15];
    }
    hex[SMELT_HASH_HEX_LEN] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int smelt_hash_parse(const char *text, smelt_hash128 *h)
{
    if (!text || strlen(text) != SMELT_HASH_HEX_LEN)
        return -1;
    for (size_t i = 0; i < sizeof h->b; i++) {
        int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        h->b[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int smelt_hash_file_prefix(smelt_ctx *ctx, int fd, const char *path, uint64_t len,
                           smelt_hash128 *out)
{
    enum { PIECE = 1 << 20 };
    XXH3_state_t *st = XXH3_createState();
    uint8_t *buf = malloc(PIECE);
    if (!st || !buf) {
        XXH3_freeState(st);
        free(buf);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    XXH3_128bits_reset(st);
    int rc = SMELT_OK;
    for (uint64_t at = 0; at < len;) {
        size_t want = len - at < PIECE ? (size_t)(len - at) : PIECE;
        ssize_t n = pread(fd, buf, want, (off_t)at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = smelt_fail_errno(ctx, n < 0 ? errno : EIO, "%s: cannot read its header", path);
            break;
        }
        XXH3_128bits_update(st, buf, (size_t)n);
        at += (uint64_t)n;
    }
    if (rc == SMELT_OK) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
        memcpy(out->b, c.digest, sizeof out->b);
    }
    XXH3_freeState(st);
    free(buf);
    return rc;
}
