/* kernels/: every SIMD level present on this machine against the scalar reference, bit for bit;
 * the reference against independent formulas; dispatch; histograms; Philox known answers. */
#include "common/cpu.h"
#include "common/errors.h"
#include "kernel_equiv.h"
#include "kernels/kernels_ref.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const simd_levels[] = {"avx2", "avx512", "neon"};

static void expect_clean(const keq *q)
{
    ck_assert_msg(q->failed == 0, "%lu of %lu checks failed; first: %s", q->failed, q->checks,
                  q->msg);
    ck_assert_uint_gt(q->checks, 0);
}

START_TEST(levels_match_scalar)
{
    const char *name = simd_levels[_i];
    const smelt_kernels *k = smelt_kernels_level(name);
    if (!k) {
        fprintf(stderr, "test_kernels: level %s not available here, not compared\n", name);
        return;
    }
    keq q = {0};
    keq_levels(&q, &smelt_kernels_scalar, k);
    keq_fused(&q, k);
    expect_clean(&q);
}
END_TEST

START_TEST(dequant_levels_match_scalar)
{
    const char *name = simd_levels[_i];
    const smelt_kernels *k = smelt_kernels_level(name);
    if (!k) {
        fprintf(stderr, "test_kernels: level %s not available here, dequant not compared\n", name);
        return;
    }
    keq q = {0};
    keq_dequant(&q, &smelt_kernels_scalar, k);
    expect_clean(&q);
}
END_TEST

START_TEST(encoders_match_formulas)
{
    const char *names[] = {"scalar", "avx2", "avx512", "neon"};
    const smelt_kernels *k = smelt_kernels_level(names[_i]);
    if (!k)
        return;
    keq q = {0};
    keq_encode_formulas(&q, k, 1u << 20);
    keq_roundtrips(&q, k);
    expect_clean(&q);
}
END_TEST

START_TEST(scalar_fused_equals_unfused)
{
    keq q = {0};
    keq_fused(&q, &smelt_kernels_scalar);
    expect_clean(&q);
}
END_TEST

/* A few casts by hand, so a wrong formula in both places still shows. */
START_TEST(cast_edges)
{
    const smelt_kernels *k = &smelt_kernels_scalar;
    static const struct { uint32_t f; uint16_t bf16, f16; } cases[] = {
        {0x3F800000u, 0x3F80, 0x3C00}, {0x3F808000u, 0x3F80, 0x3C04}, /* tie to even: down */
        {0x3F818000u, 0x3F82, 0x3C0C}, {0x3F801000u, 0x3F80, 0x3C00}, /* f16 tie: down */
        {0x3F803000u, 0x3F80, 0x3C02}, /* f16 tie: up to even */
        {0x477FE000u, 0x4780, 0x7BFF}, /* 65504 */
        {0x477FEFFFu, 0x4780, 0x7BFF}, /* 65519.996 */
        {0x477FF000u, 0x4780, 0x7C00}, /* 65520 -> Inf */
        {0x7F7F7FFFu, 0x7F7F, 0x7C00}, {0x7F7F8000u, 0x7F80, 0x7C00}, /* bf16 max / overflow */
        {0x33800000u, 0x3380, 0x0001}, /* 2^-24 */
        {0x33000000u, 0x3300, 0x0000}, /* 2^-25: tie to even 0 */
        {0x33400000u, 0x3340, 0x0001}, /* 1.5 * 2^-25 */
        {0x00000001u, 0x0000, 0x0000}, {0x80008000u, 0x8000, 0x8000}, /* f32 subnormals */
        {0x00018000u, 0x0002, 0x0000},
        {0xFF800001u, 0x7FC0, 0x7E00}, {0x7FC12345u, 0x7FC0, 0x7E00}, /* any NaN canonical */
        {0xFF800000u, 0xFF80, 0xFC00},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float f = keq_float(cases[i].f);
        uint16_t b, h;
        k->encode_bf16(&b, &f, 1);
        k->encode_f16(&h, &f, 1);
        ck_assert_msg(b == cases[i].bf16, "bf16(%08x) = %04x", cases[i].f, b);
        ck_assert_msg(h == cases[i].f16, "f16(%08x) = %04x", cases[i].f, h);
    }
    /* Half decodes: subnormal, signalling NaN made quiet with its payload. */
    uint16_t hs[] = {0x0001, 0x03FF, 0x8400, 0x7C01, 0xFE00, 0x7BFF};
    uint32_t want[] = {0x33800000u, 0x387FC000u, 0xB8800000u, 0x7FC02000u, 0xFFC00000u, 0x477FE000u};
    float out[6];
    k->decode_f16(out, hs, 6);
    for (int i = 0; i < 6; i++)
        ck_assert_msg(keq_bits(out[i]) == want[i], "decode_f16(%04x) = %08x", hs[i], keq_bits(out[i]));
}
END_TEST

START_TEST(encode_f32_canonical_nan)
{
    const smelt_kernels *k = smelt_kernels_get();
    float in[5] = {keq_float(0x7F800001u), keq_float(0xFFC12345u), -0.0f, keq_float(1), 3.5f};
    float out[5], copy[5];
    smelt_encode(k, out, in, SMELT_DT_F32, 5);
    ck_assert_uint_eq(keq_bits(out[0]), SMELT_F32_NAN);
    ck_assert_uint_eq(keq_bits(out[1]), SMELT_F32_NAN);
    ck_assert_uint_eq(keq_bits(out[2]), 0x80000000u);
    ck_assert_uint_eq(keq_bits(out[3]), 1);
    ck_assert(out[4] == 3.5f);
    smelt_decode(k, copy, in, SMELT_DT_F32, 5); /* decode F32 is a plain copy: payloads stay */
    ck_assert_int_eq(memcmp(copy, in, sizeof in), 0);
}
END_TEST

START_TEST(masked_accum_rules)
{
    /* vote: +, +0, -0, -, NaN; wd: agreeing, zero, disagreeing, NaN */
    float vote[] = {1, 0.0f, -0.0f, -2, NAN, 1, -1, 1, -1};
    float wd[] = {0.5f, 0.25f, 0.125f, -1, 2, 0.0f, -0.0f, -3, NAN};
    float mixed[9], div[9];
    for (int i = 0; i < 9; i++)
        mixed[i] = -0.0f, div[i] = 0.0f;
    smelt_kernels_scalar.masked_accum(mixed, div, wd, vote, 0.5f, 9);
    int agrees[] = {1, 1, 1, 1, 1, 0, 0, 0, 1};
    for (int i = 0; i < 9; i++) {
        if (agrees[i]) {
            ck_assert_msg(div[i] == 0.5f, "element %d should agree", i);
        } else {
            ck_assert_msg(keq_bits(mixed[i]) == 0x80000000u && div[i] == 0.0f,
                          "element %d should be untouched", i);
        }
    }
    ck_assert(mixed[8] != mixed[8]);
}
END_TEST

/* The reductions' definition, written out independently of the kernels. */
START_TEST(reductions_definition)
{
    size_t n = 5000;
    float *a = malloc(n * 4), *b = malloc(n * 4);
    uint64_t s = 5;
    keq_fill_f32(a, n, &s, 0);
    keq_fill_f32(b, n, &s, 0);
    for (size_t i = 0; i < n; i++)
        if (a[i] != a[i] || isinf(a[i]) || b[i] != b[i] || isinf(b[i]))
            a[i] = 1.0f, b[i] = -2.0f;
    double lanes[3][16] = {{0}};
    for (size_t i = 0; i < n; i++) {
        lanes[0][i % 16] += (double)a[i] * (double)b[i];
        lanes[1][i % 16] += (double)a[i] * (double)a[i];
        lanes[2][i % 16] += fabs((double)a[i]);
    }
    double want[3];
    for (int r = 0; r < 3; r++) {
        double *l = lanes[r];
        for (int j = 0; j < 8; j++) l[j] += l[j + 8];
        for (int j = 0; j < 4; j++) l[j] += l[j + 4];
        for (int j = 0; j < 2; j++) l[j] += l[j + 2];
        want[r] = l[0] + l[1];
    }
    const char *names[] = {"scalar", "avx2", "avx512", "neon"};
    for (int i = 0; i < 4; i++) {
        const smelt_kernels *k = smelt_kernels_level(names[i]);
        if (!k)
            continue;
        for (size_t len = 0; len <= n; len += len < 40 ? 1 : 997) {
            double d = k->dot_f64(a, b, len), q = k->sumsq_f64(a, len), t = k->sum_abs_f64(a, len);
            if (len == n) {
                ck_assert_msg(memcmp(&d, &want[0], 8) == 0, "%s dot %a vs %a", names[i], d, want[0]);
                ck_assert_msg(memcmp(&q, &want[1], 8) == 0, "%s sumsq", names[i]);
                ck_assert_msg(memcmp(&t, &want[2], 8) == 0, "%s sum_abs", names[i]);
            }
            double rd = smelt_kernels_scalar.dot_f64(a, b, len);
            ck_assert_msg(memcmp(&d, &rd, 8) == 0, "%s dot at %zu", names[i], len);
        }
    }
    free(a), free(b);
}
END_TEST

START_TEST(hist_mag_counts)
{
    size_t n = 3001;
    float *x = malloc(n * 4);
    uint64_t s = 11;
    keq_fill_f32(x, n, &s, 0);
    static const struct { uint32_t prefix; unsigned prefix_shift, shift, bits; } passes[] = {
        {0, 32, 20, 11}, {0x3F8, 20, 8, 12}, {0x3F, 24, 16, 8}, {0, 31, 0, 16}, {0x7F8, 20, 0, 1},
    };
    const char *names[] = {"scalar", "avx2", "avx512", "neon"};
    for (int l = 0; l < 4; l++) {
        const smelt_kernels *k = smelt_kernels_level(names[l]);
        if (!k)
            continue;
        for (size_t p = 0; p < sizeof passes / sizeof passes[0]; p++) {
            unsigned bits = passes[p].bits;
            uint32_t *got = calloc(1u << bits, 4), *want = calloc(1u << bits, 4);
            got[0] = want[0] = 5; /* counts add to what is there */
            k->hist_mag(got, x, n, passes[p].prefix, passes[p].prefix_shift, passes[p].shift, bits);
            for (size_t i = 0; i < n; i++) {
                uint32_t m = keq_bits(x[i]) & 0x7FFFFFFFu;
                if (passes[p].prefix_shift >= 32 || (m >> passes[p].prefix_shift) == passes[p].prefix)
                    want[(m >> passes[p].shift) & ((1u << bits) - 1)]++;
            }
            ck_assert_int_eq(memcmp(got, want, (size_t)4 << bits), 0);
            free(got), free(want);
        }
    }
    free(x);
}
END_TEST

/* mask_mag_range against its definition on every level: ranges with both ends, open ends
 * (UINT32_MAX: no tie listed), an empty range, and ends at present values so ties occur. */
START_TEST(mask_mag_range_definition)
{
    size_t n = 3001;
    float *x = malloc(n * 4);
    uint32_t *keep = malloc(n * 4), *want_keep = malloc(n * 4);
    uint32_t *at = malloc(n * 4), *want_at = malloc(n * 4);
    uint64_t s = 13;
    keq_fill_f32(x, n, &s, 0);
    for (size_t i = 300; i < n; i += 97)
        x[i] = -x[100]; /* ties with the ends, of either sign */
    for (size_t i = 301; i < n; i += 89)
        x[i] = x[200];
    uint32_t a = keq_bits(x[100]) & 0x7FFFFFFFu, b = keq_bits(x[200]) & 0x7FFFFFFFu;
    uint32_t lo = a < b ? a : b, hi = a < b ? b : a;
    const uint32_t ranges[][4] = {
        {lo, hi, lo, hi}, {lo, UINT32_MAX, lo, UINT32_MAX}, {0, hi, UINT32_MAX, hi},
        {hi, lo, hi, lo}, {0, UINT32_MAX, UINT32_MAX, UINT32_MAX}, {0x7F800000u, 0x7FFFFFFFu, 0x7F800000u, UINT32_MAX},
    };
    const char *names[] = {"scalar", "avx2", "avx512", "neon"};
    for (int l = 0; l < 4; l++) {
        const smelt_kernels *k = smelt_kernels_level(names[l]);
        if (!k)
            continue;
        for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++)
            for (size_t len = 0; len <= n; len += len < 70 ? 1 : 977) {
                const uint32_t *g = ranges[r];
                size_t want = 0;
                for (size_t i = 0; i < len; i++) {
                    uint32_t m = keq_bits(x[i]) & 0x7FFFFFFFu;
                    want_keep[i] = m >= g[0] && m <= g[1] ? UINT32_MAX : 0;
                    if (m == g[2] || m == g[3])
                        want_at[want++] = (uint32_t)i;
                }
                size_t got = k->mask_mag_range(keep, at, x, len, g[0], g[1], g[2], g[3]);
                ck_assert_msg(got == want, "%s range %zu n %zu: %zu ties, want %zu", names[l], r,
                              len, got, want);
                ck_assert_msg(memcmp(keep, want_keep, len * 4) == 0, "%s range %zu n %zu: keep",
                              names[l], r, len);
                ck_assert_msg(memcmp(at, want_at, want * 4) == 0, "%s range %zu n %zu: ties",
                              names[l], r, len);
                if (r == 0 && len == n)
                    ck_assert_uint_gt(want, 40); /* the data does tie with both ends */
            }
    }
    free(x), free(keep), free(want_keep), free(at), free(want_at);
}
END_TEST

START_TEST(philox_known_answers)
{
    /* Random123 tests/kat_vectors, the three philox4x32 10 lines: counter, key, output. */
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
         0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
         0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int t = 0; t < 3; t++) {
        uint32_t out[4];
        smelt_philox4x32_10(kat[t], kat[t] + 4, out);
        for (int j = 0; j < 4; j++)
            ck_assert_msg(out[j] == kat[t][6 + j], "kat %d word %d: %08x", t, j, out[j]);
    }
    /* Through philox_uniform: counter 0, key 0 is the first vector, on every level. */
    const char *names[] = {"scalar", "avx2", "avx512", "neon"};
    for (int l = 0; l < 4; l++) {
        const smelt_kernels *k = smelt_kernels_level(names[l]);
        if (!k)
            continue;
        float u[64];
        k->philox_uniform(u, 0, 0, 64);
        for (int j = 0; j < 4; j++)
            ck_assert(u[j] == (float)(kat[0][6 + j] >> 8) * 0x1p-24f);
    }
}
END_TEST

START_TEST(philox_independent_of_start)
{
    size_t total = 5000;
    float *all = malloc(total * 4), *part = malloc(total * 4);
    uint64_t key = 0x0123456789ABCDEFull, base = 1000003;
    smelt_kernels_scalar.philox_uniform(all, key, base, total);
    for (size_t i = 0; i < total; i++)
        ck_assert(all[i] >= 0.0f && all[i] < 1.0f);
    const char *names[] = {"scalar", "avx2", "avx512", "neon"};
    for (int l = 0; l < 4; l++) {
        const smelt_kernels *k = smelt_kernels_level(names[l]);
        if (!k)
            continue;
        for (size_t start = 0; start < 300; start += 1 + start / 3)
            for (size_t n = 0; start + n <= total; n = n * 2 + 1) {
                k->philox_uniform(part, key, base + start, n);
                ck_assert_msg(memcmp(part, all + start, n * 4) == 0, "%s start %zu n %zu",
                              names[l], start, n);
            }
    }
    free(all), free(part);
}
END_TEST

START_TEST(isa_selection)
{
    smelt_ctx *ctx = smelt_ctx_new();
    unsetenv("SMELT_ISA");
    ck_assert_int_eq(smelt_isa_select(ctx, NULL), SMELT_OK);
    const char *best = smelt_isa_name();
    unsigned f = smelt_cpu_features();
    if (f & SMELT_CPU_AVX512)
        ck_assert_str_eq(best, "avx512");
    else if (f & SMELT_CPU_AVX2)
        ck_assert_str_eq(best, "avx2");

    ck_assert_int_eq(smelt_isa_select(ctx, "scalar"), SMELT_OK);
    ck_assert_str_eq(smelt_isa_name(), "scalar");
    ck_assert_ptr_eq(smelt_kernels_get(), &smelt_kernels_scalar);

    ck_assert_int_eq(smelt_isa_select(ctx, "sse9"), SMELT_E_ARG);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "unknown SIMD level 'sse9'"));
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "supported here: scalar"));
    ck_assert_str_eq(smelt_isa_name(), "scalar"); /* a failed selection changes nothing */

    /* A level this machine cannot run: neon on x86, avx2 on AArch64. */
    const char *foreign = smelt_kernels_level("neon") ? "avx2" : "neon";
    ck_assert_int_eq(smelt_isa_select(ctx, foreign), SMELT_E_ARG);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), foreign));
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "supported here:"));
    if (!(f & SMELT_CPU_AVX512) && !smelt_kernels_level("neon")) {
        ck_assert_int_eq(smelt_isa_select(ctx, "avx512"), SMELT_E_ARG);
        ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "not supported by this CPU"));
    }

    setenv("SMELT_ISA", "scalar", 1);
    ck_assert_int_eq(smelt_isa_select(ctx, ""), SMELT_OK);
    ck_assert_str_eq(smelt_isa_name(), "scalar");
    setenv("SMELT_ISA", "bogus", 1);
    ck_assert_int_eq(smelt_isa_select(ctx, NULL), SMELT_E_ARG);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "'bogus' (from SMELT_ISA)"));
    unsetenv("SMELT_ISA");
    ck_assert_int_eq(smelt_isa_select(ctx, NULL), SMELT_OK);
    ck_assert_str_eq(smelt_isa_name(), best);

    char err[200];
    ck_assert_int_eq(smelt_kernels_select("nope", err, sizeof err), -1);
    ck_assert_ptr_null(smelt_kernels_level("nope"));
    ck_assert_ptr_nonnull(smelt_kernels_level("scalar"));
    smelt_ctx_free(ctx);
}
END_TEST


/* ---- the start-up self-test ------------------------------------------------------------- */

/* Deliberately wrong kernels: the reference, then the last element's lowest bit flipped (the
 * tail, where SIMD bugs hide) or the result nudged one ulp. One per table entry. */
static void flip32(float *x, size_t n)
{
    uint32_t u;
    memcpy(&u, &x[n - 1], 4);
    u ^= 1;
    memcpy(&x[n - 1], &u, 4);
}
#define BAD_F32(entry, params, args, out)                                                       \
    static void bad_##entry params                                                              \
    {                                                                                           \
        smelt_kernels_scalar.entry args;                                                        \
        flip32(out, n);                                                                         \
    }
#define BAD_U16(entry, params, args, out)                                                       \
    static void bad_##entry params                                                              \
    {                                                                                           \
        smelt_kernels_scalar.entry args;                                                        \
        out[n - 1] ^= 1;                                                                        \
    }
BAD_F32(decode_bf16, (float *d, const uint16_t *s, size_t n), (d, s, n), d)
BAD_F32(decode_f16, (float *d, const uint16_t *s, size_t n), (d, s, n), d)
BAD_U16(encode_bf16, (uint16_t *d, const float *s, size_t n), (d, s, n), d)
BAD_U16(encode_f16, (uint16_t *d, const float *s, size_t n), (d, s, n), d)
BAD_F32(encode_f32, (float *d, const float *s, size_t n), (d, s, n), d)
BAD_F32(axpy, (float *a, const float *x, float w, size_t n), (a, x, w, n), a)
BAD_F32(scale, (float *d, const float *x, float w, size_t n), (d, x, w, n), d)
BAD_F32(axpy_bf16, (float *a, const uint16_t *x, float w, size_t n), (a, x, w, n), a)
BAD_F32(axpy_f16, (float *a, const uint16_t *x, float w, size_t n), (a, x, w, n), a)
BAD_F32(scale_bf16, (float *d, const uint16_t *x, float w, size_t n), (d, x, w, n), d)
BAD_F32(scale_f16, (float *d, const uint16_t *x, float w, size_t n), (d, x, w, n), d)
BAD_U16(axpy_bf16_encode, (uint16_t *o, const float *a, const uint16_t *x, float w, size_t n),
        (o, a, x, w, n), o)
BAD_F32(sub, (float *d, const float *a, const float *b, size_t n), (d, a, b, n), d)
static void bad_lora_delta(float *d, size_t ds, const float *c, size_t cs, size_t nr,
                           const float *x, size_t xs, size_t r, size_t n)
{
    smelt_kernels_scalar.lora_delta(d, ds, c, cs, nr, x, xs, r, n);
    if (nr && n)
        flip32(d + (nr - 1) * ds, n); /* the last row */
}
BAD_F32(masked_accum, (float *m, float *dv, const float *wd, const float *v, float w, size_t n),
        (m, dv, wd, v, w, n), dv)
static double bad_dot_f64(const float *a, const float *b, size_t n)
{
    return nextafter(smelt_kernels_scalar.dot_f64(a, b, n), INFINITY);
}
static double bad_sumsq_f64(const float *a, size_t n)
{
    return nextafter(smelt_kernels_scalar.sumsq_f64(a, n), 0);
}
static double bad_sum_abs_f64(const float *a, size_t n)
{
    return nextafter(smelt_kernels_scalar.sum_abs_f64(a, n), INFINITY);
}
static void bad_hist_mag(uint32_t *h, const float *x, size_t n, uint32_t p, unsigned ps,
                         unsigned s, unsigned b)
{
    smelt_kernels_scalar.hist_mag(h, x, n - 1, p, ps, s, b); /* drops the last element */
}
static size_t bad_mask_mag_range(uint32_t *keep, uint32_t *at, const float *x, size_t n,
                                 uint32_t lo, uint32_t hi, uint32_t lo_eq, uint32_t hi_eq)
{
    /* An upper end that is not inclusive: the probe's range ends at a present magnitude. */
    return smelt_kernels_scalar.mask_mag_range(keep, at, x, n, lo, hi - 1, lo_eq, hi_eq);
}
BAD_F32(philox_uniform, (float *d, uint64_t k, uint64_t i0, size_t n), (d, k, i0, n), d)
/* A wrong byte in the last element of every plane transform (unit 4 and unit 1 included). */
static void bad_delta_join(uint8_t *o, const uint8_t *p, size_t st, size_t n, unsigned u,
                           const uint8_t *b)
{
    smelt_kernels_scalar.delta_join(o, p, st, n, u, b);
    if (n)
        o[n * u - 1] ^= 0x10;
}
static void bad_delta_split(uint8_t *p, size_t st, const uint8_t *e, size_t n, unsigned u,
                            const uint8_t *b)
{
    smelt_kernels_scalar.delta_split(p, st, e, n, u, b);
    if (n)
        p[(size_t)(u - 1) * st + n - 1] ^= 0x01;
}
#define BAD_DQ(name, TYPE)                                                                      \
    static void bad_dq_##name(float *d, const void *s, size_t nb)                               \
    {                                                                                           \
        smelt_kernels_scalar.dequant[SMELT_GGML_##TYPE](d, s, nb);                              \
        if (nb)                                                                                 \
            flip32(d, nb * smelt_ggml_type_get(SMELT_GGML_##TYPE)->block);                      \
    }
SMELT_DEQUANT_TYPES(BAD_DQ)
#undef BAD_DQ
static const struct {
    uint32_t type;
    void (*bad)(float *, const void *, size_t);
    const char *name;
} bad_dq[] = {
#define BAD_DQ_ROW(name, TYPE) {SMELT_GGML_##TYPE, bad_dq_##name, "dequant_" #name},
    SMELT_DEQUANT_TYPES(BAD_DQ_ROW)
#undef BAD_DQ_ROW
};
#define NBAD_DQ (sizeof bad_dq / sizeof bad_dq[0])

/* A copy of the reference, named "broken", with entry `which` replaced by its wrong twin; *name
 * gets what the self-test must report. Returns 0 past the last entry. */
#define NBROKEN (23 + (int)NBAD_DQ)
static int broken_table(int which, smelt_kernels *k, const char **name)
{
    *k = smelt_kernels_scalar;
    k->name = "broken";
    switch (which) {
#define CASE(i, entry, reported)                                                                \
    case i:                                                                                     \
        k->entry = bad_##entry;                                                                 \
        *name = reported;                                                                       \
        return 1;
        CASE(0, decode_bf16, "decode_bf16")
        CASE(1, decode_f16, "decode_f16")
        CASE(2, encode_bf16, "encode_bf16")
        CASE(3, encode_f16, "encode_f16")
        CASE(4, encode_f32, "encode_f32")
        CASE(5, axpy, "axpy")
        CASE(6, scale, "scale")
        CASE(7, axpy_bf16, "axpy_bf16")
        CASE(8, axpy_f16, "axpy_f16")
        CASE(9, scale_bf16, "scale_bf16")
        CASE(10, scale_f16, "scale_f16")
        CASE(11, axpy_bf16_encode, "axpy_bf16_encode")
        CASE(12, sub, "sub")
        CASE(13, masked_accum, "masked_accum")
        CASE(14, dot_f64, "dot_f64/sumsq_f64/sum_abs_f64")
        CASE(15, sumsq_f64, "dot_f64/sumsq_f64/sum_abs_f64")
        CASE(16, sum_abs_f64, "dot_f64/sumsq_f64/sum_abs_f64")
        CASE(17, hist_mag, "hist_mag")
        CASE(18, philox_uniform, "philox_uniform")
        CASE(19, lora_delta, "lora_delta")
        CASE(20, delta_join, "delta_join")
        CASE(21, delta_split, "delta_split")
        CASE(22, mask_mag_range, "mask_mag_range")
#undef CASE
    }
    if (which >= 23 && (size_t)(which - 23) < NBAD_DQ) {
        k->dequant[bad_dq[which - 23].type] = bad_dq[which - 23].bad;
        *name = bad_dq[which - 23].name;
        return 1;
    }
    return 0;
}

/* Every level usable here passes its self-test (AVX-512 included where the CPU has it). */
START_TEST(selftest_passes_real_levels)
{
    ck_assert_ptr_null(smelt_kernels_selftest(&smelt_kernels_scalar));
    for (size_t i = 0; i < sizeof simd_levels / sizeof simd_levels[0]; i++) {
        const smelt_kernels *k = smelt_kernels_level(simd_levels[i]);
        if (k)
            ck_assert_msg(smelt_kernels_selftest(k) == NULL, "%s: %s", simd_levels[i],
                          smelt_kernels_selftest(k));
    }
}
END_TEST

/* Each entry broken in turn is caught and named: the self-test covers the whole table. (A new
 * entry needs a probe in kernels_selftest.c and a case here; NBROKEN counts them.) */
START_TEST(selftest_names_every_broken_entry)
{
    smelt_kernels k;
    const char *name = NULL;
    int n = 0;
    for (int i = 0; broken_table(i, &k, &name); i++, n++) {
        const char *got = smelt_kernels_selftest(&k);
        ck_assert_msg(got != NULL, "broken %s passed the self-test", name);
        ck_assert_str_eq(got, name);
    }
    ck_assert_int_eq(n, NBROKEN);
}
END_TEST

/* A failing level falls back to the next in the chain with one notice naming the kernel; the
 * reference is the last resort. */
START_TEST(selftest_fallback)
{
    smelt_kernels bad1, bad2;
    const char *name;
    broken_table(5, &bad1, &name); /* axpy */
    broken_table(2, &bad2, &name); /* encode_bf16 */
    bad2.name = "broken2";
    const smelt_kernels *good = smelt_kernels_level("avx2");
    if (!good)
        good = &smelt_kernels_scalar;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    const smelt_kernels *chain1[] = {&bad1, good, &smelt_kernels_scalar};
    ck_assert_ptr_eq(smelt_kernels_first_sound(chain1, 3, f), good);
    fflush(f);
    ck_assert_ptr_nonnull(strstr(text, "the broken kernel 'axpy' disagrees with the scalar "
                                       "reference on this machine; using"));
    ck_assert_ptr_nonnull(strstr(text, good->name));
    ck_assert_ptr_eq(strchr(text, '\n'), text + len - 1); /* one line */
    const smelt_kernels *chain2[] = {&bad1, &bad2};
    ck_assert_ptr_eq(smelt_kernels_first_sound(chain2, 2, f), &smelt_kernels_scalar);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "the broken2 kernel 'encode_bf16'"));
    free(text);
    const smelt_kernels *chain3[] = {good};
    ck_assert_ptr_eq(smelt_kernels_first_sound(chain3, 1, NULL), good);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("kernels");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, levels_match_scalar, 0, 3);
    tcase_add_loop_test(tc, dequant_levels_match_scalar, 0, 3);
    tcase_add_loop_test(tc, encoders_match_formulas, 0, 4);
    tcase_add_test(tc, scalar_fused_equals_unfused);
    tcase_add_test(tc, cast_edges);
    tcase_add_test(tc, encode_f32_canonical_nan);
    tcase_add_test(tc, masked_accum_rules);
    tcase_add_test(tc, reductions_definition);
    tcase_add_test(tc, hist_mag_counts);
    tcase_add_test(tc, mask_mag_range_definition);
    tcase_add_test(tc, philox_known_answers);
    tcase_add_test(tc, philox_independent_of_start);
    tcase_add_test(tc, isa_selection);
    tcase_add_test(tc, selftest_passes_real_levels);
    tcase_add_test(tc, selftest_names_every_broken_entry);
    tcase_add_test(tc, selftest_fallback);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
