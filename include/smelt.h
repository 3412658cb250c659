/*
 * smelt — out-of-core merging of neural-network checkpoints.
 *
 * The public library API. Everything the `smelt` command-line tool does goes through this header.
 *
 * Conventions (as in liburing and zstd):
 *  - Functions that can fail return an int status: SMELT_OK (0) or a negative SMELT_E_* code.
 *    The human-readable reason is kept in the context and read with smelt_errmsg(); it names the
 *    file, the tensor and the rule that failed.
 *  - A smelt_ctx is not thread-safe: use one per thread. Distinct contexts share nothing.
 *  - Strings passed in are borrowed for the duration of the call; nothing returned must be freed
 *    unless the function says so.
 */
#ifndef SMELT_H
#define SMELT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. Values are pinned: they never change between releases. */
enum smelt_status {
    SMELT_OK = 0,
    SMELT_E_ARG = -1,         /* a bad argument or option from the caller */
    SMELT_E_IO = -2,          /* a system call failed (open, read, write, rename, ...) */
    SMELT_E_FORMAT = -3,      /* an input file breaks a format rule (safetensors, index, ...) */
    SMELT_E_CONFIG = -4,      /* the merge configuration is invalid */
    SMELT_E_PLAN = -5,        /* inputs do not fit together (missing tensor, shape mismatch) */
    SMELT_E_NOMEM = -6,       /* an allocation failed */
    SMELT_E_BUDGET = -7,      /* the memory budget cannot hold one chunk per input */
    SMELT_E_INTERRUPTED = -8, /* stopped by a signal or the caller's cancel flag */
    SMELT_E_UNSUPPORTED = -9, /* valid input that smelt does not handle (yet) */
    SMELT_E_INTERNAL = -10    /* a bug in smelt: please report it */
};

/* An error/logging context. Opaque. */
typedef struct smelt_ctx smelt_ctx;

/* Creates a context. Returns NULL only when memory is exhausted. Free with smelt_ctx_free(). */
smelt_ctx *smelt_ctx_new(void);

/* Frees a context. NULL is allowed. */
void smelt_ctx_free(smelt_ctx *ctx);

/* The message of the last failure on this context ("" if none). Valid until the next call that
 * uses the context. */
const char *smelt_errmsg(const smelt_ctx *ctx);

/* The last status returned by a call on this context. */
int smelt_errcode(const smelt_ctx *ctx);

/* A short, stable name for a status code ("SMELT_E_FORMAT"). Never NULL. */
const char *smelt_status_name(int status);

/* Severity of library notices. */
enum smelt_log_level { SMELT_LOG_NOTICE = 0, SMELT_LOG_WARNING = 1 };

/* Receives the library's notices (an I/O fallback, a truncated vocabulary, ...). The message has
 * no trailing newline. Called from the thread that called into the library. */
typedef void (*smelt_log_fn)(void *user, int level, const char *message);

/* Sets where notices go. The default writes "smelt: notice: ..." lines to stderr; pass NULL to
 * restore it. */
void smelt_ctx_set_log(smelt_ctx *ctx, smelt_log_fn fn, void *user);

/* The library version, "MAJOR.MINOR.PATCH". */
const char *smelt_version(void);

/* The SIMD level the merge kernels use in this process ("scalar", "avx2", "avx512", "neon").
 * The level is the best the CPU and OS support unless the environment variable SMELT_ISA names
 * another; an unsupported SMELT_ISA is reported by smelt_isa_select(). */
const char *smelt_isa_name(void);

/* Chooses the kernel level: NULL or "" = SMELT_ISA from the environment, else the best
 * available. Returns SMELT_E_ARG (message in ctx) when the level is unknown or this CPU lacks it.
 * Not thread-safe with running merges; call it once at start-up. */
int smelt_isa_select(smelt_ctx *ctx, const char *isa);

/* Parses a size: digits with an optional decimal suffix K, M, G, T (powers of 1000) or binary
 * suffix Ki, Mi, Gi, Ti (powers of 1024); a trailing "B" is allowed ("512MB"). Returns SMELT_OK
 * or SMELT_E_ARG with a message naming the text. */
int smelt_parse_size(smelt_ctx *ctx, const char *text, uint64_t *out);

/* Progress of a running merge, handed to smelt_progress_fn. */
typedef struct smelt_progress {
    uint64_t tensors_done, tensors_total;
    uint64_t bytes_read, bytes_to_read;     /* input bytes */
    uint64_t bytes_written, bytes_to_write; /* output bytes */
    double seconds;                         /* since the engine started */
    uint64_t bytes_from_files;              /* what the read ring itself brought in from the
                                               input files so far (both I/O paths count the
                                               same way), plus the BASE+DELTA inputs' frames
                                               and frame tables as their decoders read them:
                                               bytes_read counts input bytes as the methods
                                               consume them */
} smelt_progress;

/* Called from the merging thread, at most a few times per second and once at the end. */
typedef void (*smelt_progress_fn)(void *user, const smelt_progress *progress);

/* What a finished merge did (smelt_merge_options.result), for callers that keep no files of
 * their own: pipelines, language bindings. */
typedef struct smelt_merge_result {
    uint64_t tensors;        /* output tensors */
    uint64_t files;          /* output tensor files (shards) */
    uint64_t bytes_read;     /* what the read ring brought in from the input files */
    uint64_t bytes_written;  /* output tensor bytes */
    double seconds;          /* wall time of the engine */
    char manifest_xxh3[33];  /* the XXH3-128 (32 hex digits) of the output's smelt-manifest.json,
                                which holds every tensor's hash: one value that identifies the
                                whole output (equal outputs, equal hashes) */
} smelt_merge_result;

/* Options of a merge. Start from smelt_merge_options_default(); zero fields mean "default". */
typedef struct smelt_merge_options {
    uint64_t max_memory;     /* the engine's whole buffer budget in bytes (default 512 MiB) */
    uint64_t out_shard_size; /* the largest output shard in bytes. 0 (the default): 5 GB
                                (decimal) shards for safetensors output, and one model.gguf
                                for GGUF output whatever its size. Set for GGUF output, a
                                model that does not fit is written as a gguf-split set (see
                                SMELT_FORMAT_GGUF below) */
    int threads;             /* worker threads (default: online CPUs) */
    int force_pread;         /* 1: never use io_uring (also SMELT_IO=pread in the environment) */
    int overwrite;           /* 1: replace a model already in the output directory */
    uint64_t random_seed;    /* for random methods (DARE, DELLA) */
    int no_copy_tokenizer;   /* 1: do not copy the tokenizer files (mergekit --no-copy-tokenizer) */
    int no_model_card;       /* 1: no README.md model card (mergekit --no-write-model-card) */
    int allow_crimes;        /* 1: merge models whose config.json names different architectures */
    smelt_progress_fn progress; /* may be NULL */
    void *progress_user;
    volatile int *cancel;    /* when non-NULL and set to non-zero, the merge stops at the next
                                chunk with SMELT_E_INTERRUPTED (set it from a signal handler) */
    int resume;              /* 1: continue the interrupted merge whose journal is in out_dir
                                (see smelt_merge()); without a journal, start from the beginning */
    int format;              /* the output format: SMELT_FORMAT_AUTO (0: the inputs'),
                                SMELT_FORMAT_SAFETENSORS or SMELT_FORMAT_GGUF; the models of one
                                merge share a format */
    const char *outtype;     /* GGUF output only: the type of every tensor of 2 or more
                                dimensions: NULL or "same" (the base's type, requantized), f32,
                                f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k;
                                1-D tensors stay F32 */
    /* The config as YAML text (NUL-terminated) instead of a file: config_path then only names
     * it in messages and the plan (NULL: "<config text>"); model paths are relative to the
     * working directory, as with a file. Used by smelt_merge() and smelt_plan_print(). */
    const char *config_text;
    /* When non-NULL, smelt_merge() and smelt_lora_apply() fill *result on success (it is left
     * alone on failure). */
    smelt_merge_result *result;
    /* A partitioned merge (processes or machines sharing OUT_DIR's filesystem): with
     * part_count N > 0, smelt_merge() computes only part part_index K (1 <= K <= N) of the
     * output: the whole output shards that the partition gives it (below). It writes them under
     * their temporary names, keeps its own journal OUT_DIR/.smelt-journal.part-K-of-N (resume
     * works per part), and when done writes its fragment OUT_DIR/.smelt-part-K-of-N.json (the
     * merge's identity: config, inputs, output layout and smelt version; its shards' sizes and
     * header hashes; its tensors' hashes). It renames nothing and writes no index, config.json,
     * tokenizer files, model card or manifest. Other parts' state in OUT_DIR is left alone
     * (also with overwrite, which discards only this part's), so all parts may run at once.
     * The partition comes from the plan alone, so every part computes the same one: shards in
     * output order, weighed by the input bytes their tensors read once; shard s, whose weight
     * is w and whose predecessors weigh c in all (W for the whole plan), goes to part
     * 1 + floor(N * (c + w/2) / W): contiguous runs of shards of about W/N bytes each. With
     * more parts than shards some parts get none, which is fine (they write only a fragment).
     * smelt_plan_print() with part_count set also prints the partition. */
    unsigned part_index;
    unsigned part_count;
    /* 1: finish a partitioned merge whose N parts all ran: checks that every fragment is there
     * and agrees with this config, these inputs, this layout and this smelt version, that they
     * cover every shard of the plan exactly once and that each temporary shard file has its
     * recorded size and header, then renames the shards and writes the index, the manifest,
     * config.json, tokenizer files and model card exactly as a one-process merge does (the
     * output is byte-identical to it) and removes the fragments. Reads no tensor data.
     * Nothing is written when a check fails; the message names the part and the command that
     * redoes it. Not with part_count. */
    int finalize;
    /* Several outputs from one read of the inputs (each output directory byte-identical to a
     * separate merge of its config; one --max-memory budget for all of them; no resume, part
     * or finalize). sweep "NAME=V1,V2,...": the config once per value of its method's
     * top-level parameter NAME, written to out_dir/NAME=V (V as written). The value replaces
     * the config's top-level one in place (or is added to its `parameters:`), and that text is
     * what the output records. batch: the path of a YAML file listing {config: CONFIG.yml,
     * out: OUT_DIR} entries (paths relative to the file) whose configs read the same input
     * tensors; smelt_merge() then takes NULL config_path and out_dir. Also for
     * smelt_plan_print(), which then describes every output and the shared read. */
    const char *sweep;
    const char *batch;
} smelt_merge_options;

/* The most parts a partitioned merge may have. */
#define SMELT_MAX_PARTS 65536u

/* smelt_merge_options.format. A GGUF merge writes out_dir/model.gguf (GGUF v3) with the base's
 * metadata and tokenizer, plus the manifest, model card and config copy beside it. With
 * out_shard_size set and the tensors larger than it, it writes instead a gguf-split set
 * out_dir/model-00001-of-0000N.gguf ... as llama.cpp's gguf-split does (the metadata in the
 * first split, split.no / split.count / split.tensors.count in each, tensors split greedily in
 * output order); at most 65535 splits. */
enum { SMELT_FORMAT_AUTO = 0, SMELT_FORMAT_SAFETENSORS = 1, SMELT_FORMAT_GGUF = 2 };

/* Fills *opts with the defaults. */
void smelt_merge_options_default(smelt_merge_options *opts);

/* Runs the merge that the mergekit-style YAML file at config_path describes, writing a Hugging
 * Face model directory to out_dir (created if missing). Every input is validated and the whole
 * plan is checked before any output byte is written; output files carry temporary names until
 * everything succeeded, so a failed merge leaves nothing that looks complete. Returns SMELT_OK or
 * a negative status with the reason in ctx.
 *
 * Integrity: every output tensor is hashed (XXH3-128) as it is written, and the finished
 * directory gets smelt-manifest.json (file sizes, tensor hashes, the config's and every input
 * header's hash, the smelt version), written before the shards take their final names.
 *
 * Crash safety: while it runs, the merge keeps a journal, out_dir/.smelt-journal, of the tensors
 * whose bytes are durably on disk. When it fails after the journal exists (interrupted, disk
 * full, a write error), the journal and the temporary shard files stay in out_dir and
 * smelt_merge_resumable() says so; running again with opts->resume continues from there (the
 * journal must match the same config, inputs and output layout; journaled tensors are re-hashed
 * and redone when their bytes differ) and gives the same bytes as an uninterrupted merge. Without
 * opts->resume such leftover state is an error unless opts->overwrite, which discards it. The
 * journal is removed when the merge succeeds. */
int smelt_merge(smelt_ctx *ctx, const char *config_path, const char *out_dir,
                const smelt_merge_options *opts);

/* Applies a PEFT LoRA adapter to its base in one streaming pass, as PEFT's merge_and_unload
 * computes it, and writes out_dir as smelt_merge() does (same layout, manifest, model card,
 * journal and resume): every adapted weight becomes W + scale * (B @ A) in f32 rounded once to
 * the base's dtype, modules_to_save tensors come from the adapter, the rest is the base's. It is
 * the one-model passthrough merge of the reference "base+adapter", which is what the output's
 * mergekit_config.yml records. adapter: a PEFT directory, a hub id in the cache, or an adapter
 * .safetensors file with adapter_config.json beside it. Returns SMELT_OK or a negative status
 * with the reason in ctx (nothing that looks complete is left on failure). */
int smelt_lora_apply(smelt_ctx *ctx, const char *base, const char *adapter, const char *out_dir,
                     const smelt_merge_options *opts);

/* 1 when the last smelt_merge() on ctx failed leaving a resumable state (journal and temporary
 * files) in its output directory, so that running it again with `resume` set continues it. */
int smelt_merge_resumable(const smelt_ctx *ctx);

/* Options of smelt_lora_extract(). Start from smelt_lora_extract_options_default(). */
typedef struct smelt_lora_extract_options {
    uint32_t rank;         /* R: the rank of every module (required, >= 1); an error names a module
                              with min(rows, cols) < R, unless rank_is_max */
    int rank_is_max;       /* 1: R is a ceiling (mergekit's --max-rank): a module gets
                              min(R, rows, cols) */
    double sv_epsilon;     /* > 0: keep only singular values larger than this (mergekit's
                              --sv-epsilon, an absolute threshold); 0: keep R */
    int embeddings;        /* 1: decompose embed_tokens / lm_head too (mergekit --embed-lora);
                              0: store them whole as modules_to_save */
    int skip_undecomposable; /* 1: leave out the tensors that cannot be decomposed (norms, 1-D
                              tensors) instead of storing them whole (mergekit
                              --skip-undecomposable) */
    uint32_t oversample;   /* p, sketch columns beyond R (default 10) */
    uint32_t power_iters;  /* q, subspace iterations (default 3): 2q + 2 passes per module */
    uint64_t seed;         /* the Gaussian sketch's seed (default 0) */
    int threads;           /* worker threads (default: online CPUs); never changes the output */
    uint64_t max_memory;   /* every buffer together (default 512 MiB); never changes the output */
    const char *dtype;     /* the factors' dtype: "float32" (default), "bfloat16", "float16" */
    int overwrite;         /* 1: replace an adapter already in out_dir */
    volatile int *cancel;  /* as in smelt_merge_options; may be NULL */
} smelt_lora_extract_options;

/* Fills *opts with the defaults (rank 0: the caller must set it). */
void smelt_lora_extract_options_default(smelt_lora_extract_options *opts);

/* What smelt_lora_extract() did. */
typedef struct smelt_lora_extract_result {
    uint64_t modules;       /* decomposed modules */
    uint64_t saved;         /* tensors stored whole (modules_to_save, biases) */
    uint64_t skipped;       /* tensors left out, each with a notice */
    uint32_t min_rank, max_rank;
    double worst_rel_error; /* the largest per-module sqrt(||D||^2 - sum s_kept^2) / ||D|| */
    uint64_t bytes_read;    /* from both models' files */
    uint64_t bytes_written; /* adapter_model.safetensors */
    double seconds;
} smelt_lora_extract_result;

/* Extracts a PEFT LoRA adapter that turns `base` into `model` (mergekit-extract-lora's job, in
 * bounded memory). For every 2-D float weight (F32, F16, BF16) of both with the same shape, the
 * delta D = model - base (decoded to f32) is approximated by a truncated SVD U S V^T of rank R
 * computed by randomized subspace iteration: every product with D is one pass over its rows
 * read with pread, so memory is O((rows + cols) * (R + p)) per module plus a block of rows, never
 * the whole matrix, and a module whose delta fits in the budget is read only once. As mergekit
 * does, lora_A = sqrt(S) V^T [r, in] and lora_B = U sqrt(S) [out, r] (embeddings: PEFT's
 * lora_embedding_A/B of the transposed delta), lora_alpha = r, and modules whose rank differs
 * are listed in rank_pattern and alpha_pattern (scale 1 everywhere). out_dir gets
 * adapter_config.json and adapter_model.safetensors (smelt_lora_open and PEFT read them), written
 * under temporary names and renamed at the end, the config last; on failure nothing there looks
 * complete. Block-quantized and integer tensors are skipped with a notice. `report` (may be NULL)
 * gets one line per module (rank, relative Frobenius error from the passes) and a summary; *result
 * (may be NULL) the figures. The bytes depend only on the inputs, rank options, seed and dtype,
 * never on threads or max_memory. Returns SMELT_OK; SMELT_E_ARG (bad options, out_dir not empty
 * without overwrite, a rank larger than a module allows), SMELT_E_PLAN (a weight missing from
 * base, shapes that differ: both named), SMELT_E_BUDGET (max_memory cannot hold a module's
 * factors and one row of it), SMELT_E_IO, SMELT_E_NOMEM, SMELT_E_INTERRUPTED, or the status of
 * opening a model; the message is in ctx. Not thread-safe on one ctx. */
int smelt_lora_extract(smelt_ctx *ctx, const char *base, const char *model, const char *out_dir,
                       const smelt_lora_extract_options *opts, FILE *report,
                       smelt_lora_extract_result *result);

/* Options of smelt_verify(). Start from smelt_verify_options_default(). */
typedef struct smelt_verify_options {
    uint64_t max_memory; /* read buffers, all together (default 64 MiB; at least 64 KiB used) */
    int force_pread;     /* 1: never use io_uring (also SMELT_IO=pread in the environment) */
} smelt_verify_options;

/* Fills *opts with the defaults. */
void smelt_verify_options_default(smelt_verify_options *opts);

/* What smelt_verify() found. */
typedef struct smelt_verify_result {
    int has_manifest;         /* 0: the directory has no smelt-manifest.json (structure only) */
    uint64_t problems;        /* lines written to the report */
    uint64_t tensors_checked; /* tensors whose bytes were hashed */
    uint64_t bytes_read;
    double seconds;           /* wall time of the whole check */
} smelt_verify_result;

/* Checks a model directory: its safetensors structure and index (as smelt_model_open checks
 * inputs) always, and, when it has smelt-manifest.json, every listed file's size and every
 * tensor's XXH3-128 against the manifest, reading the data through the bounded read ring in
 * file order. Writes one line per problem to `report` ("DIR/FILE: tensor 'x': hash H but the
 * manifest says M"). Returns SMELT_OK when the check ran, whatever it found (see
 * result->problems), or a negative status when it could not run (out of memory, a bad option). */
int smelt_verify(smelt_ctx *ctx, const char *dir, const smelt_verify_options *opts, FILE *report,
                 smelt_verify_result *result);

/* Prints what smelt_merge() would do with this config — every output tensor with its method,
 * sources and resolved parameters, the output layout, the bytes to read and write and how the
 * memory budget is divided — without reading any tensor data or writing anything. Validates
 * exactly as smelt_merge() does. Returns SMELT_OK or a negative status with the reason in ctx. */
int smelt_plan_print(smelt_ctx *ctx, const char *config_path, const smelt_merge_options *opts,
                     FILE *out);

/* Options of smelt_synth(): a Llama-shaped model with deterministic pseudo-random weights. */
typedef struct smelt_synth_options {
    uint64_t size;          /* approximate total tensor bytes (required) */
    /* safetensors: "bfloat16" (default), "float16" or "float32". gguf: "f32", "f16" (default),
     * "bf16", "q8_0", "q4_k" (every matrix Q4_K) or "q4_k_m" (llama.cpp's Q4_K_M mix: Q6_K for
     * output.weight and for attn_v / ffn_down in the layers llama-quantize gives more bits);
     * norms and other 1-D tensors are always F32. NULL: the format's default. */
    const char *dtype;
    /* "safetensors" (a model directory) or "gguf" (one llama.cpp GGUF file, OUT ending in
     * ".gguf"); NULL: gguf when OUT ends in ".gguf", else safetensors. */
    const char *format;
    uint64_t seed;          /* the model's weights (or, with base_seed, the perturbation) */
    int has_base;           /* 1: a fine-tune: weights = base(base_seed) + delta * noise(seed) */
    uint64_t base_seed;
    double delta;           /* the perturbation's scale for a fine-tune (default 0.01) */
    uint64_t shard_size;    /* the largest shard in bytes (default 1 GB) */
    unsigned layers;        /* decoder layers (default 0: as many as the size gives) */
    unsigned vocab;         /* vocabulary rows (default 0: from the size) */
    int tied;               /* 1: no lm_head.weight (tie_word_embeddings) */
    int threads;            /* generator threads (default: online CPUs) */
    /* Explicit shapes (0: derived from the size), e.g. Llama-3-70B's 8192 / 28672 / 64 / 8. */
    unsigned hidden;        /* hidden size, a multiple of heads */
    unsigned intermediate;  /* MLP width (default: hidden * 11 / 4 rounded up to 64) */
    unsigned heads;         /* attention heads (default: hidden / 64) */
    unsigned kv_heads;      /* key/value heads (grouped-query attention; default: heads) */
    /* A PEFT LoRA adapter instead of a model (lora_rank > 0): `out` becomes a directory with
     * adapter_config.json and adapter_model.safetensors for the safetensors model that the
     * same size, dtype, shape, vocab and tied options describe (seed then seeds the adapter's
     * values; the base's seed does not matter, its shapes do). */
    unsigned lora_rank;     /* r */
    double lora_alpha;      /* lora_alpha (default 0: 2 * r) */
    int lora_rslora;        /* use_rslora: scale alpha / sqrt(r) */
    int lora_dora;          /* use_dora: a magnitude vector per adapted module */
    /* Comma-separated module names to adapt: any of q_proj, k_proj, v_proj, o_proj, gate_proj,
     * up_proj, down_proj, embed_tokens (lora_embedding_A/B) and lm_head; NULL: the seven
     * projections. */
    const char *lora_targets;
    /* rank_pattern / alpha_pattern as "REGEX=VALUE,REGEX=VALUE" (PEFT's per-module overrides,
     * matched as PEFT matches them; a pattern holds no ',' or '='); NULL: none. */
    const char *lora_rank_pattern;
    const char *lora_alpha_pattern;
    /* Comma-separated module names stored whole (modules_to_save), e.g. "lm_head,model.norm":
     * each names every tensor "<...>.NAME.weight" of the model; NULL: none. */
    const char *lora_modules_to_save;
    const char *lora_dtype; /* the adapter's tensors: float32 (default), bfloat16 or float16 */
    const char *lora_base;  /* base_model_name_or_path in the config (NULL: null) */
} smelt_synth_options;

/* Fills *opts with the defaults (size 0: the caller must set it). */
void smelt_synth_options_default(smelt_synth_options *opts);

/* Writes a synthetic model to `out`: a directory (config.json, tokenizer_config.json,
 * safetensors shards with index), or for format gguf one GGUF v3 file that llama.cpp loads
 * (arch llama, hparams, an SPM tokenizer of <unk> <s> </s>, byte tokens and numbered pieces;
 * llama.cpp's tensor names; shard_size unused), written under a temporary name and renamed.
 * The same options always give the same bytes. A fine-tune and its base share the same
 * architecture when their size, dtype and base seed agree. Every element is the same function
 * of (seed, tensor, index) in both formats: an F32 GGUF holds exactly what llama.cpp's
 * convert_hf_to_gguf.py makes of the float32 safetensors model of the same options (q and k
 * rows permuted for its rotary layout). Returns SMELT_OK, SMELT_E_ARG (bad options, shapes that
 * are not whole blocks of the type), SMELT_E_IO or SMELT_E_NOMEM, with a message. */
int smelt_synth(smelt_ctx *ctx, const char *out, const smelt_synth_options *opts);

/* Describes a model reference (anything smelt_merge accepts as a model: a directory, sharded or
 * not, a lone .safetensors file, a hub id in the offline cache) on `out`: every tensor (name,
 * dtype, shape, bytes, file) in file order, the totals (tensor count, bytes, per dtype), the
 * first file's "__metadata__", and the layer count detected from tensor names (".layers.N.",
 * ".h.N.", ".blocks.N.", "blk.N."; 0 when none). A path ending in ".gguf" is read as a GGUF file
 * instead: its ggml types, torch-order shapes, offsets and metadata keys (arrays summarized), the
 * header validated strictly. json = 0: aligned text for people; json = 1:
 * one JSON document (smelt(1) describes its fields). Only headers are read. Nothing is written
 * to `out` when the model cannot be opened. Returns SMELT_OK, SMELT_E_IO when `out` fails, or the
 * status of opening the model (message in ctx). `out` is borrowed and not closed. */
int smelt_inspect(smelt_ctx *ctx, const char *ref, int json, FILE *out);

/* Options of smelt_diff(). Start from smelt_diff_options_default(); zero fields mean "default". */
typedef struct smelt_diff_options {
    uint64_t max_memory; /* all read buffers and tiles together, in bytes (default 512 MiB) */
    int threads;         /* worker threads (default: online CPUs); never changes the figures */
    int force_pread;     /* 1: never use io_uring (also SMELT_IO=pread in the environment) */
    int json;            /* 1: one JSON document instead of aligned text */
} smelt_diff_options;

/* Fills *opts with the defaults. */
void smelt_diff_options_default(smelt_diff_options *opts);

/* Compares two models tensor by tensor and reports on `out`. Tensors are matched by name. For a
 * pair of floating tensors (F32, F16, BF16 on either side, dtypes may differ) of the same shape,
 * both are decoded to f32 and three figures are computed: the cosine similarity a.b/(|a||b|)
 * (1 when both are all zeros, 0 when only one is), the relative L2 distance |a-b|/|a| (0 when
 * both are all zeros, +inf when only a is) and the largest |a-b|; a NaN or Inf in either gives
 * NaN or Inf figures (a NaN never compares equal, not even to itself). Other tensors of equal dtype and shape are compared byte for byte (equal or
 * differ). Data streams through the read ring in chunks under opts->max_memory, never a whole
 * tensor at once; sums run in f64 over blocks with fixed boundaries added in order, so the
 * report is identical for any thread count and memory budget. The text report is written as
 * tensors finish; the JSON document only once everything is compared.
 * Returns SMELT_OK when both models hold the same tensor names with the same shapes (values may
 * differ); SMELT_E_PLAN, after writing the whole report, when a tensor is only in one model, or
 * shapes differ, or dtypes cannot be compared (message in ctx gives the counts); SMELT_E_BUDGET
 * when max_memory cannot hold two chunks; any other status (message naming file and tensor) for
 * a failure to open or read a model or write to `out`, in which case the report is incomplete.
 * `out` is borrowed and not closed. */
int smelt_diff(smelt_ctx *ctx, const char *ref_a, const char *ref_b,
               const smelt_diff_options *opts, FILE *out);

/* Options of smelt_delta_extract() and smelt_delta_apply(). Start from
 * smelt_delta_options_default(); zero fields mean "default". */
typedef struct smelt_delta_options {
    int level;           /* extract: zstd level, 1..22 (default 3); apply ignores it */
    int threads;         /* worker threads (default: online CPUs); never changes the bytes */
    uint64_t max_memory; /* every frame buffer and (de)compression context together, in bytes
                            (default 256 MiB; at least a few MiB are needed) */
    int overwrite;       /* 1: replace a delta (extract) or model (apply) already in out_dir */
    volatile int *cancel; /* when non-NULL and set to non-zero, stops at the next batch of
                             frames with SMELT_E_INTERRUPTED (set it from a signal handler) */
} smelt_delta_options;

/* Fills *opts with the defaults. */
void smelt_delta_options_default(smelt_delta_options *opts);

/* What an extract or apply did (for the summary line). */
typedef struct smelt_delta_stats {
    uint64_t tensors;     /* tensor entries: xor + raw */
    uint64_t tensors_xor; /* stored as XOR against the base */
    uint64_t files;       /* the model's files (safetensors and others) */
    uint64_t bytes_in;    /* extract: the model's bytes; apply: the delta's */
    uint64_t bytes_out;   /* extract: the delta file's bytes; apply: the rebuilt files' */
    uint64_t bytes_base;  /* base tensor bytes read */
    double seconds;
} smelt_delta_stats;

/* Writes a lossless delta of `model` against `base` (both model references as smelt_merge
 * takes them: safetensors directories, sharded or not, or lone .safetensors files; not GGUF,
 * not base+adapter) to out_dir/delta.safetensors (out_dir is created when missing). Every
 * tensor of the model present in the base with the same dtype and shape is stored as the XOR
 * of the two bit patterns, split into byte planes and zstd-compressed in independent frames of
 * 65536 elements; other tensors are stored the same way without the XOR. The model's files
 * are recorded exactly (every safetensors header's bytes, the data order, every other file in
 * the model's directory, verbatim), so that smelt_delta_apply() rebuilds them byte for byte.
 * The delta is a valid safetensors file (src/format/delta.h and smelt(1) describe it); its
 * bytes are the same for any thread count and memory budget. Written under a temporary name
 * and renamed when complete. A delta already in out_dir is refused unless opts->overwrite.
 * Returns SMELT_OK (and *stats when stats is not NULL) or a negative status with the reason in
 * ctx; model and base being the same model is SMELT_E_ARG. */
int smelt_delta_extract(smelt_ctx *ctx, const char *base, const char *model,
                        const char *out_dir, const smelt_delta_options *opts,
                        smelt_delta_stats *stats);

/* Rebuilds the model a delta was extracted from into out_dir (created when missing): the
 * same files with the same bytes. delta: the directory smelt_delta_extract() wrote or the
 * delta file itself. Before anything is written the delta is validated (header, metadata,
 * every frame table) and the base is checked against it: every base file's header must hash
 * (XXH3-128) as when the delta was made, and every XOR tensor must have the same dtype and
 * shape in the base; a mismatch names the file or tensor (SMELT_E_PLAN). Data streams frame
 * by frame within opts->max_memory, each frame's checksum verified, each rebuilt file's
 * XXH3-128 checked against the delta's record; files are written under temporary names and
 * renamed only when all of them are complete, so a failure (a damaged frame, a full disk)
 * leaves nothing that looks complete. A model already in out_dir is refused unless
 * opts->overwrite. Returns SMELT_OK (and *stats) or a negative status with the reason in ctx. */
int smelt_delta_apply(smelt_ctx *ctx, const char *base, const char *delta, const char *out_dir,
                      const smelt_delta_options *opts, smelt_delta_stats *stats);

#ifdef __cplusplus
}
#endif
#endif /* SMELT_H */
