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
                                       (a resumed merge, which has one output); neither read
                                       nor written */
} smelt_engine_options;

/* One output of an engine run: its plan, the files it writes (created by the caller with the
 * shard sizes from the plan; headers are written by the engine; a file with fd -1 belongs to
 * another part of a partitioned merge and all its tensors must be skipped), and who hears of
 * its finished tensors. The plans of one run are a group: the same input tensors at every
 * tensor position (smelt_group_check), each with its own method state, dtypes and layout. */
typedef struct smelt_engine_output {
    const smelt_plan *plan;
    smelt_out_file *files;
    smelt_tensor_done_fn tensor_done; /* may be NULL */
    void *tensor_done_user;
} smelt_engine_output;

/* How the engine divides the budget (reported by `smelt plan` and the benchmarks). */
typedef struct smelt_engine_layout {
    uint64_t chunk_elements; /* elements of one tensor per chunk */
    unsigned depth;          /* chunks in flight (reading or being computed) */
    uint64_t buffer_bytes;   /* all buffers together: never more than the budget */
    uint64_t carry_bytes;    /* of them, the carry region (smelt_method.carry_bytes): what the
                                budget has left over the chunks, for the largest resident tensor
                                whose carry fits it; 0 when none */
} smelt_engine_layout;

/* Works out chunk size and read-ahead depth for a plan under a budget. SMELT_E_BUDGET with a
 * message giving the smallest workable budget when two chunks (one reading while one is
 * computed) per input do not fit. */
int smelt_engine_layout_for(smelt_ctx *ctx, const smelt_plan *plan, uint64_t max_memory,
                            int threads, smelt_engine_layout *layout);

/* The same for a group of plans read together (plans[0] supplies the inputs): the budget holds
 * one encoded output chunk per output in every slot, and the largest partial of any output. */
int smelt_engine_layout_group(smelt_ctx *ctx, const smelt_plan *const *plans, size_t nplans,
                              uint64_t max_memory, int threads, smelt_engine_layout *layout);

/* How many times the engine reads plan tensor t's input bytes under a layout: once for a tensor
 * without statistics passes, and once for a resident one (all its chunks fit in the buffers at
 * the same time, so its statistics passes and its apply pass run over the bytes read once);
 * a streamed tensor is read again for each statistics pass with a read of its own
 * (smelt_pass_kind), its fallback passes counted as skipped. */
unsigned smelt_engine_tensor_reads(const smelt_plan *plan, const smelt_engine_layout *layout,
                                   size_t t);

/* The reads of plan tensor t that happen only when a fallback pass turns out needed (0 for a
 * resident tensor). */
unsigned smelt_engine_tensor_fallback_reads(const smelt_plan *plan,
                                            const smelt_engine_layout *layout, size_t t);

/* The bytes the engine will read for plan tensor t under a layout; with layout NULL, its input
 * bytes read once (what the plan alone says, whatever the budget: the partition's weights). */
uint64_t smelt_engine_tensor_bytes_to_read(const smelt_plan *plan,
                                           const smelt_engine_layout *layout, size_t t);

/* The bytes the engine will read from the input files under a layout: exact, the same figure
 * the read ring counts by the end of an uninterrupted merge, unless a fallback pass turns out
 * needed (then one more read of that tensor each: smelt_engine_tensor_fallback_reads). */
uint64_t smelt_engine_bytes_to_read(const smelt_plan *plan, const smelt_engine_layout *layout);

/* The same for a group under its layout: each tensor is read as many times as the output with
 * the most statistics passes needs (once when resident), whatever the number of outputs. */
uint64_t smelt_engine_group_bytes_to_read(const smelt_plan *const *plans, size_t nplans,
                                          const smelt_engine_layout *layout);

/* Writes every tensor of every output's plan into its files in one pass over the inputs: each
 * chunk is read once (again only for statistics passes of a streamed tensor) and handed to
 * every output's method; outputs apply in output order. One output is the ordinary merge.
 * Returns SMELT_OK or the first error; on error the files hold partial data and must be
 * discarded. */
int smelt_engine_run_group(smelt_ctx *ctx, const smelt_engine_output *outs, size_t nouts,
                           const smelt_engine_options *opts);

/* Writes the human-readable account of a plan that `smelt plan` prints: inputs, slices, every
 * output tensor with its sources and resolved parameters, the shards, bytes to read and write,
 * and how the budget is divided. */
int smelt_plan_describe(smelt_ctx *ctx, const smelt_plan *plan, const smelt_engine_layout *layout,
                        uint64_t max_memory, FILE *out);

/* The account of a group of outputs (a sweep, a batch) under its shared layout: each output's
 * plan as smelt_plan_describe writes it (whose "read:" line is what that merge alone would
 * read), then the bytes the group reads once for all of them and its memory. */
int smelt_group_describe(smelt_ctx *ctx, const smelt_plan *const *plans,
                         const char *const *labels, size_t n, const smelt_engine_layout *layout,
                         uint64_t max_memory, FILE *out);

#endif
