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

typedef struct smelt_plan_tensor {
    const smelt_tensor_info *ref;     /* the reference model's tensor: name and shape */
    smelt_task_kind kind;
    smelt_dtype out_dtype;
    uint64_t out_nbytes;
    uint32_t shard;
    uint64_t out_offset;              /* absolute offset in the shard file */
    const smelt_tensor_info **inputs; /* MERGE: one per method input; COPY: inputs[0] */
    void *method_state;               /* MERGE: from method->prepare */
    double layer_t;                   /* position in the layer stack, 0 outside the layers */
} smelt_plan_tensor;

typedef struct smelt_plan_shard {
    char *name;        /* file name inside the output directory */
    uint8_t *header;   /* length prefix + JSON header */
    size_t header_len;
    uint64_t size;     /* whole file */
    uint64_t ntensors;
} smelt_plan_shard;

typedef struct smelt_plan {
    smelt_merge_spec *spec;          /* owned */
    const smelt_method *method;
    smelt_model **models;            /* each distinct reference opened once */
    size_t nmodels;
    size_t ninputs;                  /* the method's inputs: base first when it uses one */
    uint32_t *input_model;           /* input -> models[] */
    const char **input_names;        /* input -> reference as written */
    int has_base;                    /* input 0 is the base model */
    uint32_t ref_model;              /* the model whose tensors and config define the output */
    smelt_plan_tensor *tensors;      /* in the order the engine processes them */
    size_t ntensors;
    smelt_plan_shard *shards;
    size_t nshards;
    uint32_t num_layers;             /* detected from tensor names (0 when none) */
    uint64_t bytes_to_read, bytes_to_write;
} smelt_plan;

/* Builds the plan for a spec (the plan takes ownership of the spec, also on failure): opens and
 * validates every model, resolves the method and its parameters per tensor, checks every
 * tensor's presence, shape and dtype in every input, picks output dtypes and lays out the
 * output shards (none larger than out_shard_size unless one tensor is). */
int smelt_plan_build(smelt_ctx *ctx, smelt_merge_spec *spec, uint64_t out_shard_size,
                     smelt_plan **out);

void smelt_plan_free(smelt_plan *plan);

/* The layer index in a tensor name (".layers.N.", ".h.N.", ".blocks.N.", "blk.N."), or -1. */
long smelt_layer_index(const char *tensor_name);

#endif
