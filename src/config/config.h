/* mergekit-compatible YAML configuration → a merge spec.
 *
 * The config layer knows the document's shape (which keys exist at which level) but not the
 * methods: parameter names are checked against the method's schema by the plan. */
#ifndef SMELT_CONFIG_H
#define SMELT_CONFIG_H

#include "common/errors.h"

#include <stddef.h>

typedef enum smelt_pvalue_kind {
    SMELT_PV_NUMBER,   /* 0.5 */
    SMELT_PV_BOOL,     /* true */
    SMELT_PV_STRING,   /* "chatml" */
    SMELT_PV_GRADIENT, /* [0, 0.5, 1]: interpolated across the layers */
    SMELT_PV_FILTERED  /* [{filter: self_attn, value: 0.3}, {value: 0.7}] */
} smelt_pvalue_kind;

typedef struct smelt_pvalue smelt_pvalue;

typedef struct smelt_pfilter {
    char *filter;        /* NULL or "*" = matches every tensor */
    smelt_pvalue *value; /* a scalar or a gradient */
} smelt_pfilter;

struct smelt_pvalue {
    smelt_pvalue_kind kind;
    double number;       /* NUMBER; BOOL as 0/1 */
    int boolean;         /* BOOL */
    char *string;        /* STRING */
    double *gradient;    /* GRADIENT */
    size_t ngradient;
    smelt_pfilter *filters; /* FILTERED */
    size_t nfilters;
    int line;            /* 1-based line in the YAML file, for messages */
};

typedef struct smelt_param {
    char *name;
    smelt_pvalue value;
} smelt_param;

typedef struct smelt_params {
    smelt_param *items;
    size_t n;
} smelt_params;

/* One `models:` entry (or the base model when it is not listed). */
typedef struct smelt_model_spec {
    char *model;          /* the model reference as written */
    smelt_params params;  /* its `parameters:` */
    int line;
} smelt_model_spec;

typedef struct smelt_merge_spec {
    char *path;           /* the config file */
    char *text;           /* the config verbatim (for the model card and the saved copy) */
    char *merge_method;
    char *base_model;     /* NULL when absent */
    smelt_model_spec *models;
    size_t nmodels;
    smelt_params params;  /* top-level `parameters:` */
    char *dtype;          /* NULL when absent */
    char *out_dtype;      /* NULL when absent */
    char *tokenizer_source; /* NULL when absent */
    char *chat_template;  /* NULL when absent */
    int line_merge_method, line_base_model;
    uint64_t random_seed; /* not from the YAML: smelt_merge_options.random_seed */
} smelt_merge_spec;

/* Reads and checks a config file. Unknown keys (at any level), a wrong value type, a missing
 * merge_method or models, and YAML syntax errors are SMELT_E_CONFIG errors naming the file, the
 * line and the key. Keys smelt knows but does not implement yet (slices, tokenizer, modules)
 * are SMELT_E_UNSUPPORTED errors naming them, as are LoRA references ("model+lora"), model
 * references written as mappings, and lists of strings as parameter values. Every message
 * starts "path:line: " (I/O failures reading the file: "path: "). Scalars are typed as PyYAML's
 * safe_load types them (mergekit's loader): quoted values and `1e-3` are strings, `yes`/`off`
 * are booleans, `.5` and `1.0e-3` are numbers. Caller frees with smelt_spec_free(). */
int smelt_config_load(smelt_ctx *ctx, const char *path, smelt_merge_spec **out);

/* Same, from a string (path used in messages only). */
int smelt_config_parse(smelt_ctx *ctx, const char *path, const char *text, size_t len,
                       smelt_merge_spec **out);

void smelt_spec_free(smelt_merge_spec *spec);

/* Finds a parameter by name; NULL when absent. */
const smelt_pvalue *smelt_params_find(const smelt_params *params, const char *name);

/* Evaluates a numeric parameter for one tensor. layer_t is the tensor's position in the layer
 * stack in [0, 1] (0 for tensors outside the layers). Filters: the first entry whose filter is
 * a substring of tensor_name (or has none / "*") wins; no match = not found. Gradients
 * interpolate as mergekit does: s = t*(len-1), i0 = floor(s), i1 = min(len-1, i0+1),
 * v = (1-(s-i0))*g[i0] + (s-i0)*g[i1]. BOOL evaluates to 0/1. Returns 1 and sets *out when the
 * value applies, 0 when no filter matched, -1 when it is a string (not numeric). */
int smelt_pvalue_eval(const smelt_pvalue *value, const char *tensor_name, double layer_t,
                      double *out);

#endif
