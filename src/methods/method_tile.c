/* The tile accessors methods use: dtype dispatch over the kernel table, in one place. */
#include "methods/method.h"

const float *smelt_tile_f32(const smelt_tile *tile, size_t i)
{
    if (tile->dtype[i] == SMELT_DT_F32)
        return tile->raw[i]; /* read buffers are page-aligned and F32 offsets are 4-aligned */
    float *dst = tile->scratch + i * SMELT_TILE_ELEMS;
    smelt_decode(tile->k, dst, tile->raw[i], tile->dtype[i], tile->n);
    return dst;
}

void smelt_tile_scale(const smelt_tile *tile, size_t i, float w, float *out)
{
    const smelt_kernels *k = tile->k;
    switch (tile->dtype[i]) {
    case SMELT_DT_BF16: k->scale_bf16(out, tile->raw[i], w, tile->n); break;
    case SMELT_DT_F16: k->scale_f16(out, tile->raw[i], w, tile->n); break;
    case SMELT_DT_F32: k->scale(out, tile->raw[i], w, tile->n); break;
    default: k->scale(out, smelt_tile_f32(tile, i), w, tile->n); break; /* block types */
    }
}

void smelt_tile_axpy(const smelt_tile *tile, size_t i, float w, float *acc)
{
    const smelt_kernels *k = tile->k;
    switch (tile->dtype[i]) {
    case SMELT_DT_BF16: k->axpy_bf16(acc, tile->raw[i], w, tile->n); break;
    case SMELT_DT_F16: k->axpy_f16(acc, tile->raw[i], w, tile->n); break;
    case SMELT_DT_F32: k->axpy(acc, tile->raw[i], w, tile->n); break;
    default: k->axpy(acc, smelt_tile_f32(tile, i), w, tile->n); break; /* block types */
    }
}
