/* A merge method: its parameter schema and its per-tile math over f32.
 *
 * Methods never see files, dtypes or buffers other than f32 tiles; the plan resolves their
 * parameters per tensor (gradients, filters, precedence) and the engine feeds them tiles. */
#ifndef SMELT_METHOD_H
#define SMELT_METHOD_H

#include "common/errors.h"
#include "kernels/kernels.h"

#include <stddef.h>
#include <stdint.h>

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
} smelt_tensor_args;

typedef struct smelt_method {
    const char *name;
    const smelt_param_def *params;
    size_t nparams;
    smelt_base_use base_use;
    unsigned min_models, max_models; /* counting the models: entries, base excluded */

    /* Checks the parameters and builds the per-tensor state (malloc'd; freed with free()).
     * Returns SMELT_OK or SMELT_E_CONFIG with a message naming the tensor, model and rule. */
    int (*prepare)(smelt_ctx *ctx, const smelt_tensor_args *args, void **state);

    /* out[j] for j in [0, n) from in[i][j]; index0 is the index of element 0 in the tensor
     * (random methods key their generator with it). Must be a pure function of its arguments so
     * results do not depend on how the engine tiles the tensor. */
    void (*apply)(const void *state, const smelt_kernels *k, const float *const *in, float *out,
                  size_t n, uint64_t index0);
} smelt_method;

/* The method named `name`, or NULL. */
const smelt_method *smelt_method_find(const char *name);

/* A comma-separated list of the implemented method names, for messages. */
const char *smelt_method_names(void);

/* Index of parameter `name` in m->params, or -1. */
int smelt_method_param_index(const smelt_method *m, const char *name);

#endif
