/* linear: a weighted average of the models (model soups).
 * out = Σ w_i θ_i, divided by Σ w_i when `normalize` (default true) — mergekit's semantics. */
#include "methods/method.h"

#include <math.h>
#include <stdlib.h>

enum { PARAM_WEIGHT, PARAM_NORMALIZE };

static const smelt_param_def linear_params[] = {
    [PARAM_WEIGHT] = {"weight", SMELT_PARAM_NUMBER, 1, 1, 0.0},
    [PARAM_NORMALIZE] = {"normalize", SMELT_PARAM_BOOL, 0, 0, 1.0},
};

typedef struct linear_state {
    size_t n;
    float weights[];
} linear_state;

static int linear_prepare(smelt_ctx *ctx, const smelt_tensor_args *args, void **state)
{
    size_t n = args->ninputs;
    linear_state *s = malloc(sizeof *s + n * sizeof(float));
    if (!s)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    const double *w = args->values[PARAM_WEIGHT];
    int normalize = args->values[PARAM_NORMALIZE][0] != 0;
    double sum = 0;
    int rc = SMELT_OK;
    for (size_t i = 0; i < n && rc == SMELT_OK; i++) {
        rc = smelt_check_finite(ctx, "linear", args, i, "weight", w[i], SMELT_NUM_F64);
        sum += w[i];
    }
    /* Finite weights can still sum to an infinity (1e308 + 1e308), and w/inf is 0. */
    if (rc == SMELT_OK && normalize)
        rc = smelt_check_finite(ctx, "linear", args, SMELT_NO_INPUT, "the sum of the weights",
                                sum, SMELT_NUM_F64);
    if (rc == SMELT_OK && normalize && fabs(sum) < 1e-8)
        rc = smelt_fail(ctx, SMELT_E_CONFIG,
                        "tensor '%s': the weights sum to %g, so normalize cannot divide by it "
                        "(set normalize: false or change the weights)", args->tensor, sum);
    /* Folding 1/Σw into the weights (in double, rounded once) keeps the hot loop to one
     * multiply-add per input; the f32 weight is what the kernels use, so that is what must be
     * finite. */
    s->n = n;
    for (size_t i = 0; i < n && rc == SMELT_OK; i++) {
        double used = normalize ? w[i] / sum : w[i];
        rc = smelt_check_finite(ctx, "linear", args, i, normalize ? "weight / sum of the weights"
                                : "weight", used, SMELT_NUM_F32);
        if (rc == SMELT_OK)
            s->weights[i] = (float)used;
    }
    if (rc != SMELT_OK) {
        free(s);
        return rc;
    }
    *state = s;
    return SMELT_OK;
}

static void linear_apply(const void *state, const smelt_tile *tile, float *out)
{
    const linear_state *s = state;
    /* The fused kernels decode as they accumulate: one pass per input over an L1 tile. */
    smelt_tile_scale(tile, 0, s->weights[0], out);
    for (size_t i = 1; i < s->n; i++)
        smelt_tile_axpy(tile, i, s->weights[i], out);
}

const smelt_method smelt_method_linear = {
    .name = "linear",
    .params = linear_params,
    .nparams = sizeof linear_params / sizeof linear_params[0],
    .base_use = SMELT_BASE_IGNORED,
    .min_models = 1,
    .max_models = 0, /* no limit */
    .prepare = linear_prepare,
    .apply = linear_apply,
};
