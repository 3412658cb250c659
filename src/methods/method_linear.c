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
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(w[i])) {
            free(s);
            return smelt_fail(ctx, SMELT_E_CONFIG, "tensor '%s': model '%s': weight %g is not finite",
                              args->tensor, args->input_names[i], w[i]);
        }
        sum += w[i];
    }
    int normalize = args->values[PARAM_NORMALIZE][0] != 0;
    if (normalize && fabs(sum) < 1e-8) {
        free(s);
        return smelt_fail(ctx, SMELT_E_CONFIG,
                          "tensor '%s': the weights sum to %g, so normalize cannot divide by it "
                          "(set normalize: false or change the weights)", args->tensor, sum);
    }
    /* Folding 1/Σw into the weights (in double, rounded once) keeps the hot loop to one
     * multiply-add per input. */
    s->n = n;
    for (size_t i = 0; i < n; i++)
        s->weights[i] = (float)(normalize ? w[i] / sum : w[i]);
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
