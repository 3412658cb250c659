/* smelt synth --lora R: a PEFT LoRA adapter directory (adapter_config.json and
 * adapter_model.safetensors, as PEFT's save_pretrained lays them out) for the synthetic model of
 * the same options, for tests, benchmarks and the demo.
 *
 * The keys are PEFT's saved keys (peft/utils/save_and_load.py get_peft_model_state_dict: the
 * "base_model.model." prefix, the adapter name removed): <module>.lora_A.weight [r, in] and
 * <module>.lora_B.weight [out, r] for linear layers, <module>.lora_embedding_A [r, vocab] and
 * <module>.lora_embedding_B [dim, r] for embeddings, <module>.lora_magnitude_vector (one entry
 * per output feature: a linear layer's rows, an embedding's columns) with DoRA, and
 * modules_to_save tensors under their own names. Every value is a function of (seed, adapter
 * tensor, index) like the model's, so the same options give the same bytes. */
#include "synth/synth_internal.h"

#include "common/util.h"
#include "format/lora.h"
#include "format/safetensors.h"
#include "kernels/kernels.h"
#include "out/st_write.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_PREFIX "base_model.model."
#define CHUNK (1u << 20) /* elements generated and encoded at a time */

static const char *const known_targets[] = {"q_proj",    "k_proj",  "v_proj",
                                            "o_proj",    "gate_proj", "up_proj",
                                            "down_proj", "embed_tokens", "lm_head"};
#define DEFAULT_TARGETS "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"

typedef enum value_kind { VAL_A, VAL_B, VAL_MAGNITUDE, VAL_WHOLE } value_kind;

typedef struct adapter_tensor {
    char name[256];
    uint32_t ndim;
    uint64_t shape[2];
    uint64_t numel;
    value_kind kind;
    float center, spread; /* values: center + spread * noise (DoRA: center * (1 + spread * noise)) */
} adapter_tensor;

/* One "REGEX=VALUE" entry of a pattern option. */
typedef struct pattern {
    char *regex;
    double value;
} pattern;

typedef struct adapter_plan {
    adapter_tensor *tensors;
    size_t ntensors;
    pattern *ranks, *alphas;
    size_t nranks, nalphas;
    char **targets, **saved; /* the option lists, split */
    size_t ntargets, nsaved;
} adapter_plan;

static void plan_free(adapter_plan *p)
{
    free(p->tensors);
    for (size_t i = 0; i < p->nranks; i++)
        free(p->ranks[i].regex);
    for (size_t i = 0; i < p->nalphas; i++)
        free(p->alphas[i].regex);
    free(p->ranks);
    free(p->alphas);
    for (size_t i = 0; i < p->ntargets; i++)
        free(p->targets[i]);
    for (size_t i = 0; i < p->nsaved; i++)
        free(p->saved[i]);
    free(p->targets);
    free(p->saved);
}

/* Splits a comma-separated list into *items (empty entries are errors). */
static int split_list(smelt_ctx *ctx, const char *flag, const char *text, char ***items,
                      size_t *n)
{
    *items = NULL;
    *n = 0;
    size_t cap = 1;
    for (const char *c = text; *c; c++)
        cap += *c == ',';
    if (!(*items = calloc(cap, sizeof **items)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (const char *at = text;;) {
        const char *end = strchr(at, ',');
        size_t len = end ? (size_t)(end - at) : strlen(at);
        if (len == 0)
            return smelt_fail(ctx, SMELT_E_ARG, "synth: %s '%s' has an empty entry", flag, text);
        if (!((*items)[(*n)++] = strndup(at, len)))
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        if (!end)
            return SMELT_OK;
        at = end + 1;
    }
}

/* "REGEX=VALUE,..." into patterns; ranks are whole numbers from 1 to 1000000. */
static int parse_patterns(smelt_ctx *ctx, const char *flag, const char *text, int rank,
                          pattern **out, size_t *n)
{
    char **items;
    size_t count;
    *out = NULL;
    *n = 0;
    int rc = split_list(ctx, flag, text, &items, &count);
    if (rc == SMELT_OK && !(*out = calloc(count, sizeof **out)))
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; rc == SMELT_OK && i < count; i++) {
        char *eq = strrchr(items[i], '=');
        if (!eq || eq == items[i]) {
            rc = smelt_fail(ctx, SMELT_E_ARG, "synth: %s entry '%s' is not REGEX=VALUE", flag,
                            items[i]);
            break;
        }
        *eq = '\0';
        char *end;
        errno = 0;
        double v = strtod(eq + 1, &end);
        if (errno || *end || end == eq + 1 || !isfinite(v) ||
            (rank && (v != floor(v) || v < 1 || v > 1e6))) {
            rc = smelt_fail(ctx, SMELT_E_ARG, "synth: %s: '%s' for '%s' is not %s", flag, eq + 1,
                            items[i], rank ? "a rank from 1 to 1000000" : "a finite number");
            break;
        }
        if (smelt_lora_pattern_matches(items[i], "") < 0) {
            rc = smelt_fail(ctx, SMELT_E_ARG, "synth: %s: '%s' is not a regular expression", flag,
                            items[i]);
            break;
        }
        (*out)[i].regex = items[i];
        (*out)[i].value = v;
        items[i] = NULL;
        (*n)++;
    }
    for (size_t i = 0; i < count; i++)
        free(items[i]);
    free(items);
    return rc;
}

/* PEFT's get_pattern_key: the first pattern that matches the module, else the fallback. */
static double pattern_value(const pattern *p, size_t n, const char *module, double fallback)
{
    for (size_t i = 0; i < n; i++)
        if (smelt_lora_pattern_matches(p[i].regex, module) == 1)
            return p[i].value;
    return fallback;
}

static int in_list(char *const *items, size_t n, const char *s, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(items[i]) == len && !strncmp(items[i], s, len))
            return 1;
    return 0;
}

/* Whether modules_to_save entry `entry` names model tensor `name`: "<...>.entry.weight", as
 * PEFT matches a module name's end. */
static int saves(const char *entry, const char *name)
{
    size_t n = strlen(name), e = strlen(entry);
    if (n < e + 7 || strcmp(name + n - 7, ".weight"))
        return 0;
    const char *at = name + n - 7 - e;
    return !strncmp(at, entry, e) && (at == name || at[-1] == '.');
}

static adapter_tensor *add_tensor(adapter_plan *p, value_kind kind, uint32_t ndim, uint64_t d0,
                                  uint64_t d1, float center, float spread, const char *fmt,
                                  const char *module, const char *suffix)
{
    adapter_tensor *t = &p->tensors[p->ntensors++];
    snprintf(t->name, sizeof t->name, fmt, module, suffix);
    t->kind = kind;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->numel = ndim == 1 ? d0 : d0 * d1;
    t->center = center;
    t->spread = spread;
    return t;
}

/* The adapter's tensors for the model's tensors: the factors of every targeted module (with
 * rank_pattern's ranks), DoRA magnitudes, and the modules_to_save tensors whole. */
static int plan_tensors(smelt_ctx *ctx, const smelt_synth_options *o, const synth_tensor *model,
                        size_t nmodel, adapter_plan *p)
{
    if (!(p->tensors = calloc(nmodel * 3 + 1, sizeof *p->tensors)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    size_t *target_hits = calloc(p->ntargets + 1, sizeof *target_hits);
    size_t *saved_hits = calloc(p->nsaved + 1, sizeof *saved_hits);
    int rc = target_hits && saved_hits ? SMELT_OK
                                       : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; rc == SMELT_OK && i < nmodel; i++) {
        const synth_tensor *t = &model[i];
        size_t mlen = strlen(t->name) - 7; /* every synth tensor ends in ".weight" */
        const char *leaf = t->name + mlen;
        while (leaf > t->name && leaf[-1] != '.')
            leaf--;
        size_t leaf_len = (size_t)(t->name + mlen - leaf);
        char module[160];
        snprintf(module, sizeof module, "%.*s", (int)mlen, t->name);
        int saved = 0;
        for (size_t s = 0; s < p->nsaved; s++)
            if (saves(p->saved[s], t->name)) {
                saved_hits[s]++;
                saved = 1;
            }
        int adapted = t->ndim == 2 && in_list(p->targets, p->ntargets, leaf, leaf_len);
        for (size_t k = 0; adapted && k < p->ntargets; k++)
            if (strlen(p->targets[k]) == leaf_len && !strncmp(p->targets[k], leaf, leaf_len))
                target_hits[k]++;
        if (saved && adapted) {
            rc = smelt_fail(ctx, SMELT_E_ARG, "synth: '%s' is both a LoRA target and in "
                            "--modules-to-save", module);
            break;
        }
        if (saved) {
            float center = t->is_norm ? 1.0f : 0.0f, spread = t->is_norm ? 0.1f : 0.02f;
            add_tensor(p, VAL_WHOLE, t->ndim, t->shape[0], t->shape[1], center, spread,
                       KEY_PREFIX "%s%s", module, ".weight");
            continue;
        }
        if (!adapted)
            continue;
        double r = pattern_value(p->ranks, p->nranks, module, o->lora_rank);
        uint64_t rank = (uint64_t)r;
        int embedding = !strncmp(leaf, "embed_tokens", leaf_len) && leaf_len == 12;
        uint64_t rows = t->shape[0], cols = t->shape[1];
        if (embedding) {
            /* PEFT's Embedding: lora_embedding_A [r, num_embeddings], lora_embedding_B
             * [embedding_dim, r]; DoRA's magnitude has one entry per embedding dimension. */
            add_tensor(p, VAL_A, 2, rank, rows, 0, (float)(1.0 / sqrt((double)rows)),
                       KEY_PREFIX "%s%s", module, ".lora_embedding_A");
            add_tensor(p, VAL_B, 2, cols, rank, 0, 0.01f, KEY_PREFIX "%s%s", module,
                       ".lora_embedding_B");
        } else {
            add_tensor(p, VAL_A, 2, rank, cols, 0, (float)(1.0 / sqrt((double)cols)),
                       KEY_PREFIX "%s%s", module, ".lora_A.weight");
            add_tensor(p, VAL_B, 2, rows, rank, 0, 0.01f, KEY_PREFIX "%s%s", module,
                       ".lora_B.weight");
        }
        if (o->lora_dora) {
            /* Near the norm of the base's feature (0.02 * uniform noise: 0.02 / sqrt(3) per
             * element), so the rescaling stays close to 1 as trained DoRA magnitudes do. */
            uint64_t features = embedding ? cols : rows, fan = embedding ? rows : cols;
            add_tensor(p, VAL_MAGNITUDE, 1, features, 0,
                       (float)(0.02 * sqrt((double)fan / 3.0)), 0.1f, KEY_PREFIX "%s%s", module,
                       ".lora_magnitude_vector");
        }
    }
    for (size_t k = 0; rc == SMELT_OK && k < p->ntargets; k++)
        if (!target_hits[k])
            rc = smelt_fail(ctx, SMELT_E_ARG, "synth: --lora-targets: the model has no %s "
                            "weight%s", p->targets[k],
                            !strcmp(p->targets[k], "lm_head") ? " (its embeddings are tied)" : "");
    for (size_t s = 0; rc == SMELT_OK && s < p->nsaved; s++)
        if (!saved_hits[s])
            rc = smelt_fail(ctx, SMELT_E_ARG, "synth: --modules-to-save: no tensor of the model "
                            "is named '<...>.%s.weight'", p->saved[s]);
    free(target_hits);
    free(saved_hits);
    return rc;
}

static json_t *patterns_json(const pattern *p, size_t n, int rank)
{
    json_t *obj = json_object();
    for (size_t i = 0; obj && i < n; i++)
        json_object_set_new(obj, p[i].regex,
                            rank ? json_integer((json_int_t)p[i].value) : json_real(p[i].value));
    return obj;
}

static json_t *list_json(char *const *items, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        json_array_append_new(arr, json_string(items[i]));
    return arr;
}

/* adapter_config.json as PEFT's LoraConfig.save_pretrained writes the keys smelt reads. */
static int write_config(smelt_ctx *ctx, const char *dir, const smelt_synth_options *o,
                        const adapter_plan *p)
{
    double alpha = o->lora_alpha ? o->lora_alpha : 2.0 * o->lora_rank;
    json_t *cfg = json_object();
    if (!cfg)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    json_object_set_new(cfg, "peft_type", json_string("LORA"));
    json_object_set_new(cfg, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(cfg, "base_model_name_or_path",
                        o->lora_base ? json_string(o->lora_base) : json_null());
    json_object_set_new(cfg, "r", json_integer((json_int_t)o->lora_rank));
    json_object_set_new(cfg, "lora_alpha", alpha == floor(alpha) && fabs(alpha) < 1e15
                                               ? json_integer((json_int_t)alpha)
                                               : json_real(alpha));
    json_object_set_new(cfg, "lora_dropout", json_real(0.0));
    json_object_set_new(cfg, "bias", json_string("none"));
    json_object_set_new(cfg, "fan_in_fan_out", json_false());
    json_object_set_new(cfg, "use_rslora", json_boolean(o->lora_rslora));
    json_object_set_new(cfg, "use_dora", json_boolean(o->lora_dora));
    json_object_set_new(cfg, "init_lora_weights", json_true());
    json_object_set_new(cfg, "inference_mode", json_true());
    json_object_set_new(cfg, "target_modules", list_json(p->targets, p->ntargets));
    json_object_set_new(cfg, "rank_pattern", patterns_json(p->ranks, p->nranks, 1));
    json_object_set_new(cfg, "alpha_pattern", patterns_json(p->alphas, p->nalphas, 0));
    json_object_set_new(cfg, "modules_to_save",
                        p->nsaved ? list_json(p->saved, p->nsaved) : json_null());
    return synth_write_json(ctx, dir, "adapter_config.json", cfg);
}

/* Values [first, first + n) of adapter tensor i. */
static void generate(const adapter_tensor *t, size_t i, uint64_t seed, uint64_t first, size_t n,
                     float *out)
{
    uint64_t key = synth_tensor_key(seed ^ 0x10BA0A11CEull, i);
    for (size_t j = 0; j < n; j++) {
        float noise = synth_unit_noise(key, first + j);
        out[j] = t->kind == VAL_MAGNITUDE ? t->center * (1.0f + t->spread * noise)
                                          : t->center + t->spread * noise;
    }
}

/* The adapter's tensors, for smelt_st_write_file: generated and encoded a chunk at a time. */
typedef struct weights_job {
    const adapter_plan *plan;
    uint64_t seed;
    smelt_dtype dt;
    float *vals;
    uint8_t *enc;
} weights_job;

static int write_adapter_tensor(smelt_ctx *ctx, void *user, smelt_out_file *file, size_t i,
                                uint64_t offset)
{
    const weights_job *job = user;
    const adapter_tensor *t = &job->plan->tensors[i];
    unsigned size = smelt_dtype_size(job->dt);
    int rc = SMELT_OK;
    for (uint64_t at = 0; at < t->numel && rc == SMELT_OK; at += CHUNK) {
        size_t n = (size_t)(t->numel - at < CHUNK ? t->numel - at : CHUNK);
        generate(t, i, job->seed, at, n, job->vals);
        smelt_encode(smelt_kernels_get(), job->enc, job->vals, job->dt, n);
        rc = smelt_out_write(ctx, file, job->enc, n * size, offset + at * size);
    }
    return rc;
}

static int write_weights(smelt_ctx *ctx, const char *path, const smelt_synth_options *o,
                         smelt_dtype dt, const adapter_plan *p)
{
    smelt_st_out_tensor *descs = calloc(p->ntensors + 1, sizeof *descs);
    weights_job job = {p, o->seed, dt, malloc((size_t)CHUNK * sizeof(float)),
                       malloc((size_t)CHUNK * smelt_dtype_size(dt))};
    int rc = descs && job.vals && job.enc ? SMELT_OK
                                          : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; rc == SMELT_OK && i < p->ntensors; i++) {
        const adapter_tensor *t = &p->tensors[i];
        descs[i] = (smelt_st_out_tensor){t->name, dt, t->ndim, t->shape,
                                         t->numel * smelt_dtype_size(dt)};
    }
    if (rc == SMELT_OK)
        rc = smelt_st_write_file(ctx, path, descs, p->ntensors, write_adapter_tensor, &job, NULL);
    free(descs);
    free(job.vals);
    free(job.enc);
    return rc;
}

int synth_lora(smelt_ctx *ctx, const char *dir, const smelt_synth_options *o)
{
    if (o->lora_rank > 1000000)
        return smelt_fail(ctx, SMELT_E_ARG, "synth: LoRA rank %u is more than 1000000",
                          o->lora_rank);
    if (!isfinite(o->lora_alpha))
        return smelt_fail(ctx, SMELT_E_ARG, "synth: --lora-alpha must be finite");
    smelt_dtype dt = smelt_dtype_from_torch_name(o->lora_dtype ? o->lora_dtype : "float32");
    if (dt == SMELT_DT_INVALID)
        return smelt_fail(ctx, SMELT_E_ARG, "synth: --lora-dtype '%s' is not float32, bfloat16 "
                          "or float16", o->lora_dtype);
    smelt_dtype model_dt;
    synth_arch arch;
    int rc = synth_st_arch(ctx, o, &model_dt, &arch);
    if (rc != SMELT_OK)
        return rc;
    adapter_plan plan = {0};
    size_t nmodel = synth_tensor_count(&arch);
    synth_tensor *model = calloc(nmodel, sizeof *model);
    if (!model)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    nmodel = synth_list_tensors(&arch, model);
    rc = split_list(ctx, "--lora-targets", o->lora_targets ? o->lora_targets : DEFAULT_TARGETS,
                    &plan.targets, &plan.ntargets);
    for (size_t k = 0; rc == SMELT_OK && k < plan.ntargets; k++) {
        int known = 0;
        for (size_t j = 0; j < sizeof known_targets / sizeof known_targets[0]; j++)
            known |= !strcmp(plan.targets[k], known_targets[j]);
        if (!known)
            rc = smelt_fail(ctx, SMELT_E_ARG, "synth: --lora-targets: '%s' is not one of q_proj, "
                            "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, embed_tokens "
                            "and lm_head", plan.targets[k]);
    }
    if (rc == SMELT_OK && o->lora_modules_to_save)
        rc = split_list(ctx, "--modules-to-save", o->lora_modules_to_save, &plan.saved,
                        &plan.nsaved);
    if (rc == SMELT_OK && o->lora_rank_pattern)
        rc = parse_patterns(ctx, "--lora-rank-pattern", o->lora_rank_pattern, 1, &plan.ranks,
                            &plan.nranks);
    if (rc == SMELT_OK && o->lora_alpha_pattern)
        rc = parse_patterns(ctx, "--lora-alpha-pattern", o->lora_alpha_pattern, 0, &plan.alphas,
                            &plan.nalphas);
    if (rc == SMELT_OK)
        rc = plan_tensors(ctx, o, model, nmodel, &plan);
    if (rc == SMELT_OK)
        rc = smelt_mkdir_p(ctx, dir);
    char *weights = rc == SMELT_OK ? smelt_path_join(dir, "adapter_model.safetensors") : NULL;
    if (rc == SMELT_OK && !weights)
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK)
        rc = write_weights(ctx, weights, o, dt, &plan);
    if (rc == SMELT_OK)
        rc = write_config(ctx, dir, o, &plan);
    free(weights);
    free(model);
    plan_free(&plan);
    return rc;
}
