/* The exact rank-range selection of the task-vector methods, driven through the method vtable
 * the way the engine drives it (statistics passes over tasks of tiles, folds in task order, the
 * apply pass with its per-task scratch), against a sort on (|d| bit pattern, index): ties at
 * the threshold, k = 0, all-equal magnitudes, NaN and Inf magnitudes, several tasks. */
#include "methods/method.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A parameter value for drive(): per-model ones go to the model, the rest are global. */
typedef struct setting {
    const char *name;
    double value;
} setting;

/* How drive() runs a sample pass: over the first sample_tasks tasks (0: all of them, as for a
 * resident tensor); and how many fallback passes it found needed and ran. */
static size_t sample_tasks;
static unsigned fallbacks_run;
/* How drive() hands out tile->carry (smelt_method.carry_bytes): 0 never (a streamed tensor);
 * 1 one buffer for the whole tensor in every pass (a resident one); 2 the same, with bit 0 of
 * every byte flipped between the last statistics pass and apply. *carry_used says whether the
 * method asked for any. */
static int carry_mode;
static size_t carry_used;

/* Runs `method` on base = 0 and one model with task vector d (weight 1) in rows of `row`
 * elements, the way the engine does (tasks of task_elems, whole-task views, partials zeroed per
 * task, worker accumulators folded per chunk, sample and fallback passes); out = the result. Returns prepare's status (out is untouched unless SMELT_OK). */
static int drive(const char *method, const float *d, size_t n, uint64_t row,
                 const setting *set, size_t nset, float *out)
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
    for (size_t k = 0; k < nset; k++) {
        int p = smelt_method_param_index(m, set[k].name);
        ck_assert_int_ge(p, 0);
        vals[p][m->params[p].per_model] = set[k].value;
    }
    const char *names[2] = {"base", "model"};
    smelt_tensor_args args = {.tensor = "t", .ninputs = 2, .has_base = 1, .input_names = names,
                              .values = values, .numel = n, .row_elems = row};
    smelt_ctx *ctx = smelt_ctx_new();
    void *state;
    int rc = m->prepare(ctx, &args, &state);
    if (rc != SMELT_OK) {
        smelt_ctx_free(ctx);
        return rc;
    }
    uint64_t task = m->task_elems && m->task_elems(state) ? m->task_elems(state)
                                                          : SMELT_TASK_ELEMS;
    float *zero = calloc(n, sizeof(float));
    float *scratch = malloc(2 * SMELT_TILE_ELEMS * sizeof(float));
    smelt_dtype dt[2] = {SMELT_DT_F32, SMELT_DT_F32};
    const void *raw[2], *task_raw[2];
    smelt_tile tile = {.k = smelt_kernels_get(), .ninputs = 2, .raw = raw, .dtype = dt,
                       .scratch = scratch, .task_raw = task_raw};
    unsigned passes = m->passes(state);
    fallbacks_run = 0;
    carry_used = m->carry_bytes ? m->carry_bytes(state) : 0;
    uint8_t *carry = carry_mode && carry_used ? malloc(n * carry_used) : NULL;
    for (unsigned p = 0; p <= passes; p++) {
        smelt_pass_kind kind = p < passes && m->pass_kind ? m->pass_kind(state, p)
                                                          : SMELT_PASS_READ;
        if (kind == SMELT_PASS_FALLBACK && !m->pass_needed(state, p))
            continue;
        fallbacks_run += kind == SMELT_PASS_FALLBACK;
        size_t tasks_run = 0;
        size_t size = m->partial_size(state, p);
        void *partial = malloc(size ? size : 1);
        /* One worker; its accumulator is folded after every task, as the engine does after
         * every chunk (here a chunk is one task). */
        size_t wsize = p < passes && m->worker_partial_size ? m->worker_partial_size(state, p) : 0;
        void *worker = wsize ? calloc(1, wsize) : NULL;
        tile.worker_partial = worker;
        if (p == passes && carry && carry_mode == 2)
            for (size_t j = 0; j < n * carry_used; j += carry_used)
                carry[j] ^= 1;
        for (size_t t0 = 0; t0 < n; t0 += task) {
            if (kind == SMELT_PASS_SAMPLE && sample_tasks && tasks_run++ == sample_tasks)
                break;
            memset(partial, 0, size);
            size_t t1 = t0 + task < n ? t0 + task : n;
            task_raw[0] = zero + t0;
            task_raw[1] = d + t0;
            tile.task_index0 = t0;
            tile.task_n = t1 - t0;
            for (size_t at = t0; at < t1; at += SMELT_TILE_ELEMS) {
                tile.n = t1 - at < SMELT_TILE_ELEMS ? t1 - at : SMELT_TILE_ELEMS;
                tile.index0 = at;
                raw[0] = zero + at;
                raw[1] = d + at;
                tile.carry = carry ? carry + at * carry_used : NULL;
                if (p < passes) {
                    m->stats(state, p, &tile, partial);
                } else {
                    tile.task_scratch = size ? partial : NULL;
                    m->apply(state, &tile, out + at);
                }
            }
            if (p < passes)
                m->fold(state, p, partial);
            if (worker)
                m->fold_worker(state, p, worker);
        }
        if (p < passes)
            ck_assert_int_eq(m->end_pass(ctx, state, p), SMELT_OK);
        free(partial);
        free(worker);
    }
    m->release(state);
    smelt_ctx_free(ctx);
    free(zero);
    free(scratch);
    free(carry);
    return SMELT_OK;
}

static void run(const char *method, const float *d, size_t n, double density, double gamma,
                float *out)
{
    setting set[2] = {{"density", density}, {"gamma", gamma}};
    ck_assert_int_eq(drive(method, d, n, 0, set, smelt_method_param_index(smelt_method_find(
                               method), "gamma") >= 0 ? 2 : 1, out), SMELT_OK);
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

/* The sample misses: its first task holds magnitudes far below the rest, so the window it
 * guesses holds no bound's bin, and the fallback pass finds the keys; with the whole tensor as
 * the sample it is not needed. The bits are the same either way. */
START_TEST(sample_that_misses_falls_back)
{
    float *d = malloc(N * sizeof *d), *out = malloc(N * sizeof *out);
    for (size_t i = 0; i < N; i++) {
        float x = (float)((i * 2654435761u) % 100003) * 1e-5f + 0.25f;
        d[i] = (i & 1 ? -x : x) * (i < SMELT_TASK_ELEMS ? 1e-3f : 1.0f);
    }
    size_t k = (size_t)floor(0.3 * N);
    for (int whole = 0; whole < 2; whole++) {
        sample_tasks = whole ? 0 : 1;
        run("ties", d, N, 0.3, 0, out);
        expect_range(d, out, N, N - k, N);
        ck_assert_uint_eq(fallbacks_run, whole ? 0 : 1);
        run("breadcrumbs", d, N, 0.5, 0.1, out);
        size_t top = (size_t)floor(0.1 * N), bot = N - (size_t)floor(0.5 * N) - top;
        expect_range(d, out, N, bot, N - top);
        ck_assert_uint_eq(fallbacks_run, whole ? 0 : 1);
    }
    /* A sample like the rest: its window holds the bins, no fallback. */
    for (size_t i = 0; i < SMELT_TASK_ELEMS; i++)
        d[i] *= 1e3f;
    sample_tasks = 1;
    run("ties", d, N, 0.3, 0, out);
    expect_range(d, out, N, N - k, N);
    ck_assert_uint_eq(fallbacks_run, 0);
    sample_tasks = 0;
    free(d);
    free(out);
}
END_TEST

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

/* DELLA with paper-style rescaling: a kept entry comes out as d / p, so p, and with it the
 * element's rank within its row, can be read back and compared with a sort on (|d| bit
 * pattern, index) row by row. Returns how many entries were kept. */
static size_t expect_della(const float *d, size_t n, size_t row, double density, double eps)
{
    float *out = malloc(n * sizeof *out);
    setting set[] = {{"density", density}, {"epsilon", eps}, {"rescale_by_density", 1}};
    ck_assert_int_eq(drive("della_linear", d, n, row, set, 3, out), SMELT_OK);
    if (row == 0) /* unknown row length: the tensor is one row */
        row = n;
    size_t *order = malloc(row * sizeof *order), kept = 0;
    for (size_t r0 = 0; r0 < n; r0 += row) {
        for (size_t i = 0; i < row; i++)
            order[i] = i;
        keys = d + r0;
        qsort(order, row, sizeof *order, by_key);
        for (size_t rank = 0; rank < row; rank++) {
            size_t e = r0 + order[rank];
            if (out[e] == 0 || isnan(d[e]))
                continue; /* dropped (or d = 0, where p cannot be read back) */
            double r = row > 1 ? (double)rank / (double)(row - 1) : 0.0;
            float want = d[e] / (float)((density - eps) + 2 * eps * r);
            ck_assert_msg(memcmp(&want, &out[e], 4) == 0,
                          "element %zu (row rank %zu): expected %a, got %a", e, rank,
                          (double)want, (double)out[e]);
            kept++;
        }
    }
    free(order);
    free(out);
    return kept;
}

START_TEST(della_row_ranks)
{
    /* Rows of 1000 (tasks of 65 rows, so rows never straddle a task, but would straddle the
     * default 65536-element boundaries), 13 magnitude levels of both signs: long runs of ties,
     * ordered by index within the row. */
    size_t row = 1000, n = 200 * row;
    float *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = (float)((int)((i * 7919u) % 13u) - 6) * 0.25f;
    size_t kept = expect_della(d, n, row, 0.5, 0.3);
    ck_assert(kept > n / 3 && kept < n / 2); /* ~ half of the 12/13 nonzero entries */
    /* Distinct magnitudes, NaN and Inf included. */
    for (size_t i = 0; i < n; i++)
        d[i] = (float)((i * 2654435761u) % 100003u) * 1e-5f - 0.5f;
    d[3] = NAN;
    d[70001] = INFINITY;
    expect_della(d, n, row, 0.4, 0.35);
    free(d);
}
END_TEST

START_TEST(della_one_element_rows_and_1d)
{
    size_t n = 5000;
    float *d = malloc(SMELT_TASK_ELEMS * sizeof *d);
    for (size_t i = 0; i < SMELT_TASK_ELEMS; i++)
        d[i] = (float)((i * 40503u) % 977u) * 0.01f - 4.0f;
    /* n = 1: r = 0, every entry kept with probability density - epsilon. */
    size_t kept = expect_della(d, n, 1, 0.5, 0.3);
    ck_assert(kept > n / 10 && kept < n * 3 / 10);
    /* A 1-D tensor (row_elems 0 means the whole tensor) of exactly the longest row. */
    expect_della(d, SMELT_TASK_ELEMS, SMELT_TASK_ELEMS, 0.6, 0.2);
    expect_della(d, 40000, 0, 0.6, 0.2);
    free(d);
}
END_TEST

/* The random drops' masks that SUMS leaves in carry (a resident tensor) give apply the bits it
 * would draw again: the same output with and without them, and apply reads them (a flipped
 * mask keeps the complement). Magnitude selection asks for none. */
START_TEST(carry_masks_reach_apply)
{
    size_t row = 500, n = 3 * SMELT_TASK_ELEMS / row * row + 7 * row;
    float *d = malloc(n * sizeof *d), *plain = malloc(n * sizeof *d), *with = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = (float)((i * 2654435761u) % 100003u) * 1e-5f - 0.5f + 1e-6f;
    static const char *const random_methods[] = {"dare_linear", "dare_ties", "della",
                                                 "della_linear"};
    setting set[1] = {{"density", 0.4}};
    for (size_t k = 0; k < 4; k++) {
        const char *method = random_methods[k];
        carry_mode = 0;
        ck_assert_int_eq(drive(method, d, n, row, set, 1, plain), SMELT_OK);
        ck_assert_uint_eq(carry_used, 1);
        carry_mode = 1;
        ck_assert_int_eq(drive(method, d, n, row, set, 1, with), SMELT_OK);
        ck_assert_msg(memcmp(plain, with, n * sizeof *d) == 0, "%s: carry changed the output",
                      method);
        carry_mode = 2;
        ck_assert_int_eq(drive(method, d, n, row, set, 1, with), SMELT_OK);
        size_t flipped = 0;
        for (size_t i = 0; i < n; i++)
            flipped += (plain[i] == 0) != (with[i] == 0);
        ck_assert_msg(flipped == n, "%s: apply kept %zu of %zu entries of the flipped mask",
                      method, flipped, n);
    }
    carry_mode = 1;
    ck_assert_int_eq(drive("ties", d, n, row, set, 1, with), SMELT_OK);
    ck_assert_uint_eq(carry_used, 0);
    carry_mode = 0;
    free(d);
    free(plain);
    free(with);
}
END_TEST

START_TEST(della_refusals)
{
    float d[4] = {0};
    setting eps[] = {{"density", 0.5}, {"epsilon", 0.5}};
    ck_assert_int_eq(drive("della", d, 4, 4, eps, 2, d), SMELT_E_CONFIG);
    setting low[] = {{"density", 0.1}, {"epsilon", 0.15}};
    ck_assert_int_eq(drive("della_linear", d, 4, 4, low, 2, d), SMELT_E_CONFIG);
    /* Rows longer than one task are refused, but only when the tensor is sparsified. */
    setting sparse[] = {{"density", 0.5}};
    ck_assert_int_eq(drive("della", d, 0, SMELT_TASK_ELEMS + 1, sparse, 1, d),
                     SMELT_E_UNSUPPORTED);
    setting dense[] = {{"density", 1.0}};
    ck_assert_int_eq(drive("della", d, 0, SMELT_TASK_ELEMS + 1, dense, 1, d), SMELT_OK);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("taskvec");
    TCase *tc = tcase_create("rank_select");
    tcase_add_test(tc, ties_at_threshold);
    tcase_add_test(tc, k_zero_and_all_equal);
    tcase_add_test(tc, breadcrumbs_both_ends_and_specials);
    tcase_add_test(tc, sample_that_misses_falls_back);
    suite_add_tcase(s, tc);
    TCase *dl = tcase_create("della");
    tcase_add_test(dl, della_row_ranks);
    tcase_add_test(dl, della_one_element_rows_and_1d);
    tcase_add_test(dl, della_refusals);
    tcase_add_test(dl, carry_masks_reach_apply);
    suite_add_tcase(s, dl);
    return tu_run_suite(s);
}
