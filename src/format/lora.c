/* PEFT LoRA adapters (see lora.h). */
#include "format/lora.h"

#include "common/util.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef unsigned long long ull;

#define CONFIG_NAME "adapter_config.json"
#define WEIGHTS_NAME "adapter_model.safetensors"
/* PeftModel saves its keys under this prefix (peft/peft_model.py: base_model.model.<module>). */
#define KEY_PREFIX "base_model.model."

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* The config and weights files of a reference. */
static int locate(smelt_ctx *ctx, const char *ref, char **config, char **weights)
{
    *config = *weights = NULL;
    char *dir = NULL;
    int rc = SMELT_OK;
    if (is_dir(ref)) {
        dir = smelt_strdup(ref);
    } else if (exists(ref)) {
        if (!ends_with(ref, ".safetensors"))
            return smelt_fail(ctx, SMELT_E_ARG, "%s: an adapter is a PEFT directory or an "
                              "adapter .safetensors file", ref);
        const char *slash = strrchr(ref, '/');
        dir = slash ? strndup(ref, (size_t)(slash - ref) + 1) : smelt_strdup(".");
        if (!(*weights = smelt_strdup(ref)))
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    } else if (smelt_hub_id_form(ref)) {
        rc = smelt_hub_resolve(ctx, ref, &dir);
    } else {
        return smelt_fail(ctx, SMELT_E_IO, "%s: no such adapter (not a directory, a file or a "
                          "hub id of the form org/name)", ref);
    }
    if (rc == SMELT_OK && !dir)
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK && !(*config = smelt_path_join(dir, CONFIG_NAME)))
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK && !*weights && !(*weights = smelt_path_join(dir, WEIGHTS_NAME)))
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK && !exists(*config))
        rc = smelt_fail(ctx, SMELT_E_IO, "%s: no %s here: a LoRA adapter needs its PEFT config",
                        dir, CONFIG_NAME);
    if (rc == SMELT_OK && !exists(*weights)) {
        char *bin = smelt_path_join(dir, "adapter_model.bin");
        rc = bin && exists(bin)
                 ? smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%s: the adapter is a PyTorch pickle "
                              "(adapter_model.bin); smelt reads adapter_model.safetensors only",
                              dir)
                 : smelt_fail(ctx, SMELT_E_IO, "%s: no %s here", dir, WEIGHTS_NAME);
        free(bin);
    }
    free(dir);
    return rc;
}

/* ---- adapter_config.json ---- */

static int config_bool(smelt_ctx *ctx, const char *path, json_t *root, const char *key, int *out)
{
    json_t *v = json_object_get(root, key);
    *out = 0;
    if (!v || json_is_null(v))
        return SMELT_OK;
    if (!json_is_boolean(v))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: \"%s\" must be true or false", path, key);
    *out = json_is_true(v);
    return SMELT_OK;
}

static int config_number(smelt_ctx *ctx, const char *path, json_t *root, const char *key,
                         double fallback, int integer, double *out)
{
    json_t *v = json_object_get(root, key);
    *out = fallback;
    if (!v || json_is_null(v))
        return SMELT_OK;
    if (!json_is_number(v) || (integer && !json_is_integer(v)))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: \"%s\" must be %s", path, key,
                          integer ? "an integer" : "a number");
    *out = json_number_value(v);
    if (!isfinite(*out) || (integer && (*out < 1 || *out > 1e6)))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: \"%s\" is %g; it must be %s", path, key, *out,
                          integer ? "a rank from 1 to 1000000" : "finite");
    return SMELT_OK;
}

/* rank_pattern / alpha_pattern: {pattern: number}; each pattern a regular expression PEFT
 * matches as re.match(rf"(.*\.)?({pattern})$", module) (peft/utils/other.py get_pattern_key). */
static int check_pattern(smelt_ctx *ctx, const char *path, json_t *root, const char *key,
                         int integer)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return SMELT_OK;
    if (!json_is_object(v))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: \"%s\" must be an object of module patterns",
                          path, key);
    const char *pat;
    json_t *val;
    json_object_foreach(v, pat, val) {
        if (!json_is_number(val) || (integer && !json_is_integer(val)) ||
            !isfinite(json_number_value(val)) || (integer && json_integer_value(val) < 1))
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: %s[\"%s\"] must be %s", path, key, pat,
                              integer ? "a positive integer rank" : "a finite number");
        if (smelt_lora_pattern_matches(pat, "") < 0)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: %s: \"%s\" is not a regular expression "
                              "smelt can read", path, key, pat);
    }
    return SMELT_OK;
}

int smelt_lora_pattern_matches(const char *pattern, const char *module)
{
    char *re = malloc(strlen(pattern) + 16);
    if (!re)
        return -1;
    sprintf(re, "^(.*\\.)?(%s)$", pattern);
    regex_t compiled;
    int bad = regcomp(&compiled, re, REG_EXTENDED | REG_NOSUB);
    free(re);
    if (bad)
        return -1;
    int match = regexec(&compiled, module, 0, NULL, 0) == 0;
    regfree(&compiled);
    return match;
}

/* The pattern's value for a module: the first pattern (in file order) that matches, as PEFT's
 * get_pattern_key picks it. */
static int pattern_value(json_t *root, const char *key, const char *module, double *out)
{
    json_t *v = json_object_get(root, key);
    const char *pat;
    json_t *val;
    if (!json_is_object(v))
        return 0;
    json_object_foreach(v, pat, val) {
        if (smelt_lora_pattern_matches(pat, module) == 1) {
            *out = json_number_value(val);
            return 1;
        }
    }
    return 0;
}

/* Keys of LoraConfig that make PEFT compute something smelt does not: refused when set. */
static int refuse_unsupported(smelt_ctx *ctx, const char *path, json_t *root)
{
    static const char *const when_true[] = {"lora_bias", "use_qalora"};
    static const char *const when_set[] = {"layer_replication", "trainable_token_indices",
                                           "alora_invocation_tokens", "target_parameters"};
    for (size_t i = 0; i < sizeof when_true / sizeof when_true[0]; i++)
        if (json_is_true(json_object_get(root, when_true[i])))
            return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%s: \"%s\": true is not supported (smelt "
                              "applies LoRA deltas W + scale * B @ A, and DoRA's rescaling)", path,
                              when_true[i]);
    for (size_t i = 0; i < sizeof when_set / sizeof when_set[0]; i++) {
        json_t *v = json_object_get(root, when_set[i]);
        if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0) &&
            !(json_is_object(v) && json_object_size(v) == 0))
            return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%s: \"%s\" is set; smelt applies plain "
                              "LoRA deltas only and cannot honour it", path, when_set[i]);
    }
    return SMELT_OK;
}

static int read_config(smelt_ctx *ctx, smelt_lora *l, json_t **out)
{
    json_t *root;
    int rc = smelt_json_load(ctx, l->config_path, 0, &root);
    if (rc != SMELT_OK)
        return rc;
    *out = root;
    const char *path = l->config_path;
    if (!json_is_object(root))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: not a JSON object", path);
    json_t *type = json_object_get(root, "peft_type");
    if (type && !json_is_string(type))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: \"peft_type\" must be a string", path);
    if (type && strcmp(json_string_value(type), "LORA") != 0)
        return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%s: \"peft_type\" is \"%s\"; smelt applies "
                          "LoRA adapters only", path, json_string_value(type));
    double r;
    int bias_none = 1;
    json_t *bias = json_object_get(root, "bias");
    if (bias && !json_is_null(bias)) {
        if (!json_is_string(bias))
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: \"bias\" must be a string", path);
        bias_none = strcmp(json_string_value(bias), "none") == 0;
        (void)bias_none; /* trained biases are whole tensors in the file: they replace the base's */
    }
    if ((rc = refuse_unsupported(ctx, path, root)) ||
        (rc = config_number(ctx, path, root, "r", 8, 1, &r)) ||
        (rc = config_number(ctx, path, root, "lora_alpha", 8, 0, &l->lora_alpha)) ||
        (rc = config_bool(ctx, path, root, "use_rslora", &l->use_rslora)) ||
        (rc = config_bool(ctx, path, root, "fan_in_fan_out", &l->fan_in_fan_out)) ||
        (rc = config_bool(ctx, path, root, "use_dora", &l->use_dora)) ||
        (rc = check_pattern(ctx, path, root, "rank_pattern", 1)) ||
        (rc = check_pattern(ctx, path, root, "alpha_pattern", 0)))
        return rc;
    l->r = (uint32_t)r;
    return SMELT_OK;
}

/* ---- the weights ---- */

typedef enum key_kind { KEY_A, KEY_B, KEY_EMB_A, KEY_EMB_B, KEY_MAGNITUDE, KEY_WHOLE } key_kind;

/* Splits a saved key into its module and kind. Returns 0, or -1 for a LoRA tensor smelt does
 * not know (with *why naming what it is). */
static int classify(const char *key, size_t *module_len, key_kind *kind, const char **why)
{
    static const struct { const char *suffix; key_kind kind; } suffixes[] = {
        {".lora_A.weight", KEY_A},         {".lora_B.weight", KEY_B},
        {".lora_embedding_A", KEY_EMB_A},  {".lora_embedding_B", KEY_EMB_B},
        /* peft/utils/save_and_load.py saves DoRA's magnitude without its ".weight" */
        {".lora_magnitude_vector", KEY_MAGNITUDE},
    };
    size_t n = strlen(key);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++)
        if (ends_with(key, suffixes[i].suffix)) {
            *module_len = n - strlen(suffixes[i].suffix);
            *kind = suffixes[i].kind;
            return 0;
        }
    *why = NULL;
    if (strstr(key, ".lora_B.bias"))
        *why = "a LoRA bias (lora_bias adapters are not supported)";
    else if (strstr(key, ".lora_"))
        *why = "a LoRA tensor of a kind smelt does not know";
    if (*why)
        return -1;
    *module_len = n;
    *kind = KEY_WHOLE;
    return 0;
}

static int by_target(const void *a, const void *b)
{
    return strcmp(((const smelt_lora_module *)a)->target, ((const smelt_lora_module *)b)->target);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const smelt_tensor_info *)a)->name, ((const smelt_tensor_info *)b)->name);
}

/* The module named `module` (of length len), added when new. */
static smelt_lora_module *module_for(smelt_lora *l, const char *module, size_t len, size_t *cap)
{
    for (size_t i = 0; i < l->nmodules; i++)
        if (strlen(l->modules[i].target) == len + 7 && !strncmp(l->modules[i].target, module, len))
            return &l->modules[i];
    if (l->nmodules == *cap) {
        size_t grown = *cap ? *cap * 2 : 64;
        smelt_lora_module *m = realloc(l->modules, grown * sizeof *m);
        if (!m)
            return NULL;
        l->modules = m;
        *cap = grown;
    }
    smelt_lora_module *m = &l->modules[l->nmodules];
    memset(m, 0, sizeof *m);
    if (!(m->target = malloc(len + 8)))
        return NULL;
    memcpy(m->target, module, len);
    memcpy(m->target + len, ".weight", 8);
    l->nmodules++;
    return m;
}

static int collect_tensors(smelt_ctx *ctx, smelt_lora *l)
{
    const char *file = l->weights->files[0].path;
    size_t cap = 0;
    l->replacements = calloc(l->weights->ntensors + 1, sizeof *l->replacements);
    if (!l->replacements)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < l->weights->ntensors; i++) {
        const smelt_tensor_info *t = &l->weights->tensors[i];
        const char *key = t->name;
        if (!strncmp(key, KEY_PREFIX, strlen(KEY_PREFIX)))
            key += strlen(KEY_PREFIX);
        size_t len;
        key_kind kind;
        const char *why;
        if (classify(key, &len, &kind, &why) != 0)
            return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%s: tensor '%s' is %s", file, t->name,
                              why);
        if (kind == KEY_WHOLE) {
            smelt_tensor_info *r = &l->replacements[l->nreplacements];
            *r = *t;
            if (!(r->name = smelt_strdup(key)))
                return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
            l->nreplacements++;
            continue;
        }
        unsigned want_dims = kind == KEY_MAGNITUDE ? 1 : 2;
        if (t->ndim != want_dims)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: tensor '%s' has %u dimensions; %s %u",
                              file, t->name, t->ndim,
                              kind == KEY_MAGNITUDE ? "a DoRA magnitude vector has"
                                                    : "LoRA factors have", want_dims);
        if (!smelt_dtype_mergeable(t->dtype) || smelt_dtype_is_block(t->dtype))
            return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%s: tensor '%s' has dtype %s; LoRA "
                              "factors must be F32, F16 or BF16", file, t->name,
                              smelt_dtype_name(t->dtype));
        smelt_lora_module *m = module_for(l, key, len, &cap);
        if (!m)
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        if (kind == KEY_MAGNITUDE) {
            if (!l->use_dora)
                return smelt_fail(ctx, SMELT_E_FORMAT, "%s: tensor '%s' is a DoRA magnitude "
                                  "vector, but %s does not set \"use_dora\": true", file,
                                  t->name, l->config_path);
            if (m->magnitude)
                return smelt_fail(ctx, SMELT_E_FORMAT, "%s: module '%.*s' has two "
                                  "lora_magnitude_vector tensors", file, (int)len, key);
            m->magnitude = t;
            continue;
        }
        int is_a = kind == KEY_A || kind == KEY_EMB_A;
        if (is_a ? m->a != NULL : m->b != NULL)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: module '%.*s' has two lora_%s tensors",
                              file, (int)len, key, is_a ? "A" : "B");
        if ((m->a || m->b) && m->embedding != (kind == KEY_EMB_A || kind == KEY_EMB_B))
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: module '%.*s' mixes lora_A/lora_B with "
                              "lora_embedding_A/B tensors", file, (int)len, key);
        m->embedding = kind == KEY_EMB_A || kind == KEY_EMB_B;
        if (is_a)
            m->a = t;
        else
            m->b = t;
    }
    return SMELT_OK;
}

/* The base weight a module needs: [out, in] = [B rows, A cols]; transposed kinds store
 * [A cols, B rows]. */
static void orient(smelt_lora_module *m, int transposed)
{
    m->transposed = transposed;
    m->rows = transposed ? m->a->shape[1] : m->b->shape[0];
    m->cols = transposed ? m->b->shape[0] : m->a->shape[1];
}

/* Ranks, scales and the base shape each module implies. */
static int finish_modules(smelt_ctx *ctx, smelt_lora *l, json_t *config)
{
    const char *file = l->weights->files[0].path;
    for (size_t i = 0; i < l->nmodules; i++) {
        smelt_lora_module *m = &l->modules[i];
        int mlen = (int)(strlen(m->target) - 7);
        if (!m->a && !m->b)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: module '%.*s' has a "
                              "lora_magnitude_vector but no lora_A or lora_B", file, mlen,
                              m->target);
        if (!m->a || !m->b)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: module '%.*s' has lora_%s but no lora_%s",
                              file, mlen, m->target, m->a ? "A" : "B", m->a ? "B" : "A");
        if (l->use_dora && !m->magnitude)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: module '%.*s' has no "
                              "lora_magnitude_vector, but %s sets \"use_dora\": true", file,
                              mlen, m->target, l->config_path);
        /* A is [r, in] ([r, vocab] for embeddings), B is [out, r] ([dim, r]). */
        uint64_t ra = m->a->shape[0], rb = m->b->shape[1];
        if (ra != rb)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: module '%.*s': lora_A has rank %llu "
                              "(shape [%llu, %llu]) but lora_B rank %llu (shape [%llu, %llu])",
                              file, mlen, m->target, (ull)ra, (ull)m->a->shape[0],
                              (ull)m->a->shape[1], (ull)rb, (ull)m->b->shape[0],
                              (ull)m->b->shape[1]);
        char *module = strndup(m->target, (size_t)mlen);
        if (!module)
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        double r = l->r, alpha = l->lora_alpha;
        pattern_value(config, "rank_pattern", module, &r);
        pattern_value(config, "alpha_pattern", module, &alpha);
        free(module);
        if (ra == 0 || ra > 1000000)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: module '%.*s' has rank %llu", file, mlen,
                              m->target, (ull)ra);
        if ((double)ra != r)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: module '%.*s' has rank %llu in the file, "
                              "but %s gives it rank %g", file, mlen, m->target, (ull)ra,
                              l->config_path, r);
        m->rank = (uint32_t)ra;
        m->alpha = alpha;
        /* peft/tuners/lora/layer.py update_layer: scaling = lora_alpha / r, or
         * lora_alpha / math.sqrt(r) with use_rslora, a Python float that multiplies the f32
         * product as an f32 scalar. */
        double scale = l->use_rslora ? alpha / sqrt((double)ra) : alpha / (double)ra;
        m->scale = (float)scale;
        if (!isfinite(m->scale))
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: module '%.*s': lora_alpha %g over rank "
                              "%llu is not a finite f32 scale", file, mlen, m->target, alpha,
                              (ull)ra);
        orient(m, m->embedding || l->fan_in_fan_out);
    }
    /* An adapter without modules (or replacements) has a NULL array: qsort and bsearch must
     * not see it, even with a count of 0. */
    if (l->nmodules)
        qsort(l->modules, l->nmodules, sizeof *l->modules, by_target);
    if (l->nreplacements)
        qsort(l->replacements, l->nreplacements, sizeof *l->replacements, by_name);
    for (size_t i = 1; i < l->nreplacements; i++)
        if (!strcmp(l->replacements[i].name, l->replacements[i - 1].name))
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: tensor '%s' is stored twice (with and "
                              "without the %s prefix)", file, l->replacements[i].name, KEY_PREFIX);
    for (size_t i = 0; i < l->nreplacements; i++)
        if (smelt_lora_find(l, l->replacements[i].name))
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: tensor '%s' is both stored whole and "
                              "adapted by lora_A/lora_B", file, l->replacements[i].name);
    return SMELT_OK;
}

int smelt_lora_open(smelt_ctx *ctx, const char *ref, smelt_lora **out)
{
    *out = NULL;
    smelt_lora *l = calloc(1, sizeof *l);
    if (!l || !(l->ref = smelt_strdup(ref))) {
        free(l);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    char *weights = NULL;
    json_t *config = NULL;
    int rc = locate(ctx, ref, &l->config_path, &weights);
    if (rc == SMELT_OK)
        rc = read_config(ctx, l, &config);
    if (rc == SMELT_OK)
        rc = smelt_model_open(ctx, weights, &l->weights);
    if (rc == SMELT_OK)
        rc = collect_tensors(ctx, l);
    if (rc == SMELT_OK)
        rc = finish_modules(ctx, l, config);
    if (rc == SMELT_OK && l->nmodules == 0 && l->nreplacements == 0)
        rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: the adapter holds no tensors", weights);
    json_decref(config);
    free(weights);
    if (rc != SMELT_OK) {
        smelt_lora_close(l);
        return rc;
    }
    *out = l;
    return SMELT_OK;
}

void smelt_lora_close(smelt_lora *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->nmodules; i++)
        free(l->modules[i].target);
    free(l->modules);
    for (size_t i = 0; i < l->nreplacements; i++)
        free(l->replacements[i].name);
    free(l->replacements);
    smelt_model_close(l->weights);
    free(l->config_path);
    free(l->ref);
    free(l);
}

const smelt_lora_module *smelt_lora_find(const smelt_lora *l, const char *name)
{
    smelt_lora_module key = {.target = (char *)name};
    return l && l->nmodules ? bsearch(&key, l->modules, l->nmodules, sizeof key, by_target)
                            : NULL;
}

const smelt_tensor_info *smelt_lora_replacement(const smelt_lora *l, const char *name)
{
    smelt_tensor_info key = {.name = (char *)name};
    return l && l->nreplacements
               ? bsearch(&key, l->replacements, l->nreplacements, sizeof key, by_name)
               : NULL;
}

static void shape_text(char *buf, size_t len, const smelt_tensor_info *t)
{
    smelt_format_shape(buf, len, t->shape, t->ndim);
}

int smelt_lora_attach(smelt_ctx *ctx, smelt_model *base, smelt_lora *l)
{
    base->lora = l;
    const char *file = l->weights->files[0].path;
    for (size_t i = 0; i < l->nmodules; i++) {
        smelt_lora_module *m = &l->modules[i];
        int mlen = (int)(strlen(m->target) - 7);
        const smelt_tensor_info *w = smelt_model_find(base, m->target);
        if (!w)
            return smelt_fail(ctx, SMELT_E_PLAN, "%s: the adapter targets module '%.*s', but the "
                              "base '%s' has no tensor '%s'", file, mlen, m->target, base->ref,
                              m->target);
        char have[160];
        shape_text(have, sizeof have, w);
        uint64_t out = m->b->shape[0], in = m->a->shape[1];
        if (!m->embedding && w->ndim == 2 && out != in)
            orient(m, w->shape[0] == in && w->shape[1] == out);
        if (w->ndim != 2 || w->shape[0] != m->rows || w->shape[1] != m->cols)
            return smelt_fail(ctx, SMELT_E_PLAN, "%s: module '%.*s': the adapter (lora_A [%llu, "
                              "%llu], lora_B [%llu, %llu]) needs a base weight of shape "
                              "[%llu, %llu]%s, but '%s' has %s", file, mlen, m->target,
                              (ull)m->a->shape[0], (ull)m->a->shape[1], (ull)m->b->shape[0],
                              (ull)m->b->shape[1], (ull)m->rows, (ull)m->cols,
                              m->embedding ? " (an embedding: [vocab, dim])"
                              : out != in  ? " or its transpose (a Conv1D layer)"
                                           : "",
                              base->ref, have);
        uint64_t features = m->transposed ? m->cols : m->rows;
        if (m->magnitude && m->magnitude->shape[0] != features)
            return smelt_fail(ctx, SMELT_E_PLAN, "%s: module '%.*s': lora_magnitude_vector has "
                              "%llu entries, but the weight has %llu output features", file,
                              mlen, m->target, (ull)m->magnitude->shape[0], (ull)features);
        if (!smelt_dtype_mergeable(w->dtype) || smelt_dtype_is_block(w->dtype))
            return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%s: tensor '%s' has dtype %s; a LoRA "
                              "adapter applies to F32, F16 and BF16 weights", base->ref, w->name,
                              smelt_dtype_name(w->dtype));
    }
    for (size_t i = 0; i < l->nreplacements; i++) {
        smelt_tensor_info *r = &l->replacements[i];
        const smelt_tensor_info *w = smelt_model_find(base, r->name);
        if (!w)
            return smelt_fail(ctx, SMELT_E_PLAN, "%s: the adapter stores tensor '%s' whole "
                              "(modules_to_save), but the base '%s' has no such tensor", file,
                              r->name, base->ref);
        char have[160], want[160];
        shape_text(have, sizeof have, w);
        shape_text(want, sizeof want, r);
        if (w->ndim != r->ndim || memcmp(w->shape, r->shape, r->ndim * sizeof *r->shape))
            return smelt_fail(ctx, SMELT_E_PLAN, "%s: tensor '%s' has shape %s in the adapter "
                              "but %s in the base '%s'", file, r->name, want, have, base->ref);
    }
    /* The adapter's file joins the base's, so that replacements read through file indices. */
    smelt_st_file *files = realloc(base->files, (base->nfiles + l->weights->nfiles) * sizeof *files);
    if (!files)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    base->files = files;
    for (uint32_t f = 0; f < l->weights->nfiles; f++) {
        smelt_st_file *dst = &base->files[base->nfiles];
        *dst = l->weights->files[f];
        dst->path = smelt_strdup(l->weights->files[f].path);
        dst->fd = dup(l->weights->files[f].fd);
        if (!dst->path || dst->fd < 0) {
            free(dst->path);
            if (dst->fd >= 0)
                close(dst->fd);
            return smelt_fail_errno(ctx, dst->path ? errno : ENOMEM, "%s: cannot share the "
                                    "adapter's file", l->weights->files[f].path);
        }
        base->nfiles++;
    }
    for (size_t i = 0; i < l->nreplacements; i++)
        l->replacements[i].file += base->nfiles - l->weights->nfiles;
    return SMELT_OK;
}
