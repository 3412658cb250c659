/* The exact rank-range selection of the task-vector methods, driven through the method vtable
 * the way the engine drives it (statistics passes over tasks of tiles, folds in task order, the
 * apply pass with its per-task scratch), against a sort on (|d| bit pattern, index): ties at
 * the threshold, k = 0, all-equal magnitudes, NaN and Inf magnitudes, several tasks. */
#include "methods/method.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Runs `method` on base = 0 and one model with task vector d (weight 1); out = the result. */
static void run(const char *method, const float *d, size_t n, double density, double gamma,
                float *out)
{
    const smelt_method *m = smelt_method_find(method);
    ck_assert_ptr_nonnull(m);
    double vals[16][2];
    const double *values[16];
    for (size_t p = 0; p < m->nparams; p++) {
        vals[p][0] = vals[p][1] = m->params[p].default_value;
        values[p] = vals[p];
    }
    vals[smelt_method_param_index(m, "weight")][1] = 1.0;
    vals[smelt_method_param_index(m, "density")][1] = density;
    int g = smelt_method_param_index(m, "gamma");
    if (g >= 0)
        vals[g][1] = gamma;
    const char *names[2] = {"base", "model"};
    smelt_tensor_args args = {.tensor = "t", .ninputs = 2, .has_base = 1, .input_names = names,
                              .values = values, .numel = n};
    smelt_ctx *ctx = smelt_ctx_new();
    void *state;
    ck_assert_int_eq(m->prepare(ctx, &args, &state), SMELT_OK);
    float *zero = calloc(n, sizeof(float));
    float *scratch = malloc(2 * SMELT_TILE_ELEMS * sizeof(float));
    smelt_dtype dt[2] = {SMELT_DT_F32, SMELT_DT_F32};
    const void *raw[2];
    smelt_tile tile = {.k = smelt_kernels_get(), .ninputs = 2, .raw = raw, .dtype = dt,
                       .scratch = scratch};
    unsigned passes = m->passes(state);
    for (unsigned p = 0; p <= passes; p++) {
        size_t size = m->partial_size(state, p);
        void *partial = malloc(size ? size : 1);
        for (size_t t0 = 0; t0 < n; t0 += SMELT_TASK_ELEMS) {
            memset(partial, 0, size);
            size_t t1 = t0 + SMELT_TASK_ELEMS < n ? t0 + SMELT_TASK_ELEMS : n;
            for (size_t at = t0; at < t1; at += SMELT_TILE_ELEMS) {
                tile.n = t1 - at < SMELT_TILE_ELEMS ? t1 - at : SMELT_TILE_ELEMS;
                tile.index0 = at;
                raw[0] = zero + at;
                raw[1] = d + at;
                if (p < passes) {
                    m->stats(state, p, &tile, partial);
                } else {
                    tile.task_scratch = size ? partial : NULL;
                    m->apply(state, &tile, out + at);
                }
            }
            if (p < passes)
                m->fold(state, p, partial);
        }
        if (p < passes)
            ck_assert_int_eq(m->end_pass(ctx, state, p), SMELT_OK);
        free(partial);
    }
    m->release(state);
    smelt_ctx_free(ctx);
    free(zero);
    free(scratch);
}

static const float *keys;
static int by_key(const void *a, const void *b)
{
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    uint32_t x, y;
    memcpy(&x, &keys[i], 4);
    memcpy(&y, &keys[j], 4);
    x &= 0x7FFFFFFFu, y &= 0x7FFFFFFFu;
    return x != y ? (x < y ? -1 : 1) : (i < j ? -1 : 1);
}

/* Checks out against d kept at ascending positions [lo, hi), bit for bit. */
static void expect_range(const float *d, const float *out, size_t n, size_t lo, size_t hi)
{
    size_t *order = malloc(n * sizeof *order);
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    keys = d;
    qsort(order, n, sizeof *order, by_key);
    size_t kept = 0, want_kept = 0;
    for (size_t p = 0; p < n; p++) {
        size_t e = order[p];
        int keep = p >= lo && p < hi;
        float want = keep ? 0.0f + d[e] : 0.0f;
        if (isnan(want)) {
            ck_assert_msg(isnan(out[e]), "element %zu: expected NaN", e);
        } else {
            ck_assert_msg(memcmp(&want, &out[e], 4) == 0 || (want == 0 && out[e] == 0),
                          "element %zu (position %zu): expected %g, got %g", e, p, (double)want,
                          (double)out[e]);
        }
        kept += out[e] != 0 || isnan(out[e]);
        want_kept += keep && (d[e] != 0 || isnan(d[e]));
    }
    ck_assert_uint_eq(kept, want_kept);
    free(order);
}

#define N (3 * SMELT_TASK_ELEMS + 777)

START_TEST(ties_at_threshold)
{
    /* Three magnitudes, most of them equal: the threshold lands inside a long run of ties that
     * spans every task. */
    float *d = malloc(N * sizeof *d), *out = malloc(N * sizeof *out);
    for (size_t i = 0; i < N; i++)
        d[i] = (i % 7 == 0) ? 2.0f : (i % 3 == 0 ? -1.0f : 1.0f);
    run("ties", d, N, 0.4, 0, out);
    size_t k = (size_t)floor(0.4 * N);
    expect_range(d, out, N, N - k, N);
    free(d);
    free(out);
}
END_TEST

START_TEST(k_zero_and_all_equal)
{
    float *d = malloc(N * sizeof *d), *out = malloc(N * sizeof *out);
    for (size_t i = 0; i < N; i++)
        d[i] = i & 1 ? -0.5f : 0.5f;
    run("ties", d, N, 1e-9, 0, out); /* floor(density * n) = 0: nothing survives */
    expect_range(d, out, N, N, N);
    run("ties", d, N, 0.5, 0, out); /* all equal: the later half by index */
    expect_range(d, out, N, N - (size_t)floor(0.5 * N), N);
    free(d);
    free(out);
}
END_TEST

START_TEST(breadcrumbs_both_ends_and_specials)
{
    float *d = malloc(N * sizeof *d), *out = malloc(N * sizeof *out);
    for (size_t i = 0; i < N; i++)
        d[i] = (float)((i * 2654435761u) % 1000) * 0.001f - 0.5f;
    d[5] = INFINITY;
    d[77777] = -INFINITY;
    d[100] = NAN;
    d[9] = 0.0f;
    d[10] = -0.0f;
    run("breadcrumbs", d, N, 0.5, 0.1, out);
    size_t top = (size_t)floor(0.1 * N), bot = N - (size_t)floor(0.5 * N) - top;
    expect_range(d, out, N, bot, N - top);
    /* gamma larger than what density leaves: the bottom end closes at 0, the top one moves. */
    run("breadcrumbs", d, N, 0.9, 0.5, out);
    int64_t t2 = (int64_t)floor(0.5 * N), b2 = (int64_t)N - (int64_t)floor(0.9 * N) - t2;
    expect_range(d, out, N, 0, N - (size_t)(t2 + b2));
    /* NaN magnitudes rank above Inf: the top-k keeps them first. */
    run("ties", d, N, 3.0 / N, 0, out);
    expect_range(d, out, N, N - 3, N);
    ck_assert(isnan(out[100]) && isinf(out[5]) && isinf(out[77777]));
    free(d);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("taskvec");
    TCase *tc = tcase_create("rank_select");
    tcase_add_test(tc, ties_at_threshold);
    tcase_add_test(tc, k_zero_and_all_equal);
    tcase_add_test(tc, breadcrumbs_both_ends_and_specials);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
