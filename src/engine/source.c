/* Derived tensor sources: LoRA products (see source.h). */
#include "engine/source.h"

#include "common/util.h"

#include <string.h>

uint64_t smelt_source_lora_factor_bytes(const smelt_lora_module *m)
{
    return (uint64_t)m->rank * (m->rows + m->cols) * sizeof(float);
}

uint64_t smelt_source_lora_scratch_bytes(const smelt_lora_module *m)
{
    return m->b->numel * sizeof(float);
}

/* Tensor t of the adapter's weights as f32 into dst. */
static int read_f32(smelt_ctx *ctx, const smelt_lora *lora, const smelt_tensor_info *t, float *dst)
{
    const smelt_st_file *f = &lora->weights->files[t->file];
    unsigned size = smelt_dtype_size(t->dtype);
    /* 2-byte elements are read into the back half and widened front to back: element i's bytes
     * at 2n + 2i are read before the f32 at 4i overwrites them (4i < 2n + 2i for i < n). */
    uint8_t *raw = size == 2 ? (uint8_t *)dst + t->numel * 2 : (uint8_t *)dst;
    int err = smelt_pread_all(f->fd, raw, t->nbytes, t->offset);
    if (err)
        return smelt_fail_errno(ctx, err, "%s: tensor '%s': read failed", f->path, t->name);
    if (size == 2) {
        const smelt_kernels *k = smelt_kernels_get();
        float tile[SMELT_SOURCE_TILE];
        for (uint64_t at = 0; at < t->numel; at += SMELT_SOURCE_TILE) {
            size_t n = t->numel - at < SMELT_SOURCE_TILE ? (size_t)(t->numel - at)
                                                         : SMELT_SOURCE_TILE;
            smelt_decode(k, tile, raw + at * 2, t->dtype, n);
            memcpy(dst + at, tile, n * sizeof *tile);
        }
    }
    return SMELT_OK;
}

int smelt_source_lora_load(smelt_ctx *ctx, const smelt_lora *lora, const smelt_lora_module *m,
                           float *left, float *right, float *scratch)
{
    /* Plain: left = B^T (rank x out), right = A (rank x in). Transposed (fan_in_fan_out,
     * embeddings): left = A (rank x rows), right = B^T (rank x cols). B is [n, rank]. */
    float *a_dst = m->transposed ? left : right, *bt = m->transposed ? right : left;
    int rc = read_f32(ctx, lora, m->a, a_dst);
    if (rc == SMELT_OK)
        rc = read_f32(ctx, lora, m->b, scratch);
    if (rc != SMELT_OK)
        return rc;
    uint64_t n = m->b->shape[0];
    for (uint64_t i = 0; i < n; i++)
        for (uint32_t k = 0; k < m->rank; k++)
            bt[(uint64_t)k * n + i] = scratch[i * m->rank + k];
    return SMELT_OK;
}

void smelt_source_lora_apply(const smelt_kernels *k, const smelt_lora_module *m,
                             const float *left, const float *right, const void *raw,
                             smelt_dtype dt, uint64_t index0, size_t n, float *out)
{
    float delta[SMELT_SOURCE_TILE];
    smelt_decode(k, out, raw, dt, n);
    for (size_t j = 0; j < n;) {
        uint64_t row = (index0 + j) / m->cols, col = (index0 + j) % m->cols;
        size_t len = (size_t)(m->cols - col < n - j ? m->cols - col : n - j);
        memset(delta, 0, len * sizeof *delta);
        for (uint32_t r = 0; r < m->rank; r++)
            k->axpy(delta, right + (uint64_t)r * m->cols + col, left[(uint64_t)r * m->rows + row],
                    len);
        k->scale(delta, delta, m->scale, len);
        k->axpy(out + j, delta, 1.0f, len); /* W + delta: 1 * delta is exact */
        j += len;
    }
}

void smelt_source_round(const smelt_kernels *k, float *x, smelt_dtype dt, size_t n)
{
    if (dt == SMELT_DT_F32)
        return;
    uint16_t narrow[SMELT_SOURCE_TILE];
    smelt_encode(k, narrow, x, dt, n);
    smelt_decode(k, x, narrow, dt, n);
}
