/* The engine walks a plan chunk by chunk: reads land in a fixed pool of aligned buffers through
 * the ring, the pool of threads decodes them to f32 tiles and runs the method, and the encoded
 * output goes straight to its precomputed offset. Every buffer comes out of one budget. */
#ifndef SMELT_ENGINE_H
#define SMELT_ENGINE_H

#include "integrity/checksum.h"
#include "io/writer.h"
#include "plan/plan.h"

/* Called once per output tensor when its last byte was handed to the writer, with the XXH3-128
 * of its bytes (hashed as they were written: no second read). Empty tensors get the hash of
 * nothing. A non-zero return (a status, message in ctx) stops the engine with that status. */
typedef int (*smelt_tensor_done_fn)(void *user, size_t tensor, const smelt_hash128 *hash);

typedef struct smelt_engine_options {
    uint64_t max_memory;
    int threads;
    int force_pread;
    smelt_progress_fn progress;
    void *progress_user;
    volatile int *cancel;
    const uint8_t *skip;            /* per plan tensor, may be NULL: 1 = already in the output
                                       (a resumed merge); neither read nor written */
    smelt_tensor_done_fn tensor_done; /* may be NULL */
    void *tensor_done_user;
} smelt_engine_options;

/* How the engine divides the budget (reported by `smelt plan` and the benchmarks). */
typedef struct smelt_engine_layout {
    uint64_t chunk_elements; /* elements of one tensor per chunk */
    unsigned depth;          /* chunks in flight (reading or being computed) */
    uint64_t buffer_bytes;   /* all buffers together: never more than the budget */
} smelt_engine_layout;

/* Works out chunk size and read-ahead depth for a plan under a budget. SMELT_E_BUDGET with a
 * message giving the smallest workable budget when two chunks (one reading while one is
 * computed) per input do not fit. */
int smelt_engine_layout_for(smelt_ctx *ctx, const smelt_plan *plan, uint64_t max_memory,
                            int threads, smelt_engine_layout *layout);

/* How many times the engine reads plan tensor t's input bytes under a layout: once for a tensor
 * without statistics passes, and once for a resident one (all its chunks fit in the buffers at
 * the same time, so its statistics passes and its apply pass run over the bytes read once);
 * a streamed tensor is read again for each statistics pass. */
unsigned smelt_engine_tensor_reads(const smelt_plan *plan, const smelt_engine_layout *layout,
                                   size_t t);

/* The bytes the engine will read for plan tensor t under a layout; with layout NULL, its input
 * bytes read once (what the plan alone says, whatever the budget: the partition's weights). */
uint64_t smelt_engine_tensor_bytes_to_read(const smelt_plan *plan,
                                           const smelt_engine_layout *layout, size_t t);

/* The bytes the engine will read from the input files under a layout: exact, the same figure
 * the read ring counts by the end of an uninterrupted merge. */
uint64_t smelt_engine_bytes_to_read(const smelt_plan *plan, const smelt_engine_layout *layout);

/* Writes every tensor of the plan into files[s] (created by the caller with the shard sizes
 * from the plan; headers are written here). A shard whose file is not open (fd -1: another
 * part of a partitioned merge writes it) is left alone; its tensors must all be skipped.
 * Returns SMELT_OK or the first error; on error the files hold partial data and must be
 * discarded. */
int smelt_engine_run(smelt_ctx *ctx, const smelt_plan *plan, smelt_out_file *files,
                     const smelt_engine_options *opts);

/* Writes the human-readable account of a plan that `smelt plan` prints: inputs, slices, every
 * output tensor with its sources and resolved parameters, the shards, bytes to read and write,
 * and how the budget is divided. */
int smelt_plan_describe(smelt_ctx *ctx, const smelt_plan *plan, const smelt_engine_layout *layout,
                        uint64_t max_memory, FILE *out);

#endif
