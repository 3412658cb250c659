#include "integrity/rehash.h"

#include "common/util.h"
#include "io/ring.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define REHASH_DEPTH 8u
#define REHASH_MAX_CHUNK (8u << 20)
#define REHASH_MIN_CHUNK 8192u

typedef struct rslot {
    int busy, done, error;
    size_t range;
    uint64_t len;
    uint8_t *buf;
} rslot;

/* Closes ranges [*cur, upto) into out: their chunks were all hashed (none for an empty one). */
static void emit_until(XXH3_state_t *st, size_t *cur, size_t upto, smelt_hash128 *out)
{
    while (*cur < upto) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
        memcpy(out[*cur].b, c.digest, 16);
        XXH3_128bits_reset(st);
        (*cur)++;
    }
}

int smelt_hash_ranges(smelt_ctx *ctx, const smelt_hash_range *ranges, size_t n,
                      uint64_t max_memory, int force_pread, smelt_hash128 *out, int *errors,
                      uint64_t *bytes_read)
{
    uint64_t chunk = max_memory / REHASH_DEPTH / 4096 * 4096;
    if (chunk > REHASH_MAX_CHUNK)
        chunk = REHASH_MAX_CHUNK;
    if (chunk < REHASH_MIN_CHUNK)
        chunk = REHASH_MIN_CHUNK;
    if (bytes_read)
        *bytes_read = 0;
    if (errors)
        memset(errors, 0, n * sizeof *errors);
    rslot slots[REHASH_DEPTH];
    memset(slots, 0, sizeof slots);
    XXH3_state_t *st = XXH3_createState();
    smelt_ring *ring = NULL;
    int rc = st ? SMELT_OK : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (unsigned d = 0; d < REHASH_DEPTH && rc == SMELT_OK; d++)
        if (!(slots[d].buf = smelt_aligned_alloc(4096, (size_t)chunk)))
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK)
        rc = smelt_ring_open(ctx, REHASH_DEPTH, force_pread, &ring);
    if (rc != SMELT_OK)
        goto out;
    XXH3_128bits_reset(st);
    size_t cursor = 0, cur = 0; /* next range to read; range being hashed */
    uint64_t pos = 0;
    unsigned oldest = 0, next_free = 0;
    for (;;) {
        while (!slots[next_free].busy) {
            while (cursor < n && pos >= ranges[cursor].len) {
                cursor++;
                pos = 0;
            }
            if (cursor >= n)
                break;
            rslot *s = &slots[next_free];
            uint64_t left = ranges[cursor].len - pos;
            s->busy = 1;
            s->done = 0;
            s->error = 0;
            s->range = cursor;
            s->len = left < chunk ? left : chunk;
            if (smelt_ring_queue_read(ring, ranges[cursor].fd, s->buf, (size_t)s->len,
                                      ranges[cursor].off + pos, next_free) != 0) {
                rc = smelt_fail(ctx, SMELT_E_INTERNAL, "read ring full");
                goto out;
            }
            pos += s->len;
            next_free = (next_free + 1) % REHASH_DEPTH;
        }
        int err = smelt_ring_submit(ring);
        if (err) {
            rc = smelt_fail_errno(ctx, err, "cannot submit reads");
            goto out;
        }
        rslot *s = &slots[oldest];
        if (!s->busy)
            break;
        while (!s->done) {
            smelt_completion c;
            int got = smelt_ring_wait(ring, &c);
            if (got <= 0) {
                rc = got < 0 ? smelt_fail_errno(ctx, -got, "waiting for reads failed")
                             : smelt_fail(ctx, SMELT_E_INTERNAL, "read ring lost a request");
                goto out;
            }
            slots[c.tag].done = 1;
            slots[c.tag].error = c.error;
        }
        emit_until(st, &cur, s->range, out);
        if (s->error) {
            if (!errors) {
                rc = smelt_fail_errno(ctx, s->error, "read failed");
                goto out;
            }
            errors[s->range] = s->error;
        } else {
            XXH3_128bits_update(st, s->buf, (size_t)s->len);
            if (bytes_read)
                *bytes_read += s->len;
        }
        s->busy = 0;
        oldest = (oldest + 1) % REHASH_DEPTH;
    }
    emit_until(st, &cur, n, out);
out:
    smelt_ring_close(ring);
    for (unsigned d = 0; d < REHASH_DEPTH; d++)
        free(slots[d].buf);
    XXH3_freeState(st);
    return rc;
}
