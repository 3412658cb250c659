/* A merge method: its parameter schema and its per-tile math over f32.
 *
 * Methods never see files or buffers; the plan resolves their parameters per tensor (gradients,
 * filters, precedence) and the engine feeds them tiles. A tile carries its inputs in the dtype
 * they were read in: most methods ask for f32 copies (smelt_tile_f32), while hot methods may use
 * the fused decode-and-accumulate kernels (smelt_tile_scale/axpy) and skip the decoded copy. */
#ifndef SMELT_METHOD_H
#define SMELT_METHOD_H

#include "common/errors.h"
#include "kernels/kernels.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum smelt_param_kind { SMELT_PARAM_NUMBER, SMELT_PARAM_BOOL } smelt_param_kind;

typedef struct smelt_param_def {
    const char *name;
    smelt_param_kind kind;
    int per_model;        /* 1: given per model entry (top-level value is the fallback) */
    int required;         /* 1: an error when no level gives it */
    double default_value; /* when not required and not given */
} smelt_param_def;

/* How a method uses the base model. */
typedef enum smelt_base_use {
    SMELT_BASE_IGNORED,  /* the base only supplies the tensor set, config and tokenizer */
    SMELT_BASE_OPTIONAL, /* used when given */
    SMELT_BASE_REQUIRED
} smelt_base_use;

/* What a method gets to set up one output tensor. */
typedef struct smelt_tensor_args {
    const char *tensor;        /* for messages */
    size_t ninputs;            /* tiles passed to apply(): the base first when the method uses
                                  it, then the models in config order */
    int has_base;              /* 1 when in[0] is the base model */
    const char *const *input_names; /* model references, for messages */
    /* Resolved parameter values, indexed by the parameter's position in the method's params
     * array: values[p][0] for a global parameter; values[p][i] for input i of a per-model one
     * (the base's slot holds the top-level value or the default). */
    const double *const *values;
    uint64_t numel;
    /* Elements of one row: the last dimension's length (the whole tensor for 1-D and 0-D
     * tensors), so that per-row methods can rank within rows. numel is a multiple of it. */
    uint64_t row_elems;
    unsigned ndim;             /* dimensions: per-column methods need to tell [1, n] from [n] */
    uint64_t random_seed;      /* --random-seed: random methods key their generator with it */
    /* For a method with outputs_per_model: the output this plan computes, the index among the
     * models (base excluded, config order) of the model whose output it is; 0 otherwise. */
    size_t output;
} smelt_tensor_args;

/* c ? x : y for the methods' per-element loops, by bit masks: the same bits as the ternary
 * (NaN payloads and signed zeros included), but a select the compiler vectorizes, where it
 * turned float ternaries into branches and left such loops scalar. */
static inline float smelt_pick_f32(int c, float x, float y)
{
    uint32_t m = 0u - (uint32_t)(c != 0), a, b;
    memcpy(&a, &x, sizeof a);
    memcpy(&b, &y, sizeof b);
    a = (a & m) | (b & ~m);
    memcpy(&x, &a, sizeof x);
    return x;
}

/* Elements in one tile: small enough that every input's f32 copy stays in L1. */
#define SMELT_TILE_ELEMS 1024u
/* Elements in one engine task (a whole number of tiles). Tasks start at multiples of this in
 * the tensor whatever the thread count or budget; statistics are accumulated per task. A
 * method may ask for smaller tasks for a tensor (task_elems), e.g. a whole number of rows. */
#define SMELT_TASK_ELEMS (64u * 1024u)

/* One tile of one tensor, as the engine hands it to a method. Read-only for the method except
 * the scratch tiles, which belong to the calling worker thread. */
typedef struct smelt_tile {
    const smelt_kernels *k;
    size_t ninputs;
    const void *const *raw;    /* raw[i]: n elements of input i, in dtype[i] */
    const smelt_dtype *dtype;  /* F32, F16 or BF16 */
    float *scratch;            /* ninputs * SMELT_TILE_ELEMS floats for decoded copies */
    size_t n;                  /* elements, at most SMELT_TILE_ELEMS */
    uint64_t index0;           /* index of element 0 in the tensor */
    /* In the apply pass of a method with partial_size: its per-task scratch (see partial_size),
     * else NULL. Written only by the one thread that runs the task. */
    void *task_scratch;
    /* In a statistics pass of a method with worker_partial_size: the calling worker's
     * accumulator for the pass, else NULL. Written only by that worker. */
    void *worker_partial;
    /* The whole task this tile belongs to, in every pass: task_raw[i] is input i from the
     * task's first element (index task_index0), task_n its elements. A method that needs more
     * than one tile at a time (per-row ranks) reads them when index0 == task_index0, the
     * task's first tile, and keeps what it derives in its partial or task_scratch. */
    const void *const *task_raw;
    uint64_t task_index0;
    size_t task_n;
    /* For a method with carry_bytes: carry_bytes(state) bytes per element of the tile, from
     * element index0, that its statistics passes may write and its apply pass reads, when the
     * tensor is resident (all its chunks stay in the buffers through every pass, so the bytes
     * written in a statistics pass are still there for apply); NULL in every pass of a
     * streamed tensor (each read has its own buffers). Not zeroed: the pass that writes them
     * writes every element's bytes. Written only by the thread running the tile. */
    uint8_t *carry;
} smelt_tile;

/* Input i as f32: a pointer into the raw data when it is F32, else decoded into scratch tile i.
 * Each call decodes again, so call it once per input and tile. */
const float *smelt_tile_f32(const smelt_tile *tile, size_t i);

/* out[j] = w * input_i[j], decoding on the fly (bit-identical to decode then scale). */
void smelt_tile_scale(const smelt_tile *tile, size_t i, float w, float *out);

/* acc[j] = acc[j] + w * input_i[j], decoding on the fly (bit-identical to decode then axpy). */
void smelt_tile_axpy(const smelt_tile *tile, size_t i, float w, float *acc);

/* How a statistics pass reaches the tensor's bytes when the tensor is streamed (a resident
 * tensor's passes all run over the same buffers, and the output is the same either way). */
typedef enum smelt_pass_kind {
    SMELT_PASS_READ,   /* a read of its own */
    /* A prefix pass: what the pass after it (a statistics pass or apply) needs at task t is
     * only what the tasks before t folded (running counts for an exact tie-break by index),
     * never the pass's total. It shares that pass's read: the engine runs it over each chunk,
     * stats then folds in task order, just before the next pass uses the chunk, and calls its
     * end_pass after its last chunk (the next pass has by then seen the earlier chunks). */
    SMELT_PASS_PREFIX,
    /* A sample pass: it only guesses, from part of the tensor, what the pass after it should
     * look for (a window of histogram bins), and shares that pass's read. The engine runs it
     * over the chunks the buffers hold when that read starts (its first chunks, up to the
     * ring's depth; every chunk of a resident tensor), then calls its end_pass. What it
     * derives may decide only whether a fallback pass is needed, never the output. */
    SMELT_PASS_SAMPLE,
    /* A fallback pass: a read of its own that runs only when pass_needed says so (the sample
     * guessed wrong). The engine reads on as if it were skipped, and when it is needed after
     * all it takes the chunks already read for the next read as this pass's (the bytes are
     * the same), so a skipped pass costs no read and no wait. `smelt plan` counts it as
     * skipped and says so. It must be the only pass on its read, and not the first pass. */
    SMELT_PASS_FALLBACK
} smelt_pass_kind;

typedef struct smelt_method {
    const char *name;
    const smelt_param_def *params;
    size_t nparams;
    smelt_base_use base_use;
    unsigned min_models, max_models; /* counting the models: entries, base excluded */
    /* 1: the merge writes one output per model, each its own plan (smelt_tensor_args.output
     * says which), all of them from one read of the inputs (engine/group.h). */
    int outputs_per_model;

    /* Checks the parameters and builds the per-tensor state (malloc'd; freed with free()).
     * Returns SMELT_OK or SMELT_E_CONFIG with a message naming the tensor, model and rule. */
    int (*prepare)(smelt_ctx *ctx, const smelt_tensor_args *args, void **state);

    /* out[j] for j in [0, tile->n) from the tile's inputs. Must be a pure function of the state
     * and of the elements' values and indices (random methods key their generator with
     * tile->index0 + j), so results do not depend on how the engine tiles the tensor. Called
     * from several threads at once on disjoint tiles. */
    void (*apply)(const void *state, const smelt_tile *tile, float *out);

    /* Methods that need whole-tensor statistics (norms, dot products, thresholds) before they
     * can write an element read the tensor in statistics passes first; the rest leave these
     * NULL. Determinism: the engine cuts every pass into tasks at fixed tensor indices
     * (SMELT_TASK_ELEMS), each task accumulates its tiles in index order into its own partial,
     * and the partials are folded in task order, so statistics are bit-identical for any
     * thread count, budget or chunk size. */

    /* Optional: elements per engine task for this tensor, in (0, SMELT_TASK_ELEMS]; NULL or a
     * return of 0 means SMELT_TASK_ELEMS. Tasks then start at multiples of it (still fixed
     * tensor indices, so the determinism argument above holds), and every chunk is a whole
     * number of tasks. Per-row methods return a whole number of rows. */
    uint64_t (*task_elems)(const void *state);

    /* Statistics passes this tensor needs before apply; 0 when none. */
    unsigned (*passes)(const void *state);
    /* Bytes of one task's partial in `pass` (the engine allocates and zeroes them). For
     * pass == passes(state), the apply pass, it sizes a per-task scratch that apply gets as
     * tile->task_scratch: zeroed at the task's start, and the task's tiles come to apply in
     * index order from one thread, so a method can carry running counts from tile to tile
     * (exact tie-breaking at a rank threshold) and still depend only on element indices. */
    size_t (*partial_size)(const void *state, unsigned pass);
    /* Accumulates one tile into the task's partial. Called from several threads at once, on
     * different partials; must not write the state. */
    void (*stats)(const void *state, unsigned pass, const smelt_tile *tile, void *partial);
    /* Folds one task's partial into the state: called in tensor order, one call at a time. */
    void (*fold)(void *state, unsigned pass, const void *partial);
    /* Optional, for statistics that are integer counts (histograms): bytes of one worker's
     * accumulator in statistics pass `pass`, 0 for none. Counts add up exactly in any order,
     * so every tile a worker runs may go into one accumulator (tile->worker_partial) instead
     * of a per-task partial, which for a histogram of 65536 bins would cost more to clear and
     * fold than the task's own data. The engine zeroes them once; after each chunk's tasks it
     * calls fold_worker for every worker, which adds the counts into the state and must leave
     * the accumulator zeroed. Per chunk, so 32-bit counts cannot wrap. */
    size_t (*worker_partial_size)(const void *state, unsigned pass);
    void (*fold_worker)(void *state, unsigned pass, void *worker_partial);
    /* Called once after the last fold of a pass: derives what the next pass needs. Returns
     * SMELT_OK or an error with a message naming the tensor. */
    int (*end_pass)(smelt_ctx *ctx, void *state, unsigned pass);
    /* Optional: how statistics pass `pass` is read (smelt_pass_kind); NULL: every pass is
     * SMELT_PASS_READ. */
    smelt_pass_kind (*pass_kind)(const void *state, unsigned pass);
    /* For a SMELT_PASS_FALLBACK pass: 1 when it must run after all, asked once every pass
     * before it has ended. Pure: it may be asked more than once. */
    int (*pass_needed)(const void *state, unsigned pass);

    /* Optional: bytes per element (0 for none) a statistics pass leaves for apply in
     * tile->carry: what apply would otherwise derive again from the same elements (the keep
     * mask of a random drop, drawn and ranked in the pass that sums the kept entries). The
     * output must be the same bits whether apply gets them or not (a streamed tensor's, or a
     * merge group's, apply gets NULL and derives them itself); the engine counts them in the
     * budget. */
    size_t (*carry_bytes)(const void *state);

    /* Optional: called once when the tensor's last chunk has been written, so a state that
     * grew in its passes (per-column coefficients) gives that memory back at once instead of
     * when the plan is freed. The state must stay valid for release(). */
    void (*finished)(void *state);

    /* Frees the state (which may be NULL when prepare failed); NULL means free(). */
    void (*release)(void *state);
} smelt_method;

/* The method named `name`, or NULL. */
const smelt_method *smelt_method_find(const char *name);

/* A comma-separated list of the implemented method names, for messages. */
const char *smelt_method_names(void);

/* How a method's math uses a number: in double, or rounded to f32 for the tile math. */
typedef enum smelt_num_use { SMELT_NUM_F64, SMELT_NUM_F32 } smelt_num_use;

/* For smelt_check_finite: a value tied to no one model. */
#define SMELT_NO_INPUT ((size_t)-1)

/* The one check every method runs on its parameters and on the values it derives from them
 * (sums used to normalize, products such as weight·lambda, coefficients): SMELT_OK when `value`
 * is finite as the method uses it — in double, or still finite once rounded to f32 (1e308 is a
 * double but an f32 infinity, which would turn a merge into zeros or NaNs without a word).
 * Otherwise SMELT_E_CONFIG with a message naming the method, the model (args->input_names[input];
 * none for SMELT_NO_INPUT), the tensor and `what` (a parameter name or a phrase for a derived
 * value). Thread-safe. */
int smelt_check_finite(smelt_ctx *ctx, const char *method, const smelt_tensor_args *args,
                       size_t input, const char *what, double value, smelt_num_use use);

/* Index of parameter `name` in m->params, or -1. */
int smelt_method_param_index(const smelt_method *m, const char *name);

#endif
