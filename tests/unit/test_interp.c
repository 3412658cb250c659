/* methods/method_interp.c: the coefficient math of the Gram-based methods, driven through the
 * method vtable (prepare → stats → fold → end_pass → apply) on hand-made small vectors whose
 * merge is known in closed form. */
#include "methods/method.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>

#define DIM 3

/* Runs `method` on inputs x[0..ninputs) of DIM floats (the base first when has_base) with the
 * parameter values vals[p] (per-model ones take vals[p] for every input) into out. */
static void run(const char *method, int has_base, size_t ninputs, const float x[][DIM],
                const double *vals, float *out)
{
    const smelt_method *m = smelt_method_find(method);
    ck_assert_ptr_nonnull(m);
    double store[8][8];
    const double *values[8];
    const char *names[8] = {"m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7"};
    for (size_t p = 0; p < m->nparams; p++) {
        for (size_t i = 0; i < ninputs; i++)
            store[p][i] = vals[p];
        values[p] = store[p];
    }
    smelt_tensor_args args = {.tensor = "w", .ninputs = ninputs, .has_base = has_base,
                              .input_names = names, .values = values, .numel = DIM};
    void *state = NULL;
    ck_assert_int_eq(m->prepare(NULL, &args, &state), SMELT_OK);
    const void *raw[8];
    smelt_dtype dt[8];
    for (size_t i = 0; i < ninputs; i++) {
        raw[i] = x[i];
        dt[i] = SMELT_DT_F32;
    }
    float *scratch = calloc(ninputs * SMELT_TILE_ELEMS, sizeof(float));
    smelt_tile tile = {.k = smelt_kernels_get(), .ninputs = ninputs, .raw = raw, .dtype = dt,
                       .scratch = scratch, .n = DIM};
    if (m->passes && m->passes(state)) {
        void *partial = calloc(1, m->partial_size(state, 0));
        m->stats(state, 0, &tile, partial);
        m->fold(state, 0, partial);
        ck_assert_int_eq(m->end_pass(NULL, state, 0), SMELT_OK);
        free(partial);
    }
    m->apply(state, &tile, out);
    m->release ? m->release(state) : free(state);
    free(scratch);
}

static void expect_near(const float *got, double x, double y, double z)
{
    ck_assert_msg(fabs(got[0] - x) < 1e-5 && fabs(got[1] - y) < 1e-5 && fabs(got[2] - z) < 1e-5,
                  "got (%g, %g, %g), want (%g, %g, %g)", got[0], got[1], got[2], x, y, z);
}

static double rad(double deg) { return deg * M_PI / 180; }

START_TEST(karcher_is_the_mean_angle_on_a_circle)
{
    /* On a great circle the log map is the angle difference, so the Karcher mean of directions
     * at 0°, 90° and 30° is the direction at their mean angle, 40°; the length is the mean norm
     * (1 + 2 + 3)/3 = 2. */
    const float x[3][DIM] = {{1, 0, 0}, {0, 2, 0}, {(float)(3 * cos(rad(30))), (float)(3 * sin(rad(30))), 0}};
    double vals[] = {10, 1e-5}; /* max_iter, tol */
    float out[DIM];
    run("karcher", 0, 3, x, vals, out);
    expect_near(out, 2 * cos(rad(40)), 2 * sin(rad(40)), 0);
}
END_TEST

START_TEST(karcher_of_orthonormal_vectors_is_their_centre)
{
    const float x[3][DIM] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
    double vals[] = {10, 1e-5};
    float out[DIM];
    run("karcher", 0, 3, x, vals, out);
    double c = 1 / sqrt(3);
    expect_near(out, c, c, c);
}
END_TEST

START_TEST(karcher_zero_vectors_give_zero)
{
    const float x[2][DIM] = {{0, 0, 0}, {0, 0, 0}};
    double vals[] = {10, 1e-5};
    float out[DIM] = {1, 1, 1};
    run("karcher", 0, 2, x, vals, out);
    ck_assert(out[0] == 0 && !signbit(out[0]) && out[1] == 0 && out[2] == 0);
}
END_TEST

START_TEST(slerp_halfway_between_orthogonal_vectors)
{
    /* θ = 90°: sin(45°)/sin(90°) on each of the UN-normalized ends. */
    const float x[2][DIM] = {{2, 0, 0}, {0, 4, 0}};
    double vals[] = {0.5};
    float out[DIM];
    run("slerp", 1, 2, x, vals, out);
    expect_near(out, 2 * sin(rad(45)), 4 * sin(rad(45)), 0);
}
END_TEST

START_TEST(nuslerp_with_base_slerps_the_task_vectors)
{
    /* Task vectors (1,0,0) and (0,1,0), equal weights (t = 0.5), on top of the base (1,1,1). */
    const float x[3][DIM] = {{1, 1, 1}, {2, 1, 1}, {1, 2, 1}};
    float out[DIM];
    double eq[] = {1, 1, 0}; /* weight, nuslerp_flatten, nuslerp_row_wise */
    run("nuslerp", 1, 3, x, eq, out);
    expect_near(out, 1 + sin(rad(45)), 1 + sin(rad(45)), 1);
}
END_TEST

START_TEST(multislerp_of_orthogonal_unit_vectors)
{
    /* Equal weights on e1, e2: mean direction (e1+e2)/√2, zero tangent, length 1. */
    const float x[2][DIM] = {{1, 0, 0}, {0, 1, 0}};
    double vals[] = {1, 1, 1e-8}; /* weight, normalize_weights, eps */
    float out[DIM];
    run("multislerp", 0, 2, x, vals, out);
    expect_near(out, sin(rad(45)), sin(rad(45)), 0);
}
END_TEST

START_TEST(model_stock_ratio)
{
    /* Task vectors (1,0,0), (1,1,0): cos = 1/√2, t = 2 cos/(1 + cos); out = base + t·mean τ. */
    const float x[3][DIM] = {{1, 1, 1}, {2, 1, 1}, {2, 2, 1}};
    double vals[] = {0};
    float out[DIM];
    run("model_stock", 1, 3, x, vals, out);
    double c = 1 / sqrt(2), t = 2 * c / (1 + c);
    expect_near(out, 1 + t, 1 + t * 0.5, 1);
    /* Orthogonal task vectors: cos = 0, so t = 0 and the base comes out. */
    const float y[3][DIM] = {{1, 1, 1}, {2, 1, 1}, {1, 2, 1}};
    run("model_stock", 1, 3, y, vals, out);
    expect_near(out, 1, 1, 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("interp");
    TCase *tc = tcase_create("coefficients");
    tcase_add_test(tc, karcher_is_the_mean_angle_on_a_circle);
    tcase_add_test(tc, karcher_of_orthonormal_vectors_is_their_centre);
    tcase_add_test(tc, karcher_zero_vectors_give_zero);
    tcase_add_test(tc, slerp_halfway_between_orthogonal_vectors);
    tcase_add_test(tc, nuslerp_with_base_slerps_the_task_vectors);
    tcase_add_test(tc, multislerp_of_orthogonal_unit_vectors);
    tcase_add_test(tc, model_stock_ratio);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
