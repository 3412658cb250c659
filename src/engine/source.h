/* Tensor sources (private to engine/): how the bytes read for an input become what the methods
 * see. Most inputs are their file's bytes in the tensor's dtype (block types included), handed
 * to the tiles as they were read. A derived input is computed from read bytes per chunk, before
 * any pass sees it, into an f32 buffer: a LoRA-adapted weight W + scale * (B @ A). The
 * computation depends only on element indices and the inputs, never on how the engine chunks
 * or threads the tensor, so outputs stay bit-identical across budgets, threads and ISA. */
#ifndef SMELT_SOURCE_H
#define SMELT_SOURCE_H

#include "common/pool.h"
#include "format/lora.h"
#include "kernels/kernels.h"

/* Bytes of module m's f32 factors (see smelt_lora_module): left, right and, for DoRA, one
 * rescaling factor per output feature; and of the scratch that loading them needs (B's copy,
 * or DoRA's norm pass: a block of the base weight's rows and an f64 sum per feature). */
uint64_t smelt_source_lora_factor_bytes(const smelt_lora_module *m);
uint64_t smelt_source_lora_scratch_bytes(const smelt_lora_module *m);

/* Reads module m's factors from the adapter's file as f32: left (rank x rows) and right
 * (rank x cols), using scratch (smelt_source_lora_scratch_bytes). SMELT_OK or SMELT_E_IO naming
 * the file and tensor. */
int smelt_source_lora_load(smelt_ctx *ctx, const smelt_lora *lora, const smelt_lora_module *m,
                           float *left, float *right, float *scratch);

/* DoRA's rescaling of module m (m->magnitude set), from its loaded factors and the base weight
 * w read again from `wfile` (the norm pass): dora[j] = magnitude[j] / ||V_j|| rounded once to
 * f32, for each output feature j (row of V = W + delta, column when transposed), V computed
 * exactly as smelt_source_lora_apply computes it, the squares of its f32 elements summed in f64
 * in element order. As peft/tuners/lora/variants.py DoraLinearVariant.merge_safe and
 * DoraEmbeddingVariant (weight_norm over dim 1 of the [out, in] view) compute it, except that
 * PEFT sums in the weight's dtype. Runs on `pool`; each feature's sum is one task's, so the bits
 * do not depend on the thread count. SMELT_OK, SMELT_E_IO, or SMELT_E_FORMAT when a factor is
 * not finite (a feature whose norm is 0, a magnitude that is not finite), naming the tensor and
 * the feature. */
int smelt_source_dora_prepare(smelt_ctx *ctx, const smelt_kernels *k, smelt_pool *pool,
                              const smelt_lora *lora, const smelt_lora_module *m,
                              const float *left, const float *right, const smelt_st_file *wfile,
                              const smelt_tensor_info *w, void *scratch, float *dora);

/* out[j] for j < n (any n) = W[index0 + j] + scale * sum over k in rank order
 * of left[k][row] * right[k][col], where row and col are element index0 + j's position in the
 * [rows, cols] weight and W comes from `raw` (n elements in dtype dt); with `dora` (NULL: plain
 * LoRA) then times dora[row] (dora[col] when transposed). f32 throughout: the product sums in
 * rank order from +0 (each step rounds the multiply and the add, no FMA), is scaled once, added
 * to W once and rescaled once, through the kernel table, so every level gives the same bits.
 * Whole rows are done four at a time (kernels_ops.h lora_delta), so longer spans run faster. */
#define SMELT_SOURCE_TILE 1024u
void smelt_source_lora_apply(const smelt_kernels *k, const smelt_lora_module *m,
                             const float *left, const float *right, const float *dora,
                             const void *raw, smelt_dtype dt, uint64_t index0, size_t n,
                             float *out);

/* x[j] for j < n (n <= SMELT_SOURCE_TILE) rounded to dtype dt and widened back to f32 (F32:
 * unchanged): the value a model stored in dt holds. */
void smelt_source_round(const smelt_kernels *k, float *x, smelt_dtype dt, size_t n);

#endif
