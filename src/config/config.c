/* mergekit YAML → smelt_merge_spec.
 *
 * The accepted shape follows mergekit's pydantic schema (mergekit/config.py: MergeConfiguration,
 * InputModelDefinition, ConditionalParameter, ParameterSetting) over PyYAML safe_load typing,
 * with two deliberate differences: unknown keys are errors (pydantic silently ignores them, so a
 * typo such as `paramters:` would merge with defaults), and duplicate keys are errors (PyYAML
 * keeps the last one). */
#include "config/config.h"

#include "common/util.h"
#include "config/yaml_tree.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cfg {
    smelt_ctx *ctx;
    const char *path;
} cfg;

#define cfail(c, status, line, ...) smelt_yfail((c)->ctx, status, (c)->path, line, __VA_ARGS__)

static int nomem(const cfg *c, int line) { return cfail(c, SMELT_E_NOMEM, line, "out of memory"); }

/* A key mergekit has and smelt does not implement yet, with what to do instead. */
typedef struct later_key {
    const char *key;
    const char *hint;
} later_key;

static int in_list(const char *const *list, const char *s)
{
    for (; list && *list; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

/* Every key of `map` must be in `allowed`; keys in `later` are SMELT_E_UNSUPPORTED. `where` is a
 * message prefix such as "models[1]: " (or ""). */
static int check_keys(const cfg *c, const smelt_ynode *map, const char *where,
                      const char *const *allowed, const later_key *later)
{
    for (size_t i = 0; i < map->npairs; i++) {
        const smelt_ynode *key = map->pairs[i].key;
        for (const later_key *l = later; l && l->key; l++)
            if (strcmp(l->key, key->text) == 0)
                return cfail(c, SMELT_E_UNSUPPORTED, key->line, "%s'%s' is not supported yet%s",
                             where, key->text, l->hint);
        if (in_list(allowed, key->text))
            continue;
        char list[512] = "";
        for (const char *const *a = allowed; *a; a++) {
            size_t at = strlen(list);
            snprintf(list + at, sizeof list - at, "%s%s", a == allowed ? "" : ", ", *a);
        }
        return cfail(c, SMELT_E_CONFIG, key->line, "%sunknown key '%s' (allowed: %s)", where,
                     key->text, list);
    }
    return SMELT_OK;
}

/* A string-valued key: *out gets a copy, or stays NULL when the key is absent or null (mergekit's
 * Optional[str] takes null as absent). Like pydantic, a number or boolean is not a string. */
static int get_string(const cfg *c, const smelt_ynode *map, const char *where, const char *key,
                      char **out, int *line)
{
    const smelt_ypair *p = smelt_ymap_find(map, key);
    if (!p)
        return SMELT_OK;
    const smelt_ynode *v = p->value;
    if (line)
        *line = v->line;
    smelt_yscalar_type type = smelt_yscalar_resolve(v, NULL);
    if (v->kind == SMELT_YN_SCALAR && type == SMELT_YS_NULL)
        return SMELT_OK;
    if (v->kind != SMELT_YN_SCALAR || type != SMELT_YS_STRING)
        return cfail(c, SMELT_E_CONFIG, v->line, "%s'%s' must be a string, not %s%s", where, key,
                     smelt_ynode_describe(v), v->kind == SMELT_YN_SCALAR ? " (quote it)" : "");
    if (!(*out = smelt_strdup(v->text)))
        return nomem(c, v->line);
    return SMELT_OK;
}

/* mergekit's ModelReference: "path[@revision][+lora_path[@revision]]", or a mapping. */
static int get_model_ref(const cfg *c, const smelt_ynode *map, const char *where, const char *key,
                         char **out, int *line)
{
    const smelt_ypair *p = smelt_ymap_find(map, key);
    if (p && p->value->kind == SMELT_YN_MAP)
        return cfail(c, SMELT_E_UNSUPPORTED, p->value->line, "%s'%s': a model reference written "
                     "as a mapping is not supported yet (write it as a string)", where, key);
    int rc = get_string(c, map, where, key, out, line);
    if (rc != SMELT_OK || !*out)
        return rc;
    const char *ref = *out;
    int at = p->value->line;
    size_t plus = 0, ats = 0, ats_after = 0;
    for (const char *s = ref; *s; s++) {
        plus += *s == '+';
        if (*s == '@')
            *(plus ? &ats_after : &ats) += 1;
    }
    if (!*ref)
        return cfail(c, SMELT_E_CONFIG, at, "%s'%s' is empty", where, key);
    /* "model+lora" is a base with a LoRA adapter (format/lora.h); the planner opens both. */
    if (plus > 1)
        return cfail(c, SMELT_E_CONFIG, at, "%s'%s': cannot parse model reference '%s' (more "
                     "than one '+')", where, key, ref);
    if (plus == 1 && (ref[0] == '+' || ref[strlen(ref) - 1] == '+'))
        return cfail(c, SMELT_E_CONFIG, at, "%s'%s': '%s' needs a model before the '+' and an "
                     "adapter after it", where, key, ref);
    if (ats > 1 || ats_after > 1)
        return cfail(c, SMELT_E_CONFIG, at, "%s'%s': cannot parse model reference '%s' (more "
                     "than one '@'%s)", where, key, ref, plus ? " on one side of the '+'" : "");
    return SMELT_OK;
}

static void pvalue_clear(smelt_pvalue *v)
{
    free(v->string);
    free(v->gradient);
    for (size_t i = 0; i < v->nfilters; i++) {
        free(v->filters[i].filter);
        if (v->filters[i].value) {
            pvalue_clear(v->filters[i].value);
            free(v->filters[i].value);
        }
    }
    free(v->filters);
    memset(v, 0, sizeof *v);
}

static int bad_value(const cfg *c, const char *where, const char *name, const smelt_ynode *n)
{
    return cfail(c, SMELT_E_CONFIG, n->line, "%sparameter '%s': expected a number, a boolean, a "
                 "string, a list of numbers (a gradient) or a list of {filter, value}, not %s",
                 where, name, smelt_ynode_describe(n));
}

static int parse_pvalue(const cfg *c, const char *where, const char *name, const smelt_ynode *n,
                        int allow_filters, smelt_pvalue *out);

/* One {filter, value} mapping (mergekit's ConditionalParameter). */
static int parse_filter(const cfg *c, const char *where, const char *name, const smelt_ynode *n,
                        smelt_pfilter *out)
{
    static const char *const keys[] = {"filter", "value", NULL};
    char prefix[600];
    snprintf(prefix, sizeof prefix, "%sparameter '%s': ", where, name);
    int rc = check_keys(c, n, prefix, keys, NULL);
    if (rc != SMELT_OK)
        return rc;
    const smelt_ypair *value = smelt_ymap_find(n, "value");
    if (!value)
        return cfail(c, SMELT_E_CONFIG, n->line, "%sa {filter, value} entry needs 'value'",
                     prefix);
    if ((rc = get_string(c, n, prefix, "filter", &out->filter, NULL)) != SMELT_OK)
        return rc;
    if (!(out->value = calloc(1, sizeof *out->value)))
        return nomem(c, n->line);
    return parse_pvalue(c, where, name, value->value, 0, out->value);
}

static int parse_scalar(const cfg *c, const char *where, const char *name, const smelt_ynode *n,
                        smelt_pvalue *out)
{
    double number = 0;
    switch (smelt_yscalar_resolve(n, &number)) {
    case SMELT_YS_INT:
    case SMELT_YS_FLOAT:
        out->kind = SMELT_PV_NUMBER;
        out->number = number;
        return SMELT_OK;
    case SMELT_YS_BOOL:
        out->kind = SMELT_PV_BOOL;
        out->number = number;
        out->boolean = number != 0;
        return SMELT_OK;
    case SMELT_YS_STRING:
        out->kind = SMELT_PV_STRING;
        if (!(out->string = smelt_strdup(n->text)))
            return nomem(c, n->line);
        return SMELT_OK;
    default:
        return bad_value(c, where, name, n);
    }
}

/* A list of numbers (mergekit's List[float]; pydantic turns booleans into 0/1 there too). */
static int parse_gradient(const cfg *c, const char *where, const char *name, const smelt_ynode *n,
                          smelt_pvalue *out)
{
    size_t strings = 0;
    for (size_t i = 0; i < n->nitems; i++)
        strings += smelt_yscalar_resolve(n->items[i], NULL) == SMELT_YS_STRING &&
                   n->items[i]->kind == SMELT_YN_SCALAR;
    if (strings == n->nitems)
        return cfail(c, SMELT_E_UNSUPPORTED, n->line, "%sparameter '%s': a list of strings is "
                     "not supported yet (a gradient is a list of numbers)", where, name);
    out->kind = SMELT_PV_GRADIENT;
    if (!(out->gradient = calloc(n->nitems, sizeof *out->gradient)))
        return nomem(c, n->line);
    out->ngradient = n->nitems;
    for (size_t i = 0; i < n->nitems; i++) {
        const smelt_ynode *item = n->items[i];
        smelt_yscalar_type type = item->kind == SMELT_YN_SCALAR
                                      ? smelt_yscalar_resolve(item, &out->gradient[i])
                                      : SMELT_YS_INVALID;
        if (item->kind != SMELT_YN_SCALAR ||
            (type != SMELT_YS_INT && type != SMELT_YS_FLOAT && type != SMELT_YS_BOOL))
            return cfail(c, SMELT_E_CONFIG, item->line, "%sparameter '%s': a gradient must hold "
                         "only numbers, but item %zu is %s", where, name, i + 1,
                         smelt_ynode_describe(item));
    }
    return SMELT_OK;
}

/* Fills *out (zeroed here); on failure *out is left cleared. */
static int parse_pvalue(const cfg *c, const char *where, const char *name, const smelt_ynode *n,
                        int allow_filters, smelt_pvalue *out)
{
    memset(out, 0, sizeof *out);
    out->line = n->line;
    int rc;
    if (n->kind == SMELT_YN_SCALAR) {
        rc = parse_scalar(c, where, name, n, out);
    } else if (n->kind == SMELT_YN_MAP) {
        if (!allow_filters)
            return cfail(c, SMELT_E_CONFIG, n->line, "%sparameter '%s': 'value' must be a "
                         "scalar or a list of numbers, not a mapping", where, name);
        out->kind = SMELT_PV_FILTERED;
        if (!(out->filters = calloc(1, sizeof *out->filters)))
            return nomem(c, n->line);
        out->nfilters = 1;
        rc = parse_filter(c, where, name, n, &out->filters[0]);
    } else if (n->nitems == 0) {
        return cfail(c, SMELT_E_CONFIG, n->line, "%sparameter '%s': an empty list (a gradient "
                     "needs at least one number)", where, name);
    } else if (n->items[0]->kind == SMELT_YN_MAP && allow_filters) {
        out->kind = SMELT_PV_FILTERED;
        if (!(out->filters = calloc(n->nitems, sizeof *out->filters)))
            return nomem(c, n->line);
        rc = SMELT_OK;
        for (size_t i = 0; i < n->nitems && rc == SMELT_OK; i++) {
            out->nfilters++;
            if (n->items[i]->kind != SMELT_YN_MAP)
                rc = cfail(c, SMELT_E_CONFIG, n->items[i]->line, "%sparameter '%s': a list of "
                           "{filter, value} must hold only mappings, but item %zu is %s", where,
                           name, i + 1, smelt_ynode_describe(n->items[i]));
            else
                rc = parse_filter(c, where, name, n->items[i], &out->filters[i]);
        }
    } else {
        rc = parse_gradient(c, where, name, n, out);
    }
    if (rc != SMELT_OK)
        pvalue_clear(out);
    return rc;
}

static void params_clear(smelt_params *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->items[i].name);
        pvalue_clear(&p->items[i].value);
    }
    free(p->items);
    p->items = NULL;
    p->n = 0;
}

/* A `parameters:` mapping (absent or null = none). */
static int parse_params(const cfg *c, const smelt_ynode *map, const char *where,
                        smelt_params *out)
{
    const smelt_ypair *p = smelt_ymap_find(map, "parameters");
    if (!p || (p->value->kind == SMELT_YN_SCALAR &&
               smelt_yscalar_resolve(p->value, NULL) == SMELT_YS_NULL))
        return SMELT_OK;
    const smelt_ynode *n = p->value;
    if (n->kind != SMELT_YN_MAP)
        return cfail(c, SMELT_E_CONFIG, n->line, "%s'parameters' must be a mapping, not %s",
                     where, smelt_ynode_describe(n));
    if (n->npairs && !(out->items = calloc(n->npairs, sizeof *out->items)))
        return nomem(c, n->line);
    for (size_t i = 0; i < n->npairs; i++) {
        smelt_param *item = &out->items[out->n++];
        if (!(item->name = smelt_strdup(n->pairs[i].key->text)))
            return nomem(c, n->pairs[i].key->line);
        int rc = parse_pvalue(c, where, item->name, n->pairs[i].value, 1, &item->value);
        if (rc != SMELT_OK)
            return rc;
    }
    return SMELT_OK;
}

static int parse_model(const cfg *c, const smelt_ynode *n, size_t index, smelt_model_spec *out)
{
    static const char *const keys[] = {"model", "parameters", NULL};
    char where[64];
    snprintf(where, sizeof where, "models[%zu]: ", index);
    out->line = n->line;
    if (n->kind != SMELT_YN_MAP)
        return cfail(c, SMELT_E_CONFIG, n->line, "%sexpected a mapping {model: ..., parameters: "
                     "...}, not %s", where, smelt_ynode_describe(n));
    int rc = check_keys(c, n, where, keys, NULL);
    if (rc == SMELT_OK)
        rc = get_model_ref(c, n, where, "model", &out->model, NULL);
    if (rc == SMELT_OK && !out->model)
        rc = cfail(c, SMELT_E_CONFIG, n->line, "%s'model' is required", where);
    if (rc == SMELT_OK)
        rc = parse_params(c, n, where, &out->params);
    return rc;
}

static int parse_slices(const cfg *c, const smelt_ynode *list, smelt_merge_spec *spec);

static int is_null(const smelt_ypair *p)
{
    return p && p->value->kind == SMELT_YN_SCALAR &&
           smelt_yscalar_resolve(p->value, NULL) == SMELT_YS_NULL;
}

/* `models:` or `slices:`: mergekit requires exactly one of them. */
static int parse_inputs(const cfg *c, const smelt_ynode *root, smelt_merge_spec *spec)
{
    const smelt_ypair *p = smelt_ymap_find(root, "models");
    const smelt_ypair *s = smelt_ymap_find(root, "slices");
    int line = p ? p->value->line : s ? s->value->line : root->line;
    if (is_null(p))
        p = NULL;
    if (is_null(s))
        s = NULL;
    if (p && s)
        return cfail(c, SMELT_E_CONFIG, s->key->line, "give either 'models' or 'slices', not "
                     "both");
    if (!p && !s)
        return cfail(c, SMELT_E_CONFIG, line, "'models' is required (a list of {model: "
                     "..., parameters: ...}), or 'slices' (a list of {sources: [...]})");
    if (s)
        return parse_slices(c, s->value, spec);
    const smelt_ynode *n = p->value;
    if (n->kind != SMELT_YN_SEQ)
        return cfail(c, SMELT_E_CONFIG, n->line, "'models' must be a list of {model: ..., "
                     "parameters: ...}, not %s", smelt_ynode_describe(n));
    if (n->nitems == 0)
        return cfail(c, SMELT_E_CONFIG, n->line, "'models' is empty (list at least one model)");
    if (!(spec->models = calloc(n->nitems, sizeof *spec->models)))
        return nomem(c, n->line);
    for (size_t i = 0; i < n->nitems; i++) {
        spec->nmodels = i + 1; /* counted first so that a failure frees the partial entry */
        int rc = parse_model(c, n->items[i], i, &spec->models[i]);
        if (rc != SMELT_OK)
            return rc;
    }
    return SMELT_OK;
}

/* A YAML integer (PyYAML typing) that fits a long. */
static int get_int(const cfg *c, const smelt_ynode *n, const char *where, long *out)
{
    double number;
    if (n->kind != SMELT_YN_SCALAR || smelt_yscalar_resolve(n, &number) != SMELT_YS_INT ||
        fabs(number) > 1e15)
        return cfail(c, SMELT_E_CONFIG, n->line, "%sexpected an integer, not %s", where,
                     smelt_ynode_describe(n));
    *out = (long)number;
    return SMELT_OK;
}

/* mergekit's InputSliceDefinition: {model, layer_range: [begin, end], parameters}. */
static int parse_source(const cfg *c, const smelt_ynode *n, const char *slice_where, size_t index,
                        smelt_source_spec *out)
{
    static const char *const keys[] = {"model", "layer_range", "parameters", NULL};
    char where[96];
    snprintf(where, sizeof where, "%ssources[%zu]: ", slice_where, index);
    out->line = n->line;
    if (n->kind != SMELT_YN_MAP)
        return cfail(c, SMELT_E_CONFIG, n->line, "%sexpected a mapping {model: ..., layer_range: "
                     "[a, b]}, not %s", where, smelt_ynode_describe(n));
    int rc = check_keys(c, n, where, keys, NULL);
    if (rc == SMELT_OK)
        rc = get_model_ref(c, n, where, "model", &out->model, NULL);
    if (rc == SMELT_OK && !out->model)
        rc = cfail(c, SMELT_E_CONFIG, n->line, "%s'model' is required", where);
    if (rc != SMELT_OK)
        return rc;
    const smelt_ypair *range = smelt_ymap_find(n, "layer_range");
    if (!range)
        return cfail(c, SMELT_E_CONFIG, n->line, "%s'layer_range' is required ([first, "
                     "one past the last])", where);
    const smelt_ynode *r = range->value;
    if (r->kind != SMELT_YN_SEQ || r->nitems != 2)
        return cfail(c, SMELT_E_CONFIG, r->line, "%s'layer_range' must be a list of two integers "
                     "[first, one past the last], not %s", where, smelt_ynode_describe(r));
    char what[128];
    snprintf(what, sizeof what, "%slayer_range: ", where);
    if ((rc = get_int(c, r->items[0], what, &out->layer_begin)) != SMELT_OK ||
        (rc = get_int(c, r->items[1], what, &out->layer_end)) != SMELT_OK)
        return rc;
    if (out->layer_begin < 0 || out->layer_end < out->layer_begin)
        return cfail(c, SMELT_E_CONFIG, r->line, "%slayer_range [%ld, %ld] must satisfy 0 <= first "
                     "<= end", where, out->layer_begin, out->layer_end);
    return parse_params(c, n, where, &out->params);
}

/* mergekit's OutputSliceDefinition: {sources, base_model, parameters}. */
static int parse_slice(const cfg *c, const smelt_ynode *n, size_t index, smelt_slice_spec *out)
{
    static const char *const keys[] = {"sources", "base_model", "parameters", NULL};
    static const later_key later[] = {{"residual_weight", ""}, {NULL, NULL}};
    char where[64];
    snprintf(where, sizeof where, "slices[%zu]: ", index);
    out->line = n->line;
    if (n->kind != SMELT_YN_MAP)
        return cfail(c, SMELT_E_CONFIG, n->line, "%sexpected a mapping {sources: [...]}, not %s",
                     where, smelt_ynode_describe(n));
    int rc = check_keys(c, n, where, keys, later);
    if (rc == SMELT_OK)
        rc = get_model_ref(c, n, where, "base_model", &out->base_model, NULL);
    if (rc == SMELT_OK)
        rc = parse_params(c, n, where, &out->params);
    if (rc != SMELT_OK)
        return rc;
    const smelt_ypair *p = smelt_ymap_find(n, "sources");
    if (!p || p->value->kind != SMELT_YN_SEQ || p->value->nitems == 0)
        return cfail(c, SMELT_E_CONFIG, p ? p->value->line : n->line, "%s'sources' must be a "
                     "non-empty list of {model: ..., layer_range: [a, b]}", where);
    const smelt_ynode *list = p->value;
    if (!(out->sources = calloc(list->nitems, sizeof *out->sources)))
        return nomem(c, list->line);
    for (size_t i = 0; i < list->nitems; i++) {
        out->nsources = i + 1;
        if ((rc = parse_source(c, list->items[i], where, i, &out->sources[i])) != SMELT_OK)
            return rc;
    }
    return SMELT_OK;
}

static int parse_slices(const cfg *c, const smelt_ynode *list, smelt_merge_spec *spec)
{
    if (list->kind != SMELT_YN_SEQ || list->nitems == 0)
        return cfail(c, SMELT_E_CONFIG, list->line, "'slices' must be a non-empty list of "
                     "{sources: [...]}, not %s", smelt_ynode_describe(list));
    if (!(spec->slices = calloc(list->nitems, sizeof *spec->slices)))
        return nomem(c, list->line);
    for (size_t i = 0; i < list->nitems; i++) {
        spec->nslices = i + 1;
        int rc = parse_slice(c, list->items[i], i, &spec->slices[i]);
        if (rc != SMELT_OK)
            return rc;
    }
    return SMELT_OK;
}

static int parse_top(const cfg *c, const smelt_ynode *root, smelt_merge_spec *spec)
{
    static const char *const keys[] = {"merge_method", "base_model", "models", "slices",
                                       "parameters", "dtype", "out_dtype", "tokenizer_source",
                                       "chat_template", "name", NULL};
    static const later_key later[] = {
        {"modules", " (list whole models under 'models', or layers under 'slices')"},
        {"tokenizer", " (use 'tokenizer_source')"},
        {NULL, NULL},
    };
    if (root->kind != SMELT_YN_MAP)
        return cfail(c, SMELT_E_CONFIG, root->line, "a config must be a mapping (merge_method: "
                     "..., models: ...), not %s", smelt_ynode_describe(root));
    int rc = check_keys(c, root, "", keys, later);
    if (rc != SMELT_OK)
        return rc;
    if ((rc = get_string(c, root, "", "merge_method", &spec->merge_method,
                         &spec->line_merge_method)) != SMELT_OK)
        return rc;
    if (!spec->merge_method)
        return cfail(c, SMELT_E_CONFIG, spec->line_merge_method ? spec->line_merge_method
                                                                 : root->line,
                     "'merge_method' is required (linear, ties, slerp, ...)");
    if ((rc = get_model_ref(c, root, "", "base_model", &spec->base_model,
                            &spec->line_base_model)) != SMELT_OK ||
        (rc = parse_inputs(c, root, spec)) != SMELT_OK ||
        (rc = parse_params(c, root, "", &spec->params)) != SMELT_OK ||
        (rc = get_string(c, root, "", "dtype", &spec->dtype, NULL)) != SMELT_OK ||
        (rc = get_string(c, root, "", "out_dtype", &spec->out_dtype, NULL)) != SMELT_OK ||
        (rc = get_string(c, root, "", "chat_template", &spec->chat_template, NULL)) != SMELT_OK)
        return rc;
    if (spec->chat_template && strcmp(spec->chat_template, "auto") != 0 &&
        !smelt_chat_template_builtin(spec->chat_template) &&
        !smelt_chat_template_is_jinja(spec->chat_template)) {
        const smelt_ypair *ct = smelt_ymap_find(root, "chat_template");
        return cfail(c, SMELT_E_CONFIG, ct->value->line, "chat_template '%s' is neither 'auto', a "
                     "built-in template (%s) nor a Jinja template", spec->chat_template,
                     smelt_chat_template_names());
    }
    /* mergekit: Union[Literal["union"], Literal["base"], ModelReference]. */
    const smelt_ypair *ts = smelt_ymap_find(root, "tokenizer_source");
    int keyword = ts && ts->value->kind == SMELT_YN_SCALAR &&
                  (strcmp(ts->value->text, "union") == 0 || strcmp(ts->value->text, "base") == 0);
    return keyword ? get_string(c, root, "", "tokenizer_source", &spec->tokenizer_source, NULL)
                   : get_model_ref(c, root, "", "tokenizer_source", &spec->tokenizer_source, NULL);
}

int smelt_config_parse(smelt_ctx *ctx, const char *path, const char *text, size_t len,
                       smelt_merge_spec **out)
{
    *out = NULL;
    cfg c = {ctx, path};
    smelt_ynode *root;
    int rc = smelt_yaml_parse(ctx, path, text, len, &root);
    if (rc != SMELT_OK)
        return rc;
    smelt_merge_spec *spec = calloc(1, sizeof *spec);
    if (!spec || !(spec->path = smelt_strdup(path)) || !(spec->text = malloc(len + 1))) {
        rc = nomem(&c, 1);
    } else {
        memcpy(spec->text, text, len);
        spec->text[len] = '\0';
        rc = parse_top(&c, root, spec);
    }
    smelt_ynode_free(root);
    if (rc != SMELT_OK) {
        smelt_spec_free(spec);
        return rc;
    }
    *out = spec;
    return SMELT_OK;
}

int smelt_config_load(smelt_ctx *ctx, const char *path, smelt_merge_spec **out)
{
    *out = NULL;
    char *text;
    size_t len;
    int rc = smelt_read_file(ctx, path, SMELT_YAML_MAX_BYTES, &text, &len);
    if (rc != SMELT_OK)
        return rc;
    rc = smelt_config_parse(ctx, path, text, len, out);
    free(text);
    return rc;
}

void smelt_spec_free(smelt_merge_spec *spec)
{
    if (!spec)
        return;
    for (size_t i = 0; i < spec->nmodels; i++) {
        free(spec->models[i].model);
        params_clear(&spec->models[i].params);
    }
    free(spec->models);
    for (size_t i = 0; i < spec->nslices; i++) {
        smelt_slice_spec *sl = &spec->slices[i];
        for (size_t j = 0; j < sl->nsources; j++) {
            free(sl->sources[j].model);
            params_clear(&sl->sources[j].params);
        }
        free(sl->sources);
        free(sl->base_model);
        params_clear(&sl->params);
    }
    free(spec->slices);
    params_clear(&spec->params);
    free(spec->path);
    free(spec->text);
    free(spec->merge_method);
    free(spec->base_model);
    free(spec->dtype);
    free(spec->out_dtype);
    free(spec->tokenizer_source);
    free(spec->chat_template);
    free(spec);
}

const smelt_pvalue *smelt_params_find(const smelt_params *params, const char *name)
{
    for (size_t i = 0; params && i < params->n; i++)
        if (strcmp(params->items[i].name, name) == 0)
            return &params->items[i].value;
    return NULL;
}

int smelt_pvalue_eval(const smelt_pvalue *value, const char *tensor_name, double layer_t,
                      double *out)
{
    switch (value->kind) {
    case SMELT_PV_NUMBER:
    case SMELT_PV_BOOL:
        *out = value->number;
        return 1;
    case SMELT_PV_GRADIENT: {
        if (value->ngradient == 0) /* the parser never makes one; a hand-built spec might */
            return 0;
        double t = layer_t > 1 ? 1 : layer_t >= 0 ? layer_t : 0; /* NaN → 0 */
        size_t last = value->ngradient - 1;
        double s = t * (double)last;
        size_t i0 = (size_t)floor(s);
        if (i0 > last)
            i0 = last;
        size_t i1 = i0 + 1 < last ? i0 + 1 : last;
        double frac = s - (double)i0;
        /* mergekit's expression, evaluated in the same order (no FMA: -ffp-contract=off). */
        *out = (1 - frac) * value->gradient[i0] + frac * value->gradient[i1];
        return 1;
    }
    case SMELT_PV_FILTERED:
        for (size_t i = 0; i < value->nfilters; i++) {
            const char *f = value->filters[i].filter;
            /* mergekit: `filter is None or filter == "*" or (tensor_name and filter in
             * tensor_name)` — an empty tensor name matches only the catch-alls. */
            if (!f || strcmp(f, "*") == 0 || (tensor_name && *tensor_name &&
                                               strstr(tensor_name, f)))
                return smelt_pvalue_eval(value->filters[i].value, tensor_name, layer_t, out);
        }
        return 0;
    case SMELT_PV_STRING:
    default:
        return -1;
    }
}
