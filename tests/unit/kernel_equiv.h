/* Bit-exactness checks of one kernel table against another (a SIMD level against the scalar
 * reference), and of an encoder against independent formulas. Header-only and free of Check, so
 * the Check test (test_kernels.c) and the cross-built NEON program (tests/neon) run the very same
 * comparisons. Each check counts and records the first failure in a keq. */
#ifndef SMELT_KERNEL_EQUIV_H
#define SMELT_KERNEL_EQUIV_H

#include "kernels/kernels.h"
#include "kernels/kernels_ref.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct keq {
    unsigned long checks, failed;
    char msg[600];
} keq;

#define KEQ_FAIL(q, ...)                                          \
    do {                                                          \
        if ((q)->failed++ == 0)                                   \
            snprintf((q)->msg, sizeof (q)->msg, __VA_ARGS__);     \
    } while (0)

static inline uint32_t keq_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float keq_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint64_t keq_next(uint64_t *s)
{
    /* splitmix64: decent bits, no state to set up */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Values at every edge of the casts. */
static const uint32_t keq_specials[] = {
    0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u,             /* ±0, ±Inf */
    0x7FC00000u, 0xFFC00000u, 0x7FC12345u, 0xFFC00001u,             /* quiet NaNs, payloads */
    0x7F800001u, 0xFF800001u, 0x7FA00000u, 0xFFBFFFFFu,             /* signalling NaNs */
    0x00000001u, 0x80000001u, 0x007FFFFFu, 0x00400000u, 0x807FFFFFu, /* f32 subnormals */
    0x00008000u, 0x00018000u, 0x0000FFFFu,                          /* f32 subnormal bf16 ties */
    0x33800000u, 0x33000000u, 0x33400000u, 0x33C00000u, 0xB3000000u, /* 2^-24, 2^-25 (tie) ... */
    0x387FC000u, 0x387FE000u, 0x38800000u, 0x387FFFFFu,             /* f16 subnormal/normal edge */
    0x3F808000u, 0x3F818000u, 0x3F808001u, 0x3F807FFFu, 0xBF808000u, /* bf16 ties around 1 */
    0x3F801000u, 0x3F803000u, 0x3F801001u, 0x3F800FFFu, 0xBF803000u, /* f16 ties around 1 */
    0x477FE000u, 0x477FEFFFu, 0x477FF000u, 0x477FF001u, 0xC77FF000u, /* 65504, ~65519.996, 65520 */
    0x477FFFFFu, 0x47800000u, 0xC77FE000u,
    0x7F7F7FFFu, 0x7F7F8000u, 0x7F7EFFFFu, 0x7F7E8000u, 0x7F7FFFFFu, /* bf16 max and overflow */
    0xFF7F8000u, 0xFF7F7FFFu, 0x3F800000u, 0xBF800000u, 0x40490FDBu,
};
#define KEQ_NSPECIALS (sizeof keq_specials / sizeof keq_specials[0])

/* mode 0: model-like values with the specials sprinkled in; mode 1: any bit pattern. */
static inline void keq_fill_f32(float *x, size_t n, uint64_t *s, int mode)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t r = keq_next(s);
        if (mode == 1)
            x[i] = keq_float((uint32_t)r);
        else if ((r & 7) == 0)
            x[i] = keq_specials[(r >> 3) % KEQ_NSPECIALS];
        else
            x[i] = ldexpf((float)((int32_t)(r >> 32)) * 0x1p-31f, (int)((r >> 8) % 33) - 20);
    }
}

/* Random half patterns (every class: zeros, subnormals, normals, Inf, NaN) and model-like
 * bf16 values. */
static inline void keq_fill_u16(uint16_t *x, size_t n, uint64_t *s, int mode)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t r = keq_next(s);
        if (mode == 1 || (r & 1))
            x[i] = (uint16_t)(r >> 16);
        else
            x[i] = (uint16_t)(0x3C00u + (r >> 40) % 0x0800u) ^ (uint16_t)((r >> 8) & 0x8000u);
    }
}

static inline int keq_same(float a, float b, int any_nan)
{
    if (keq_bits(a) == keq_bits(b))
        return 1;
    return any_nan && a != a && b != b;
}

static inline void keq_cmp_f32(keq *q, const char *what, const char *level, const float *want,
                        const float *got, size_t n, int any_nan)
{
    q->checks++;
    for (size_t i = 0; i < n; i++)
        if (!keq_same(want[i], got[i], any_nan)) {
            KEQ_FAIL(q, "%s: %s differs from the reference at %zu of %zu: %08x vs %08x", level, what,
                     i, n, (unsigned)keq_bits(got[i]), (unsigned)keq_bits(want[i]));
            return;
        }
}

static inline void keq_cmp_u16(keq *q, const char *what, const char *level, const uint16_t *want,
                        const uint16_t *got, size_t n, const float *src)
{
    q->checks++;
    for (size_t i = 0; i < n; i++)
        if (want[i] != got[i]) {
            KEQ_FAIL(q, "%s: %s differs at %zu of %zu (input %08x): %04x vs %04x", level, what, i, n,
                     src ? (unsigned)keq_bits(src[i]) : 0u, got[i], want[i]);
            return;
        }
}

static inline void *keq_alloc(size_t bytes) { return malloc(bytes ? bytes : 1); }

/* One length, one misalignment, one kind of data: every entry of k against r. */
static inline void keq_levels_once(keq *q, const smelt_kernels *r, const smelt_kernels *k, size_t n,
                            size_t off, int mode, uint64_t *s)
{
    size_t m = n + off;
    float *a = keq_alloc(m * 4), *b = keq_alloc(m * 4), *c = keq_alloc(m * 4);
    float *o1 = keq_alloc(m * 4), *o2 = keq_alloc(m * 4), *p1 = keq_alloc(m * 4),
          *p2 = keq_alloc(m * 4);
    uint16_t *h = keq_alloc(m * 2), *e1 = keq_alloc(m * 2), *e2 = keq_alloc(m * 2);
    keq_fill_f32(a, m, s, mode);
    keq_fill_f32(b, m, s, mode);
    keq_fill_f32(c, m, s, mode);
    keq_fill_u16(h, m, s, mode);
    float *A = a + off, *B = b + off, *C = c + off, *O1 = o1 + off, *O2 = o2 + off,
          *P1 = p1 + off, *P2 = p2 + off;
    uint16_t *H = h + off, *E1 = e1 + off, *E2 = e2 + off;
    const float ws[] = {0.3f, -1.75f, 0.0f};
    float w = ws[n % 3];
    const char *lv = k->name;

    r->decode_bf16(O1, H, n), k->decode_bf16(O2, H, n);
    keq_cmp_f32(q, "decode_bf16", lv, O1, O2, n, 0);
    r->decode_f16(O1, H, n), k->decode_f16(O2, H, n);
    keq_cmp_f32(q, "decode_f16", lv, O1, O2, n, 0);
    r->encode_bf16(E1, A, n), k->encode_bf16(E2, A, n);
    keq_cmp_u16(q, "encode_bf16", lv, E1, E2, n, A);
    r->encode_f16(E1, A, n), k->encode_f16(E2, A, n);
    keq_cmp_u16(q, "encode_f16", lv, E1, E2, n, A);
    r->encode_f32(O1, A, n), k->encode_f32(O2, A, n);
    keq_cmp_f32(q, "encode_f32", lv, O1, O2, n, 0);

    memcpy(O1, B, n * 4), memcpy(O2, B, n * 4);
    r->axpy(O1, A, w, n), k->axpy(O2, A, w, n);
    keq_cmp_f32(q, "axpy", lv, O1, O2, n, 1);
    r->scale(O1, A, w, n), k->scale(O2, A, w, n);
    keq_cmp_f32(q, "scale", lv, O1, O2, n, 1);
    r->sub(O1, A, B, n), k->sub(O2, A, B, n);
    keq_cmp_f32(q, "sub", lv, O1, O2, n, 1);
    memcpy(O1, B, n * 4), memcpy(O2, B, n * 4);
    r->axpy_bf16(O1, H, w, n), k->axpy_bf16(O2, H, w, n);
    keq_cmp_f32(q, "axpy_bf16", lv, O1, O2, n, 1);
    memcpy(O1, B, n * 4), memcpy(O2, B, n * 4);
    r->axpy_f16(O1, H, w, n), k->axpy_f16(O2, H, w, n);
    keq_cmp_f32(q, "axpy_f16", lv, O1, O2, n, 1);
    r->scale_bf16(O1, H, w, n), k->scale_bf16(O2, H, w, n);
    keq_cmp_f32(q, "scale_bf16", lv, O1, O2, n, 1);
    r->scale_f16(O1, H, w, n), k->scale_f16(O2, H, w, n);
    keq_cmp_f32(q, "scale_f16", lv, O1, O2, n, 1);
    r->axpy_bf16_encode(E1, B, H, w, n), k->axpy_bf16_encode(E2, B, H, w, n);
    keq_cmp_u16(q, "axpy_bf16_encode", lv, E1, E2, n, NULL);

    /* TIES: the vote is sometimes the same array's sign, sometimes unrelated, to hit every
     * agree/disagree combination (and ±0 / NaN votes from the specials). */
    memcpy(O1, B, n * 4), memcpy(O2, B, n * 4), memcpy(P1, C, n * 4), memcpy(P2, C, n * 4);
    r->masked_accum(O1, P1, A, n % 2 ? A : B, w, n), k->masked_accum(O2, P2, A, n % 2 ? A : B, w, n);
    keq_cmp_f32(q, "masked_accum mixed", lv, O1, O2, n, 1);
    keq_cmp_f32(q, "masked_accum div", lv, P1, P2, n, 1);

    double d1 = r->dot_f64(A, B, n), d2 = k->dot_f64(A, B, n);
    double s1 = r->sumsq_f64(A, n), s2 = k->sumsq_f64(A, n);
    double t1 = r->sum_abs_f64(A, n), t2 = k->sum_abs_f64(A, n);
    q->checks++;
    if (!(memcmp(&d1, &d2, 8) == 0 || (d1 != d1 && d2 != d2)) ||
        !(memcmp(&s1, &s2, 8) == 0 || (s1 != s1 && s2 != s2)) ||
        !(memcmp(&t1, &t2, 8) == 0 || (t1 != t1 && t2 != t2)))
        KEQ_FAIL(q, "%s: reductions differ at n=%zu: dot %a/%a sumsq %a/%a sum_abs %a/%a", lv, n,
                 d2, d1, s2, s1, t2, t1);

    {
        /* Ends at present magnitudes (ties listed), or open. */
        uint32_t lo = n ? keq_bits(A[n / 3]) & 0x7FFFFFFFu : 0;
        uint32_t hi = n ? keq_bits(B[n / 2]) & 0x7FFFFFFFu : UINT32_MAX;
        uint32_t hi_eq = n % 3 ? hi : UINT32_MAX;
        uint32_t *k1 = keq_alloc(n * 4), *k2 = keq_alloc(n * 4);
        uint32_t *t1 = keq_alloc(n * 4), *t2 = keq_alloc(n * 4);
        size_t c1 = r->mask_mag_range(k1, t1, A, n, lo, hi, lo, hi_eq);
        size_t c2 = k->mask_mag_range(k2, t2, A, n, lo, hi, lo, hi_eq);
        q->checks++;
        if (c1 != c2 || memcmp(k1, k2, n * 4) != 0 || memcmp(t1, t2, c1 * 4) != 0)
            KEQ_FAIL(q, "%s: mask_mag_range differs at n=%zu (%zu vs %zu ties)", lv, n, c2, c1);
        free(k1), free(k2), free(t1), free(t2);
    }

    uint64_t key = keq_next(s), index0 = keq_next(s) >> (n % 2 ? 1 : 40);
    r->philox_uniform(O1, key, index0, n), k->philox_uniform(O2, key, index0, n);
    keq_cmp_f32(q, "philox_uniform", lv, O1, O2, n, 0);

    free(a), free(b), free(c), free(o1), free(o2), free(p1), free(p2), free(h), free(e1), free(e2);
}

/* lora_delta: ranks 0 to 17 and 64, 1 to 9 rows (the four-row loop and the rows after it),
 * row lengths 0 to 70 (every tail of every block), 130 and 1000, rows of `rows` a stride apart
 * that is never a multiple of a vector, coefficients strided, specials in both. */
static inline void keq_lora_delta(keq *q, const smelt_kernels *r, const smelt_kernels *k,
                                  uint64_t *s)
{
    static const size_t ranks[] = {0, 1, 2, 3, 5, 8, 13, 17, 64};
    for (size_t ri = 0; ri < sizeof ranks / sizeof ranks[0]; ri++)
        for (size_t len = 0; len < 73; len++) {
            size_t n = len < 71 ? len : len == 71 ? 130 : 1000, rank = ranks[ri];
            size_t nrows = 1 + (len + ri) % 9, stride = n + 3, cstride = nrows + 2, ds = n + 1;
            float *rows = keq_alloc((rank * stride + 1) * 4);
            float *coef = keq_alloc((rank * cstride + 1) * 4);
            float *o1 = keq_alloc(nrows * ds * 4), *o2 = keq_alloc(nrows * ds * 4);
            keq_fill_f32(rows, rank * stride + 1, s, len % 2);
            keq_fill_f32(coef, rank * cstride + 1, s, 0);
            memset(o1, 0, nrows * ds * 4), memset(o2, 0, nrows * ds * 4);
            r->lora_delta(o1, ds, coef, cstride, nrows, rows + 1, stride, rank, n);
            k->lora_delta(o2, ds, coef, cstride, nrows, rows + 1, stride, rank, n);
            keq_cmp_f32(q, "lora_delta", k->name, o1, o2, nrows * ds, 1);
            free(rows), free(coef), free(o1), free(o2);
        }
}

/* Every entry of k against r: lengths 0..67 (every tail), 1000 and 4099, at 4 misalignments,
 * on model-like data with specials and on arbitrary bit patterns. */
static inline void keq_levels(keq *q, const smelt_kernels *r, const smelt_kernels *k)
{
    uint64_t s = 42;
    for (size_t n = 0; n < 70; n++) {
        size_t len = n < 68 ? n : n == 68 ? 1000 : 4099;
        for (size_t off = 0; off < 4; off++)
            for (int mode = 0; mode < 2; mode++)
                keq_levels_once(q, r, k, len, off, mode, &s);
    }
    keq_lora_delta(q, r, k, &s);
    /* A full reduction block, and Philox across a wrap of the counter's low word. */
    size_t big = SMELT_REDUCE_BLOCK;
    float *x = malloc(big * 4), *y = malloc(big * 4), *o1 = malloc(big * 4), *o2 = malloc(big * 4);
    keq_fill_f32(x, big, &s, 0);
    keq_fill_f32(y, big, &s, 0);
    double d1 = r->dot_f64(x, y, big), d2 = k->dot_f64(x, y, big);
    q->checks++;
    if (memcmp(&d1, &d2, 8) != 0 && !(d1 != d1 && d2 != d2))
        KEQ_FAIL(q, "%s: dot_f64 over a full block: %a vs %a", k->name, d2, d1);
    uint64_t wrap = (((uint64_t)1 << 32) - 5) * 4 + 3;
    r->philox_uniform(o1, 7, wrap, 1000), k->philox_uniform(o2, 7, wrap, 1000);
    keq_cmp_f32(q, "philox_uniform across a counter wrap", k->name, o1, o2, 1000, 0);
    free(x), free(y), free(o1), free(o2);
}

/* bf16 as the notes give it: (u + 0x7FFF + ((u >> 16) & 1)) >> 16; NaN canonical. */
static inline uint16_t keq_bf16_formula(float f)
{
    uint32_t u = keq_bits(f);
    if (f != f)
        return SMELT_BF16_NAN;
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
}

/* f16 in double arithmetic, sharing nothing with the reference's integer rounding: scale to the
 * f16 quantum, round with nearbyint (ties to even), rebuild the pattern. */
static inline uint16_t keq_f16_formula(float f)
{
    uint16_t sign = (uint16_t)((keq_bits(f) >> 16) & 0x8000u);
    if (f != f)
        return SMELT_F16_NAN;
    double a = fabs((double)f);
    if (isinf(a))
        return sign | 0x7C00u;
    if (a < 0x1p-14) /* subnormal quantum 2^-24; 1024 units is the smallest normal: still right */
        return sign | (uint16_t)nearbyint(a * 0x1p24);
    int e;
    frexp(a, &e); /* a in [2^(e-1), 2^e): 11 significant bits, quantum 2^(e-11) */
    double v = nearbyint(ldexp(a, 11 - e));
    v = ldexp(v, e - 11);
    if (v >= 65536.0)
        return sign | 0x7C00u;
    frexp(v, &e);
    unsigned mant = (unsigned)ldexp(v, 11 - e) - 1024;
    return sign | (uint16_t)((unsigned)(e - 1 + 15) << 10) | (uint16_t)mant;
}

/* k's encoders against the formulas: every exponent, both signs, edge and random mantissas,
 * then random patterns. */
static inline void keq_encode_formulas(keq *q, const smelt_kernels *k, size_t nrandom)
{
    static const uint32_t mants[] = {0, 1, 2, 0xFFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x3000,
                                     0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x10000, 0x17FFF, 0x18000,
                                     0x18001, 0x400000, 0x7FE000, 0x7FEFFF, 0x7FF000, 0x7FFFFF};
    size_t per = sizeof mants / sizeof mants[0] + 64, n = 512 * per + nrandom, at = 0;
    float *x = malloc(n * 4);
    uint16_t *out = malloc(n * 2);
    uint64_t s = 7;
    for (uint32_t se = 0; se < 512; se++) {
        for (size_t j = 0; j < sizeof mants / sizeof mants[0]; j++)
            x[at++] = keq_float(se << 23 | mants[j]);
        for (int j = 0; j < 64; j++)
            x[at++] = keq_float(se << 23 | ((uint32_t)keq_next(&s) & 0x7FFFFFu));
    }
    while (at < n)
        x[at++] = keq_float((uint32_t)keq_next(&s));
    q->checks += 2;
    k->encode_bf16(out, x, n);
    for (size_t i = 0; i < n; i++)
        if (out[i] != keq_bf16_formula(x[i])) {
            KEQ_FAIL(q, "%s: encode_bf16(%08x) = %04x, formula %04x", k->name,
                     (unsigned)keq_bits(x[i]), out[i], keq_bf16_formula(x[i]));
            break;
        }
    k->encode_f16(out, x, n);
    for (size_t i = 0; i < n; i++)
        if (out[i] != keq_f16_formula(x[i])) {
            KEQ_FAIL(q, "%s: encode_f16(%08x) = %04x, formula %04x", k->name,
                     (unsigned)keq_bits(x[i]), out[i], keq_f16_formula(x[i]));
            break;
        }
    free(x), free(out);
}

/* All 65536 patterns of each half type: decode then encode gives the pattern back, but for
 * NaNs, which come back canonical. */
static inline void keq_roundtrips(keq *q, const smelt_kernels *k)
{
    uint16_t *h = malloc(65536 * 2), *back = malloc(65536 * 2);
    float *f = malloc(65536 * 4);
    for (uint32_t i = 0; i < 65536; i++)
        h[i] = (uint16_t)i;
    for (int t = 0; t < 2; t++) {
        q->checks++;
        if (t == 0)
            k->decode_bf16(f, h, 65536), k->encode_bf16(back, f, 65536);
        else
            k->decode_f16(f, h, 65536), k->encode_f16(back, f, 65536);
        for (uint32_t i = 0; i < 65536; i++) {
            int nan = t == 0 ? (i & 0x7FFF) > 0x7F80 : (i & 0x7FFF) > 0x7C00;
            uint16_t want = nan ? (t == 0 ? SMELT_BF16_NAN : SMELT_F16_NAN) : (uint16_t)i;
            if (back[i] != want || (nan != (f[i] != f[i]))) {
                KEQ_FAIL(q, "%s: %s round trip of %04x gives %04x via %08x", k->name,
                         t == 0 ? "bf16" : "f16", i, back[i], (unsigned)keq_bits(f[i]));
                break;
            }
        }
    }
    free(h), free(back), free(f);
}

/* The fused entries equal decode followed by the unfused ones, bit for bit. */
static inline void keq_fused(keq *q, const smelt_kernels *k)
{
    uint64_t s = 99;
    for (size_t n = 0; n < 300; n += 7) {
        float *acc = malloc(n * 4 + 4), *o1 = malloc(n * 4 + 4), *o2 = malloc(n * 4 + 4),
              *dec = malloc(n * 4 + 4);
        uint16_t *h = malloc(n * 2 + 2), *e1 = malloc(n * 2 + 2), *e2 = malloc(n * 2 + 2);
        keq_fill_f32(acc, n, &s, 0);
        keq_fill_u16(h, n, &s, 0);
        float w = (float)(n % 5) * 0.37f - 0.5f;
        for (int t = 0; t < 2; t++) {
            (t ? k->decode_f16 : k->decode_bf16)(dec, h, n);
            memcpy(o1, acc, n * 4), memcpy(o2, acc, n * 4);
            k->axpy(o1, dec, w, n);
            (t ? k->axpy_f16 : k->axpy_bf16)(o2, h, w, n);
            keq_cmp_f32(q, t ? "axpy_f16 vs decode+axpy" : "axpy_bf16 vs decode+axpy", k->name,
                        o1, o2, n, 0);
            k->scale(o1, dec, w, n);
            (t ? k->scale_f16 : k->scale_bf16)(o2, h, w, n);
            keq_cmp_f32(q, t ? "scale_f16 vs decode+scale" : "scale_bf16 vs decode+scale",
                        k->name, o1, o2, n, 0);
        }
        k->decode_bf16(dec, h, n);
        memcpy(o1, acc, n * 4);
        k->axpy(o1, dec, w, n);
        k->encode_bf16(e1, o1, n);
        k->axpy_bf16_encode(e2, acc, h, w, n);
        keq_cmp_u16(q, "axpy_bf16_encode vs axpy_bf16+encode_bf16", k->name, e1, e2, n, NULL);
        free(acc), free(o1), free(o2), free(dec), free(h), free(e1), free(e2);
    }
}

/* ---- dequantization ---- */

/* fp16 scale patterns at the edges: ±0, the smallest and largest subnormals, the smallest and
 * largest normals, ±Inf, quiet and signalling NaNs with payloads, ±1, a typical scale. */
static const uint16_t keq_f16_scales[] = {
    0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x8400, 0x7BFF, 0xFBFF,
    0x7C00, 0xFC00, 0x7E00, 0xFE01, 0x7C01, 0x7D55, 0x3C00, 0xBC00, 0x211F, 0x0200,
};
#define KEQ_NF16 (sizeof keq_f16_scales / sizeof keq_f16_scales[0])

/* Fills nb blocks of `type` (block bytes each) by mode: 0 any bytes (every scale pattern
 * included); 1 random quants under model-like scales; 2 random quants under the edge scales;
 * 3 every quant byte one value (0x00, 0xFF, 0x88, 0x55, ...) under random edge scales;
 * 4 all zero bytes. */
static inline void keq_fill_blocks(uint8_t *x, uint32_t type, size_t bytes, size_t nb, int mode,
                                   uint64_t *s)
{
    int off[2];
    int nf = smelt_ref_dequant_f16_fields(type, off);
    static const uint8_t same[] = {0x00, 0xFF, 0x88, 0x55, 0xAA, 0x0F, 0xF0, 0x80, 0x7F, 0x11};
    uint8_t fill = same[keq_next(s) % sizeof same];
    for (size_t i = 0; i < nb * bytes; i++)
        x[i] = mode == 4 ? 0 : mode == 3 ? fill : (uint8_t)keq_next(s);
    if (mode == 0 || mode == 4)
        return;
    for (size_t b = 0; b < nb; b++)
        for (int f = 0; f < nf; f++) {
            uint64_t r = keq_next(s);
            uint16_t h = mode == 1 ? (uint16_t)(0x1800 + r % 0x1800) ^ (uint16_t)(r >> 8 & 0x8000)
                                   : keq_f16_scales[r % KEQ_NF16];
            x[b * bytes + (size_t)off[f]] = (uint8_t)h;
            x[b * bytes + (size_t)off[f] + 1] = (uint8_t)(h >> 8);
        }
}

/* Every dequant entry of k against r's, bit for bit (NaN payloads too): nb = 0..9 and 37
 * blocks, source and destination misaligned by 0..3 bytes / floats, every fill mode; and
 * smelt_decode through k gives the same bits as k's entry. */
static inline void keq_dequant(keq *q, const smelt_kernels *r, const smelt_kernels *k)
{
    uint64_t s = 1234;
    for (uint32_t t = 0; t < SMELT_GGML_TYPE_COUNT; t++) {
        q->checks++;
        if (!r->dequant[t] != !k->dequant[t]) {
            KEQ_FAIL(q, "%s: dequant entry of ggml type %u present in one table only", k->name,
                     (unsigned)t);
            continue;
        }
        if (!r->dequant[t])
            continue;
        const smelt_ggml_type *gt = smelt_ggml_type_get(t);
        size_t block = gt->block, bytes = gt->bytes, max_nb = 37;
        uint8_t *src = keq_alloc(max_nb * bytes + 3);
        float *o1 = keq_alloc((max_nb * block + 3) * 4), *o2 = keq_alloc((max_nb * block + 3) * 4);
        char what[64];
        snprintf(what, sizeof what, "dequant %s", gt->name);
        for (size_t nb = 0; nb <= 10; nb++) {
            size_t n = nb == 10 ? max_nb : nb;
            for (int mode = 0; mode < 5; mode++)
                for (size_t off = 0; off < 4; off++) {
                    uint8_t *S = src + off;
                    float *O1 = o1 + (3 - off), *O2 = o2 + off;
                    keq_fill_blocks(S, t, bytes, n, mode, &s);
                    memset(O1, 0x5A, n * block * 4), memset(O2, 0xA5, n * block * 4);
                    r->dequant[t](O1, S, n), k->dequant[t](O2, S, n);
                    keq_cmp_f32(q, what, k->name, O1, O2, n * block, 0);
                    if (off == 1 && mode == 1) {
                        smelt_decode(k, O2, S, (smelt_dtype)(SMELT_DT_GGML_BASE + (int)t),
                                     n * block);
                        keq_cmp_f32(q, "smelt_decode of a block type", k->name, O1, O2,
                                    n * block, 0);
                    }
                }
        }
        free(src), free(o1), free(o2);
    }
}

/* Everything above for one level: r is the scalar reference. */
/* delta_join / delta_split: units 1, 2, 4 (the vector paths) and 3, 8 (the reference), every
 * length 0..300 (every tail of four AVX-512 vectors of each unit) and 4099, with and without a
 * base, planes a stride apart that is not a multiple of a vector, every pointer misaligned by
 * its own offset; and the split then the join gives the elements back. */
static inline void keq_delta_planes(keq *q, const smelt_kernels *r, const smelt_kernels *k,
                                    uint64_t *s)
{
    static const unsigned units[] = {1, 2, 4, 3, 8};
    for (size_t ui = 0; ui < sizeof units / sizeof units[0]; ui++)
        for (size_t len = 0; len <= 302; len++) {
            size_t n = len <= 300 ? len : len == 301 ? 4099 : 64 * 8 + 1, unit = units[ui];
            size_t stride = n + 1 + len % 7, off = len % 5, bytes = n * unit;
            uint8_t *planes = keq_alloc(unit * stride + off), *elems = keq_alloc(bytes + off + 1);
            uint8_t *base = keq_alloc(bytes + off + 2), *o1 = keq_alloc(unit * stride + off);
            uint8_t *o2 = keq_alloc(unit * stride + off), *back = keq_alloc(bytes + off);
            for (size_t i = 0; i < unit * stride + off; i++)
                planes[i] = (uint8_t)keq_next(s);
            for (size_t i = 0; i < bytes + off + 1; i++)
                elems[i] = (uint8_t)keq_next(s);
            for (size_t i = 0; i < bytes + off + 2; i++)
                base[i] = (uint8_t)keq_next(s);
            const uint8_t *b = len % 3 ? base + 2 : NULL; /* misaligned against the others */
            r->delta_join(o1 + off, planes + off, stride, n, unit, b);
            k->delta_join(o2 + off, planes + off, stride, n, unit, b);
            q->checks++;
            if (memcmp(o1 + off, o2 + off, bytes) != 0)
                KEQ_FAIL(q, "%s: delta_join differs at unit %zu, n=%zu, %s base", k->name, unit,
                         n, b ? "a" : "no");
            memset(o1, 0, unit * stride + off), memset(o2, 0, unit * stride + off);
            r->delta_split(o1 + off, stride, elems + 1, n, unit, b);
            k->delta_split(o2 + off, stride, elems + 1, n, unit, b);
            q->checks++;
            if (memcmp(o1, o2, unit * stride + off) != 0)
                KEQ_FAIL(q, "%s: delta_split differs at unit %zu, n=%zu, %s base", k->name, unit,
                         n, b ? "a" : "no");
            k->delta_join(back + off, o2 + off, stride, n, unit, b);
            q->checks++;
            if (memcmp(back + off, elems + 1, bytes) != 0)
                KEQ_FAIL(q, "%s: delta_join does not undo delta_split at unit %zu, n=%zu",
                         k->name, unit, n);
            free(planes), free(elems), free(base), free(o1), free(o2), free(back);
        }
}

static inline void keq_all(keq *q, const smelt_kernels *r, const smelt_kernels *k)
{
    keq_levels(q, r, k);
    keq_dequant(q, r, k);
    uint64_t s = 7;
    keq_delta_planes(q, r, k, &s);
    keq_encode_formulas(q, k, 1u << 20);
    keq_roundtrips(q, k);
    keq_fused(q, k);
}

#endif
