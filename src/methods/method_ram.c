/* ram and ramplus_tl: Reinforced Agent Merging (arXiv 2601.13572), as mergekit implements it in
 * mergekit/merge_methods/ram.py (ram_merge, ramplus_tl_merge and their shared
 * _prepare_ram_vectors; registered by name through the @merge_method decorator of
 * mergekit/merge_methods/easy_define.py). Names, parameters and defaults are mergekit's:
 * ram takes `epsilon` (1e-5), ramplus_tl `r` (0.1), `alpha` (0.2) and `epsilon` (1e-5), all
 * top-level scalars; both need a base_model.
 *
 * Per element, with task vectors d_i = θ_i − θ₀ over the models in config order:
 *   nz_i = |d_i| > epsilon                 the model contributes here
 *   c    = Σ nz_i                          contributors; unique u = (c == 1), overlap o = (c > 1)
 *   z_i  = d_i · nz_i                      (a multiply, as in mergekit: Inf and NaN stay NaN)
 *   out  = θ₀ + Σ_i ((z_i · u) · λ_i + (z_i · o) / max(c, 1))
 * so a lone contributor is kept and overlapping ones are averaged. ram has λ_i = 1. ramplus_tl
 * scales each model's unique part by
 *   λ_i = 1 + r · clamp(shared_i / max(unique_i, epsilon), 0, alpha)
 * where shared_i and unique_i count, over the whole tensor, the elements where model i
 * contributes together with others and alone: one statistics pass of integer counts, which add
 * exactly in any order.
 *
 * The arithmetic is mergekit's expression evaluated in f32, in a fixed order: epsilon, r and
 * alpha rounded to f32 (as torch does for a Python scalar against an f32 tensor); the counts
 * converted to f32 before the ratio (torch's promotion of int64 counts against a float clamp
 * bound); the sum over models sequential in config order, starting from model 1's term. Every
 * element's result depends on its own inputs and the tensor's λ_i only, so it is the same for
 * any thread count, budget or SIMD level. */
#include "methods/method.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { PARAM_R, PARAM_ALPHA, PARAM_EPSILON_PLUS };
enum { PARAM_EPSILON = 0 };

typedef struct ram_state {
    const char *method;
    const char *tensor; /* for messages */
    size_t n;        /* models, base excluded; input i + 1 is model i */
    int plus;        /* ramplus_tl: λ_i from the whole-tensor counts */
    float epsilon;   /* f32, as the comparison with |d| uses it */
    float r, alpha;
    uint64_t *counts; /* plus: 2n folded counts (shared_i, unique_i), from its first fold */
    int nomem;        /* the first fold could not allocate counts: end_pass reports it */
    float lambda[];  /* per model; 1 for ram */
} ram_state;

static void ram_finished(void *state)
{
    ram_state *s = state;
    free(s->counts);
    s->counts = NULL;
}

static void ram_release(void *state)
{
    if (state)
        ram_finished(state);
    free(state);
}

/* Checks one parameter: finite in f32 and at least `min` (strictly above it when `strict`). */
static int check_param(smelt_ctx *ctx, const char *method, const smelt_tensor_args *args,
                       const char *name, double value, int strict)
{
    int rc = smelt_check_finite(ctx, method, args, SMELT_NO_INPUT, name, value, SMELT_NUM_F32);
    if (rc != SMELT_OK)
        return rc;
    if (strict ? value > 0 : value >= 0)
        return SMELT_OK;
    return smelt_fail(ctx, SMELT_E_CONFIG, "method '%s': tensor '%s': %s %g is out of range "
                      "(it must be %s 0)", method, args->tensor, name, value,
                      strict ? ">" : ">=");
}

static int prepare(int plus, const char *method, smelt_ctx *ctx, const smelt_tensor_args *args,
                   void **state)
{
    if (!args->has_base || args->ninputs < 2)
        return smelt_fail(ctx, SMELT_E_CONFIG, "method '%s': tensor '%s': needs a base_model and "
                          "at least one other model", method, args->tensor);
    size_t n = args->ninputs - 1;
    double epsilon = args->values[plus ? PARAM_EPSILON_PLUS : PARAM_EPSILON][0];
    double r = plus ? args->values[PARAM_R][0] : 0, alpha = plus ? args->values[PARAM_ALPHA][0] : 0;
    /* ramplus_tl divides by max(unique, epsilon): with epsilon 0 a model that changes nothing in
     * a tensor gets 0/0, and mergekit's NaN λ then turns the whole tensor into NaNs. */
    int rc = check_param(ctx, method, args, "epsilon", epsilon, plus);
    if (rc == SMELT_OK && plus)
        rc = check_param(ctx, method, args, "r", r, 0);
    if (rc == SMELT_OK && plus)
        rc = check_param(ctx, method, args, "alpha", alpha, 0);
    /* λ_i is at most 1 + r · alpha: finite parameters can still make it an f32 infinity. */
    if (rc == SMELT_OK && plus)
        rc = smelt_check_finite(ctx, method, args, SMELT_NO_INPUT, "1 + r * alpha",
                                1.0 + (double)(float)r * (double)(float)alpha, SMELT_NUM_F32);
    if (rc != SMELT_OK)
        return rc;
    ram_state *s = calloc(1, sizeof *s + n * sizeof(float));
    if (!s)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    s->method = method;
    s->tensor = args->tensor;
    s->n = n;
    s->plus = plus;
    s->epsilon = (float)epsilon;
    s->r = (float)r;
    s->alpha = (float)alpha;
    for (size_t i = 0; i < n; i++)
        s->lambda[i] = 1.0f;
    *state = s;
    return SMELT_OK;
}

static int ram_prepare(smelt_ctx *ctx, const smelt_tensor_args *args, void **state)
{
    return prepare(0, "ram", ctx, args, state);
}

static int ramplus_prepare(smelt_ctx *ctx, const smelt_tensor_args *args, void **state)
{
    return prepare(1, "ramplus_tl", ctx, args, state);
}

/* Decodes the tile into the worker's scratch (slot 0 the base, slot i + 1 model i's d_i) and
 * counts the contributors per element into c. Returns the base. */
static const float *load(const ram_state *s, const smelt_tile *t, uint8_t *c)
{
    size_t n = t->n;
    float *base = t->scratch;
    smelt_decode(t->k, base, t->raw[0], t->dtype[0], n);
    memset(c, 0, n);
    float epsilon = s->epsilon; /* a local: c's stores could alias the state */
    for (size_t i = 1; i <= s->n; i++) {
        float *d = t->scratch + i * SMELT_TILE_ELEMS;
        smelt_decode(t->k, d, t->raw[i], t->dtype[i], n);
        t->k->sub(d, d, base, n);
        for (size_t j = 0; j < n; j++)
            c[j] = (uint8_t)(c[j] + (fabsf(d[j]) > epsilon));
    }
    return base;
}

static unsigned ram_passes(const void *state) { return ((const ram_state *)state)->plus; }

/* Pass 0 of ramplus_tl: per model, the task's shared and unique counts (at most one task of
 * elements each, so 32 bits suffice); the apply pass keeps nothing. */
static size_t ram_partial_size(const void *state, unsigned pass)
{
    const ram_state *s = state;
    return s->plus && pass == 0 ? 2 * s->n * sizeof(uint32_t) : 0;
}

static void ram_stats(const void *state, unsigned pass, const smelt_tile *t, void *partial)
{
    const ram_state *s = state;
    uint8_t c[SMELT_TILE_ELEMS];
    load(s, t, c);
    uint32_t *count = partial;
    (void)pass;
    /* c holds up to 255 contributors: the methods take at most 255 models (max_models). */
    for (size_t i = 0; i < s->n; i++) {
        const float *d = t->scratch + (i + 1) * SMELT_TILE_ELEMS;
        uint32_t shared = 0, unique = 0;
        for (size_t j = 0; j < t->n; j++) {
            uint32_t nz = fabsf(d[j]) > s->epsilon;
            shared += nz & (c[j] > 1);
            unique += nz & (c[j] == 1);
        }
        count[2 * i] += shared;
        count[2 * i + 1] += unique;
    }
}

static void ram_fold(void *state, unsigned pass, const void *partial)
{
    ram_state *s = state;
    const uint32_t *count = partial;
    (void)pass;
    /* Allocated here, not in prepare, so the plan holds no counts for tensors not yet merged;
     * a failed allocation is reported by end_pass. */
    if (s->nomem || (!s->counts && !(s->counts = calloc(2 * s->n, sizeof *s->counts)))) {
        s->nomem = 1;
        return;
    }
    for (size_t k = 0; k < 2 * s->n; k++)
        s->counts[k] += count[k];
}

static int ram_end_pass(smelt_ctx *ctx, void *state, unsigned pass)
{
    ram_state *s = state;
    (void)pass;
    if (s->nomem)
        return smelt_fail(ctx, SMELT_E_NOMEM, "method '%s': tensor '%s': out of memory for its "
                          "counts", s->method, s->tensor);
    if (!s->counts) /* no task ran: an empty tensor, whose λ no element uses */
        return SMELT_OK;
    for (size_t i = 0; i < s->n; i++) {
        /* mergekit: rho = shared / unique.clamp(min=epsilon); λ = 1 + r · rho.clamp(0, alpha),
         * each step an f32 operation. */
        float unique = (float)s->counts[2 * i + 1];
        float rho = (float)s->counts[2 * i] / (unique < s->epsilon ? s->epsilon : unique);
        float clamped = rho < 0 ? 0 : rho;
        clamped = clamped > s->alpha ? s->alpha : clamped;
        s->lambda[i] = 1.0f + s->r * clamped;
    }
    return SMELT_OK;
}

/* One model's share of an element: unique entries scaled by λ, overlapping ones averaged.
 * z = d · (|d| > ε ? 1 : 0) is picked between d and d · 0 (the same bits: d · 1 is d), which
 * the compiler vectorizes where the bool-to-float product became a branch. */
static inline float ram_term(float d, float unique, float overlap, float count, float lambda,
                             float epsilon)
{
    float z = smelt_pick_f32(fabsf(d) > epsilon, d, d * 0.0f);
    return (z * unique) * lambda + (z * overlap) / count;
}

static void ram_apply(const void *state, const smelt_tile *t, float *out)
{
    const ram_state *s = state;
    uint8_t c[SMELT_TILE_ELEMS];
    const float *base = load(s, t, c);
    size_t n = t->n;
    /* What depends only on the element's contributor count, once per tile; the model loop then
     * has no branch and vectorizes (each term is the same f32 expression as before). */
    float unique[SMELT_TILE_ELEMS], overlap[SMELT_TILE_ELEMS], count[SMELT_TILE_ELEMS];
    for (size_t j = 0; j < n; j++) {
        unique[j] = (float)(c[j] == 1);
        overlap[j] = (float)(c[j] > 1);
        count[j] = (float)(c[j] | (c[j] == 0)); /* max(c, 1) */
    }
    float epsilon = s->epsilon; /* a local: out's stores could alias the state */
    for (size_t i = 0; i < s->n; i++) {
        const float *d = t->scratch + (i + 1) * SMELT_TILE_ELEMS;
        float lambda = s->lambda[i];
        if (i == 0)
            for (size_t j = 0; j < n; j++)
                out[j] = ram_term(d[j], unique[j], overlap[j], count[j], lambda, epsilon);
        else
            for (size_t j = 0; j < n; j++)
                out[j] = out[j] + ram_term(d[j], unique[j], overlap[j], count[j], lambda, epsilon);
    }
    for (size_t j = 0; j < n; j++)
        out[j] = base[j] + out[j];
}

/* mergekit's signatures: ram_merge(..., epsilon=1e-5), ramplus_tl_merge(..., r=0.1, alpha=0.2,
 * epsilon=1e-5); scalars, so top-level parameters. */
static const smelt_param_def ram_params[] = {
    [PARAM_EPSILON] = {"epsilon", SMELT_PARAM_NUMBER, 0, 0, 1e-5},
};
static const smelt_param_def ramplus_params[] = {
    [PARAM_R] = {"r", SMELT_PARAM_NUMBER, 0, 0, 0.1},
    [PARAM_ALPHA] = {"alpha", SMELT_PARAM_NUMBER, 0, 0, 0.2},
    [PARAM_EPSILON_PLUS] = {"epsilon", SMELT_PARAM_NUMBER, 0, 0, 1e-5},
};

/* At most 255 models: the per-element contributor count is a byte (see ram_stats). */
const smelt_method smelt_method_ram = {
    .name = "ram", .params = ram_params, .nparams = 1, .base_use = SMELT_BASE_REQUIRED,
    .min_models = 1, .max_models = 255, .prepare = ram_prepare, .apply = ram_apply,
    .release = ram_release,
};

const smelt_method smelt_method_ramplus_tl = {
    .name = "ramplus_tl", .params = ramplus_params, .nparams = 3,
    .base_use = SMELT_BASE_REQUIRED, .min_models = 1, .max_models = 255,
    .prepare = ramplus_prepare, .apply = ram_apply, .passes = ram_passes,
    .partial_size = ram_partial_size, .stats = ram_stats, .fold = ram_fold,
    .end_pass = ram_end_pass, .finished = ram_finished, .release = ram_release,
};
