/* Tensor sources (private to engine/): how the bytes read for an input become what the methods
 * see. Most inputs are their file's bytes in the tensor's dtype (block types included), handed
 * to the tiles as they were read. A derived input is computed from read bytes per chunk, before
 * any pass sees it, into an f32 buffer: a LoRA-adapted weight W + scale * (B @ A). The
 * computation depends only on element indices and the inputs, never on how the engine chunks
 * or threads the tensor, so outputs stay bit-identical across budgets, threads and ISA. */
#ifndef SMELT_SOURCE_H
#define SMELT_SOURCE_H

#include "format/lora.h"
#include "kernels/kernels.h"

/* Bytes of the two f32 factors of module m (see smelt_lora_module), and of the scratch that
 * loading them needs. */
uint64_t smelt_source_lora_factor_bytes(const smelt_lora_module *m);
uint64_t smelt_source_lora_scratch_bytes(const smelt_lora_module *m);

/* Reads module m's factors from the adapter's file as f32: left (rank x rows) and right
 * (rank x cols), using scratch (smelt_source_lora_scratch_bytes). SMELT_OK or SMELT_E_IO naming
 * the file and tensor. */
int smelt_source_lora_load(smelt_ctx *ctx, const smelt_lora *lora, const smelt_lora_module *m,
                           float *left, float *right, float *scratch);

/* out[j] for j < n (n <= SMELT_SOURCE_TILE) = W[index0 + j] + scale * sum over k in rank order
 * of left[k][row] * right[k][col], where row and col are element index0 + j's position in the
 * [rows, cols] weight and W comes from `raw` (n elements in dtype dt). f32 throughout: the
 * product sums in rank order from +0 (each step rounds the multiply and the add, no FMA), is
 * scaled once and added to W once, through the kernel table, so every level gives the same
 * bits. */
#define SMELT_SOURCE_TILE 1024u
void smelt_source_lora_apply(const smelt_kernels *k, const smelt_lora_module *m,
                             const float *left, const float *right, const void *raw,
                             smelt_dtype dt, uint64_t index0, size_t n, float *out);

/* x[j] for j < n (n <= SMELT_SOURCE_TILE) rounded to dtype dt and widened back to f32 (F32:
 * unchanged): the value a model stored in dt holds. */
void smelt_source_round(const smelt_kernels *k, float *x, smelt_dtype dt, size_t n);

#endif
