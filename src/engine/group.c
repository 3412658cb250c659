/* Building a merge group: the outputs of a sweep or a batch, each planned as its own merge,
 * checked to share their inputs so that one read serves them all (engine.h,
 * smelt_engine_run_group). */
#include "engine/group.h"

#include "engine/engine_layout.h"

#include "common/util.h"
#include "config/yaml_tree.h"

#include <stdlib.h>
#include <string.h>

void smelt_group_free(smelt_merge_group *group)
{
    for (size_t o = 0; o < group->n; o++) {
        if (group->plans)
            smelt_plan_free(group->plans[o]);
        if (group->out_dirs)
            free(group->out_dirs[o]);
        if (group->labels)
            free(group->labels[o]);
    }
    free(group->plans);
    free(group->out_dirs);
    free(group->labels);
    smelt_model_cache_free(&group->models); /* after the plans that borrow them */
    *group = (smelt_merge_group){0};
}

/* Room for one more output; its fields start NULL. */
static int group_grow(smelt_ctx *ctx, smelt_merge_group *group)
{
    size_t n = group->n + 1;
    smelt_plan **plans = realloc(group->plans, n * sizeof *plans);
    if (plans)
        group->plans = plans;
    char **dirs = plans ? realloc(group->out_dirs, n * sizeof *dirs) : NULL;
    if (dirs)
        group->out_dirs = dirs;
    char **labels = dirs ? realloc(group->labels, n * sizeof *labels) : NULL;
    if (!labels)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    group->labels = labels;
    group->plans[group->n] = NULL;
    group->out_dirs[group->n] = NULL;
    group->labels[group->n] = NULL;
    group->n = n;
    return SMELT_OK;
}

/* One input of a tensor, for messages: "path @ offset (dtype, N elements)". */
static void describe_input(const smelt_plan *plan, const smelt_plan_tensor *pt, size_t i,
                           char *buf, size_t cap)
{
    const smelt_tensor_info *t = pt->inputs[i];
    const smelt_model *m = plan->models[pt->input_model[i]];
    snprintf(buf, cap, "%s @ %llu (%s, %llu elements)", m->files[t->file].path,
             (unsigned long long)t->offset, smelt_dtype_name(t->dtype),
             (unsigned long long)(pt->kind == SMELT_TASK_MERGE ? pt->ref->numel : t->nbytes));
}

/* 1 when input i of a and b are the same bytes, derived the same way. */
static int same_input(const smelt_plan *pa, const smelt_plan_tensor *a, const smelt_plan *pb,
                      const smelt_plan_tensor *b, size_t i)
{
    const smelt_tensor_info *x = a->inputs[i], *y = b->inputs[i];
    const char *fx = pa->models[a->input_model[i]]->files[x->file].path;
    const char *fy = pb->models[b->input_model[i]]->files[y->file].path;
    if (strcmp(fx, fy) || x->offset != y->offset || x->dtype != y->dtype ||
        x->nbytes != y->nbytes)
        return 0;
    const smelt_plan_source *sx = a->sources ? &a->sources[i] : NULL;
    const smelt_plan_source *sy = b->sources ? &b->sources[i] : NULL;
    smelt_dtype rx = sx ? sx->round_to : SMELT_DT_INVALID;
    smelt_dtype ry = sy ? sy->round_to : SMELT_DT_INVALID;
    return rx == ry && (sx ? !!sx->lora : 0) == (sy ? !!sy->lora : 0) &&
           (sx ? !!sx->delta : 0) == (sy ? !!sy->delta : 0);
}

int smelt_group_check(smelt_ctx *ctx, const smelt_plan *const *plans, const char *const *labels,
                      size_t n)
{
    static const char rule[] = "the outputs of one read must share their inputs (merge them "
                               "separately)";
    const smelt_plan *p0 = plans[0];
    for (size_t o = 1; o < n; o++) {
        const smelt_plan *po = plans[o];
        if (po->ntensors != p0->ntensors)
            return smelt_fail(ctx, SMELT_E_CONFIG, "%s: writes %zu tensors where %s writes %zu: "
                              "%s", labels[o], po->ntensors, labels[0], p0->ntensors, rule);
        for (size_t t = 0; t < p0->ntensors; t++) {
            const smelt_plan_tensor *a = &p0->tensors[t], *b = &po->tensors[t];
            char what_a[1200], what_b[1200];
            if (a->kind != b->kind || a->ninputs != b->ninputs ||
                (a->kind == SMELT_TASK_MERGE && a->ref->numel != b->ref->numel))
                return smelt_fail(ctx, SMELT_E_CONFIG, "%s: tensor '%s' is built from %zu "
                                  "input%s%s where %s builds '%s' from %zu%s: %s", labels[o],
                                  b->name, b->ninputs, b->ninputs == 1 ? "" : "s",
                                  b->kind == SMELT_TASK_COPY ? " (copied)" : "", labels[0],
                                  a->name, a->ninputs,
                                  a->kind == SMELT_TASK_COPY ? " (copied)" : "", rule);
            for (size_t i = 0; i < a->ninputs; i++) {
                if (same_input(p0, a, po, b, i))
                    continue;
                describe_input(p0, a, i, what_a, sizeof what_a);
                describe_input(po, b, i, what_b, sizeof what_b);
                return smelt_fail(ctx, SMELT_E_CONFIG, "%s: tensor '%s': input %zu is %s where "
                                  "%s reads %s: %s", labels[o], b->name, i, what_b, labels[0],
                                  what_a, rule);
            }
            if (tensor_task(p0, a) != tensor_task(po, b))
                return smelt_fail(ctx, SMELT_E_CONFIG, "%s: tensor '%s': its method (%s) works "
                                  "on tasks of %llu elements where %s's (%s) works on %llu: "
                                  "one read cannot serve both (merge them separately)",
                                  labels[o], b->name, po->method->name,
                                  (unsigned long long)tensor_task(po, b), labels[0],
                                  p0->method->name, (unsigned long long)tensor_task(p0, a));
        }
    }
    return SMELT_OK;
}

int smelt_sweep_parse(smelt_ctx *ctx, const char *sweep, char **name, char ***values,
                      size_t *nvalues)
{
    *name = NULL;
    *values = NULL;
    *nvalues = 0;
    const char *eq = strchr(sweep, '=');
    if (!eq || eq == sweep)
        return smelt_fail(ctx, SMELT_E_ARG, "--sweep '%s': write NAME=V1,V2,... (a top-level "
                          "parameter and its values)", sweep);
    size_t cap = 1;
    for (const char *p = eq + 1; *p; p++)
        cap += *p == ',';
    *name = strndup(sweep, (size_t)(eq - sweep));
    *values = calloc(cap, sizeof **values);
    if (!*name || !*values)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    const char *p = eq + 1;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0)
            return smelt_fail(ctx, SMELT_E_ARG, "--sweep '%s': an empty value (values are "
                              "separated by single commas)", sweep);
        char *v = strndup(p, len);
        if (!v)
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        for (size_t i = 0; i < *nvalues; i++)
            if (!strcmp((*values)[i], v)) {
                free(v);
                return smelt_fail(ctx, SMELT_E_ARG, "--sweep '%s': the value '%s' is given "
                                  "twice (each value gets its own output directory)", sweep,
                                  (*values)[i]);
            }
        (*values)[(*nvalues)++] = v;
        if (!end)
            return SMELT_OK;
        p = end + 1;
    }
}

/* Offset of the start of 1-based line `line` in text, or (size_t)-1. */
static size_t line_start(const char *text, int line)
{
    size_t at = 0;
    for (int l = 1; l < line; l++) {
        const char *nl = strchr(text + at, '\n');
        if (!nl)
            return (size_t)-1;
        at = (size_t)(nl - text) + 1;
    }
    return at;
}

/* text with [at, at + len) replaced by `with` (malloc'd). */
static char *splice(const char *text, size_t at, size_t len, const char *with)
{
    size_t total = strlen(text), wl = strlen(with);
    char *out = malloc(total - len + wl + 1);
    if (!out)
        return NULL;
    memcpy(out, text, at);
    memcpy(out + at, with, wl);
    memcpy(out + at + wl, text + at + len, total - at - len + 1);
    return out;
}

/* The colon after `key` written as a mapping key in the line starting at `from` (preceded by the
 * line start, a blank, '{' or ',', and followed by blanks and ':'), or NULL. */
static const char *key_colon(const char *from, const char *key)
{
    size_t len = strlen(key);
    const char *nl = strchr(from, '\n');
    for (const char *p = strstr(from, key); p && (!nl || p < nl); p = strstr(p + 1, key)) {
        if (p > from && !strchr(" \t{,", p[-1]))
            continue;
        const char *q = p + len;
        while (*q == ' ' || *q == '\t')
            q++;
        if (*q == ':')
            return q;
    }
    return NULL;
}

/* Replaces the scalar `value` (the top-level parameter's) in place: it is on its own line, or
 * on the key's line after the key. */
static int replace_scalar(smelt_ctx *ctx, const char *path, const char *text,
                          const smelt_ypair *pair, const char *value, char **out)
{
    const smelt_ynode *v = pair->value;
    size_t at = line_start(text, v->line);
    const char *from = at == (size_t)-1 ? NULL : text + at;
    if (from && pair->key->line == v->line) { /* "  t: 0.5": look after "t" and the colon */
        const char *colon = key_colon(from, pair->key->text);
        from = colon ? colon + 1 : NULL;
    }
    const char *nl = from ? strchr(from, '\n') : NULL;
    const char *hit = from ? strstr(from, v->text) : NULL;
    if (!hit || !v->plain || !v->len || (nl && hit > nl))
        return smelt_yfail(ctx, SMELT_E_ARG, path, v->line, "--sweep: cannot find the value of "
                           "top-level parameter '%s' to replace (write it as a plain value on "
                           "its line, e.g. '%s: 0.5')", pair->key->text, pair->key->text);
    *out = splice(text, (size_t)(hit - text), v->len, value);
    return *out ? SMELT_OK : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
}

int smelt_sweep_rewrite(smelt_ctx *ctx, const char *path, const char *text, const char *name,
                        const char *value, char **out)
{
    smelt_ynode *root;
    *out = NULL;
    int rc = smelt_yaml_parse(ctx, path, text, strlen(text), &root);
    if (rc != SMELT_OK)
        return rc;
    const smelt_ypair *params = smelt_ymap_find(root, "parameters");
    const smelt_ypair *item = params ? smelt_ymap_find(params->value, name) : NULL;
    if (item && item->value->kind != SMELT_YN_SCALAR)
        rc = smelt_yfail(ctx, SMELT_E_ARG, path, item->value->line, "--sweep %s: the config's "
                         "top-level '%s' is %s (a gradient or filter list); a sweep sets one "
                         "value", name, name, smelt_ynode_describe(item->value));
    else if (item)
        rc = replace_scalar(ctx, path, text, item, value, out);
    else if (params && params->value->kind == SMELT_YN_MAP && params->value->npairs > 0 &&
             params->value->pairs[0].key->line > params->key->line) {
        /* A block mapping: the new entry goes first, indented as the first one is. */
        int line = params->value->pairs[0].key->line;
        size_t at = line_start(text, line), indent = 0;
        while (at != (size_t)-1 && (text[at + indent] == ' ' || text[at + indent] == '\t'))
            indent++;
        size_t len = indent + strlen(name) + strlen(value) + 4;
        char *entry = malloc(len);
        if (!entry || at == (size_t)-1) {
            free(entry);
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        } else {
            snprintf(entry, len, "%.*s%s: %s\n", (int)indent, text + at, name, value);
            *out = splice(text, at, 0, entry);
            free(entry);
            rc = *out ? SMELT_OK : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        }
    } else if (params && !(params->value->kind == SMELT_YN_SCALAR && !params->value->len))
        rc = smelt_yfail(ctx, SMELT_E_ARG, path, params->key->line, "--sweep %s: cannot add '%s' "
                         "to this top-level 'parameters:' (write it as a block mapping, one "
                         "parameter per line)", name, name);
    else if (params)
        rc = smelt_yfail(ctx, SMELT_E_ARG, path, params->key->line, "--sweep %s: the top-level "
                         "'parameters:' is empty; give it '%s: VALUE' to sweep", name, name);
    else {
        size_t tl = strlen(text), len = tl + strlen(name) + strlen(value) + 32;
        if ((*out = malloc(len)))
            snprintf(*out, len, "%s%sparameters:\n  %s: %s\n", text,
                     tl && text[tl - 1] != '\n' ? "\n" : "", name, value);
        rc = *out ? SMELT_OK : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    smelt_ynode_free(root);
    return rc;
}

/* Adds one output: its plan from config text (path names it), its directory and label. */
static int add_output(smelt_ctx *ctx, smelt_merge_group *group, const char *path,
                      const char *text, const smelt_plan_options *popts, char *out_dir,
                      char *label)
{
    int rc = group_grow(ctx, group);
    if (rc != SMELT_OK) {
        free(out_dir);
        free(label);
        return rc;
    }
    size_t o = group->n - 1;
    group->out_dirs[o] = out_dir;
    group->labels[o] = label;
    if (!label)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    smelt_merge_spec *spec;
    rc = smelt_config_parse(ctx, path, text, strlen(text), &spec);
    if (rc == SMELT_OK)
        rc = smelt_plan_build(ctx, spec, popts, &group->plans[o]);
    return rc;
}

/* The output directory name of a model reference: its last path component (trailing slashes
 * aside), "model-K" (K from 1) when that is empty, "." or "..", made unique among names[0..k)
 * with "-2", "-3", ... (malloc'd; NULL when out of memory). */
static char *model_dir_name(const char *ref, size_t k, char *const *names)
{
    size_t len = strlen(ref);
    while (len > 1 && ref[len - 1] == '/')
        len--;
    const char *start = ref + len;
    while (start > ref && start[-1] != '/')
        start--;
    size_t n = (size_t)(ref + len - start);
    char *stem = (n == 0 || (n == 1 && start[0] == '.') || (n == 2 && !strncmp(start, "..", 2)))
                     ? NULL
                     : strndup(start, n);
    char fallback[32];
    snprintf(fallback, sizeof fallback, "model-%zu", k + 1);
    const char *base = stem ? stem : fallback;
    size_t cap = strlen(base) + 24;
    char *name = malloc(cap);
    for (unsigned suffix = 1; name; suffix++) {
        if (suffix == 1)
            snprintf(name, cap, "%s", base);
        else
            snprintf(name, cap, "%s-%u", base, suffix);
        size_t i = 0;
        while (i < k && strcmp(names[i], name))
            i++;
        if (i == k)
            break;
    }
    free(stem);
    return name;
}

/* "LABEL (output NAME)", malloc'd. */
static char *output_label(const char *label, const char *name)
{
    size_t len = strlen(label) + strlen(name) + 16;
    char *out = malloc(len);
    if (out)
        snprintf(out, len, "%s (output %s)", label, name);
    return out;
}

/* A method that writes one output per model (emr): output `first`, planned as model 0's,
 * moves to out_dir/NAME0 and the other models' plans follow it, one per model, into
 * out_dir/NAME (model_dir_name), all from the same config text. */
static int expand_per_model(smelt_ctx *ctx, smelt_merge_group *group, size_t first,
                            const char *path, const char *text, const smelt_plan_options *popts)
{
    const smelt_plan *plan = group->plans[first];
    if (plan->nslices != 1 || plan->slices[0].index != -1)
        return smelt_fail(ctx, SMELT_E_CONFIG, "%s: method '%s' writes one model per entry of "
                          "models:; it does not take slices:", path, plan->method->name);
    const smelt_plan_slice *sl = &plan->slices[0];
    size_t n = sl->ninputs - (size_t)sl->has_base;
    const char *const *refs = sl->input_names + sl->has_base;
    char **names = calloc(n, sizeof *names);
    char *parent = group->out_dirs[first], *parent_label = group->labels[first];
    int rc = names ? SMELT_OK : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t k = 0; rc == SMELT_OK && k < n; k++)
        if (!(names[k] = model_dir_name(refs[k], k, names)))
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK) {
        group->out_dirs[first] = parent ? smelt_path_join(parent, names[0]) : NULL;
        group->labels[first] = output_label(parent_label, names[0]);
        if ((parent && !group->out_dirs[first]) || !group->labels[first])
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    for (size_t k = 1; rc == SMELT_OK && k < n; k++) {
        smelt_plan_options mine = *popts;
        mine.output = k;
        char *dir = parent ? smelt_path_join(parent, names[k]) : NULL;
        rc = add_output(ctx, group, path, text, &mine, dir, output_label(parent_label, names[k]));
        if (rc == SMELT_OK && parent && !dir)
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    for (size_t k = 0; names && k < n; k++)
        free(names[k]);
    free(names);
    free(parent);
    free(parent_label);
    return rc;
}

/* add_output, then for a method with one output per model, the other models' outputs. */
static int add_config(smelt_ctx *ctx, smelt_merge_group *group, const char *path,
                      const char *text, const smelt_plan_options *popts, char *out_dir,
                      char *label)
{
    size_t first = group->n;
    int rc = add_output(ctx, group, path, text, popts, out_dir, label);
    if (rc != SMELT_OK || !group->plans[first]->method->outputs_per_model)
        return rc;
    return expand_per_model(ctx, group, first, path, text, popts);
}

/* The line of a model, slice or source entry of spec that sets parameter `name` (those take
 * precedence over the top level, so a sweep of the top-level value would not reach the tensors
 * they cover), or 0. */
static int set_below_top(const smelt_merge_spec *spec, const char *name)
{
    const smelt_pvalue *v;
    for (size_t i = 0; i < spec->nmodels; i++)
        if ((v = smelt_params_find(&spec->models[i].params, name)))
            return v->line;
    for (size_t s = 0; s < spec->nslices; s++) {
        if ((v = smelt_params_find(&spec->slices[s].params, name)))
            return v->line;
        for (size_t j = 0; j < spec->slices[s].nsources; j++)
            if ((v = smelt_params_find(&spec->slices[s].sources[j].params, name)))
                return v->line;
    }
    return 0;
}

/* The swept parameter checked against method m's schema and the config, and its values typed
 * the way the config parser will type them. */
static int sweep_check(smelt_ctx *ctx, const smelt_merge_spec *spec, const smelt_method *m,
                       const char *name, char **values, size_t nvalues)
{
    int p = smelt_method_param_index(m, name);
    if (p < 0) {
        char names[512] = "";
        for (size_t i = 0; i < m->nparams; i++)
            if (!m->params[i].per_model)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
                         names[0] ? ", " : "", m->params[i].name);
        return smelt_fail(ctx, SMELT_E_ARG, "--sweep %s: %s has no parameter '%s' (a sweep "
                          "takes one of its top-level parameters: %s)", name, m->name, name,
                          names[0] ? names : "it has none");
    }
    if (m->params[p].per_model)
        return smelt_fail(ctx, SMELT_E_ARG, "--sweep %s: '%s' is a per-model parameter of %s "
                          "(set in each model's entry); a sweep takes a top-level one", name,
                          name, m->name);
    int line = set_below_top(spec, name);
    if (line)
        return smelt_yfail(ctx, SMELT_E_ARG, spec->path, line, "--sweep %s: the config sets "
                           "'%s' here too, which takes precedence over the top-level value a "
                           "sweep sets; give it only under the top-level parameters:", name,
                           name);
    for (size_t i = 0; i < nvalues; i++) {
        smelt_ynode scalar = {.kind = SMELT_YN_SCALAR, .text = values[i],
                              .len = strlen(values[i]), .plain = 1};
        smelt_yscalar_type type = smelt_yscalar_resolve(&scalar, NULL);
        int ok = m->params[p].kind == SMELT_PARAM_BOOL
                     ? type == SMELT_YS_BOOL
                     : (type == SMELT_YS_INT || type == SMELT_YS_FLOAT);
        if (!ok || strpbrk(values[i], "/\n#:{}[]"))
            return smelt_fail(ctx, SMELT_E_ARG, "--sweep %s: '%s' is not %s as YAML reads it%s",
                              name, values[i],
                              m->params[p].kind == SMELT_PARAM_BOOL ? "true or false"
                                                                    : "a number",
                              m->params[p].kind == SMELT_PARAM_BOOL ? ""
                                                                    : " (write 1e-3 as 1.0e-3)");
    }
    return SMELT_OK;
}

/* A sweep: one output per value, OUT/NAME=V, each planned from the rewritten config. */
static int build_sweep(smelt_ctx *ctx, const char *path, const char *text,
                       const smelt_group_source *src, const smelt_plan_options *popts,
                       smelt_merge_group *group)
{
    char *name, **values;
    size_t nvalues;
    smelt_merge_spec *spec = NULL;
    int rc = smelt_sweep_parse(ctx, src->sweep, &name, &values, &nvalues);
    if (rc == SMELT_OK)
        rc = smelt_config_parse(ctx, path, text, strlen(text), &spec);
    const smelt_method *m = rc == SMELT_OK ? smelt_method_find(spec->merge_method) : NULL;
    if (rc == SMELT_OK && !m) { /* the planner's message for an unknown method */
        smelt_plan *plan = NULL;
        rc = smelt_plan_build(ctx, spec, popts, &plan);
        spec = NULL;
        smelt_plan_free(plan);
        if (rc == SMELT_OK)
            rc = smelt_fail(ctx, SMELT_E_INTERNAL, "%s: no method", path);
    }
    if (rc == SMELT_OK)
        rc = sweep_check(ctx, spec, m, name, values, nvalues);
    smelt_spec_free(spec);
    for (size_t i = 0; rc == SMELT_OK && i < nvalues; i++) {
        char *rewritten, *label = malloc(strlen(name) + strlen(values[i]) + 2);
        if (!label) {
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
            break;
        }
        sprintf(label, "%s=%s", name, values[i]);
        rc = smelt_sweep_rewrite(ctx, path, text, name, values[i], &rewritten);
        if (rc != SMELT_OK) {
            free(label);
            break;
        }
        char *dir = src->out_dir ? smelt_path_join(src->out_dir, label) : NULL;
        rc = add_config(ctx, group, path, rewritten, popts, dir, label);
        if (rc == SMELT_OK && src->out_dir && !dir)
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        if (rc != SMELT_OK)
            smelt_error_prefix(ctx, "--sweep %s=%s: ", name, values[i]);
        free(rewritten);
    }
    free(name);
    for (size_t i = 0; i < nvalues; i++)
        free(values[i]);
    free(values);
    return rc;
}

/* path relative to the batch file's directory (absolute paths stay). */
static char *batch_relative(const char *batch, const char *path)
{
    const char *slash = strrchr(batch, '/');
    if (path[0] == '/' || !slash)
        return strdup(path);
    char *dir = strndup(batch, (size_t)(slash - batch) + (slash == batch));
    char *joined = dir ? smelt_path_join(dir, path) : NULL;
    free(dir);
    return joined;
}

/* The value of `key` in a batch entry, a non-empty string. */
static int batch_string(smelt_ctx *ctx, const char *batch, const smelt_ynode *entry,
                        const char *key, const char **out)
{
    const smelt_ypair *p = smelt_ymap_find(entry, key);
    if (!p || p->value->kind != SMELT_YN_SCALAR || !p->value->len)
        return smelt_yfail(ctx, SMELT_E_CONFIG, batch, p ? p->value->line : entry->line,
                           "a batch entry needs '%s: PATH' (entries are {config: CONFIG.yml, "
                           "out: OUT_DIR})", key);
    *out = p->value->text;
    return SMELT_OK;
}

/* A batch: a YAML list of {config: CONFIG.yml, out: OUT_DIR}, paths relative to the file. */
static int build_batch(smelt_ctx *ctx, const smelt_group_source *src,
                       const smelt_plan_options *popts, smelt_merge_group *group)
{
    const char *batch = src->batch_path;
    char *text;
    size_t len;
    smelt_ynode *root = NULL;
    int rc = smelt_read_file(ctx, batch, SMELT_YAML_MAX_BYTES, &text, &len);
    if (rc == SMELT_OK)
        rc = smelt_yaml_parse(ctx, batch, text, len, &root);
    if (rc == SMELT_OK && (root->kind != SMELT_YN_SEQ || root->nitems == 0))
        rc = smelt_yfail(ctx, SMELT_E_CONFIG, batch, root->line, "a batch file is a non-empty "
                         "list of {config: CONFIG.yml, out: OUT_DIR}");
    for (size_t i = 0; rc == SMELT_OK && i < root->nitems; i++) {
        const smelt_ynode *entry = root->items[i];
        const char *config, *out;
        if (entry->kind != SMELT_YN_MAP)
            rc = smelt_yfail(ctx, SMELT_E_CONFIG, batch, entry->line, "entry %zu is %s, not "
                             "{config: CONFIG.yml, out: OUT_DIR}", i + 1,
                             smelt_ynode_describe(entry));
        for (size_t k = 0; rc == SMELT_OK && k < entry->npairs; k++)
            if (strcmp(entry->pairs[k].key->text, "config") &&
                strcmp(entry->pairs[k].key->text, "out"))
                rc = smelt_yfail(ctx, SMELT_E_CONFIG, batch, entry->pairs[k].key->line,
                                 "unknown key '%s' in a batch entry (it takes config and out)",
                                 entry->pairs[k].key->text);
        if (rc != SMELT_OK || (rc = batch_string(ctx, batch, entry, "config", &config)) ||
            (rc = batch_string(ctx, batch, entry, "out", &out)))
            break;
        char *config_path = batch_relative(batch, config);
        char *out_dir = batch_relative(batch, out);
        char *config_text = NULL;
        size_t config_len;
        rc = config_path && out_dir ? SMELT_OK : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        for (size_t o = 0; rc == SMELT_OK && o < group->n; o++)
            if (!strcmp(group->out_dirs[o], out_dir))
                rc = smelt_yfail(ctx, SMELT_E_CONFIG, batch, entry->line, "entry %zu writes to "
                                 "%s, as entry %zu does", i + 1, out_dir, o + 1);
        int planned = rc == SMELT_OK; /* from here on, the message is about the config */
        if (rc == SMELT_OK)
            rc = smelt_read_file(ctx, config_path, SMELT_YAML_MAX_BYTES, &config_text,
                                 &config_len);
        if (rc == SMELT_OK) {
            rc = add_config(ctx, group, config_path, config_text, popts, out_dir,
                            strdup(config_path));
            out_dir = NULL;
        }
        if (rc != SMELT_OK && planned)
            smelt_error_prefix(ctx, "%s: entry %zu: ", batch, i + 1);
        free(config_text);
        free(config_path);
        free(out_dir);
    }
    smelt_ynode_free(root);
    free(text);
    return rc;
}

int smelt_group_build(smelt_ctx *ctx, const smelt_group_source *src,
                      const smelt_plan_options *popts_in, smelt_merge_group *group)
{
    *group = (smelt_merge_group){0};
    smelt_plan_options shared = *popts_in;
    shared.models = &group->models;
    const smelt_plan_options *popts = &shared;
    int rc;
    if (src->batch_path && src->sweep)
        return smelt_fail(ctx, SMELT_E_ARG, "--sweep and --batch do not go together (give each "
                          "batch entry its own config)");
    if (src->batch_path)
        rc = build_batch(ctx, src, popts, group);
    else {
        const char *path = src->config_path ? src->config_path : "<config text>";
        char *text = NULL;
        size_t len;
        if (src->config_text)
            text = strdup(src->config_text);
        else if (!src->config_path)
            return smelt_fail(ctx, SMELT_E_ARG, "no config: give a config path or config_text");
        rc = text ? SMELT_OK
             : src->config_text ? smelt_fail(ctx, SMELT_E_NOMEM, "out of memory")
                                : smelt_read_file(ctx, path, SMELT_YAML_MAX_BYTES, &text, &len);
        if (rc == SMELT_OK && src->sweep)
            rc = build_sweep(ctx, path, text, src, popts, group);
        else if (rc == SMELT_OK)
            rc = add_config(ctx, group, path, text, popts, smelt_strdup(src->out_dir),
                            strdup(path));
        free(text);
    }
    if (rc == SMELT_OK)
        rc = smelt_group_check(ctx, (const smelt_plan *const *)group->plans,
                               (const char *const *)group->labels, group->n);
    if (rc != SMELT_OK)
        smelt_group_free(group);
    return rc;
}
