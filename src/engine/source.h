/* Tensor sources (private to engine/): how the bytes read for an input become what the methods
 * see. Most inputs are their file's bytes in the tensor's dtype (block types included), handed
 * to the tiles as they were read. A derived input is computed from read bytes per chunk, before
 * any pass sees it: a LoRA-adapted weight W + scale * (B @ A) into an f32 buffer, or a
 * BASE+DELTA input, the base's bytes XOR the delta's decoded frames, in the tensor's own dtype.
 * Inputs that stand on the same bytes of the same file (BASE+DELTA inputs sharing BASE, BASE
 * itself as base_model) share one read of them. The computation depends only on element
 * indices and the inputs, never on how the engine chunks or threads the tensor, so outputs
 * stay bit-identical across budgets, threads and ISA. */
#ifndef SMELT_SOURCE_H
#define SMELT_SOURCE_H

#include "common/pool.h"
#include "format/lora.h"
#include "kernels/kernels.h"
#include "plan/plan.h"

/* What input i of a MERGE tensor is. */
typedef enum smelt_source_kind {
    SMELT_SOURCE_FILE,  /* its file's bytes, handed to the tiles as read */
    SMELT_SOURCE_LORA,  /* f32 computed from the read bytes: W + scale * (B @ A), or an
                           adapter's copy rounded to the base's dtype (smelt_source_lora_apply) */
    SMELT_SOURCE_DELTA, /* in its own dtype: the read base bytes XOR a delta's decoded frames, or
                           an entry stored whole: its decoded frames alone (reads no file
                           bytes) */
} smelt_source_kind;

smelt_source_kind smelt_source_kind_of(const smelt_plan_tensor *pt, size_t i);

/* The input of pt whose read brings input i's file bytes: the lowest j <= i whose bytes are the
 * same extent of the same file (device and inode, offset, dtype; every input reads
 * pt->ref->numel elements), so bytes several inputs stand on are read once per chunk. The read
 * lands in input j's buffer and is never written over: every input that needs other bytes
 * computes them into its own buffer. SMELT_SOURCE_NO_READ for an input that reads no file
 * bytes (a delta entry stored whole). Pure, O(i). */
#define SMELT_SOURCE_NO_READ SIZE_MAX
size_t smelt_source_reader(const smelt_plan *plan, const smelt_plan_tensor *pt, size_t i);

/* The bytes input i adds to one read of `count` elements of the tensor when it is its own
 * reader (the file bytes), 0 when another input's read serves it; BASE+DELTA inputs add their
 * delta's frames per read of the tensor on top (smelt_plan_source.delta_bytes). */
uint64_t smelt_source_file_bytes(const smelt_plan *plan, const smelt_plan_tensor *pt, size_t i,
                                 uint64_t count);

/* ---- BASE+DELTA sources (source_delta.c) ---------------------------------------------------
 * The frames of a delta line up with 64 Ki elements, chunks with tasks: a chunk decodes each
 * frame that starts in it exactly once (on the workers, one frame per pool task, each worker
 * with its own zstd context, reused from frame to frame), and a frame that goes on past the chunk's end is kept, joined,
 * for the chunks after it. Its frame table records are read once too (by the merging thread,
 * for the chunk's frames at once), so one read of a tensor reads exactly delta_bytes of each
 * delta: what smelt_engine_bytes_to_read counts. */
typedef struct smelt_delta_sources smelt_delta_sources;

/* Bytes smelt_delta_sources_new allocates for a plan run by `threads` workers in chunks of at
 * most `chunk` elements (0 when no input is a BASE+DELTA one): per worker a zstd context and
 * one compressed and one decoded frame; per BASE+DELTA input two kept frames and one chunk's
 * table records and frame jobs. */
uint64_t smelt_delta_sources_bytes(const smelt_plan *plan, unsigned threads, uint64_t chunk);

/* *out = the state smelt_delta_sources_prepare needs, or NULL when no input of the plan is a
 * BASE+DELTA one. SMELT_OK or SMELT_E_NOMEM. Freed with smelt_delta_sources_free. */
int smelt_delta_sources_new(smelt_ctx *ctx, const smelt_plan *plan, unsigned threads,
                            uint64_t chunk, smelt_delta_sources **out);
void smelt_delta_sources_free(smelt_delta_sources *ds);

/* Computes the BASE+DELTA inputs of elements [start, start + count) of plan tensor `tensor`:
 * out[i] (count elements in the tensor's dtype) = base[i] (the bytes input i's reader read)
 * XOR the delta's elements, for every input i of SMELT_SOURCE_DELTA (base[i] NULL for an
 * entry stored whole: its elements themselves). The chunks of one read of a tensor must come
 * in order, from start 0 (a new read starts over at 0). begin reads the frame table records
 * and starts the frames on `pool` (smelt_pool_start: its workers must number at most the
 * `threads` given to new), so the caller may do other work until end, which decodes the rest
 * on the calling thread and waits for all; base and out must stay as they are until then.
 * Each begin that returns SMELT_OK is followed by one end before the pool or ds is used again.
 * Called from one thread. begin: SMELT_OK, or an error before anything started (SMELT_E_IO
 * reading the table). end: SMELT_OK, or the error of the lowest failing frame, whatever the
 * thread count (a damaged frame: SMELT_E_FORMAT naming the delta, the tensor and the frame;
 * SMELT_E_IO). */
int smelt_delta_sources_begin(smelt_ctx *ctx, smelt_delta_sources *ds, smelt_pool *pool,
                              const smelt_plan *plan, size_t tensor, uint64_t start,
                              uint64_t count, const uint8_t *const *base, uint8_t *const *out);
int smelt_delta_sources_end(smelt_ctx *ctx, smelt_delta_sources *ds, smelt_pool *pool);

/* The delta bytes read so far (table records and frames), for the engine's count of the bytes
 * read from input files. Read from the thread that calls prepare. */
uint64_t smelt_delta_sources_bytes_read(const smelt_delta_sources *ds);

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
