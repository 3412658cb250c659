/* arcee_fusion and ram driven through the method vtable the way the engine drives them (tasks of
 * task_elems, tiles in index order, partials zeroed per task and folded in task order), on
 * inputs the end-to-end models never hold: rows whose KL rounds below zero (negative
 * importances, so the quartiles need the signed order), NaNs, signed zeros, one-element rows,
 * rows straddling the default task size. The expected arcee_fusion output is computed here with
 * a plain sort; the sign-folded radix keys are checked against the float order directly. */
#include "methods/method.h"
#include "methods/method_radix.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Runs `method` on base b and one model x (n elements in rows of `row`), global parameters
 * `values` (one per parameter, NULL for none); out = the result. Returns prepare's status. */
static int drive(const char *method, const float *b, const float *const *models, size_t nmodels,
                 size_t n, uint64_t row, const double *values, float *out)
{
    const smelt_method *m = smelt_method_find(method);
    ck_assert_ptr_nonnull(m);
    double vals[8][8];
    const double *pv[8];
    for (size_t p = 0; p < m->nparams; p++) {
        for (size_t i = 0; i < 8; i++)
            vals[p][i] = values ? values[p] : m->params[p].default_value;
        pv[p] = vals[p];
    }
    size_t ninputs = nmodels + 1;
    const char *names[8] = {"base", "m1", "m2", "m3", "m4", "m5", "m6", "m7"};
    smelt_tensor_args args = {.tensor = "t", .ninputs = ninputs, .has_base = 1,
                              .input_names = names, .values = pv, .numel = n, .row_elems = row};
    smelt_ctx *ctx = smelt_ctx_new();
    void *state;
    int rc = m->prepare(ctx, &args, &state);
    if (rc != SMELT_OK) {
        smelt_ctx_free(ctx);
        return rc;
    }
    uint64_t task = m->task_elems && m->task_elems(state) ? m->task_elems(state)
                                                          : SMELT_TASK_ELEMS;
    float *scratch = malloc(ninputs * SMELT_TILE_ELEMS * sizeof(float));
    smelt_dtype dt[8];
    const float *in[8] = {b};
    for (size_t i = 0; i < ninputs; i++) {
        dt[i] = SMELT_DT_F32;
        if (i)
            in[i] = models[i - 1];
    }
    const void *raw[8], *task_raw[8];
    smelt_tile tile = {.k = smelt_kernels_get(), .ninputs = ninputs, .raw = raw, .dtype = dt,
                       .scratch = scratch, .task_raw = task_raw};
    unsigned passes = m->passes ? m->passes(state) : 0;
    for (unsigned p = 0; p <= passes; p++) {
        size_t size = m->partial_size ? m->partial_size(state, p) : 0;
        void *partial = malloc(size ? size : 1);
        for (size_t t0 = 0; t0 < n; t0 += task) {
            memset(partial, 0, size);
            size_t t1 = t0 + task < n ? t0 + task : n;
            for (size_t i = 0; i < ninputs; i++)
                task_raw[i] = in[i] + t0;
            tile.task_index0 = t0;
            tile.task_n = t1 - t0;
            for (size_t at = t0; at < t1; at += SMELT_TILE_ELEMS) {
                tile.n = t1 - at < SMELT_TILE_ELEMS ? t1 - at : SMELT_TILE_ELEMS;
                tile.index0 = at;
                for (size_t i = 0; i < ninputs; i++)
                    raw[i] = in[i] + at;
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
    if (m->finished)
        m->finished(state);
    m->release ? m->release(state) : free(state);
    smelt_ctx_free(ctx);
    free(scratch);
    return SMELT_OK;
}

/* The documented per-row KL, written out again: double, index order. */
static float kl_of(const float *x, const float *b, size_t len)
{
    float mx = -INFINITY, mb = -INFINITY;
    for (size_t j = 0; j < len; j++) {
        mx = x[j] > mx ? x[j] : mx;
        mb = b[j] > mb ? b[j] : mb;
    }
    double sx = 0, sb = 0, kl = 0;
    for (size_t j = 0; j < len; j++) {
        sx += exp((double)x[j] - mx);
        sb += exp((double)b[j] - mb);
    }
    for (size_t j = 0; j < len; j++) {
        double p = exp((double)x[j] - mx) / sx + 1e-8, q = exp((double)b[j] - mb) / sb + 1e-8;
        kl += p * log(p / q);
    }
    return (float)kl;
}

static int by_value(const void *pa, const void *pb)
{
    float a = *(const float *)pa, b = *(const float *)pb;
    if (isnan(a) || isnan(b))
        return isnan(a) - isnan(b);
    return a < b ? -1 : a > b;
}

/* Checks arcee_fusion on (b, x) in rows of `row` against a sort; returns the elements kept and
 * sets *negative to the importances below zero. */
static size_t expect_fusion(const float *b, const float *x, size_t n, size_t row, size_t *negative)
{
    float *imp = malloc(n * sizeof *imp), *sorted = malloc(n * sizeof *sorted);
    float *out = malloc(n * sizeof *out);
    size_t len = row ? row : n;
    for (size_t r0 = 0; r0 < n; r0 += len) {
        float kl = kl_of(x + r0, b + r0, len);
        for (size_t j = r0; j < r0 + len; j++)
            imp[j] = fabsf(x[j] - b[j]) * kl;
    }
    memcpy(sorted, imp, n * sizeof *imp);
    qsort(sorted, n, sizeof *sorted, by_value);
    float q1 = sorted[(n - 1) / 4], med = sorted[(n - 1) / 2], q3 = sorted[3 * (n - 1) / 4];
    float threshold = med + 1.5f * (q3 - q1);
    const float *models[1] = {x};
    ck_assert_int_eq(drive("arcee_fusion", b, models, 1, n, row, NULL, out), SMELT_OK);
    size_t kept = 0;
    *negative = 0;
    for (size_t e = 0; e < n; e++) {
        float mask = imp[e] >= threshold ? 1.0f : 0.0f;
        float want = b[e] + (x[e] - b[e]) * mask;
        kept += mask != 0;
        *negative += imp[e] < 0;
        ck_assert_msg(memcmp(&want, &out[e], 4) == 0 || (isnan(want) && isnan(out[e])),
                      "element %zu: expected %a, got %a", e, (double)want, (double)out[e]);
    }
    free(imp);
    free(sorted);
    free(out);
    return kept;
}

static uint64_t rng = 88172645463325252ull;
static double uniform(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

START_TEST(signed_keys_order_like_floats)
{
    const float v[] = {-INFINITY, -3.5f, -1e-30f, -0.0f, 0.0f, 1e-45f, 2.0f, INFINITY, NAN};
    size_t n = sizeof v / sizeof v[0];
    for (size_t i = 0; i + 1 < n; i++)
        ck_assert_uint_lt(smelt_radix_signed_key(v[i]), smelt_radix_signed_key(v[i + 1]));
    ck_assert_uint_eq(smelt_radix_signed_key(-NAN), smelt_radix_signed_key(NAN));
    for (size_t i = 0; i + 1 < n; i++) {
        float back = smelt_radix_signed_value(smelt_radix_signed_key(v[i]));
        ck_assert(memcmp(&back, &v[i], 4) == 0);
    }
    ck_assert(isnan(smelt_radix_signed_value(smelt_radix_signed_key(NAN))));
}
END_TEST

/* Rows of logits near 1e-6 whose model differs from the base by a few ulps (~1e-12): the KL
 * (~1e-26) is far below its rounding error (~1e-18), so about half of those rows get a
 * negative KL and negative importances; mixed with rows of clear differences and rows equal to
 * the base (KL 0). */
START_TEST(fusion_negative_importances)
{
    size_t row = 96, rows = 700, n = row * rows; /* 700 x 96 > one default task */
    float *b = malloc(n * sizeof *b), *x = malloc(n * sizeof *x);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < row; j++) {
            size_t e = r * row + j;
            double scale = r % 3 == 1 ? 1e-6 : 1, step = r % 3 == 0 ? 0.3 : r % 3 == 1 ? 1e-12 : 0;
            b[e] = (float)((uniform() * 2 - 1) * scale);
            x[e] = b[e] + (float)((uniform() * 2 - 1) * step);
        }
    size_t negative, kept = expect_fusion(b, x, n, row, &negative);
    ck_assert_uint_gt(negative, n / 20); /* the signed order is exercised */
    ck_assert_uint_gt(kept, 0);
    ck_assert_uint_lt(kept, n);
    free(b);
    free(x);
}
END_TEST

/* NaNs rank last: below a quarter of the elements they only shift the quartiles; above it q3 is
 * NaN, so is the threshold, and nothing is kept. */
START_TEST(fusion_nans)
{
    size_t row = 50, n = row * 40;
    float *b = malloc(n * sizeof *b), *x = malloc(n * sizeof *x);
    for (size_t e = 0; e < n; e++) {
        b[e] = (float)(uniform() - 0.5);
        x[e] = b[e] + (float)((uniform() - 0.5) * (e % 7 == 0 ? 2 : 0.1));
    }
    x[3] = NAN; /* row 0's KL is NaN: 50 NaN importances of 2000 */
    size_t negative, kept = expect_fusion(b, x, n, row, &negative);
    ck_assert_uint_gt(kept, 0);
    for (size_t r = 0; r < 12; r++) /* 600 of 2000 NaN: past the upper quartile */
        x[r * row + 1] = NAN;
    kept = expect_fusion(b, x, n, row, &negative);
    ck_assert_uint_eq(kept, 0);
    free(b);
    free(x);
}
END_TEST

/* One-element rows (KL 0: every importance is +-0, the threshold 0, all kept), a 1-D tensor
 * (one row), and rows of 3000 that make tasks of 21 rows, not a power of two. */
START_TEST(fusion_row_shapes)
{
    size_t n = 3000 * 30;
    float *b = malloc(n * sizeof *b), *x = malloc(n * sizeof *x);
    for (size_t e = 0; e < n; e++) {
        b[e] = (float)(uniform() - 0.5);
        double u = uniform();
        x[e] = b[e] + (float)((u - 0.5) * 0.02 * (u > 0.97 ? 20 : 1));
    }
    size_t negative;
    ck_assert_uint_eq(expect_fusion(b, x, 5000, 1, &negative), 5000);
    size_t kept = expect_fusion(b, x, 40000, 0, &negative);
    ck_assert_uint_gt(kept, 0);
    ck_assert_uint_lt(kept, 40000);
    kept = expect_fusion(b, x, n, 3000, &negative);
    ck_assert_uint_gt(kept, 0);
    ck_assert_uint_lt(kept, n);
    ck_assert_uint_eq(expect_fusion(b, x, 1, 1, &negative), 1);
    free(b);
    free(x);
}
END_TEST

START_TEST(fusion_refusals)
{
    float v[4] = {0};
    const float *models[2] = {v, v};
    ck_assert_int_eq(drive("arcee_fusion", v, models, 2, 4, 4, NULL, v), SMELT_E_CONFIG);
    ck_assert_int_eq(drive("arcee_fusion", v, models, 1, 0, SMELT_TASK_ELEMS + 1, NULL, v),
                     SMELT_E_UNSUPPORTED);
}
END_TEST

/* mergekit multiplies by the masks, so an Inf or NaN delta poisons its element (Inf · 0 is NaN),
 * while a model whose delta is within epsilon adds a signed zero. */
START_TEST(ram_nonfinite_and_counts)
{
    float b[4] = {1, 1, 1, -0.0f}, x[4] = {INFINITY, NAN, 1.5f, -0.0f}, y[4] = {1, 1, 3, 0};
    const float *models[2] = {x, y};
    float out[4];
    double eps[1] = {0.1};
    ck_assert_int_eq(drive("ram", b, models, 2, 4, 4, eps, out), SMELT_OK);
    ck_assert(isnan(out[0]) && isnan(out[1]));
    ck_assert(out[2] == 1 + (0.5f / 2 + 2.0f / 2));
    float z = -0.0f + (-0.0f * 0.0f + 0.0f * 0.0f);
    ck_assert(memcmp(&out[3], &z, 4) == 0);
    /* ramplus_tl: p contributes alone at elements 0 and 1, q at 3, both at 2. */
    float b2[6] = {0, 0, 0, 0, 0, 0}, p[6] = {1, 1, 1, 0, 0, 0}, q[6] = {0, 0, 1, 1, 0, 0};
    const float *m2[2] = {p, q};
    float o2[6];
    double par[3] = {0.5, 0.4, 1e-5}; /* r, alpha, epsilon */
    ck_assert_int_eq(drive("ramplus_tl", b2, m2, 2, 6, 6, par, o2), SMELT_OK);
    /* p: shared 1, unique 2: λ = 1 + 0.5 · min(0.5, 0.4) = 1.2; q: shared 1, unique 1: 1.2. */
    float lam = 1.0f + 0.5f * 0.4f;
    ck_assert(o2[0] == 1.0f * lam && o2[1] == 1.0f * lam && o2[3] == 1.0f * lam);
    ck_assert(o2[2] == 0.5f + 0.5f && o2[4] == 0 && o2[5] == 0);
    double bad[3] = {0.5, 0.4, 0};
    ck_assert_int_eq(drive("ramplus_tl", b2, m2, 2, 6, 6, bad, o2), SMELT_E_CONFIG);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fusion_ram");
    TCase *tc = tcase_create("arcee_fusion");
    tcase_add_test(tc, signed_keys_order_like_floats);
    tcase_add_test(tc, fusion_negative_importances);
    tcase_add_test(tc, fusion_nans);
    tcase_add_test(tc, fusion_row_shapes);
    tcase_add_test(tc, fusion_refusals);
    suite_add_tcase(s, tc);
    TCase *rm = tcase_create("ram");
    tcase_add_test(rm, ram_nonfinite_and_counts);
    suite_add_tcase(s, rm);
    return tu_run_suite(s);
}
