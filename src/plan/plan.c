#include "plan/plan.h"

#include "common/util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

long smelt_layer_index(const char *name)
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
            char *end;
            long idx = strtol(digits, &end, 10);
            if (*end == '.' || *end == '\0')
                return idx;
        }
    }
    return -1;
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

static int same_shape(const smelt_tensor_info *a, const smelt_tensor_info *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (uint32_t d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d])
            return 0;
    return 1;
}

/* Opens `ref` unless an identical reference is open already; returns its index. */
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
    int rc = smelt_model_open(ctx, ref, &plan->models[plan->nmodels]);
    if (rc != SMELT_OK)
        return rc;
    *index = (uint32_t)plan->nmodels++;
    return SMELT_OK;
}

/* The model entry whose reference is `ref`, or NULL. */
static const smelt_model_spec *entry_for(const smelt_merge_spec *spec, const char *ref)
{
    for (size_t i = 0; i < spec->nmodels; i++)
        if (strcmp(spec->models[i].model, ref) == 0)
            return &spec->models[i];
    return NULL;
}

/* Every parameter the config names must be one the method takes. */
static int check_param_names(smelt_ctx *ctx, const smelt_plan *plan, const smelt_params *params,
                             const char *where)
{
    const smelt_method *m = plan->method;
    for (size_t i = 0; i < params->n; i++) {
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
                          params->items[i].name, m->name, list);
    }
    return SMELT_OK;
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
    return found;
}

/* Resolves every parameter of the method for one tensor into values[p][...]. */
static int resolve_params(smelt_ctx *ctx, const smelt_plan *plan, const char *tensor, double t,
                          double **values)
{
    const smelt_method *m = plan->method;
    const smelt_merge_spec *spec = plan->spec;
    for (size_t p = 0; p < m->nparams; p++) {
        const smelt_param_def *def = &m->params[p];
        size_t count = def->per_model ? plan->ninputs : 1;
        for (size_t i = 0; i < count; i++) {
            double v = def->default_value;
            int found = 0;
            int is_base = def->per_model && plan->has_base && i == 0;
            if (def->per_model) {
                const smelt_model_spec *entry = entry_for(spec, plan->input_names[i]);
                found = eval_level(ctx, plan, entry ? &entry->params : NULL, def, tensor, t, &v);
                if (found < 0)
                    return found;
            }
            if (!found) {
                found = eval_level(ctx, plan, &spec->params, def, tensor, t, &v);
                if (found < 0)
                    return found;
            }
            if (!found && def->required && !is_base) {
                if (def->per_model)
                    return smelt_fail(ctx, SMELT_E_CONFIG,
                                      "%s: model '%s': tensor '%s': required parameter '%s' is "
                                      "not set (give it in the model's parameters or at the top "
                                      "level)", spec->path, plan->input_names[i], tensor, def->name);
                return smelt_fail(ctx, SMELT_E_CONFIG,
                                  "%s: tensor '%s': required parameter '%s' of method '%s' is not "
                                  "set", spec->path, tensor, def->name, m->name);
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

/* Sets up inputs, sources and the output dtype of one tensor, checking every rule. */
static int plan_tensor(smelt_ctx *ctx, smelt_plan *plan, smelt_plan_tensor *pt,
                       smelt_dtype forced, double **values)
{
    const smelt_tensor_info *ref = pt->ref;
    const smelt_model *ref_model = plan->models[plan->ref_model];
    if (!smelt_dtype_mergeable(ref->dtype)) {
        if (smelt_dtype_is_float(ref->dtype))
            return smelt_fail(ctx, SMELT_E_UNSUPPORTED,
                              "%s: tensor '%s' has dtype %s, which smelt cannot merge yet "
                              "(supported: F32, F16, BF16)", ref_model->ref, ref->name,
                              smelt_dtype_name(ref->dtype));
        /* Integer and boolean tensors (position ids, masks) are not averaged: they are copied
         * from the reference model, as mergekit does. */
        pt->kind = SMELT_TASK_COPY;
        pt->out_dtype = ref->dtype;
        pt->out_nbytes = ref->nbytes;
        pt->inputs = malloc(sizeof *pt->inputs);
        if (!pt->inputs)
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        pt->inputs[0] = ref;
        return SMELT_OK;
    }
    pt->kind = SMELT_TASK_MERGE;
    pt->out_dtype = forced != SMELT_DT_INVALID ? forced : ref->dtype;
    if (smelt_mul_overflow(ref->numel, smelt_dtype_size(pt->out_dtype), &pt->out_nbytes))
        return smelt_fail(ctx, SMELT_E_FORMAT, "tensor '%s': size overflows", ref->name);
    pt->inputs = calloc(plan->ninputs, sizeof *pt->inputs);
    if (!pt->inputs)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < plan->ninputs; i++) {
        const smelt_model *model = plan->models[plan->input_model[i]];
        const smelt_tensor_info *t = smelt_model_find(model, ref->name);
        if (!t)
            return smelt_fail(ctx, SMELT_E_PLAN,
                              "model '%s': tensor '%s' is missing (it is in '%s', which defines "
                              "the output)", model->ref, ref->name, ref_model->ref);
        if (!same_shape(t, ref)) {
            char a[160], b[160];
            format_shape(a, sizeof a, t);
            format_shape(b, sizeof b, ref);
            return smelt_fail(ctx, SMELT_E_PLAN,
                              "model '%s': tensor '%s' has shape %s, but %s in '%s'", model->ref,
                              ref->name, a, b, ref_model->ref);
        }
        if (!smelt_dtype_mergeable(t->dtype))
            return smelt_fail(ctx, SMELT_E_PLAN,
                              "model '%s': tensor '%s' has dtype %s; a merged tensor must be F32, "
                              "F16 or BF16 in every model", model->ref, ref->name,
                              smelt_dtype_name(t->dtype));
        pt->inputs[i] = t;
    }
    int rc = resolve_params(ctx, plan, ref->name, pt->layer_t, values);
    if (rc != SMELT_OK)
        return rc;
    smelt_tensor_args args = {
        .tensor = ref->name,
        .ninputs = plan->ninputs,
        .has_base = plan->has_base,
        .input_names = plan->input_names,
        .values = (const double *const *)values,
        .numel = ref->numel,
        .random_seed = plan->spec->random_seed,
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
            descs[n] = (smelt_st_out_tensor){pt->ref->name, pt->out_dtype, pt->ref->ndim,
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

static int check_model_count(smelt_ctx *ctx, const smelt_plan *plan)
{
    const smelt_method *m = plan->method;
    size_t n = plan->ninputs - (plan->has_base ? 1 : 0);
    if (m->base_use == SMELT_BASE_REQUIRED && !plan->spec->base_model)
        return smelt_fail(ctx, SMELT_E_CONFIG, "%s: method '%s' needs a base_model",
                          plan->spec->path, m->name);
    if (n < m->min_models || (m->max_models && n > m->max_models)) {
        char want[64];
        if (m->max_models == m->min_models)
            snprintf(want, sizeof want, "exactly %u", m->min_models);
        else if (m->max_models)
            snprintf(want, sizeof want, "%u to %u", m->min_models, m->max_models);
        else
            snprintf(want, sizeof want, "at least %u", m->min_models);
        return smelt_fail(ctx, SMELT_E_CONFIG, "%s: method '%s' takes %s model%s besides the "
                          "base, but the config lists %zu", plan->spec->path, m->name, want,
                          m->min_models == 1 && m->max_models == 1 ? "" : "s", n);
    }
    return SMELT_OK;
}

/* Chooses the method's inputs: the base first when the method uses it, then every models entry
 * that is not the base. */
static int choose_inputs(smelt_ctx *ctx, smelt_plan *plan)
{
    const smelt_merge_spec *spec = plan->spec;
    int use_base = spec->base_model && plan->method->base_use != SMELT_BASE_IGNORED;
    size_t cap = spec->nmodels + 1;
    plan->input_model = calloc(cap, sizeof *plan->input_model);
    plan->input_names = calloc(cap, sizeof *plan->input_names);
    if (!plan->input_model || !plan->input_names)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    int rc;
    if (use_base) {
        rc = open_model(ctx, plan, spec->base_model, &plan->input_model[0]);
        if (rc != SMELT_OK)
            return rc;
        plan->input_names[plan->ninputs++] = spec->base_model;
        plan->has_base = 1;
    }
    for (size_t i = 0; i < spec->nmodels; i++) {
        if (use_base && strcmp(spec->models[i].model, spec->base_model) == 0)
            continue;
        rc = open_model(ctx, plan, spec->models[i].model, &plan->input_model[plan->ninputs]);
        if (rc != SMELT_OK)
            return rc;
        plan->input_names[plan->ninputs++] = spec->models[i].model;
    }
    if (spec->base_model) {
        rc = open_model(ctx, plan, spec->base_model, &plan->ref_model);
        if (rc != SMELT_OK)
            return rc;
    } else if (plan->ninputs > 0) {
        plan->ref_model = plan->input_model[0];
    }
    return check_model_count(ctx, plan);
}

int smelt_plan_build(smelt_ctx *ctx, smelt_merge_spec *spec, uint64_t out_shard_size,
                     smelt_plan **out)
{
    smelt_plan *plan = calloc(1, sizeof *plan);
    if (!plan) {
        smelt_spec_free(spec);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    plan->spec = spec;
    double **values = NULL;
    int rc = SMELT_OK;
    plan->method = smelt_method_find(spec->merge_method);
    if (!plan->method) {
        rc = smelt_fail(ctx, SMELT_E_CONFIG, "%s:%d: unknown merge_method '%s' (smelt has: %s)",
                        spec->path, spec->line_merge_method, spec->merge_method,
                        smelt_method_names());
        goto fail;
    }
    if ((rc = check_param_names(ctx, plan, &spec->params, "parameters")) != SMELT_OK)
        goto fail;
    for (size_t i = 0; i < spec->nmodels; i++) {
        char where[512];
        snprintf(where, sizeof where, "model '%s'", spec->models[i].model);
        if ((rc = check_param_names(ctx, plan, &spec->models[i].params, where)) != SMELT_OK)
            goto fail;
    }
    smelt_dtype forced;
    if ((rc = resolve_out_dtype(ctx, spec, &forced)) != SMELT_OK)
        goto fail;
    if ((rc = choose_inputs(ctx, plan)) != SMELT_OK)
        goto fail;

    const smelt_model *ref = plan->models[plan->ref_model];
    long max_layer = -1;
    for (size_t i = 0; i < ref->ntensors; i++) {
        long idx = smelt_layer_index(ref->tensors[i].name);
        if (idx > max_layer)
            max_layer = idx;
    }
    plan->num_layers = (uint32_t)(max_layer + 1);

    values = calloc(plan->method->nparams, sizeof *values);
    if (!values) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t p = 0; p < plan->method->nparams; p++)
        if (!(values[p] = calloc(plan->ninputs + 1, sizeof(double)))) {
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
            goto fail;
        }
    plan->tensors = calloc(ref->ntensors + 1, sizeof *plan->tensors);
    if (!plan->tensors) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto fail;
    }
    /* The reference model's file order reads its files front to back; the other inputs
     * usually share that order because fine-tunes are saved by the same code. */
    for (size_t i = 0; i < ref->ntensors; i++) {
        smelt_plan_tensor *pt = &plan->tensors[plan->ntensors++];
        pt->ref = &ref->tensors[i];
        long layer = smelt_layer_index(pt->ref->name);
        pt->layer_t = layer < 0 ? 0.0
                      : plan->num_layers > 1 ? (double)layer / (double)(plan->num_layers - 1)
                                             : 1.0;
        if ((rc = plan_tensor(ctx, plan, pt, forced, values)) != SMELT_OK)
            goto fail;
        if (pt->kind == SMELT_TASK_MERGE) {
            /* Statistics passes read the tensor again each time. */
            uint64_t reads = 1 + (plan->method->passes ? plan->method->passes(pt->method_state) : 0);
            for (size_t k = 0; k < plan->ninputs; k++)
                plan->bytes_to_read += reads * pt->inputs[k]->nbytes;
        } else {
            plan->bytes_to_read += pt->inputs[0]->nbytes;
        }
        plan->bytes_to_write += pt->out_nbytes;
    }
    if ((rc = layout_shards(ctx, plan, out_shard_size)) != SMELT_OK)
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

void smelt_plan_free(smelt_plan *plan)
{
    if (!plan)
        return;
    for (size_t i = 0; i < plan->ntensors; i++) {
        free(plan->tensors[i].inputs);
        if (plan->method && plan->method->release)
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
    for (size_t i = 0; i < plan->nmodels; i++)
        smelt_model_close(plan->models[i]);
    free(plan->models);
    free(plan->input_model);
    free(plan->input_names);
    smelt_spec_free(plan->spec);
    free(plan);
}
