/* The plan: mergekit's configuration semantics (mergekit/plan.py, mergekit/config.py) turned
 * into one entry per output tensor.
 *
 * A `models:` config is one slice over every layer of every model, as mergekit normalizes it.
 * Output tensors come in three groups, as in mergekit's planner: the tensors before the layers
 * (embeddings) from the first slice's models at t = 0, each slice's layers renumbered
 * consecutively with t = offset / (layers - 1) (t = 1 for a one-layer slice), and the tensors
 * after the layers (final norm, lm_head) from the last slice's models at t = 1. Which tensors
 * exist is read off the tensor names, never from per-architecture tables. */
#include "plan/plan.h"
#include "plan/plan_gguf.h"

#include "common/util.h"
#include "delta/delta_input.h"
#include "format/lora.h"
#include "format/side_file.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

long smelt_layer_index_at(const char *name, size_t *digits_at, size_t *ndigits)
{
    static const char *const markers[] = {".layers.", ".h.", ".blocks.", "blk."};
    for (size_t m = 0; m < sizeof markers / sizeof markers[0]; m++) {
        size_t mlen = strlen(markers[m]);
        for (const char *p = strstr(name, markers[m]); p; p = strstr(p + 1, markers[m])) {
            /* "blk." must start the name or follow a dot: "myblk.3" is not a layer. */
            if (markers[m][0] != '.' && p != name && p[-1] != '.')
                continue;
            const char *digits = p + mlen;
            if (!isdigit((unsigned char)*digits))
                continue;
            /* Digit by digit, not strtol: any number of digits must give either the index or
             * "too large", never a clamped LONG_MAX or a value that wraps when narrowed. The
             * value stops growing once past the bound, so it cannot overflow. */
            const char *end = digits;
            long idx = 0;
            for (; isdigit((unsigned char)*end); end++)
                if (idx < SMELT_MAX_LAYERS)
                    idx = idx * 10 + (*end - '0');
            if (*end == '.' || *end == '\0') {
                if (digits_at) {
                    *digits_at = (size_t)(digits - name);
                    *ndigits = (size_t)(end - digits);
                }
                return idx < SMELT_MAX_LAYERS ? idx : SMELT_LAYER_TOO_LARGE;
            }
        }
    }
    return -1;
}

int smelt_layer_check_model(smelt_ctx *ctx, const smelt_model *m)
{
    for (size_t i = 0; i < m->ntensors; i++) {
        const smelt_tensor_info *t = &m->tensors[i];
        size_t at, n;
        if (smelt_layer_index_at(t->name, &at, &n) == SMELT_LAYER_TOO_LARGE)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: tensor '%s': layer index %.*s%s is past "
                              "the limit of %ld layers (indices 0 to %ld)",
                              m->files[t->file].path, t->name, n > 40 ? 40 : (int)n,
                              t->name + at, n > 40 ? "..." : "", (long)SMELT_MAX_LAYERS,
                              (long)SMELT_MAX_LAYERS - 1);
    }
    return SMELT_OK;
}

long smelt_layer_index(const char *name) { return smelt_layer_index_at(name, NULL, NULL); }

char *smelt_layer_rename(const char *name, long layer)
{
    size_t at, n;
    if (smelt_layer_index_at(name, &at, &n) < 0)
        return smelt_strdup(name);
    size_t len = strlen(name) + 24;
    char *out = malloc(len);
    if (out)
        snprintf(out, len, "%.*s%ld%s", (int)at, name, layer, name + at + n);
    return out;
}

/* Tensors outside the layers come before them (embeddings) or after them (final norm, lm_head):
 * mergekit's pre_weights and post_weights. Names decide, as they do in every architecture smelt
 * has met: token and position embeddings are "pre", everything else "post". */
static int is_pre_weight(const char *name)
{
    static const char *const pre[] = {"embed", "wte", "wpe", "tok_embeddings", "token_embd",
                                      "word_embeddings", "position_embeddings"};
    for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++)
        if (strstr(name, pre[i]))
            return 1;
    return 0;
}

/* Embedding-like tensors, whose vocabulary rows may differ between fine-tunes. */
static int is_vocab_tensor(const char *name)
{
    return is_pre_weight(name) || strstr(name, "lm_head") || strcmp(name, "output.weight") == 0 ||
           strstr(name, ".output.weight") != NULL;
}

static void format_shape(char *buf, size_t len, const smelt_tensor_info *t)
{
    size_t at = (size_t)snprintf(buf, len, "[");
    for (uint32_t d = 0; d < t->ndim && at < len; d++)
        at += (size_t)snprintf(buf + at, len - at, "%s%llu", d ? ", " : "",
                               (unsigned long long)t->shape[d]);
    if (at < len)
        snprintf(buf + at, len - at, "]");
}

/* 0: same shape; 1: same but for more rows in dimension 0; -1: incompatible. */
static int compare_shape(const smelt_tensor_info *t, const smelt_tensor_info *ref)
{
    if (t->ndim != ref->ndim)
        return -1;
    for (uint32_t d = 1; d < t->ndim; d++)
        if (t->shape[d] != ref->shape[d])
            return -1;
    if (t->ndim == 0 || t->shape[0] == ref->shape[0])
        return 0;
    return t->shape[0] > ref->shape[0] ? 1 : -1;
}

/* Opens `ref` unless an identical reference is open already; returns its index. */
/* mergekit's "BASE+ADAPTER" reference (mergekit/common.py ModelReference.parse splits at the
 * first '+'): the base with a LoRA adapter applied on the fly. A path that exists as written
 * is a plain model, '+' and all. */
static int open_with_adapter(smelt_ctx *ctx, const char *ref, smelt_model **out)
{
    const char *plus = strchr(ref, '+');
    struct stat st;
    if (!plus || stat(ref, &st) == 0)
        return smelt_model_open(ctx, ref, out);
    char *base_ref = strndup(ref, (size_t)(plus - ref));
    if (!base_ref)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    smelt_model *base;
    smelt_lora *lora = NULL;
    int rc = smelt_model_open(ctx, base_ref, &base);
    free(base_ref);
    if (rc != SMELT_OK)
        return rc;
    if (base->gguf)
        rc = smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%s: a LoRA adapter or delta applies to a "
                        "safetensors base, not a GGUF one", ref);
    if (rc == SMELT_OK && smelt_delta_is_ref(plus + 1)) {
        rc = smelt_delta_attach(ctx, base, plus + 1); /* base owns the delta */
    } else if (rc == SMELT_OK) {
        rc = smelt_lora_open(ctx, plus + 1, &lora);
        if (rc == SMELT_OK)
            rc = smelt_lora_attach(ctx, base, lora); /* base owns lora from here */
    }
    char *full = rc == SMELT_OK ? smelt_strdup(ref) : NULL;
    if (rc == SMELT_OK && !full)
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc != SMELT_OK) {
        smelt_model_close(base);
        return rc;
    }
    free(base->ref);
    base->ref = full;
    *out = base;
    return SMELT_OK;
}

static int open_model(smelt_ctx *ctx, smelt_plan *plan, const char *ref, uint32_t *index)
{
    for (size_t i = 0; i < plan->nmodels; i++)
        if (strcmp(plan->models[i]->ref, ref) == 0) {
            *index = (uint32_t)i;
            return SMELT_OK;
        }
    smelt_model **grown = realloc(plan->models, (plan->nmodels + 1) * sizeof *grown);
    if (!grown)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    plan->models = grown;
    int rc = plan->open_model(plan->open_user, ctx, ref, &plan->models[plan->nmodels]);
    if (rc != SMELT_OK)
        return rc;
    *index = (uint32_t)plan->nmodels++; /* owned by the plan from here, freed with it */
    return smelt_layer_check_model(ctx, plan->models[*index]);
}

/* Layers of a model, read off its tensor names (0 when it has none); at most SMELT_MAX_LAYERS,
 * as open_model checked. */
static uint32_t model_layers(const smelt_model *m)
{
    long most = -1;
    for (size_t i = 0; i < m->ntensors; i++) {
        long idx = smelt_layer_index(m->tensors[i].name);
        if (idx > most)
            most = idx;
    }
    return (uint32_t)(most + 1);
}

/* Every parameter the config names must be one the method takes. */
static int check_param_names(smelt_ctx *ctx, const smelt_plan *plan, const smelt_params *params,
                             const char *where)
{
    const smelt_method *m = plan->method;
    for (size_t i = 0; params && i < params->n; i++) {
        if (smelt_method_param_index(m, params->items[i].name) >= 0)
            continue;
        char list[512] = "";
        for (size_t p = 0; p < m->nparams; p++) {
            size_t at = strlen(list);
            snprintf(list + at, sizeof list - at, "%s%s", p ? ", " : "", m->params[p].name);
        }
        return smelt_fail(ctx, SMELT_E_CONFIG,
                          "%s:%d: %s: '%s' is not a parameter of method '%s' (it takes: %s)",
                          plan->spec->path, params->items[i].value.line, where,
                          params->items[i].name, m->name, list[0] ? list : "none");
    }
    return SMELT_OK;
}

static int check_all_param_names(smelt_ctx *ctx, const smelt_plan *plan)
{
    const smelt_merge_spec *spec = plan->spec;
    char where[600];
    int rc = check_param_names(ctx, plan, &spec->params, "parameters");
    for (size_t i = 0; rc == SMELT_OK && i < spec->nmodels; i++) {
        snprintf(where, sizeof where, "model '%s'", spec->models[i].model);
        rc = check_param_names(ctx, plan, &spec->models[i].params, where);
    }
    for (size_t s = 0; rc == SMELT_OK && s < spec->nslices; s++) {
        snprintf(where, sizeof where, "slices[%zu]", s);
        rc = check_param_names(ctx, plan, &spec->slices[s].params, where);
        for (size_t j = 0; rc == SMELT_OK && j < spec->slices[s].nsources; j++) {
            snprintf(where, sizeof where, "slices[%zu]: sources[%zu] ('%s')", s, j,
                     spec->slices[s].sources[j].model);
            rc = check_param_names(ctx, plan, &spec->slices[s].sources[j].params, where);
        }
    }
    return rc;
}

/* Evaluates one parameter level. Returns 1 (found, *out set), 0 (not given here), or an error. */
static int eval_level(smelt_ctx *ctx, const smelt_plan *plan, const smelt_params *params,
                      const smelt_param_def *def, const char *tensor, double t, double *out)
{
    if (!params)
        return 0;
    const smelt_pvalue *v = smelt_params_find(params, def->name);
    if (!v)
        return 0;
    int found = smelt_pvalue_eval(v, tensor, t, out);
    if (found < 0) {
        /* YAML 1.1 (PyYAML, so mergekit too) reads 1e-3 as a string: say how to write it. */
        char *end;
        int numeric = v->kind == SMELT_PV_STRING && v->string[0] &&
                      (strtod(v->string, &end), *end == '\0');
        return smelt_fail(ctx, SMELT_E_CONFIG, "%s:%d: parameter '%s' must be a %s%s%s%s",
                          plan->spec->path, v->line, def->name,
                          def->kind == SMELT_PARAM_BOOL ? "boolean" : "number",
                          numeric ? " ('" : "", numeric ? v->string : "",
                          numeric ? "' is a string in YAML 1.1, as mergekit reads it too; "
                                    "write it with a dot, e.g. 1.0e-3)" : "");
    }
    /* YAML reads .inf, .nan and 1e999 as numbers, and a gradient between finite points can
     * still overflow: no method is handed a non-finite parameter. (Whether a finite value
     * stays finite in the method's own arithmetic is the method's check, smelt_check_finite.) */
    if (found && def->kind == SMELT_PARAM_NUMBER && !isfinite(*out))
        return smelt_fail(ctx, SMELT_E_CONFIG, "%s:%d: parameter '%s' is %g for tensor '%s'; "
                          "parameters must be finite numbers", plan->spec->path, v->line,
                          def->name, *out, tensor);
    return found;
}

/* Resolves every parameter of the method for one tensor into values[p][...], with mergekit's
 * precedence: the input's own source (or models entry) parameters, then the slice's, then the
 * top level. Per-model filters match the input's tensor name, global ones the output's. */
int smelt_plan_resolve_params(smelt_ctx *ctx, const smelt_plan *plan,
                              const smelt_plan_tensor *pt, double **values)
{
    const smelt_method *m = plan->method;
    const smelt_merge_spec *spec = plan->spec;
    const smelt_plan_slice *sl = &plan->slices[pt->slice];
    for (size_t p = 0; p < m->nparams; p++) {
        const smelt_param_def *def = &m->params[p];
        size_t count = def->per_model ? pt->ninputs : 1;
        for (size_t i = 0; i < count; i++) {
            double v = def->default_value;
            int found = 0;
            int is_base = def->per_model && sl->has_base && i == 0;
            const char *name = def->per_model ? pt->inputs[i]->name : pt->name;
            if (def->per_model)
                found = eval_level(ctx, plan, sl->input_params[i], def, name, pt->layer_t, &v);
            if (!found)
                found = eval_level(ctx, plan, sl->params, def, name, pt->layer_t, &v);
            if (!found)
                found = eval_level(ctx, plan, &spec->params, def, name, pt->layer_t, &v);
            if (found < 0)
                return found;
            if (!found && def->required && !is_base) {
                if (def->per_model)
                    return smelt_fail(ctx, SMELT_E_CONFIG,
                                      "%s: model '%s': tensor '%s': required parameter '%s' is "
                                      "not set (give it in the model's parameters or at the top "
                                      "level)", spec->path, sl->input_names[i], pt->name,
                                      def->name);
                return smelt_fail(ctx, SMELT_E_CONFIG,
                                  "%s: tensor '%s': required parameter '%s' of method '%s' is not "
                                  "set", spec->path, pt->name, def->name, m->name);
            }
            values[p][i] = v;
        }
    }
    return SMELT_OK;
}

static int resolve_out_dtype(smelt_ctx *ctx, const smelt_merge_spec *spec, smelt_dtype *forced)
{
    *forced = SMELT_DT_INVALID;
    const char *name = spec->out_dtype ? spec->out_dtype : spec->dtype;
    if (!name)
        return SMELT_OK;
    smelt_dtype dt = smelt_dtype_from_torch_name(name);
    if (dt == SMELT_DT_INVALID)
        return smelt_fail(ctx, SMELT_E_CONFIG,
                          "%s: %s '%s' is not a dtype smelt writes (use bfloat16, float16 or "
                          "float32)", spec->path, spec->out_dtype ? "out_dtype" : "dtype", name);
    *forced = dt;
    return SMELT_OK;
}

/* Finds input i's tensor for an output tensor whose pattern (input 0's tensor) is `pattern`:
 * the same name with the layer index moved to the input's own layer. */
static int find_input(smelt_ctx *ctx, const smelt_plan *plan, const smelt_plan_slice *sl,
                      size_t i, const smelt_tensor_info *pattern, long layer,
                      const smelt_tensor_info **out)
{
    const smelt_model *model = plan->models[sl->input_model[i]];
    char *name = layer < 0 ? smelt_strdup(pattern->name) : smelt_layer_rename(pattern->name, layer);
    if (!name)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    *out = smelt_model_find(model, name);
    int rc = SMELT_OK;
    if (!*out)
        rc = smelt_fail(ctx, SMELT_E_PLAN,
                        "model '%s': tensor '%s' is missing (it is in '%s', which defines the "
                        "output)", model->ref, name, plan->models[sl->input_model[0]]->ref);
    free(name);
    return rc;
}

/* Sets up one output tensor: its inputs, kind, output dtype and method state. `layer_of_input`
 * is NULL for tensors outside the layers. */

/* The tensor's per-input sources (all "not derived"), allocated on first use. Returns 0, or
 * -1 with the message in ctx. */
static int ensure_sources(smelt_ctx *ctx, smelt_plan_tensor *pt, size_t ninputs)
{
    if (pt->sources)
        return 0;
    if (!(pt->sources = calloc(ninputs, sizeof *pt->sources))) {
        smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        return -1;
    }
    for (size_t k = 0; k < ninputs; k++)
        pt->sources[k].round_to = SMELT_DT_INVALID;
    return 0;
}
static int plan_tensor(smelt_ctx *ctx, smelt_plan *plan, smelt_plan_tensor *pt,
                       const smelt_tensor_info *pattern, const long *layer_of_input,
                       smelt_dtype forced, double **values)
{
    const smelt_plan_slice *sl = &plan->slices[pt->slice];
    const smelt_model *pattern_model = plan->models[sl->input_model[0]];
    pt->ref = pattern;
    pt->input_model = sl->input_model;
    if (!smelt_dtype_mergeable(pattern->dtype)) {
        if (smelt_dtype_is_float(pattern->dtype))
            return smelt_fail(ctx, SMELT_E_UNSUPPORTED,
                              "%s: tensor '%s' has dtype %s, which smelt cannot merge yet "
                              "(supported: F32, F16, BF16, and GGUF's Q4_0, Q4_1, Q5_0, Q5_1, "
                              "Q8_0, Q2_K to Q6_K, IQ4_NL, IQ4_XS)", pattern_model->ref,
                              pattern->name,
                              smelt_dtype_name(pattern->dtype));
        /* Integer and boolean tensors (position ids, masks) are not averaged: they are copied
         * from the first input, as mergekit does. A copy moves file bytes as they are, which a
         * BASE+DELTA model's tensors are not (the base's, or compressed frames). */
        if (pattern_model->delta)
            return smelt_fail(ctx, SMELT_E_UNSUPPORTED,
                              "%s: tensor '%s' has dtype %s, which a merge copies from the first "
                              "model as it is stored; a BASE+DELTA model cannot be copied from: "
                              "list another model first, or rebuild it with `smelt delta apply`",
                              pattern_model->ref, pattern->name, smelt_dtype_name(pattern->dtype));
        pt->kind = SMELT_TASK_COPY;
        pt->out_dtype = pattern->dtype;
        pt->out_nbytes = pattern->nbytes;
        pt->ninputs = 1;
        if (!(pt->inputs = malloc(sizeof *pt->inputs)))
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        pt->inputs[0] = pattern;
        return SMELT_OK;
    }
    pt->kind = SMELT_TASK_MERGE;
    if (plan->out_gguf)
        pt->out_dtype = smelt_plan_gguf_dtype(ctx, plan, pattern);
    else if (forced != SMELT_DT_INVALID)
        pt->out_dtype = forced;
    else if (smelt_dtype_is_block(pattern->dtype))
        pt->out_dtype = SMELT_DT_F32; /* not reached: block types come from GGUF inputs only */
    else
        pt->out_dtype = pattern->dtype;
    if (pattern->numel > UINT64_MAX / 8)
        return smelt_fail(ctx, SMELT_E_FORMAT, "tensor '%s': size overflows", pattern->name);
    pt->out_nbytes = smelt_dtype_span(pt->out_dtype, pattern->numel);
    pt->ninputs = sl->ninputs;
    if (!(pt->inputs = calloc(sl->ninputs, sizeof *pt->inputs)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < sl->ninputs; i++) {
        const smelt_model *model = plan->models[sl->input_model[i]];
        const smelt_tensor_info *t;
        int rc = find_input(ctx, plan, sl, i, pattern, layer_of_input ? layer_of_input[i] : -1, &t);
        if (rc != SMELT_OK)
            return rc;
        int cmp = compare_shape(t, pattern);
        if (cmp != 0 && !(cmp > 0 && is_vocab_tensor(pattern->name))) {
            char a[160], b[160];
            format_shape(a, sizeof a, t);
            format_shape(b, sizeof b, pattern);
            return smelt_fail(ctx, SMELT_E_PLAN,
                              "model '%s': tensor '%s' has shape %s, but %s in '%s'", model->ref,
                              t->name, a, b, pattern_model->ref);
        }
        if (cmp > 0)
            /* Rows are contiguous, so reading the first numel elements keeps the first rows:
             * mergekit cuts extra vocabulary the same way. */
            smelt_notice(ctx, SMELT_LOG_NOTICE,
                         "model '%s': tensor '%s' has %llu rows; using the first %llu, as many as "
                         "'%s' has", model->ref, t->name, (unsigned long long)t->shape[0],
                         (unsigned long long)pattern->shape[0], pattern_model->ref);
        if (model->lora) {
            const smelt_tensor_info *whole = smelt_lora_replacement(model->lora, t->name);
            const smelt_lora_module *m = smelt_lora_find(model->lora, t->name);
            smelt_dtype base_dtype = t->dtype;
            if (whole)
                t = whole; /* modules_to_save: the adapter's copy replaces the base's */
            if ((m || t->dtype != base_dtype) && ensure_sources(ctx, pt, sl->ninputs))
                return SMELT_E_NOMEM;
            if (m || t->dtype != base_dtype)
                pt->sources[i] = (smelt_plan_source){.lora = m, .round_to = base_dtype};
        }
        if (model->delta) { /* every base tensor has its XOR entry (smelt_delta_attach) */
            if (ensure_sources(ctx, pt, sl->ninputs))
                return SMELT_E_NOMEM;
            const smelt_delta_entry *en = smelt_delta_find(model->delta, t->name);
            uint64_t bytes;
            int rc = smelt_delta_prefix_bytes(ctx, model->delta, en, pattern->numel, &bytes);
            if (rc != SMELT_OK)
                return rc;
            pt->sources[i] = (smelt_plan_source){.delta = en, .delta_bytes = bytes,
                                                 .round_to = SMELT_DT_INVALID};
        }
        if (!smelt_dtype_mergeable(t->dtype))
            return smelt_fail(ctx, SMELT_E_PLAN,
                              "model '%s': tensor '%s' has dtype %s; a merged tensor must have a "
                              "floating type in every model (F32, F16, BF16 or a GGUF block "
                              "type)", model->ref, t->name,
                              smelt_dtype_name(t->dtype));
        pt->inputs[i] = t;
    }
    int rc = smelt_plan_resolve_params(ctx, plan, pt, values);
    if (rc != SMELT_OK)
        return rc;
    smelt_tensor_args args = {
        .tensor = pt->name,
        .ninputs = sl->ninputs,
        .has_base = sl->has_base,
        .input_names = sl->input_names,
        .values = (const double *const *)values,
        .numel = pattern->numel,
        .row_elems = pattern->ndim > 0 ? pattern->shape[pattern->ndim - 1] : 1,
        .ndim = pattern->ndim,
        .random_seed = plan->random_seed,
        .output = plan->output,
    };
    rc = plan->method->prepare(ctx, &args, &pt->method_state);
    if (rc != SMELT_OK)
        smelt_error_prefix(ctx, "%s: ", plan->spec->path);
    return rc;
}

static int layout_shards(smelt_ctx *ctx, smelt_plan *plan, uint64_t shard_limit)
{
    /* Greedy in processing order, so each shard is written front to back. */
    uint32_t shard = 0;
    uint64_t in_shard = 0, count = 0;
    for (size_t i = 0; i < plan->ntensors; i++) {
        uint64_t bytes = plan->tensors[i].out_nbytes;
        if (count > 0 && in_shard + bytes > shard_limit) {
            shard++;
            in_shard = 0;
            count = 0;
        }
        plan->tensors[i].shard = shard;
        in_shard += bytes;
        count++;
    }
    plan->nshards = plan->ntensors ? shard + 1 : 1;
    plan->shards = calloc(plan->nshards, sizeof *plan->shards);
    smelt_st_out_tensor *descs = calloc(plan->ntensors + 1, sizeof *descs);
    uint64_t *offsets = calloc(plan->ntensors + 1, sizeof *offsets);
    size_t *members = calloc(plan->ntensors + 1, sizeof *members);
    int rc = SMELT_OK;
    if (!plan->shards || !descs || !offsets || !members) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    size_t first = 0;
    for (uint32_t s = 0; s < plan->nshards; s++) {
        size_t n = 0;
        while (first + n < plan->ntensors && plan->tensors[first + n].shard == s) {
            const smelt_plan_tensor *pt = &plan->tensors[first + n];
            descs[n] = (smelt_st_out_tensor){pt->name, pt->out_dtype, pt->ref->ndim,
                                             pt->ref->shape, pt->out_nbytes};
            members[n] = first + n;
            n++;
        }
        smelt_plan_shard *sh = &plan->shards[s];
        char name[64];
        smelt_shard_name(name, sizeof name, s, (unsigned)plan->nshards);
        sh->name = strdup(name);
        sh->ntensors = n;
        if (!sh->name) {
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
            goto out;
        }
        rc = smelt_st_layout(ctx, descs, n, &sh->header, &sh->header_len, offsets, &sh->size);
        if (rc != SMELT_OK)
            goto out;
        for (size_t j = 0; j < n; j++)
            plan->tensors[members[j]].out_offset = offsets[j];
        first += n;
    }
out:
    free(descs);
    free(offsets);
    free(members);
    return rc;
}

static int check_model_count(smelt_ctx *ctx, const smelt_plan *plan, const smelt_plan_slice *sl,
                             const char *base)
{
    const smelt_method *m = plan->method;
    size_t n = sl->ninputs - (sl->has_base ? 1 : 0);
    char where[32] = "";
    if (sl->index >= 0)
        snprintf(where, sizeof where, "slices[%d]: ", sl->index);
    if (m->base_use == SMELT_BASE_REQUIRED && !base)
        return smelt_fail(ctx, SMELT_E_CONFIG, "%s: %smethod '%s' needs a base_model",
                          plan->spec->path, where, m->name);
    if (n < m->min_models || (m->max_models && n > m->max_models)) {
        char want[64];
        if (m->max_models == m->min_models)
            snprintf(want, sizeof want, "exactly %u", m->min_models);
        else if (m->max_models)
            snprintf(want, sizeof want, "%u to %u", m->min_models, m->max_models);
        else
            snprintf(want, sizeof want, "at least %u", m->min_models);
        return smelt_fail(ctx, SMELT_E_CONFIG, "%s: %smethod '%s' takes %s model%s besides the "
                          "base, but the config lists %zu", plan->spec->path, where, m->name,
                          want, m->min_models == 1 && m->max_models == 1 ? "" : "s", n);
    }
    return SMELT_OK;
}

static int slice_alloc(smelt_ctx *ctx, smelt_plan_slice *sl, size_t cap)
{
    sl->input_model = calloc(cap, sizeof *sl->input_model);
    sl->input_names = calloc(cap, sizeof *sl->input_names);
    sl->layer_begin = calloc(cap, sizeof *sl->layer_begin);
    sl->input_params = calloc(cap, sizeof *sl->input_params);
    if (!sl->input_model || !sl->input_names || !sl->layer_begin || !sl->input_params)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    return SMELT_OK;
}

static int slice_add(smelt_ctx *ctx, smelt_plan *plan, smelt_plan_slice *sl, const char *ref,
                     long layer_begin, const smelt_params *params)
{
    size_t i = sl->ninputs;
    int rc = open_model(ctx, plan, ref, &sl->input_model[i]);
    if (rc != SMELT_OK)
        return rc;
    sl->input_names[i] = ref;
    sl->layer_begin[i] = layer_begin;
    sl->input_params[i] = params;
    sl->ninputs++;
    return SMELT_OK;
}

/* A models: config as mergekit normalizes it: one slice over every layer, the base added when it
 * is not listed. The base goes first when the method uses it; a method that ignores the base
 * sees only the listed models. */
static int slices_from_models(smelt_ctx *ctx, smelt_plan *plan)
{
    const smelt_merge_spec *spec = plan->spec;
    if (!(plan->slices = calloc(1, sizeof *plan->slices)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    plan->nslices = 1;
    smelt_plan_slice *sl = &plan->slices[0];
    sl->index = -1;
    int rc = slice_alloc(ctx, sl, spec->nmodels + 1);
    if (rc != SMELT_OK)
        return rc;
    int use_base = spec->base_model && plan->method->base_use != SMELT_BASE_IGNORED;
    if (use_base) {
        const smelt_params *params = NULL;
        for (size_t i = 0; i < spec->nmodels; i++)
            if (strcmp(spec->models[i].model, spec->base_model) == 0)
                params = &spec->models[i].params;
        if ((rc = slice_add(ctx, plan, sl, spec->base_model, 0, params)) != SMELT_OK)
            return rc;
        sl->has_base = 1;
    }
    for (size_t i = 0; i < spec->nmodels; i++) {
        if (use_base && strcmp(spec->models[i].model, spec->base_model) == 0)
            continue;
        rc = slice_add(ctx, plan, sl, spec->models[i].model, 0, &spec->models[i].params);
        if (rc != SMELT_OK)
            return rc;
    }
    if (sl->ninputs > 0)
        sl->nlayers = model_layers(plan->models[sl->input_model[0]]);
    return check_model_count(ctx, plan, sl, spec->base_model);
}

static int slices_from_spec(smelt_ctx *ctx, smelt_plan *plan)
{
    const smelt_merge_spec *spec = plan->spec;
    if (!(plan->slices = calloc(spec->nslices, sizeof *plan->slices)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    plan->nslices = spec->nslices;
    uint32_t out_layer = 0;
    for (size_t s = 0; s < spec->nslices; s++) {
        const smelt_slice_spec *ss = &spec->slices[s];
        smelt_plan_slice *sl = &plan->slices[s];
        sl->index = (int)s;
        sl->params = &ss->params;
        int rc = slice_alloc(ctx, sl, ss->nsources);
        if (rc != SMELT_OK)
            return rc;
        const char *base = ss->base_model ? ss->base_model : spec->base_model;
        int use_base = base && plan->method->base_use != SMELT_BASE_IGNORED;
        size_t base_source = ss->nsources;
        if (use_base) {
            for (size_t j = 0; j < ss->nsources && base_source == ss->nsources; j++)
                if (strcmp(ss->sources[j].model, base) == 0)
                    base_source = j;
            if (base_source == ss->nsources)
                return smelt_fail(ctx, SMELT_E_CONFIG, "%s:%d: slices[%zu]: the base_model '%s' "
                                  "is not one of the slice's sources (method '%s' reads it from "
                                  "them)", spec->path, ss->line, s, base, plan->method->name);
            const smelt_source_spec *src = &ss->sources[base_source];
            if ((rc = slice_add(ctx, plan, sl, src->model, src->layer_begin, &src->params)))
                return rc;
            sl->has_base = 1;
        }
        for (size_t j = 0; j < ss->nsources; j++) {
            if (j == base_source)
                continue;
            const smelt_source_spec *src = &ss->sources[j];
            if ((rc = slice_add(ctx, plan, sl, src->model, src->layer_begin, &src->params)))
                return rc;
        }
        long span = ss->sources[0].layer_end - ss->sources[0].layer_begin;
        for (size_t j = 0; j < ss->nsources; j++) {
            const smelt_source_spec *src = &ss->sources[j];
            if (src->layer_end - src->layer_begin != span)
                return smelt_fail(ctx, SMELT_E_CONFIG, "%s:%d: slices[%zu]: every source must "
                                  "span the same number of layers, but sources[0] has %ld and "
                                  "sources[%zu] ('%s') has %ld", spec->path, src->line, s, span,
                                  j, src->model, src->layer_end - src->layer_begin);
            uint32_t idx;
            if ((rc = open_model(ctx, plan, src->model, &idx)) != SMELT_OK)
                return rc;
            uint32_t have = model_layers(plan->models[idx]);
            if ((uint64_t)src->layer_end > have)
                return smelt_fail(ctx, SMELT_E_CONFIG, "%s:%d: slices[%zu]: sources[%zu]: "
                                  "layer_range [%ld, %ld] goes past the %u layers of '%s'",
                                  spec->path, src->line, s, j, src->layer_begin, src->layer_end,
                                  have, src->model);
        }
        /* Each span is within one model's layers; their sum must be too, or the renumbered
         * output layers would run past the bound (and uint32_t). */
        if ((uint64_t)out_layer + (uint64_t)span > (uint64_t)SMELT_MAX_LAYERS)
            return smelt_fail(ctx, SMELT_E_CONFIG, "%s:%d: slices[%zu]: the slices make more "
                              "than %ld output layers", spec->path, ss->line, s,
                              (long)SMELT_MAX_LAYERS);
        sl->nlayers = (uint32_t)span;
        sl->out_layer0 = out_layer;
        out_layer += sl->nlayers;
        if ((rc = check_model_count(ctx, plan, sl, base)) != SMELT_OK)
            return rc;
    }
    return SMELT_OK;
}

/* The architectures named in a model's config.json (a BASE+DELTA model's: the fine-tune's), as
 * one string ("" when it has none). A config.json that exists but cannot be read or parsed is
 * an error (smelt_json_load: bounded, regular files only). */
static int model_architecture(smelt_ctx *ctx, const smelt_model *m, char *buf, size_t len)
{
    buf[0] = '\0';
    json_t *root;
    int rc = smelt_side_load_json(ctx, m, "config.json", 0, &root);
    json_t *arch = root ? json_object_get(root, "architectures") : NULL;
    size_t i;
    json_t *v;
    if (json_is_array(arch))
        json_array_foreach(arch, i, v)
            if (json_is_string(v)) {
                size_t at = strlen(buf);
                snprintf(buf + at, len - at, "%s%s", at ? "," : "", json_string_value(v));
            }
    json_decref(root);
    return rc;
}

/* mergekit refuses to merge models of different architectures unless --allow-crimes. */
static int check_architectures(smelt_ctx *ctx, const smelt_plan *plan, int allow_crimes)
{
    char first[256], other[256];
    int rc = model_architecture(ctx, plan->models[plan->ref_model], first, sizeof first);
    if (rc != SMELT_OK || !first[0])
        return rc;
    for (size_t i = 0; i < plan->nmodels; i++) {
        if ((rc = model_architecture(ctx, plan->models[i], other, sizeof other)) != SMELT_OK)
            return rc;
        if (!other[0] || strcmp(other, first) == 0)
            continue;
        if (allow_crimes) {
            smelt_notice(ctx, SMELT_LOG_NOTICE, "'%s' is a %s and '%s' a %s; merging anyway "
                         "(--allow-crimes)", plan->models[plan->ref_model]->ref, first,
                         plan->models[i]->ref, other);
            continue;
        }
        return smelt_fail(ctx, SMELT_E_PLAN, "'%s' is a %s but '%s' is a %s: models of different "
                          "architectures (pass --allow-crimes to merge them anyway)",
                          plan->models[plan->ref_model]->ref, first, plan->models[i]->ref, other);
    }
    return SMELT_OK;
}

static int choose_tokenizer(smelt_ctx *ctx, smelt_plan *plan, int copy)
{
    const smelt_merge_spec *spec = plan->spec;
    plan->tokenizer_model = copy ? (int)plan->ref_model : -1;
    const char *source = spec->tokenizer_source;
    if (!source || strcmp(source, "base") == 0)
        return SMELT_OK;
    if (strcmp(source, "union") == 0)
        return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%s: tokenizer_source: union is not supported "
                          "yet (it builds a new vocabulary); use 'base' or a model", spec->path);
    uint32_t idx;
    int rc = open_model(ctx, plan, source, &idx);
    if (rc != SMELT_OK)
        return rc;
    if (copy)
        plan->tokenizer_model = (int)idx;
    return SMELT_OK;
}

/* Input 0's catalog order: reads are fastest in each input file's byte order, which a model's
 * catalog follows (a BASE+DELTA model's follows the fine-tune's layout, which is the base's
 * where the fine-tune is laid out like it; delta/delta_input.c). */
static int by_read_order(const void *a, const void *b)
{
    const smelt_plan_tensor *x = a, *y = b;
    uint32_t mx = x->input_model[0], my = y->input_model[0];
    if (mx != my)
        return mx < my ? -1 : 1;
    const smelt_tensor_info *tx = x->inputs[0], *ty = y->inputs[0];
    if (tx->order != ty->order)
        return tx->order < ty->order ? -1 : 1;
    if (tx->file != ty->file)
        return tx->file < ty->file ? -1 : 1;
    if (tx->offset != ty->offset)
        return tx->offset < ty->offset ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A layer tensor of a slice's pattern model: its layer and its index in the model. */
typedef struct layer_ref {
    long layer;
    size_t tensor;
} layer_ref;

/* By layer, then by the model's own tensor order: the order the per-layer scan used to give. */
static int by_layer(const void *a, const void *b)
{
    const layer_ref *x = a, *y = b;
    if (x->layer != y->layer)
        return x->layer < y->layer ? -1 : 1;
    return x->tensor < y->tensor ? -1 : x->tensor > y->tensor;
}

/* Adds one output tensor. */
static int add_tensor(smelt_ctx *ctx, smelt_plan *plan, size_t *cap, uint32_t slice,
                      const smelt_tensor_info *pattern, long out_layer, const long *layer_of_input,
                      double t, smelt_dtype forced, double **values)
{
    if (plan->ntensors == *cap) {
        size_t grown_cap = *cap ? *cap * 2 : 256;
        smelt_plan_tensor *grown = realloc(plan->tensors, grown_cap * sizeof *grown);
        if (!grown)
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        plan->tensors = grown;
        *cap = grown_cap;
    }
    smelt_plan_tensor *pt = &plan->tensors[plan->ntensors++];
    memset(pt, 0, sizeof *pt);
    pt->slice = slice;
    pt->layer_t = t;
    pt->name = out_layer < 0 ? smelt_strdup(pattern->name)
                             : smelt_layer_rename(pattern->name, out_layer);
    if (!pt->name)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    return plan_tensor(ctx, plan, pt, pattern, layer_of_input, forced, values);
}

static int build_tensors(smelt_ctx *ctx, smelt_plan *plan, smelt_dtype forced, double **values)
{
    size_t cap = 0;
    int rc;
    /* Outside the layers: the tensor set of the first slice's first input (for pre) and the
     * last slice's (for post), as mergekit plans pre_weights and post_weights. */
    for (int post = 0; post < 2; post++) {
        uint32_t s = post ? (uint32_t)plan->nslices - 1 : 0;
        const smelt_model *pattern = plan->models[plan->slices[s].input_model[0]];
        for (size_t i = 0; i < pattern->ntensors; i++) {
            const smelt_tensor_info *t = &pattern->tensors[i];
            if (smelt_layer_index(t->name) >= 0 || is_pre_weight(t->name) == post)
                continue;
            if ((rc = add_tensor(ctx, plan, &cap, s, t, -1, NULL, post, forced, values)))
                return rc;
        }
    }
    /* The layer tensors, grouped by layer once: the work follows the number of tensors, never
     * the largest layer index (a model whose only layer is 999999 costs what one layer costs). */
    layer_ref *order = NULL;
    for (uint32_t s = 0; s < plan->nslices; s++) {
        const smelt_plan_slice *sl = &plan->slices[s];
        const smelt_model *pattern = plan->models[sl->input_model[0]];
        layer_ref *grown = realloc(order, (pattern->ntensors + 1) * sizeof *order);
        if (!grown) {
            free(order);
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        }
        order = grown;
        size_t n = 0;
        for (size_t i = 0; i < pattern->ntensors; i++) {
            long idx = smelt_layer_index(pattern->tensors[i].name);
            if (idx >= sl->layer_begin[0] && idx - sl->layer_begin[0] < (long)sl->nlayers)
                order[n++] = (layer_ref){idx, i};
        }
        qsort(order, n, sizeof *order, by_layer);
        long layers[sl->ninputs + 1];
        for (size_t k = 0; k < n; k++) {
            uint32_t o = (uint32_t)(order[k].layer - sl->layer_begin[0]);
            for (size_t i = 0; i < sl->ninputs; i++)
                layers[i] = sl->layer_begin[i] + o;
            double t = sl->nlayers > 1 ? (double)o / (double)(sl->nlayers - 1) : 1.0;
            rc = add_tensor(ctx, plan, &cap, s, &pattern->tensors[order[k].tensor],
                            (long)(sl->out_layer0 + o), layers, t, forced, values);
            if (rc != SMELT_OK) {
                free(order);
                return rc;
            }
        }
        plan->num_layers += sl->nlayers;
    }
    free(order);
    /* Slices of zero layers over a model of layer tensors only: an output with nothing in it
     * would look like a finished model. */
    if (plan->ntensors == 0)
        return smelt_fail(ctx, SMELT_E_PLAN, "%s: the merge would write no tensors (every slice "
                          "is empty and the models have no tensors outside the layers)",
                          plan->spec->path);
    qsort(plan->tensors, plan->ntensors, sizeof *plan->tensors, by_read_order);
    /* Renumbered layers can collide ("layers.03.w" and "layers.3.w" both become layer 3):
     * every output name must be unique, whatever the read order put next to it. */
    const char **names = malloc((plan->ntensors + 1) * sizeof *names);
    if (!names)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < plan->ntensors; i++)
        names[i] = plan->tensors[i].name;
    qsort(names, plan->ntensors, sizeof *names, by_name);
    rc = SMELT_OK;
    for (size_t i = 1; i < plan->ntensors && rc == SMELT_OK; i++)
        if (strcmp(names[i], names[i - 1]) == 0)
            rc = smelt_fail(ctx, SMELT_E_PLAN, "two output tensors would be named '%s' (input "
                            "tensor names that differ only in how a layer number is written?)",
                            names[i]);
    free(names);
    return rc;
}

/* The inputs of one merge share a format, and the output takes it: merging GGUF with
 * safetensors would need llama.cpp's tensor names mapped and its q/k row permutation undone,
 * which smelt does not do. */
static int choose_format(smelt_ctx *ctx, smelt_plan *plan, const smelt_plan_options *opts,
                         smelt_dtype forced)
{
    const smelt_model *first = plan->models[0];
    for (size_t m = 1; m < plan->nmodels; m++)
        if ((plan->models[m]->gguf != NULL) != (first->gguf != NULL)) {
            const smelt_model *g = first->gguf ? first : plan->models[m];
            const smelt_model *st = first->gguf ? plan->models[m] : first;
            return smelt_fail(ctx, SMELT_E_UNSUPPORTED,
                              "'%s' is a GGUF model but '%s' is safetensors: the models of one "
                              "merge must share a format (smelt does not map llama.cpp's tensor "
                              "names and q/k row order to Hugging Face's)", g->ref, st->ref);
        }
    int gguf_in = first->gguf != NULL;
    if (opts->format == SMELT_OUT_GGUF && !gguf_in)
        return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "GGUF output needs GGUF inputs: '%s' is "
                          "safetensors (smelt does not convert Hugging Face models to llama.cpp's "
                          "tensor names and q/k row order)", first->ref);
    if (opts->format == SMELT_OUT_SAFETENSORS && gguf_in)
        return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "'%s' is a GGUF model: a merge of GGUF "
                          "models is written as GGUF (llama.cpp's tensor names have no "
                          "safetensors model to go with them)", first->ref);
    plan->out_gguf = gguf_in;
    int rc = smelt_plan_gguf_outtype(ctx, opts->outtype, &plan->outtype);
    if (rc != SMELT_OK)
        return rc;
    if (!gguf_in && plan->outtype != SMELT_DT_INVALID)
        return smelt_fail(ctx, SMELT_E_ARG, "--outtype is for GGUF output; the config's dtype "
                          "sets a safetensors merge's output dtype");
    if (gguf_in && forced != SMELT_DT_INVALID)
        smelt_notice(ctx, SMELT_LOG_NOTICE, "%s: the config's dtype does not apply to GGUF "
                     "output; --outtype sets the output types (default: same as the base)",
                     plan->spec->path);
    return SMELT_OK;
}

/* smelt_model_open, with "BASE+ADAPTER" references, as a smelt_plan_open_fn. */
static int open_from_files(void *user, smelt_ctx *ctx, const char *ref, smelt_model **out)
{
    (void)user;
    return open_with_adapter(ctx, ref, out);
}

static int build(smelt_ctx *ctx, smelt_merge_spec *spec, int owns_spec,
                 const smelt_plan_options *opts, smelt_plan_open_fn open, void *user,
                 smelt_plan **out);

/* Opens through a smelt_model_cache: a reference already opened is handed out again. */
static int open_cached(void *user, smelt_ctx *ctx, const char *ref, smelt_model **out)
{
    smelt_model_cache *cache = user;
    for (size_t i = 0; i < cache->n; i++)
        if (!strcmp(cache->refs[i], ref)) {
            *out = cache->models[i];
            return SMELT_OK;
        }
    char **refs = realloc(cache->refs, (cache->n + 1) * sizeof *refs);
    if (refs)
        cache->refs = refs;
    smelt_model **models = refs ? realloc(cache->models, (cache->n + 1) * sizeof *models) : NULL;
    if (models)
        cache->models = models;
    char *copy = models ? strdup(ref) : NULL;
    if (!copy)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    int rc = open_with_adapter(ctx, ref, &cache->models[cache->n]);
    if (rc != SMELT_OK) {
        free(copy);
        return rc;
    }
    cache->refs[cache->n] = copy;
    *out = cache->models[cache->n++];
    return SMELT_OK;
}

void smelt_model_cache_free(smelt_model_cache *cache)
{
    for (size_t i = 0; i < cache->n; i++) {
        smelt_model_close(cache->models[i]);
        free(cache->refs[i]);
    }
    free(cache->models);
    free(cache->refs);
    *cache = (smelt_model_cache){0};
}

int smelt_plan_build(smelt_ctx *ctx, smelt_merge_spec *spec, const smelt_plan_options *opts,
                     smelt_plan **out)
{
    if (opts->models)
        return build(ctx, spec, 1, opts, open_cached, opts->models, out);
    return build(ctx, spec, 1, opts, open_from_files, NULL, out);
}

int smelt_plan_build_with(smelt_ctx *ctx, smelt_merge_spec *spec, const smelt_plan_options *opts,
                          smelt_plan_open_fn open, void *user, smelt_plan **out)
{
    return build(ctx, spec, 0, opts, open, user, out);
}

static int build(smelt_ctx *ctx, smelt_merge_spec *spec, int owns_spec,
                 const smelt_plan_options *opts, smelt_plan_open_fn open, void *user,
                 smelt_plan **out)
{
    smelt_plan *plan = calloc(1, sizeof *plan);
    if (!plan) {
        if (owns_spec)
            smelt_spec_free(spec);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    plan->spec = spec;
    plan->owns_spec = owns_spec;
    plan->open_model = open;
    plan->open_user = user;
    plan->borrows_models = open == open_cached;
    plan->random_seed = opts->random_seed;
    plan->output = opts->output;
    double **values = NULL;
    int rc = SMELT_OK;
    plan->method = smelt_method_find(spec->merge_method);
    if (!plan->method) {
        rc = smelt_fail(ctx, SMELT_E_CONFIG, "%s:%d: unknown merge_method '%s' (smelt has: %s)",
                        spec->path, spec->line_merge_method, spec->merge_method,
                        smelt_method_names());
        goto fail;
    }
    smelt_dtype forced;
    if ((rc = check_all_param_names(ctx, plan)) != SMELT_OK ||
        (rc = resolve_out_dtype(ctx, spec, &forced)) != SMELT_OK)
        goto fail;
    rc = spec->nslices ? slices_from_spec(ctx, plan) : slices_from_models(ctx, plan);
    if (rc != SMELT_OK)
        goto fail;
    for (size_t s = 0; s < plan->nslices; s++)
        if (plan->slices[s].ninputs > plan->ninputs)
            plan->ninputs = plan->slices[s].ninputs;
    if (plan->ninputs > 255) { /* the engine's read tags keep the input index in 8 bits */
        rc = smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%s: %zu models in one merge; smelt merges at "
                        "most 255 at once", spec->path, plan->ninputs);
        goto fail;
    }
    if (spec->base_model)
        rc = open_model(ctx, plan, spec->base_model, &plan->ref_model);
    else
        plan->ref_model = plan->slices[0].input_model[0];
    if (rc != SMELT_OK || (rc = choose_tokenizer(ctx, plan, opts->copy_tokenizer)) != SMELT_OK ||
        (rc = check_architectures(ctx, plan, opts->allow_crimes)) != SMELT_OK ||
        (rc = choose_format(ctx, plan, opts, forced)) != SMELT_OK)
        goto fail;
    plan->ref_num_layers = model_layers(plan->models[plan->ref_model]);

    if (!(values = calloc(plan->method->nparams + 1, sizeof *values))) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t p = 0; p < plan->method->nparams; p++)
        if (!(values[p] = calloc(plan->ninputs + 1, sizeof(double)))) {
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
            goto fail;
        }
    if ((rc = build_tensors(ctx, plan, forced, values)) != SMELT_OK)
        goto fail;
    for (size_t i = 0; i < plan->ntensors; i++) {
        /* What is read depends on the budget (resident or streamed tensors): the engine's
         * smelt_engine_bytes_to_read says it. */
        plan->bytes_to_write += plan->tensors[i].out_nbytes;
    }
    rc = plan->out_gguf ? smelt_plan_gguf_layout(ctx, plan, opts->out_shard_size)
                        : layout_shards(ctx, plan, opts->out_shard_size ? opts->out_shard_size
                                                                        : SMELT_ST_SHARD_SIZE);
    if (rc != SMELT_OK)
        goto fail;
    for (size_t p = 0; p < plan->method->nparams; p++)
        free(values[p]);
    free(values);
    *out = plan;
    return SMELT_OK;
fail:
    if (values)
        for (size_t p = 0; p < plan->method->nparams; p++)
            free(values[p]);
    free(values);
    smelt_plan_free(plan);
    return rc;
}

static int tensor_name_cmp(const void *a, const void *b, void *plan)
{
    const smelt_plan *p = plan;
    return strcmp(p->tensors[*(const size_t *)a].name, p->tensors[*(const size_t *)b].name);
}

size_t *smelt_plan_name_order(const smelt_plan *plan)
{
    size_t *order = malloc((plan->ntensors + 1) * sizeof *order);
    if (!order)
        return NULL;
    for (size_t t = 0; t < plan->ntensors; t++)
        order[t] = t;
    qsort_r(order, plan->ntensors, sizeof *order, tensor_name_cmp, (void *)plan);
    return order;
}

size_t smelt_plan_find_name(const smelt_plan *plan, const size_t *order, const char *name)
{
    size_t lo = 0, hi = plan->ntensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(plan->tensors[order[mid]].name, name);
        if (c == 0)
            return order[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (size_t)-1;
}

void smelt_plan_free(smelt_plan *plan)
{
    if (!plan)
        return;
    for (size_t i = 0; i < plan->ntensors; i++) {
        free(plan->tensors[i].name);
        free(plan->tensors[i].inputs);
        free(plan->tensors[i].sources);
        if (plan->tensors[i].kind == SMELT_TASK_MERGE && plan->method && plan->method->release)
            plan->method->release(plan->tensors[i].method_state);
        else
            free(plan->tensors[i].method_state);
    }
    free(plan->tensors);
    for (size_t s = 0; s < plan->nshards && plan->shards; s++) {
        free(plan->shards[s].name);
        free(plan->shards[s].header);
    }
    free(plan->shards);
    for (size_t s = 0; s < plan->nslices && plan->slices; s++) {
        free(plan->slices[s].input_model);
        free(plan->slices[s].input_names);
        free(plan->slices[s].layer_begin);
        free(plan->slices[s].input_params);
    }
    free(plan->slices);
    for (size_t i = 0; i < plan->nmodels && !plan->borrows_models; i++)
        smelt_model_close(plan->models[i]);
    free(plan->models);
    if (plan->owns_spec)
        smelt_spec_free(plan->spec);
    free(plan);
}
