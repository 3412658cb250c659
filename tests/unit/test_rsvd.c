/* lora/rsvd: Gram-Schmidt orthonormality, Jacobi eigenpairs, the Gaussian sketch, and the
 * streamed randomized SVD against matrices with known singular values, identical across
 * thread counts and round sizes. */
#include "lora/rsvd.h"

#include "testutil.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static double urand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 9007199254740992.0 - 0.5;
}

/* max |Q^T Q - I| over the first k columns of the row-major [m, ld] q (zero columns count as
 * such). */
static double orth_defect_ld(const double *q, size_t m, size_t k, size_t ld)
{
    double worst = 0;
    for (size_t a = 0; a < k; a++)
        for (size_t b = 0; b < k; b++) {
            double s = 0;
            for (size_t i = 0; i < m; i++)
                s += q[i * ld + a] * q[i * ld + b];
            double want = a == b ? 1 : 0;
            double aa = 0;
            for (size_t i = 0; i < m; i++)
                aa += q[i * ld + a] * q[i * ld + a];
            if (aa == 0)
                want = 0;
            worst = fmax(worst, fabs(s - want));
        }
    return worst;
}

static double orth_defect(const double *q, size_t m, size_t k)
{
    return orth_defect_ld(q, m, k, k);
}

START_TEST(qr_orthonormal)
{
    size_t m = 50, k = 7;
    double *a = malloc(m * k * sizeof *a), *orig = malloc(m * k * sizeof *a);
    double *scratch = malloc(m * k * sizeof *a);
    uint64_t seed = 1;
    for (size_t i = 0; i < m * k; i++)
        orig[i] = a[i] = urand(&seed);
    ck_assert_uint_eq(rsvd_orthonormalize(a, m, k, scratch), k);
    ck_assert(orth_defect(a, m, k) < 1e-14);
    /* The span is kept: column j of the input lies in the span of the first j + 1 outputs. */
    for (size_t j = 0; j < k; j++) {
        double rest2 = 0;
        for (size_t i = 0; i < m; i++) {
            double v = orig[i * k + j];
            for (size_t c = 0; c <= j; c++) {
                double p = 0;
                for (size_t e = 0; e < m; e++)
                    p += a[e * k + c] * orig[e * k + j];
                v -= p * a[i * k + c];
            }
            rest2 += v * v;
        }
        ck_assert(sqrt(rest2) < 1e-13);
    }
    /* Dependent columns become zero; nearly dependent ones (1e-9) are kept orthonormal. */
    for (size_t i = 0; i < m; i++) {
        a[i * k + 3] = 2 * orig[i * k + 0] - orig[i * k + 1];
        a[i * k + 5] = orig[i * k + 2] + 1e-9 * orig[i * k + 5];
        a[i * k + 6] = 0;
        for (size_t j = 0; j < k; j++)
            if (j != 3 && j != 5 && j != 6)
                a[i * k + j] = orig[i * k + j];
    }
    ck_assert_uint_eq(rsvd_orthonormalize(a, m, k, scratch), 5);
    for (size_t i = 0; i < m; i++) {
        ck_assert(a[i * k + 3] == 0);
        ck_assert(a[i * k + 6] == 0);
    }
    ck_assert(orth_defect(a, m, k) < 1e-13);
    free(a);
    free(orig);
    free(scratch);
}
END_TEST

START_TEST(jacobi_eigenpairs)
{
    for (size_t k = 1; k <= 12; k++) {
        double *g = malloc(k * k * sizeof *g), *orig = malloc(k * k * sizeof *g);
        double *w = malloc(k * k * sizeof *w), *ev = malloc(k * sizeof *ev);
        uint64_t seed = k;
        for (size_t i = 0; i < k; i++)
            for (size_t j = i; j < k; j++)
                g[i * k + j] = g[j * k + i] = urand(&seed);
        if (k == 4) /* a repeated eigenvalue: the identity's */
            for (size_t i = 0; i < k * k; i++)
                g[i] = i % (k + 1) == 0;
        memcpy(orig, g, k * k * sizeof *g);
        ck_assert_int_gt(rsvd_jacobi_eigen(g, k, ev, w), 0);
        for (size_t j = 0; j + 1 < k; j++)
            ck_assert(ev[j] >= ev[j + 1]);
        ck_assert(orth_defect(w, k, k) < 1e-13);
        for (size_t j = 0; j < k; j++) /* orig w_j = ev_j w_j */
            for (size_t i = 0; i < k; i++) {
                double s = 0;
                for (size_t e = 0; e < k; e++)
                    s += orig[i * k + e] * w[e * k + j];
                ck_assert_msg(fabs(s - ev[j] * w[i * k + j]) < 1e-13, "k %zu pair %zu", k, j);
            }
        free(g);
        free(orig);
        free(w);
        free(ev);
    }
    /* diag(1, 3, 2): eigenvalues 3, 2, 1 with unit vectors e1, e2, e0. */
    double g[9] = {1, 0, 0, 0, 3, 0, 0, 0, 2}, w[9], ev[3];
    ck_assert_int_eq(rsvd_jacobi_eigen(g, 3, ev, w), 1);
    ck_assert(ev[0] == 3 && ev[1] == 2 && ev[2] == 1);
    ck_assert(w[1 * 3 + 0] == 1 && w[2 * 3 + 1] == 1 && w[0 * 3 + 2] == 1);
}
END_TEST

START_TEST(gaussian_counter_based)
{
    double a[1000], b[10];
    rsvd_gaussian(a, 1000, 42, 0);
    rsvd_gaussian(b, 10, 42, 500);
    ck_assert(memcmp(a + 500, b, sizeof b) == 0);
    double mean = 0, var = 0;
    for (int i = 0; i < 1000; i++)
        mean += a[i];
    mean /= 1000;
    for (int i = 0; i < 1000; i++)
        var += (a[i] - mean) * (a[i] - mean);
    var /= 999;
    ck_assert(fabs(mean) < 0.15 && fabs(var - 1) < 0.15);
    rsvd_gaussian(b, 10, 43, 500);
    ck_assert(memcmp(a + 500, b, sizeof b) != 0);
}
END_TEST

/* A = U diag(s) V^T, s_i = 2^-i, held in memory and served by rows. */
typedef struct mat {
    size_t rows, cols;
    float *a;
    unsigned reads;
} mat;

static int read_mat(void *user, uint64_t row0, size_t nrows, float *dst)
{
    mat *m = user;
    memcpy(dst, m->a + row0 * m->cols, nrows * m->cols * sizeof *dst);
    m->reads++;
    return 0;
}

static void make_mat(mat *m, size_t rows, size_t cols, double *s_out)
{
    size_t n = rows < cols ? rows : cols;
    double *u = malloc(rows * n * sizeof *u), *v = malloc(cols * n * sizeof *v);
    double *scratch = malloc((rows > cols ? rows : cols) * n * sizeof *scratch);
    uint64_t seed = 7;
    for (size_t i = 0; i < rows * n; i++)
        u[i] = urand(&seed);
    for (size_t i = 0; i < cols * n; i++)
        v[i] = urand(&seed);
    rsvd_orthonormalize(u, rows, n, scratch);
    rsvd_orthonormalize(v, cols, n, scratch);
    m->rows = rows;
    m->cols = cols;
    m->a = malloc(rows * cols * sizeof *m->a);
    for (size_t c = 0; c < n; c++)
        s_out[c] = ldexp(1.0, -(int)c);
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            double sum = 0;
            for (size_t c = 0; c < n; c++)
                sum += u[i * n + c] * s_out[c] * v[j * n + c];
            m->a[i * cols + j] = (float)sum;
        }
    free(u);
    free(v);
    free(scratch);
}

START_TEST(rsvd_known_spectrum)
{
    mat m = {0};
    double s[40];
    make_mat(&m, 70, 40, s);
    smelt_ctx *ctx = smelt_ctx_new();
    rsvd_result ref = {0};
    const int threads[] = {1, 3, 2};
    const size_t rounds[] = {1000, 1, 9};
    for (int run = 0; run < 3; run++) {
        smelt_pool *pool = smelt_pool_new(threads[run]);
        rsvd_job job = {.rows = 70, .cols = 40, .k = 14, .power_iters = 2, .key = 5,
                        .round_rows = rounds[run], .pool = pool, .read = read_mat,
                        .read_user = &m};
        rsvd_result r;
        m.reads = 0;
        ck_assert_int_eq(rsvd_run(ctx, &job, &r), 0);
        ck_assert_uint_eq(r.passes, 6);
        ck_assert_uint_eq(r.reads, run == 0 ? 1 : 6);
        ck_assert_uint_eq(m.reads, run == 0 ? 1 : 6 * ((70 + rounds[run] - 1) / rounds[run]));
        if (run == 0) {
            /* The top singular values to f32 accuracy of A, the vectors orthonormal. */
            for (size_t c = 0; c < 8; c++)
                ck_assert_msg(fabs(r.s[c] - s[c]) < 1e-6, "s[%zu] = %g, want %g", c, r.s[c],
                              s[c]);
            ck_assert(orth_defect_ld(r.u, 70, 8, 14) < 1e-10);
            ck_assert(orth_defect_ld(r.v, 40, 8, 14) < 1e-10);
            double f2 = 0;
            for (size_t c = 0; c < 40; c++)
                f2 += s[c] * s[c];
            ck_assert(fabs(r.frob2 - f2) < 1e-6);
            ref = r;
        } else {
            /* Identical bits whatever the threads and round size. */
            ck_assert(memcmp(r.s, ref.s, 14 * sizeof *r.s) == 0);
            ck_assert(memcmp(r.u, ref.u, 70 * 14 * sizeof *r.u) == 0);
            ck_assert(memcmp(r.v, ref.v, 40 * 14 * sizeof *r.v) == 0);
            ck_assert(r.frob2 == ref.frob2);
            rsvd_result_free(&r);
        }
        smelt_pool_free(pool);
    }
    rsvd_result_free(&ref);
    free(m.a);
    smelt_ctx_free(ctx);
}
END_TEST

/* A zero matrix and a rank-2 matrix: zero singular values give zero vectors, no NaN. */
START_TEST(rsvd_rank_deficient)
{
    mat m = {.rows = 20, .cols = 12};
    m.a = calloc(20 * 12, sizeof *m.a);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_pool *pool = smelt_pool_new(2);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            for (size_t i = 0; i < 20; i++)
                for (size_t j = 0; j < 12; j++)
                    m.a[i * 12 + j] = (float)((i + 1) * (j % 3) + (i % 2) * (j + 1));
        rsvd_job job = {.rows = 20, .cols = 12, .k = 6, .power_iters = 3, .key = 1,
                        .round_rows = 4, .pool = pool, .read = read_mat, .read_user = &m};
        rsvd_result r;
        ck_assert_int_eq(rsvd_run(ctx, &job, &r), 0);
        for (size_t i = 0; i < 20 * 6; i++)
            ck_assert(isfinite(r.u[i]));
        for (size_t i = 0; i < 12 * 6; i++)
            ck_assert(isfinite(r.v[i]));
        for (size_t c = pass ? 2 : 0; c < 6; c++)
            ck_assert_msg(r.s[c] <= 1e-5 * (pass ? r.s[0] : 1), "s[%zu] = %g", c, r.s[c]);
        if (pass) {
            double kept = r.s[0] * r.s[0] + r.s[1] * r.s[1];
            ck_assert(fabs(r.frob2 - kept) <= 1e-9 * r.frob2);
        }
        rsvd_result_free(&r);
    }
    smelt_pool_free(pool);
    smelt_ctx_free(ctx);
    free(m.a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rsvd");
    TCase *tc = tcase_create("algebra");
    tcase_add_test(tc, qr_orthonormal);
    tcase_add_test(tc, jacobi_eigenpairs);
    tcase_add_test(tc, gaussian_counter_based);
    suite_add_tcase(s, tc);
    TCase *tr = tcase_create("rsvd");
    tcase_add_test(tr, rsvd_known_spectrum);
    tcase_add_test(tr, rsvd_rank_deficient);
    suite_add_tcase(s, tr);
    return tu_run_suite(s);
}
