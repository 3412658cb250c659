/* emr: EMR-merging, "Elect, Mask & Rescale" (Huang et al., NeurIPS 2024, arXiv 2405.17461), as
 * FusionBench implements it in fusion_bench/method/emr_merging/utils.py (emr_merge, and
 * EMRTaskModulator.apply for what one task's model is). No parameters besides the models (as
 * in FusionBench); a base_model and at least two models. mergekit has no such method.
 *
 * Per element, with task vectors τ_i = θ_i − θ₀ over the models in config order:
 *   flag  = sign(Σ_i τ_i), 0 → −1                 FusionBench's _sign: (x > 0) * 2 − 1
 *   M_i   = (τ_i · flag > 0)                      the models that agree with the elected sign
 *   τ_uni = flag · max_i |M_i · τ_i|              the largest agreeing magnitude (0 if none)
 * and one output per model i (the merge writes one directory per model; this plan is output
 * args->output): θ₀ + λ_i · M_i · τ_uni, with the rescaler
 *   λ_i = Σ|τ_i| / Σ|M_i · τ_uni|  over the tensor.
 * FusionBench sums the per-parameter means over the whole model into one λ_i per task; smelt
 * rescales per tensor (mean/mean over one tensor is the ratio of its sums), which is what one
 * statistics pass per tensor gives and matches each tensor's magnitude on its own. When no
 * element of the tensor agrees (Σ|M_i · τ_uni| = 0) the output is the base (λ_i = 0 rather than
 * FusionBench's division by zero).
 *
 * Arithmetic: the tile math in f32 in FusionBench's order (Σ τ_i sequential from τ_1; the max by
 * strict comparison from 0; (τ_uni · M_i) · λ_i, then θ₀ + that); the two sums in f64, each
 * task's elements in index order and the tasks folded in order; λ_i = S/D in f64, rounded to
 * f32 once. Every element depends on its inputs and the tensor's λ_i only, so the output is the
 * same for any thread count, budget or SIMD level. */
#include "methods/method.h"

#include <math.h>
#include <stdlib.h>

typedef struct emr_state {
    const char *tensor; /* for messages */
    const char *model;  /* the output's model reference, for messages */
    size_t n;           /* models, base excluded; input i + 1 is model i */
    size_t output;      /* whose output: model `output` */
    double sum_abs;     /* Σ|τ_output| */
    double sum_masked;  /* Σ|M_output · τ_uni| */
    float lambda;
} emr_state;

static int emr_prepare(smelt_ctx *ctx, const smelt_tensor_args *args, void **state)
{
    if (!args->has_base || args->ninputs < 3)
        return smelt_fail(ctx, SMELT_E_CONFIG, "method 'emr': tensor '%s': needs a base_model and "
                          "at least two other models", args->tensor);
    size_t n = args->ninputs - 1;
    if (args->output >= n)
        return smelt_fail(ctx, SMELT_E_INTERNAL, "method 'emr': tensor '%s': output %zu of %zu "
                          "models", args->tensor, args->output, n);
    emr_state *s = calloc(1, sizeof *s);
    if (!s)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    s->tensor = args->tensor;
    s->model = args->input_names[args->output + 1];
    s->n = n;
    s->output = args->output;
    *state = s;
    return SMELT_OK;
}

/* Decodes the tile into the worker's scratch (slot 0 the base, slot i + 1 model i's τ_i) and
 * computes the elected sign and τ_uni per element. Returns the base. */
static const float *elect(const emr_state *s, const smelt_tile *t, float *flag, float *uni)
{
    size_t n = t->n;
    float *base = t->scratch;
    smelt_decode(t->k, base, t->raw[0], t->dtype[0], n);
    for (size_t i = 1; i <= s->n; i++) {
        float *d = t->scratch + i * SMELT_TILE_ELEMS;
        smelt_decode(t->k, d, t->raw[i], t->dtype[i], n);
        t->k->sub(d, d, base, n);
    }
    const float *first = t->scratch + SMELT_TILE_ELEMS;
    for (size_t j = 0; j < n; j++)
        flag[j] = first[j];
    for (size_t i = 2; i <= s->n; i++) {
        const float *d = t->scratch + i * SMELT_TILE_ELEMS;
        for (size_t j = 0; j < n; j++)
            flag[j] += d[j];
    }
    for (size_t j = 0; j < n; j++) {
        flag[j] = flag[j] > 0 ? 1.0f : -1.0f;
        uni[j] = 0;
    }
    for (size_t i = 1; i <= s->n; i++) {
        const float *d = t->scratch + i * SMELT_TILE_ELEMS;
        for (size_t j = 0; j < n; j++) {
            float masked = fabsf(d[j] * (float)(d[j] * flag[j] > 0));
            uni[j] = masked > uni[j] ? masked : uni[j];
        }
    }
    for (size_t j = 0; j < n; j++)
        uni[j] *= flag[j];
    return base;
}

static unsigned emr_passes(const void *state)
{
    (void)state;
    return 1;
}

/* The statistics pass: the task's two sums; the apply pass keeps nothing. */
static size_t emr_partial_size(const void *state, unsigned pass)
{
    (void)state;
    return pass == 0 ? 2 * sizeof(double) : 0;
}

static void emr_stats(const void *state, unsigned pass, const smelt_tile *t, void *partial)
{
    const emr_state *s = state;
    float flag[SMELT_TILE_ELEMS], uni[SMELT_TILE_ELEMS];
    elect(s, t, flag, uni);
    const float *d = t->scratch + (s->output + 1) * SMELT_TILE_ELEMS;
    double *sums = partial;
    (void)pass;
    for (size_t j = 0; j < t->n; j++) {
        sums[0] += fabs((double)d[j]);
        sums[1] += fabs((double)(uni[j] * (float)(d[j] * flag[j] > 0)));
    }
}

static void emr_fold(void *state, unsigned pass, const void *partial)
{
    emr_state *s = state;
    const double *sums = partial;
    (void)pass;
    s->sum_abs += sums[0];
    s->sum_masked += sums[1];
}

static int emr_end_pass(smelt_ctx *ctx, void *state, unsigned pass)
{
    emr_state *s = state;
    (void)pass;
    if (s->sum_masked == 0) { /* no element agrees: M_i · τ_uni is 0 everywhere */
        s->lambda = 0;
        return SMELT_OK;
    }
    double lambda = s->sum_abs / s->sum_masked;
    if (!isfinite((double)(float)lambda))
        return smelt_fail(ctx, SMELT_E_CONFIG, "method 'emr': tensor '%s': model '%s': the "
                          "rescaler %g (sum |tau| %g over sum |mask * tau_uni| %g) is not a "
                          "finite f32 (non-finite weights?)", s->tensor, s->model, lambda,
                          s->sum_abs, s->sum_masked);
    s->lambda = (float)lambda;
    return SMELT_OK;
}

static void emr_apply(const void *state, const smelt_tile *t, float *out)
{
    const emr_state *s = state;
    float flag[SMELT_TILE_ELEMS], uni[SMELT_TILE_ELEMS];
    const float *base = elect(s, t, flag, uni);
    const float *d = t->scratch + (s->output + 1) * SMELT_TILE_ELEMS;
    for (size_t j = 0; j < t->n; j++)
        out[j] = base[j] + (uni[j] * (float)(d[j] * flag[j] > 0)) * s->lambda;
}

/* At most 255 models, as the other methods (the engine's read tags). */
const smelt_method smelt_method_emr = {
    .name = "emr", .params = NULL, .nparams = 0, .base_use = SMELT_BASE_REQUIRED,
    .min_models = 2, .max_models = 255, .outputs_per_model = 1, .prepare = emr_prepare,
    .apply = emr_apply, .passes = emr_passes, .partial_size = emr_partial_size,
    .stats = emr_stats, .fold = emr_fold, .end_pass = emr_end_pass,
};
