#include "methods/method.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

extern const smelt_method smelt_method_linear;
extern const smelt_method smelt_method_slerp, smelt_method_nuslerp, smelt_method_multislerp,
    smelt_method_karcher, smelt_method_model_stock, smelt_method_nearswap,
    smelt_method_passthrough;
extern const smelt_method smelt_method_task_arithmetic, smelt_method_ties,
    smelt_method_dare_ties, smelt_method_dare_linear, smelt_method_breadcrumbs,
    smelt_method_breadcrumbs_ties, smelt_method_della, smelt_method_della_linear,
    smelt_method_metagpt, smelt_method_consensus_ta,
    smelt_method_consensus_ties, smelt_method_sce;
extern const smelt_method smelt_method_ram, smelt_method_ramplus_tl, smelt_method_arcee_fusion;
extern const smelt_method smelt_method_emr;

static const smelt_method *const all_methods[] = {
    &smelt_method_linear,
    &smelt_method_task_arithmetic,
    &smelt_method_ties,
    &smelt_method_dare_ties,
    &smelt_method_dare_linear,
    &smelt_method_breadcrumbs,
    &smelt_method_breadcrumbs_ties,
    &smelt_method_della,
    &smelt_method_della_linear,
    &smelt_method_metagpt,
    &smelt_method_consensus_ta,
    &smelt_method_consensus_ties,
    &smelt_method_sce,
    &smelt_method_ram,
    &smelt_method_ramplus_tl,
    &smelt_method_arcee_fusion,
    &smelt_method_emr,
    &smelt_method_slerp,
    &smelt_method_nuslerp,
    &smelt_method_multislerp,
    &smelt_method_karcher,
    &smelt_method_model_stock,
    &smelt_method_nearswap,
    &smelt_method_passthrough,
};

const smelt_method *smelt_method_find(const char *name)
{
    for (size_t i = 0; i < sizeof all_methods / sizeof all_methods[0]; i++)
        if (strcmp(all_methods[i]->name, name) == 0)
            return all_methods[i];
    return NULL;
}

/* Built from the table so that a new method can never be missing from messages. */
static char method_names[1024];

static void build_method_names(void)
{
    size_t at = 0;
    for (size_t i = 0; i < sizeof all_methods / sizeof all_methods[0]; i++)
        at += (size_t)snprintf(method_names + at, sizeof method_names - at, "%s%s",
                               i ? ", " : "", all_methods[i]->name);
}

const char *smelt_method_names(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, build_method_names);
    return method_names;
}

int smelt_method_param_index(const smelt_method *m, const char *name)
{
    for (size_t i = 0; i < m->nparams; i++)
        if (strcmp(m->params[i].name, name) == 0)
            return (int)i;
    return -1;
}

int smelt_check_finite(smelt_ctx *ctx, const char *method, const smelt_tensor_args *args,
                       size_t input, const char *what, double value, smelt_num_use use)
{
    /* Rounding to nearest gives an f32 infinity from FLT_MAX + half an ulp (2^128 - 2^103) up;
     * comparing with that bound says so without the out-of-range conversion itself. */
    int f32_overflow = use == SMELT_NUM_F32 && isfinite(value) && fabs(value) >= 0x1.ffffffp127;
    if (isfinite(value) && !f32_overflow)
        return SMELT_OK;
    char model[600] = "";
    if (input != SMELT_NO_INPUT && args->input_names && input < args->ninputs)
        snprintf(model, sizeof model, "model '%s': ", args->input_names[input]);
    if (f32_overflow)
        return smelt_fail(ctx, SMELT_E_CONFIG, "method '%s': %stensor '%s': %s = %g overflows "
                          "f32, in which the method computes (it must be within +-%g)", method,
                          model, args->tensor, what, value, (double)FLT_MAX);
    return smelt_fail(ctx, SMELT_E_CONFIG, "method '%s': %stensor '%s': %s = %g is not a finite "
                      "number", method, model, args->tensor, what, value);
}
