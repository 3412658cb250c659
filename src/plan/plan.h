/* The plan: one entry per output tensor with everything the engine needs — sources, method
 * state, output dtype, shard and byte offset. Every shape, dtype, name and parameter error is
 * found here, before any tensor data is read or any output byte is written. */
#ifndef SMELT_PLAN_H
#define SMELT_PLAN_H

#include "config/config.h"
#include "format/safetensors.h"
#include "methods/method.h"

typedef enum smelt_task_kind {
    SMELT_TASK_MERGE, /* f32 tiles through the method */
    SMELT_TASK_COPY   /* bytes copied unchanged from one source (integer tensors, ...) */
} smelt_task_kind;

/* The inputs one output layer range is built from: a `slices:` entry, or for a `models:` config
 * the one slice covering every layer of every model (mergekit normalizes it the same way). */
typedef struct smelt_plan_slice {
    size_t ninputs;
    uint32_t *input_model;            /* input -> plan->models[] */
    const char **input_names;         /* input -> reference as written */
    long *layer_begin;                /* input -> its first layer in this slice */
    const smelt_params **input_params; /* input -> its source/model `parameters:` (or NULL) */
    const smelt_params *params;       /* the slice's own `parameters:` (NULL for models:) */
    int has_base;                     /* input 0 is the base model */
    uint32_t nlayers;                 /* layers every source contributes */
    uint32_t out_layer0;              /* the output index of its first layer */
    int index;                        /* position in `slices:` (-1 for a models: config) */
} smelt_plan_slice;

/* A derived input of a tensor: what a "BASE+ADAPTER" model holds, computed from read bytes. */
typedef struct smelt_plan_source {
    const struct smelt_lora_module *lora; /* adds scale * (B @ A) (format/lora.h), or NULL */
    const struct smelt_delta_entry *delta; /* XORs the delta's frames into the base's bytes
                                              (format/delta.h), or NULL */
    uint64_t delta_bytes; /* with delta: the delta's bytes one read of the tensor takes (its
                             frame table records and frames; smelt_delta_prefix_bytes) */
    /* The dtype of the model the input stands for (the base's): the derived values are rounded
     * to it, so that an input read as BASE+ADAPTER equals, bit for bit, the same tensor of the
     * model `smelt lora apply` writes. SMELT_DT_INVALID: the input is not a LoRA product (a
     * delta input is the fine-tune's bits exactly: nothing to round). */
    smelt_dtype round_to;
} smelt_plan_source;

typedef struct smelt_plan_tensor {
    char *name;                       /* output name (owned): layer numbers follow the output */
    const smelt_tensor_info *ref;     /* the reference input tensor: shape and element count */
    smelt_task_kind kind;
    smelt_dtype out_dtype;
    uint64_t out_nbytes;
    uint32_t shard;
    uint64_t out_offset;              /* absolute offset in the shard file */
    uint32_t slice;                   /* index into plan->slices */
    size_t ninputs;                   /* MERGE: the slice's inputs; COPY: 1 */
    const smelt_tensor_info **inputs; /* read the first ref->numel elements of each */
    const uint32_t *input_model;      /* input -> plan->models[] */
    /* MERGE: per input, how a derived input is computed (engine/source.h); NULL when no input
     * of this tensor is derived. */
    struct smelt_plan_source *sources;
    void *method_state;               /* MERGE: from method->prepare */
    double layer_t;                   /* gradient position: 0 before the layers, 1 after */
} smelt_plan_tensor;

typedef struct smelt_plan_shard {
    char *name;        /* file name inside the output directory */
    uint8_t *header;   /* length prefix + JSON header */
    size_t header_len;
    uint64_t size;     /* whole file */
    uint64_t ntensors;
} smelt_plan_shard;

/* Opens a model reference for the planner, with smelt_model_open's contract: SMELT_OK and a
 * model that the plan owns from then on (it closes it with smelt_model_close), or an error
 * with its message set in ctx. */
typedef int (*smelt_plan_open_fn)(void *user, smelt_ctx *ctx, const char *ref,
                                  smelt_model **out);

typedef struct smelt_plan {
    smelt_merge_spec *spec;          /* owned, unless built by smelt_plan_build_with */
    int owns_spec;                   /* smelt_plan_free frees spec */
    const smelt_method *method;
    smelt_model **models;            /* each distinct reference opened once */
    size_t nmodels;
    smelt_plan_slice *slices;
    size_t nslices;
    size_t ninputs;                  /* the most inputs any tensor has (buffer sizing) */
    uint32_t ref_model;              /* the model whose config.json the output carries */
    int tokenizer_model;             /* whose tokenizer files are copied; -1 = none */
    smelt_plan_tensor *tensors;      /* in the order the engine processes them */
    size_t ntensors;
    smelt_plan_shard *shards;
    size_t nshards;
    uint32_t num_layers;             /* output layers (from tensor names; 0 when none) */
    uint32_t ref_num_layers;         /* the reference model's layers */
    uint64_t bytes_to_write;
    uint64_t random_seed;
    size_t output;                   /* smelt_plan_options.output */
    int out_gguf;                    /* the output is GGUF (the inputs are): one file, or a
                                        gguf-split set when the shards are several */
    smelt_dtype outtype;             /* GGUF: --outtype, SMELT_DT_INVALID for "same" */
    smelt_dtype gguf_fallback[16][2]; /* GGUF: type fallbacks already announced */
    size_t gguf_fallbacks;
    int borrows_models;              /* the models belong to smelt_plan_options.models */
    smelt_plan_open_fn open_model;   /* how the build opens models (smelt_plan_build_with) */
    void *open_user;
} smelt_plan;

/* Models opened once for several plans (a merge group): a plan built with
 * smelt_plan_options.models set opens every reference through it, and the cache, not the plan,
 * owns and closes them (smelt_model_cache_free, after every plan that uses it is freed). Not
 * thread-safe. */
typedef struct smelt_model_cache {
    char **refs;          /* as the planner asked for them */
    smelt_model **models;
    size_t n;
} smelt_model_cache;

/* Closes every model of the cache and empties it; a zeroed cache is fine. */
void smelt_model_cache_free(smelt_model_cache *cache);

/* The output's file format. */
typedef enum smelt_out_format {
    SMELT_OUT_AUTO,        /* the inputs' format */
    SMELT_OUT_SAFETENSORS,
    SMELT_OUT_GGUF
} smelt_out_format;

/* The largest safetensors output shard when none is given: 5 GB (decimal), as mergekit's. */
#define SMELT_ST_SHARD_SIZE 5000000000ull

/* What the plan needs besides the spec. */
typedef struct smelt_plan_options {
    uint64_t out_shard_size;         /* the largest output shard in bytes; 0: the default,
                                        SMELT_ST_SHARD_SIZE for safetensors output and one
                                        file for GGUF output (a gguf-split set only when set) */
    uint64_t random_seed;
    int copy_tokenizer;              /* copy the tokenizer files (mergekit's default: yes) */
    int allow_crimes;                /* allow inputs of different architectures */
    smelt_out_format format;
    const char *outtype;             /* GGUF output: "same" (NULL) or a type (plan_gguf.h) */
    size_t output;                   /* a method with outputs_per_model: which model's output
                                        this plan computes (smelt_tensor_args.output) */
    smelt_model_cache *models;       /* NULL, or where the plan's models come from and stay
                                        (smelt_plan_build only) */
} smelt_plan_options;

/* Builds the plan for a spec (the plan takes ownership of the spec, also on failure): opens and
 * validates every model, resolves the method and its parameters per tensor, checks every
 * tensor's presence, shape and dtype in every input, picks output dtypes and lays out the
 * output shards (none larger than out_shard_size unless one tensor is; see plan_gguf.h for a
 * GGUF output). */
int smelt_plan_build(smelt_ctx *ctx, smelt_merge_spec *spec, const smelt_plan_options *opts,
                     smelt_plan **out);

/* smelt_plan_build with every model reference (inputs, base, tokenizer_source) opened through
 * `open` instead of smelt_model_open, once per distinct reference, and with the spec borrowed,
 * not owned: it must outlive the plan, the caller frees it, and one spec may be planned any
 * number of times (the planner never modifies it). The planner reads headers only, never
 * tensor data, so a model built from an in-memory header (smelt_st_parse, a file with fd -1,
 * no dir) plans exactly as the file would: this is how the plan fuzzer runs millions of
 * headers through the planner without touching the file system or re-parsing its configs. */
int smelt_plan_build_with(smelt_ctx *ctx, smelt_merge_spec *spec, const smelt_plan_options *opts,
                          smelt_plan_open_fn open, void *user, smelt_plan **out);

void smelt_plan_free(smelt_plan *plan);

/* Plan tensor indices sorted by name (malloc'd, caller frees; NULL when out of memory), and the
 * lookup in them: the index of the tensor called name, or (size_t)-1. For matching records by
 * name (a journal's, a part's fragment). */
size_t *smelt_plan_name_order(const smelt_plan *plan);
size_t smelt_plan_find_name(const smelt_plan *plan, const size_t *order, const char *name);

/* The method's parameters for one MERGE tensor, resolved as the plan resolved them:
 * values[p][i] for input i of a per-model parameter, values[p][0] for a global one (values has
 * method->nparams rows of at least pt->ninputs entries). For `smelt plan`. */
int smelt_plan_resolve_params(smelt_ctx *ctx, const smelt_plan *plan,
                              const smelt_plan_tensor *pt, double **values);

/* Layer indices run from 0 to SMELT_MAX_LAYERS - 1. The bound is far past any real model
 * (hundreds of layers) and keeps every layer count and renumbered index well inside 32 bits. */
#define SMELT_MAX_LAYERS 1000000L

/* What smelt_layer_index returns for an index of SMELT_MAX_LAYERS or more. */
#define SMELT_LAYER_TOO_LARGE (-2L)

/* The layer index in a tensor name (".layers.N.", ".h.N.", ".blocks.N.", "blk.N."), -1 when
 * there is none, or SMELT_LAYER_TOO_LARGE when N >= SMELT_MAX_LAYERS (any number of digits).
 * When digits is not NULL it receives the index's digits' offset and length in the name (for
 * SMELT_LAYER_TOO_LARGE too). Thread-safe. */
long smelt_layer_index(const char *tensor_name);
long smelt_layer_index_at(const char *tensor_name, size_t *digits, size_t *ndigits);

/* Fails with SMELT_E_FORMAT, naming the file, the tensor and the bound, when a tensor name of `m`
 * has a layer index past SMELT_MAX_LAYERS; SMELT_OK otherwise. Every reader of layer indices
 * (the planner, inspect) calls it once after opening a model, so that later calls to
 * smelt_layer_index never see SMELT_LAYER_TOO_LARGE. */
int smelt_layer_check_model(smelt_ctx *ctx, const smelt_model *m);

/* The tensor name with its layer index replaced by `layer` (malloc'd; NULL when out of memory).
 * A name without a layer index is copied. */
char *smelt_layer_rename(const char *tensor_name, long layer);

#endif
