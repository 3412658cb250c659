/* The SIMD kernels, written once (ggml style) against a few macros; kernels_avx2.c,
 * kernels_avx512.c and kernels_neon.c each define the macros for their instruction set and
 * include this file, which defines the level's static kernels and its table. The scalar
 * reference handles whatever does not fill a whole vector, so tails can never disagree with it.
 *
 * A level defines:
 *   KLEVEL, KLEVEL_NAME        table suffix (avx2) and name ("avx2")
 *   VL                         f32 lanes per vector
 *   VF, VI, VH, VM             vectors of VL f32 / VL u32 / VL u16, and a lane mask
 *   VF_LOADU VF_STOREU VF_SET1 VF_ADD VF_SUB VF_MUL
 *   VI_SET1 VI_IOTA VI_ADD VI_AND VI_XOR VI_SRLI VI_SLLI VI_TO_VF (u32 < 2^24 to f32, exact)
 *   VF_AS_VI VI_AS_VF          bit casts
 *   VH_LOADU VH_STOREU VI_FROM_VH (zero-extend) VH_FROM_VI (narrow; lanes hold <= 0xFFFF)
 *   VF_FROM_F16 (VH of halves to VF) F16_FROM_VF (VF to VH of halves, round to nearest even)
 *   VM_LT VM_GT (ordered) VM_UNORD(a) (a is NaN) VM_AND VM_OR VM_ANDNOT(a, b) (= !a & b)
 *   VF_SELECT(m, a, b) VI_SELECT(m, a, b)   m ? a : b per lane
 *   DL, VD, VD_ZERO VD_LOAD_F32 (DL floats widened) VD_ADD VD_MUL VD_ABS VD_STOREU
 *   k_mulhilo(VI a, VI m, VI *hi, VI *lo)     per-lane 32x32 -> 64-bit product halves
 *   k_store4(float *p, VF a, VF b, VF c, VF d) p[4i + 0..3] = a[i], b[i], c[i], d[i]
 * and may define VH2_STOREU(p, a, b): store the u32 lanes (<= 0xFFFF) of a then b as 2 * VL u16
 * (one wide pack is cheaper than two narrow ones on AVX2).
 */
#ifndef KLEVEL
#error "kernels_simd.h is included by a level's .c after it defines the level's macros"
#endif

#include "kernels/kernels_ref.h"

#define K_CAT2(a, b) a##b
#define K_CAT(a, b) K_CAT2(a, b)

#ifndef VH2_STOREU
#define VH2_STOREU(p, a, b) (VH_STOREU((p), VH_FROM_VI(a)), VH_STOREU((p) + VL, VH_FROM_VI(b)))
#endif

static inline VF k_dec_bf16(const uint16_t *p) { return VI_AS_VF(VI_SLLI(VI_FROM_VH(VH_LOADU(p)), 16)); }

static inline VF k_dec_f16(const uint16_t *p) { return VF_FROM_F16(VH_LOADU(p)); }

/* The same integer rounding as the reference: add just under half an ulp, plus one when the kept
 * part is odd, so exact ties go to even; overflow lands on the Inf pattern. */
static inline VI k_enc_bf16(VF v)
{
    VI u = VF_AS_VI(v);
    VI odd = VI_AND(VI_SRLI(u, 16), VI_SET1(1));
    VI r = VI_SRLI(VI_ADD(u, VI_ADD(odd, VI_SET1(0x7FFF))), 16);
    return VI_SELECT(VM_UNORD(v), VI_SET1(SMELT_BF16_NAN), r);
}

/* The hardware conversion is exact-RNE with subnormals for every non-NaN; only NaN needs fixing. */
static inline VH k_enc_f16(VF v)
{
    VI h = VI_FROM_VH(F16_FROM_VF(v));
    return VH_FROM_VI(VI_SELECT(VM_UNORD(v), VI_SET1(SMELT_F16_NAN), h));
}

static void k_decode_bf16(float *dst, const uint16_t *src, size_t n)
{
    size_t i = 0;
    for (; i + VL <= n; i += VL)
        VF_STOREU(dst + i, k_dec_bf16(src + i));
    smelt_ref_decode_bf16(dst + i, src + i, n - i);
}

static void k_decode_f16(float *dst, const uint16_t *src, size_t n)
{
    size_t i = 0;
    for (; i + VL <= n; i += VL)
        VF_STOREU(dst + i, k_dec_f16(src + i));
    smelt_ref_decode_f16(dst + i, src + i, n - i);
}

static void k_encode_bf16(uint16_t *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 2 * VL <= n; i += 2 * VL)
        VH2_STOREU(dst + i, k_enc_bf16(VF_LOADU(src + i)), k_enc_bf16(VF_LOADU(src + i + VL)));
    for (; i + VL <= n; i += VL)
        VH_STOREU(dst + i, VH_FROM_VI(k_enc_bf16(VF_LOADU(src + i))));
    smelt_ref_encode_bf16(dst + i, src + i, n - i);
}

static void k_encode_f16(uint16_t *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + VL <= n; i += VL)
        VH_STOREU(dst + i, k_enc_f16(VF_LOADU(src + i)));
    smelt_ref_encode_f16(dst + i, src + i, n - i);
}

static void k_encode_f32(float *dst, const float *src, size_t n)
{
    const VF nan = VI_AS_VF(VI_SET1(SMELT_F32_NAN));
    size_t i = 0;
    for (; i + VL <= n; i += VL) {
        VF v = VF_LOADU(src + i);
        VF_STOREU(dst + i, VF_SELECT(VM_UNORD(v), nan, v));
    }
    smelt_ref_encode_f32(dst + i, src + i, n - i);
}

/* Operand order as in the reference (acc + w * x), so even NaN payloads usually agree. */
static void k_axpy(float *acc, const float *x, float w, size_t n)
{
    const VF vw = VF_SET1(w);
    size_t i = 0;
    for (; i + VL <= n; i += VL)
        VF_STOREU(acc + i, VF_ADD(VF_LOADU(acc + i), VF_MUL(vw, VF_LOADU(x + i))));
    smelt_ref_axpy(acc + i, x + i, w, n - i);
}

static void k_scale(float *dst, const float *x, float w, size_t n)
{
    const VF vw = VF_SET1(w);
    size_t i = 0;
    for (; i + VL <= n; i += VL)
        VF_STOREU(dst + i, VF_MUL(vw, VF_LOADU(x + i)));
    smelt_ref_scale(dst + i, x + i, w, n - i);
}

static void k_axpy_bf16(float *acc, const uint16_t *x, float w, size_t n)
{
    const VF vw = VF_SET1(w);
    size_t i = 0;
    for (; i + VL <= n; i += VL)
        VF_STOREU(acc + i, VF_ADD(VF_LOADU(acc + i), VF_MUL(vw, k_dec_bf16(x + i))));
    smelt_ref_axpy_bf16(acc + i, x + i, w, n - i);
}

static void k_axpy_f16(float *acc, const uint16_t *x, float w, size_t n)
{
    const VF vw = VF_SET1(w);
    size_t i = 0;
    for (; i + VL <= n; i += VL)
        VF_STOREU(acc + i, VF_ADD(VF_LOADU(acc + i), VF_MUL(vw, k_dec_f16(x + i))));
    smelt_ref_axpy_f16(acc + i, x + i, w, n - i);
}

static void k_scale_bf16(float *dst, const uint16_t *x, float w, size_t n)
{
    const VF vw = VF_SET1(w);
    size_t i = 0;
    for (; i + VL <= n; i += VL)
        VF_STOREU(dst + i, VF_MUL(vw, k_dec_bf16(x + i)));
    smelt_ref_scale_bf16(dst + i, x + i, w, n - i);
}

static void k_scale_f16(float *dst, const uint16_t *x, float w, size_t n)
{
    const VF vw = VF_SET1(w);
    size_t i = 0;
    for (; i + VL <= n; i += VL)
        VF_STOREU(dst + i, VF_MUL(vw, k_dec_f16(x + i)));
    smelt_ref_scale_f16(dst + i, x + i, w, n - i);
}

static void k_axpy_bf16_encode(uint16_t *out, const float *acc, const uint16_t *x, float w,
                               size_t n)
{
    const VF vw = VF_SET1(w);
    size_t i = 0;
    for (; i + 2 * VL <= n; i += 2 * VL)
        VH2_STOREU(out + i, k_enc_bf16(VF_ADD(VF_LOADU(acc + i), VF_MUL(vw, k_dec_bf16(x + i)))),
                   k_enc_bf16(VF_ADD(VF_LOADU(acc + i + VL), VF_MUL(vw, k_dec_bf16(x + i + VL)))));
    for (; i + VL <= n; i += VL)
        VH_STOREU(out + i, VH_FROM_VI(k_enc_bf16(VF_ADD(VF_LOADU(acc + i), VF_MUL(vw, k_dec_bf16(x + i))))));
    smelt_ref_axpy_bf16_encode(out + i, acc + i, x + i, w, n - i);
}

static void k_sub(float *dst, const float *a, const float *b, size_t n)
{
    size_t i = 0;
    for (; i + VL <= n; i += VL)
        VF_STOREU(dst + i, VF_SUB(VF_LOADU(a + i), VF_LOADU(b + i)));
    smelt_ref_sub(dst + i, a + i, b + i, n - i);
}

/* Blend, never add a masked zero: -0 + +0 would come out +0 where the reference leaves -0. */
static void k_masked_accum(float *mixed, float *div, const float *wd, const float *vote, float w,
                           size_t n)
{
    const VF vw = VF_SET1(w), zero = VF_SET1(0.0f);
    size_t i = 0;
    for (; i + VL <= n; i += VL) {
        VF d = VF_LOADU(wd + i), v = VF_LOADU(vote + i);
        VM neg = VM_LT(v, zero);
        VM agree = VM_OR(VM_UNORD(d),
                         VM_OR(VM_AND(neg, VM_LT(d, zero)), VM_ANDNOT(neg, VM_GT(d, zero))));
        VF m = VF_LOADU(mixed + i), q = VF_LOADU(div + i);
        VF_STOREU(mixed + i, VF_SELECT(agree, VF_ADD(m, d), m));
        VF_STOREU(div + i, VF_SELECT(agree, VF_ADD(q, vw), q));
    }
    smelt_ref_masked_accum(mixed + i, div + i, wd + i, vote + i, w, n - i);
}

/* Lane j of the 16 f64 lanes is lane j % DL of accumulator j / DL; each accumulator adds its
 * terms in element order, exactly as the reference's lanes do. */
#define K_NACC (SMELT_REDUCE_LANES / DL)

static double k_dot_f64(const float *a, const float *b, size_t n)
{
    VD acc[K_NACC];
    for (int k = 0; k < K_NACC; k++)
        acc[k] = VD_ZERO;
    size_t i = 0;
    for (; i + SMELT_REDUCE_LANES <= n; i += SMELT_REDUCE_LANES)
        for (int k = 0; k < K_NACC; k++)
            acc[k] = VD_ADD(acc[k], VD_MUL(VD_LOAD_F32(a + i + k * DL), VD_LOAD_F32(b + i + k * DL)));
    double lanes[SMELT_REDUCE_LANES];
    for (int k = 0; k < K_NACC; k++)
        VD_STOREU(lanes + k * DL, acc[k]);
    smelt_ref_dot_lanes(lanes, a + i, b + i, n - i);
    return smelt_ref_reduce_combine(lanes);
}

static double k_sumsq_f64(const float *a, size_t n)
{
    VD acc[K_NACC];
    for (int k = 0; k < K_NACC; k++)
        acc[k] = VD_ZERO;
    size_t i = 0;
    for (; i + SMELT_REDUCE_LANES <= n; i += SMELT_REDUCE_LANES)
        for (int k = 0; k < K_NACC; k++) {
            VD v = VD_LOAD_F32(a + i + k * DL);
            acc[k] = VD_ADD(acc[k], VD_MUL(v, v));
        }
    double lanes[SMELT_REDUCE_LANES];
    for (int k = 0; k < K_NACC; k++)
        VD_STOREU(lanes + k * DL, acc[k]);
    smelt_ref_sumsq_lanes(lanes, a + i, n - i);
    return smelt_ref_reduce_combine(lanes);
}

static double k_sum_abs_f64(const float *a, size_t n)
{
    VD acc[K_NACC];
    for (int k = 0; k < K_NACC; k++)
        acc[k] = VD_ZERO;
    size_t i = 0;
    for (; i + SMELT_REDUCE_LANES <= n; i += SMELT_REDUCE_LANES)
        for (int k = 0; k < K_NACC; k++)
            acc[k] = VD_ADD(acc[k], VD_ABS(VD_LOAD_F32(a + i + k * DL)));
    double lanes[SMELT_REDUCE_LANES];
    for (int k = 0; k < K_NACC; k++)
        VD_STOREU(lanes + k * DL, acc[k]);
    smelt_ref_sum_abs_lanes(lanes, a + i, n - i);
    return smelt_ref_reduce_combine(lanes);
}

/* VL Philox blocks side by side, one counter per lane (structure of arrays): the 32x32 -> 64
 * products then fill whole vectors, and k_store4 interleaves the four output words back into
 * element order. */
static void k_philox_uniform(float *dst, uint64_t key, uint64_t index0, size_t n)
{
    size_t head = (size_t)((4 - (index0 & 3)) & 3);
    if (head > n)
        head = n;
    smelt_ref_philox_uniform(dst, key, index0, head);
    const VF unit = VF_SET1(0x1p-24f);
    const VI m0 = VI_SET1(SMELT_PHILOX_M0), m1 = VI_SET1(SMELT_PHILOX_M1);
    size_t i = head;
    for (; i + 4 * VL <= n; i += 4 * VL) {
        uint64_t c = (index0 + i) >> 2;
        if ((uint32_t)c > UINT32_MAX - (VL - 1)) {
            /* The counter's low word wraps inside this vector: rare, leave it to the reference. */
            smelt_ref_philox_uniform(dst + i, key, index0 + i, 4 * VL);
            continue;
        }
        VI x0 = VI_ADD(VI_SET1((uint32_t)c), VI_IOTA), x1 = VI_SET1((uint32_t)(c >> 32));
        VI x2 = VI_SET1(0), x3 = VI_SET1(0);
        uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
        for (int round = 0; round < 10; round++) {
            VI hi0, lo0, hi1, lo1;
            k_mulhilo(x0, m0, &hi0, &lo0);
            k_mulhilo(x2, m1, &hi1, &lo1);
            x0 = VI_XOR(VI_XOR(hi1, x1), VI_SET1(k0));
            x1 = lo1;
            x2 = VI_XOR(VI_XOR(hi0, x3), VI_SET1(k1));
            x3 = lo0;
            k0 += SMELT_PHILOX_W0;
            k1 += SMELT_PHILOX_W1;
        }
        k_store4(dst + i, VF_MUL(VI_TO_VF(VI_SRLI(x0, 8)), unit), VF_MUL(VI_TO_VF(VI_SRLI(x1, 8)), unit),
                 VF_MUL(VI_TO_VF(VI_SRLI(x2, 8)), unit), VF_MUL(VI_TO_VF(VI_SRLI(x3, 8)), unit));
    }
    smelt_ref_philox_uniform(dst + i, key, index0 + i, n - i);
}

const smelt_kernels K_CAT(smelt_kernels_, KLEVEL) = {
    .name = KLEVEL_NAME,
    .decode_bf16 = k_decode_bf16,
    .decode_f16 = k_decode_f16,
    .encode_bf16 = k_encode_bf16,
    .encode_f16 = k_encode_f16,
    .axpy = k_axpy,
    .scale = k_scale,
    .encode_f32 = k_encode_f32,
    .axpy_bf16 = k_axpy_bf16,
    .axpy_f16 = k_axpy_f16,
    .scale_bf16 = k_scale_bf16,
    .scale_f16 = k_scale_f16,
    .axpy_bf16_encode = k_axpy_bf16_encode,
    .sub = k_sub,
    .masked_accum = k_masked_accum,
    .dot_f64 = k_dot_f64,
    .sumsq_f64 = k_sumsq_f64,
    .sum_abs_f64 = k_sum_abs_f64,
    .hist_mag = smelt_ref_hist_mag, /* shared: see kernels_ops.h */
    .philox_uniform = k_philox_uniform,
};
