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
 *   VI_MIN_U(a, b) (unsigned u32 minimum per lane)
 *   VM_EQ_I(a, b) (u32 lanes equal) VM_BITS(m) (lane i's truth as bit i of an unsigned)
 *   VF_SELECT(m, a, b) VI_SELECT(m, a, b)   m ? a : b per lane
 *   DL, VD, VD_ZERO VD_LOAD_F32 (DL floats widened) VD_ADD VD_MUL VD_ABS VD_STOREU
 *   k_mulhilo(VI a, VI m, VI *hi, VI *lo)     per-lane 32x32 -> 64-bit product halves
 *   k_store4(float *p, VF a, VF b, VF c, VF d) p[4i + 0..3] = a[i], b[i], c[i], d[i]
 * and may define VH2_STOREU(p, a, b): store the u32 lanes (<= 0xFFFF) of a then b as 2 * VL u16
 * (one wide pack is cheaper than two narrow ones on AVX2).
 * For the dequantization kernels a level also defines:
 *   VI_OR VI_LOAD_U8(p) VI_LOAD_I8(p)  VL bytes at p (exactly VL read), zero/sign-extended
 *   VI_SRLV(a, c)              per-lane logical right shift by c (< 32)
 *   VI_TO_VF_S(a)              signed i32 (|a| < 2^24) to f32, exact
 *   k_f16_at(const uint8_t *p) the little-endian fp16 at p (any alignment) as f32, converted by
 *                              the same hardware path as VF_FROM_F16 (decode_f16)
 *   k_lut_iq4(VI i)            smelt_iq4nl_values[i] per lane (0 <= i < 16), as i32
 * For the delta byte planes a level also defines a vector of VB bytes:
 *   VB_T VB_LOADU(p) VB_STOREU(p, v) VB_XOR(a, b)
 *   VB_ZIP(x, y, a, b)    a, b = the bytes x0 y0 x1 y1 ... of x and y interleaved, in order
 *   VB_UNZIP(a, b, e, o)  the inverse: e = the even bytes of a then b, o = the odd ones
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

/* One row: four vectors of accumulators stay in registers through the whole rank, so each
 * product is one load, one multiply and one add. */
static void k_lora_row(float *delta, const float *coef, size_t coef_stride, const float *rows,
                       size_t row_stride, size_t rank, size_t n)
{
    size_t j = 0;
    for (; j + 4 * VL <= n; j += 4 * VL) {
        VF a0 = VF_SET1(0.0f), a1 = a0, a2 = a0, a3 = a0;
        const float *p = rows + j;
        for (size_t k = 0; k < rank; k++, p += row_stride) {
            VF c = VF_SET1(coef[k * coef_stride]);
            a0 = VF_ADD(a0, VF_MUL(c, VF_LOADU(p)));
            a1 = VF_ADD(a1, VF_MUL(c, VF_LOADU(p + VL)));
            a2 = VF_ADD(a2, VF_MUL(c, VF_LOADU(p + 2 * VL)));
            a3 = VF_ADD(a3, VF_MUL(c, VF_LOADU(p + 3 * VL)));
        }
        VF_STOREU(delta + j, a0);
        VF_STOREU(delta + j + VL, a1);
        VF_STOREU(delta + j + 2 * VL, a2);
        VF_STOREU(delta + j + 3 * VL, a3);
    }
    for (; j + VL <= n; j += VL) {
        VF a0 = VF_SET1(0.0f);
        const float *p = rows + j;
        for (size_t k = 0; k < rank; k++, p += row_stride)
            a0 = VF_ADD(a0, VF_MUL(VF_SET1(coef[k * coef_stride]), VF_LOADU(p)));
        VF_STOREU(delta + j, a0);
    }
    smelt_ref_lora_delta(delta + j, 0, coef, coef_stride, 1, rows + j, row_stride, rank, n - j);
}

/* Four rows at once: two vectors of `rows` loaded per rank step feed eight accumulators, so
 * the loads (the bound of the one-row loop: rank x n floats from L2) drop fourfold. The
 * arithmetic per element is the one-row loop's. */
static void k_lora_rows4(float *delta, size_t ds, const float *coef, size_t coef_stride,
                         const float *rows, size_t row_stride, size_t rank, size_t n)
{
    size_t j = 0;
    for (; j + 2 * VL <= n; j += 2 * VL) {
        VF a0 = VF_SET1(0.0f), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
        const float *p = rows + j;
        const float *c = coef;
        for (size_t k = 0; k < rank; k++, p += row_stride, c += coef_stride) {
            VF x = VF_LOADU(p), y = VF_LOADU(p + VL);
            VF c0 = VF_SET1(c[0]), c1 = VF_SET1(c[1]), c2 = VF_SET1(c[2]), c3 = VF_SET1(c[3]);
            a0 = VF_ADD(a0, VF_MUL(c0, x));
            b0 = VF_ADD(b0, VF_MUL(c0, y));
            a1 = VF_ADD(a1, VF_MUL(c1, x));
            b1 = VF_ADD(b1, VF_MUL(c1, y));
            a2 = VF_ADD(a2, VF_MUL(c2, x));
            b2 = VF_ADD(b2, VF_MUL(c2, y));
            a3 = VF_ADD(a3, VF_MUL(c3, x));
            b3 = VF_ADD(b3, VF_MUL(c3, y));
        }
        VF_STOREU(delta + j, a0);
        VF_STOREU(delta + j + VL, b0);
        VF_STOREU(delta + ds + j, a1);
        VF_STOREU(delta + ds + j + VL, b1);
        VF_STOREU(delta + 2 * ds + j, a2);
        VF_STOREU(delta + 2 * ds + j + VL, b2);
        VF_STOREU(delta + 3 * ds + j, a3);
        VF_STOREU(delta + 3 * ds + j + VL, b3);
    }
    for (size_t i = 0; i < 4 && j < n; i++)
        k_lora_row(delta + i * ds + j, coef + i, coef_stride, rows + j, row_stride, rank, n - j);
}

static void k_lora_delta(float *delta, size_t delta_stride, const float *coef, size_t coef_stride,
                         size_t nrows, const float *rows, size_t row_stride, size_t rank, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= nrows; i += 4)
        k_lora_rows4(delta + i * delta_stride, delta_stride, coef + i, coef_stride, rows,
                     row_stride, rank, n);
    for (; i < nrows; i++)
        k_lora_row(delta + i * delta_stride, coef + i, coef_stride, rows, row_stride, rank, n);
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
/* The full histogram (no prefix) is the reference's loop: a scattered increment per element,
 * which these sets cannot do faster (measured: computing the bins a vector at a time, or
 * splitting counts over sub-histograms, was no faster or slower). A prefix pass is different:
 * few elements match, and the reference pays a mispredicted branch on each that does; here a
 * vector compare finds them and only those are counted. */
static void k_hist_mag(uint32_t *hist, const float *x, size_t n, uint32_t prefix,
                       unsigned prefix_shift, unsigned shift, unsigned bits)
{
    size_t i = 0;
    if (prefix_shift < 32) {
        uint32_t mask = (1u << bits) - 1;
        VI magnitude = VI_SET1(0x7FFFFFFFu), want = VI_SET1(prefix), by = VI_SET1(prefix_shift);
        for (; i + VL <= n; i += VL) {
            VI m = VI_AND(VF_AS_VI(VF_LOADU(x + i)), magnitude);
            unsigned hit = VM_BITS(VM_EQ_I(VI_SRLV(m, by), want));
            if (!hit)
                continue;
            union { float f[VL]; uint32_t u[VL]; } lanes; /* C11 allows reading the other member */
            VF_STOREU(lanes.f, VI_AS_VF(m));
            for (; hit; hit &= hit - 1)
                hist[(lanes.u[__builtin_ctz(hit)] >> shift) & mask]++;
        }
    }
    smelt_ref_hist_mag(hist, x + i, n - i, prefix, prefix_shift, shift, bits);
}

/* Whole vectors of compares stored as lane masks; the rare tied lanes are listed from their
 * mask bits. */
static size_t k_mask_mag_range(uint32_t *keep, uint32_t *at, const float *x, size_t n,
                               uint32_t lo, uint32_t hi, uint32_t lo_eq, uint32_t hi_eq)
{
    size_t i = 0, found = 0;
    VI magnitude = VI_SET1(0x7FFFFFFFu), vlo = VI_SET1(lo), vhi = VI_SET1(hi);
    VI veq_lo = VI_SET1(lo_eq), veq_hi = VI_SET1(hi_eq), ones = VI_SET1(UINT32_MAX),
       zero = VI_SET1(0);
    for (; i + VL <= n; i += VL) {
        VI m = VI_AND(VF_AS_VI(VF_LOADU(x + i)), magnitude);
        /* lo <= m is min(m, lo) == lo; m <= hi is min(m, hi) == m (unsigned) */
        VM in = VM_AND(VM_EQ_I(VI_MIN_U(m, vlo), vlo), VM_EQ_I(VI_MIN_U(m, vhi), m));
        VF_STOREU((float *)(void *)(keep + i), VI_AS_VF(VI_SELECT(in, ones, zero)));
        unsigned tied = VM_BITS(VM_OR(VM_EQ_I(m, veq_lo), VM_EQ_I(m, veq_hi)));
        for (; tied; tied &= tied - 1)
            at[found++] = (uint32_t)(i + (unsigned)__builtin_ctz(tied));
    }
    size_t tail = smelt_ref_mask_mag_range(keep + i, at + found, x + i, n - i, lo, hi, lo_eq, hi_eq);
    for (size_t e = found; e < found + tail; e++)
        at[e] += (uint32_t)i;
    return found + tail;
}

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

/* ---- dequantization (kernels_ops.h) ----
 * Each kernel turns VL quants at a time into i32 lanes and stores VF_MUL(q, scale) or
 * VF_SUB(VF_MUL(q, scale), min): the reference's y = (float)q * scale (- min) in the same order
 * with the same two roundings. The per-sub-block scales and mins are computed in scalar code by
 * the reference's expressions (d * (float)sc, with the scale bytes unpacked by the shared
 * helpers of kernels_ref.h), the fp16 fields by the hardware conversion that decode_f16 uses.
 * VL divides 16, so a vector never straddles a 16-element sub-block. */

static inline void k_dq_put(float *dst, VI q, VF scale)
{
    VF_STOREU(dst, VF_MUL(VI_TO_VF_S(q), scale));
}

static inline void k_dq_put_min(float *dst, VI q, VF scale, VF min)
{
    VF_STOREU(dst, VF_SUB(VF_MUL(VI_TO_VF_S(q), scale), min));
}

static inline uint32_t k_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Bits j0 .. j0 + VL - 1 of qh, each as 0 or 16 in its lane (the fifth bit of Q5_0/Q5_1). */
static inline VI k_bit4(uint32_t qh, int j0)
{
    return VI_SLLI(VI_AND(VI_SRLV(VI_SET1(qh >> j0), VI_IOTA), VI_SET1(1)), 4);
}

/* One 32-element block of the Q4_0 family: element j < 16 is the low nibble of qs[j], element
 * j + 16 its high nibble; with qh, bit j (j + 16) of qh adds 16; then + bias (or the IQ4 code
 * book), times d, minus m when has_min. Called with constants, so the branches fold away. */
static inline void k_dq_nib32(float *dst, const uint8_t *qs, uint32_t qh, int with_qh,
                              int iq4, int bias, VF d, VF m, int has_min)
{
    const VI lo4 = VI_SET1(0xF), vb = VI_SET1(bias);
    for (int j = 0; j < 16; j += VL) {
        VI v = VI_LOAD_U8(qs + j), lo = VI_AND(v, lo4), hi = VI_SRLI(v, 4);
        if (with_qh) {
            lo = VI_OR(lo, k_bit4(qh, j));
            hi = VI_OR(hi, k_bit4(qh, j + 16));
        }
        if (iq4) {
            lo = k_lut_iq4(lo);
            hi = k_lut_iq4(hi);
        } else {
            lo = VI_ADD(lo, vb);
            hi = VI_ADD(hi, vb);
        }
        if (has_min) {
            k_dq_put_min(dst + j, lo, d, m);
            k_dq_put_min(dst + 16 + j, hi, d, m);
        } else {
            k_dq_put(dst + j, lo, d);
            k_dq_put(dst + 16 + j, hi, d);
        }
    }
}

static void k_dq_q4_0(float *dst, const void *src, size_t nb)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < nb; i++, b += 18, dst += 32)
        k_dq_nib32(dst, b + 2, 0, 0, 0, -8, VF_SET1(k_f16_at(b)), VF_SET1(0.0f), 0);
}

static void k_dq_q4_1(float *dst, const void *src, size_t nb)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < nb; i++, b += 20, dst += 32) /* min = -m, as the reference stores it */
        k_dq_nib32(dst, b + 4, 0, 0, 0, 0, VF_SET1(k_f16_at(b)), VF_SET1(-k_f16_at(b + 2)), 1);
}

static void k_dq_q5_0(float *dst, const void *src, size_t nb)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < nb; i++, b += 22, dst += 32)
        k_dq_nib32(dst, b + 6, k_le32(b + 2), 1, 0, -16, VF_SET1(k_f16_at(b)), VF_SET1(0.0f), 0);
}

static void k_dq_q5_1(float *dst, const void *src, size_t nb)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < nb; i++, b += 24, dst += 32)
        k_dq_nib32(dst, b + 8, k_le32(b + 4), 1, 0, 0, VF_SET1(k_f16_at(b)),
                   VF_SET1(-k_f16_at(b + 2)), 1);
}

static void k_dq_iq4_nl(float *dst, const void *src, size_t nb)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < nb; i++, b += 18, dst += 32)
        k_dq_nib32(dst, b + 2, 0, 0, 1, 0, VF_SET1(k_f16_at(b)), VF_SET1(0.0f), 0);
}

/* block_iq4_xs: d, u16 scales_h, u8 scales_l[4], qs[128]; 8 sub-blocks of 32 as IQ4_NL. */
static void k_dq_iq4_xs(float *dst, const void *src, size_t nb)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < nb; i++, b += 136, dst += 256) {
        float d = k_f16_at(b);
        unsigned sh = (unsigned)(b[2] | b[3] << 8);
        for (int ib = 0; ib < 8; ib++)
            k_dq_nib32(dst + 32 * ib, b + 8 + 16 * ib, 0, 0, 1, 0,
                       VF_SET1(d * (float)smelt_iq4xs_scale(ib, sh, b + 4)), VF_SET1(0.0f), 0);
    }
}

static void k_dq_q8_0(float *dst, const void *src, size_t nb)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < nb; i++, b += 34, dst += 32) {
        const VF d = VF_SET1(k_f16_at(b));
        for (int j = 0; j < 32; j += VL)
            k_dq_put(dst + j, VI_LOAD_I8(b + 2 + j), d);
    }
}

/* block_q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin; element
 * 128n + 32k + l is bits 2k, 2k + 1 of qs[32n + l]. */
static void k_dq_q2_K(float *dst, const void *src, size_t nb)
{
    const uint8_t *b = src;
    const VI three = VI_SET1(3);
    for (size_t i = 0; i < nb; i++, b += 84, dst += 256) {
        float d = k_f16_at(b + 80), dmin = k_f16_at(b + 82), sc[16], mn[16];
        for (int s = 0; s < 16; s++) {
            sc[s] = d * (float)(b[s] & 0xF);
            mn[s] = dmin * (float)(b[s] >> 4);
        }
        for (int n = 0; n < 2; n++)
            for (int l = 0; l < 32; l += VL) {
                VI v = VI_LOAD_U8(b + 16 + 32 * n + l);
                for (int k = 0; k < 4; k++, v = VI_SRLI(v, 2)) {
                    int e = 128 * n + 32 * k + l;
                    k_dq_put_min(dst + e, VI_AND(v, three), VF_SET1(sc[e / 16]), VF_SET1(mn[e / 16]));
                }
            }
    }
}

/* block_q3_K: hmask[32], qs[64], scales[12], d; element 128n + 32j + l is bits 2j, 2j + 1 of
 * qs[32n + l], minus 4 where bit 4n + j of hmask[l] is clear. */
static void k_dq_q3_K(float *dst, const void *src, size_t nb)
{
    const uint8_t *b = src;
    const VI three = VI_SET1(3), one = VI_SET1(1), m4 = VI_SET1(-4);
    for (size_t i = 0; i < nb; i++, b += 110, dst += 256) {
        float d = k_f16_at(b + 108), sc[16];
        for (int s = 0; s < 16; s++)
            sc[s] = d * (float)smelt_q3k_scale(s, b + 96);
        for (int l = 0; l < 32; l += VL) {
            VI hm = VI_LOAD_U8(b + l);
            for (int n = 0; n < 2; n++) {
                VI v = VI_LOAD_U8(b + 32 + 32 * n + l);
                for (int j = 0; j < 4; j++, v = VI_SRLI(v, 2), hm = VI_SRLI(hm, 1)) {
                    int e = 128 * n + 32 * j + l;
                    VI q = VI_ADD(VI_AND(v, three), VI_ADD(VI_SLLI(VI_AND(hm, one), 2), m4));
                    k_dq_put(dst + e, q, VF_SET1(sc[e / 16]));
                }
            }
        }
    }
}

/* Q4_K's and Q5_K's eight scales and mins: d * sc, dmin * m. */
static inline void k_k4_scales(const uint8_t *b, float *sc, float *mn)
{
    float d = k_f16_at(b), dmin = k_f16_at(b + 2);
    for (int j = 0; j < 8; j++) {
        int s, m;
        smelt_k4_scale_min(j, b + 4, &s, &m);
        sc[j] = d * (float)s;
        mn[j] = dmin * (float)m;
    }
}

/* block_q4_K: d, dmin, scales[12], qs[128]; chunk c's 64 elements are the low nibbles of
 * qs[32c .. 32c + 32), then their high nibbles. */
static void k_dq_q4_K(float *dst, const void *src, size_t nb)
{
    const uint8_t *b = src;
    const VI lo4 = VI_SET1(0xF);
    for (size_t i = 0; i < nb; i++, b += 144, dst += 256) {
        float sc[8], mn[8];
        k_k4_scales(b, sc, mn);
        for (int c = 0; c < 4; c++) {
            VF s0 = VF_SET1(sc[2 * c]), m0 = VF_SET1(mn[2 * c]);
            VF s1 = VF_SET1(sc[2 * c + 1]), m1 = VF_SET1(mn[2 * c + 1]);
            for (int l = 0; l < 32; l += VL) {
                VI v = VI_LOAD_U8(b + 16 + 32 * c + l);
                k_dq_put_min(dst + 64 * c + l, VI_AND(v, lo4), s0, m0);
                k_dq_put_min(dst + 64 * c + 32 + l, VI_SRLI(v, 4), s1, m1);
            }
        }
    }
}

/* block_q5_K: Q4_K plus qh[32] before qs: bit 2c (2c + 1) of qh[l] adds 16 to the low (high)
 * nibble element l of chunk c. */
static void k_dq_q5_K(float *dst, const void *src, size_t nb)
{
    const uint8_t *b = src;
    const VI lo4 = VI_SET1(0xF), one = VI_SET1(1);
    for (size_t i = 0; i < nb; i++, b += 176, dst += 256) {
        float sc[8], mn[8];
        k_k4_scales(b, sc, mn);
        for (int l = 0; l < 32; l += VL) {
            VI h = VI_LOAD_U8(b + 16 + l);
            for (int c = 0; c < 4; c++, h = VI_SRLI(h, 2)) {
                VI v = VI_LOAD_U8(b + 48 + 32 * c + l);
                VI lo = VI_OR(VI_AND(v, lo4), VI_SLLI(VI_AND(h, one), 4));
                VI hi = VI_OR(VI_SRLI(v, 4), VI_SLLI(VI_AND(VI_SRLI(h, 1), one), 4));
                k_dq_put_min(dst + 64 * c + l, lo, VF_SET1(sc[2 * c]), VF_SET1(mn[2 * c]));
                k_dq_put_min(dst + 64 * c + 32 + l, hi, VF_SET1(sc[2 * c + 1]),
                             VF_SET1(mn[2 * c + 1]));
            }
        }
    }
}

/* block_q6_K: ql[128], qh[64], int8 scales[16], d; 6-bit quants biased by 32: per half n,
 * elements l, l + 32, l + 64, l + 96 take the low nibble of ql[l], of ql[l + 32], the high
 * nibble of ql[l], of ql[l + 32], with bits 0-1, 2-3, 4-5, 6-7 of qh[l] above them. */
static void k_dq_q6_K(float *dst, const void *src, size_t nb)
{
    const uint8_t *b = src;
    const VI lo4 = VI_SET1(0xF), three = VI_SET1(3), m32 = VI_SET1(-32);
    for (size_t i = 0; i < nb; i++, b += 210, dst += 256) {
        float d = k_f16_at(b + 208), sc[16];
        for (int s = 0; s < 16; s++)
            sc[s] = d * (float)(int8_t)b[192 + s];
        for (int n = 0; n < 2; n++) {
            const uint8_t *L = b + 64 * n, *H = b + 128 + 32 * n;
            float *y = dst + 128 * n;
            const float *s = sc + 8 * n;
            for (int l = 0; l < 32; l += VL) {
                VI a = VI_LOAD_U8(L + l), c = VI_LOAD_U8(L + 32 + l), h = VI_LOAD_U8(H + l);
                int is = l / 16;
                VI q0 = VI_OR(VI_AND(a, lo4), VI_SLLI(VI_AND(h, three), 4));
                VI q1 = VI_OR(VI_AND(c, lo4), VI_SLLI(VI_AND(VI_SRLI(h, 2), three), 4));
                VI q2 = VI_OR(VI_SRLI(a, 4), VI_SLLI(VI_AND(VI_SRLI(h, 4), three), 4));
                VI q3 = VI_OR(VI_SRLI(c, 4), VI_SLLI(VI_SRLI(h, 6), 4));
                k_dq_put(y + l, VI_ADD(q0, m32), VF_SET1(s[is]));
                k_dq_put(y + 32 + l, VI_ADD(q1, m32), VF_SET1(s[is + 2]));
                k_dq_put(y + 64 + l, VI_ADD(q2, m32), VF_SET1(s[is + 4]));
                k_dq_put(y + 96 + l, VI_ADD(q3, m32), VF_SET1(s[is + 6]));
            }
        }
    }
}

/* ---- delta byte planes (kernels_ops.h): zips of whole vectors -------------------------------- */

static inline VB_T k_vb_load_xor(const uint8_t *p, const uint8_t *base, size_t at)
{
    VB_T v = VB_LOADU(p);
    return base ? VB_XOR(v, VB_LOADU(base + at)) : v;
}

static void k_delta_join(uint8_t *out, const uint8_t *planes, size_t stride, size_t n,
                         unsigned unit, const uint8_t *base)
{
    size_t j = 0;
    if (unit == 1) {
        for (; j + VB <= n; j += VB)
            VB_STOREU(out + j, k_vb_load_xor(planes + j, base, j));
    } else if (unit == 2) { /* plane 0: the high bytes, plane 1: the low ones */
        for (; j + VB <= n; j += VB) {
            VB_T a, b;
            VB_ZIP(VB_LOADU(planes + stride + j), VB_LOADU(planes + j), a, b);
            if (base) {
                a = VB_XOR(a, VB_LOADU(base + 2 * j));
                b = VB_XOR(b, VB_LOADU(base + 2 * j + VB));
            }
            VB_STOREU(out + 2 * j, a);
            VB_STOREU(out + 2 * j + VB, b);
        }
    } else if (unit == 4) { /* bytes 0 and 2, 1 and 3 paired, then the pairs interleaved */
        for (; j + VB <= n; j += VB) {
            VB_T b3 = VB_LOADU(planes + j), b2 = VB_LOADU(planes + stride + j);
            VB_T b1 = VB_LOADU(planes + 2 * stride + j), b0 = VB_LOADU(planes + 3 * stride + j);
            VB_T e0, e1, o0, o1, v[4];
            VB_ZIP(b0, b2, e0, e1);
            VB_ZIP(b1, b3, o0, o1);
            VB_ZIP(e0, o0, v[0], v[1]);
            VB_ZIP(e1, o1, v[2], v[3]);
            for (int q = 0; q < 4; q++) {
                if (base)
                    v[q] = VB_XOR(v[q], VB_LOADU(base + 4 * j + (size_t)q * VB));
                VB_STOREU(out + 4 * j + (size_t)q * VB, v[q]);
            }
        }
    }
    smelt_ref_delta_join(out + j * unit, planes + j, stride, n - j, unit,
                         base ? base + j * unit : NULL);
}

static void k_delta_split(uint8_t *planes, size_t stride, const uint8_t *elems, size_t n,
                          unsigned unit, const uint8_t *base)
{
    size_t j = 0;
    if (unit == 1) {
        for (; j + VB <= n; j += VB)
            VB_STOREU(planes + j, k_vb_load_xor(elems + j, base, j));
    } else if (unit == 2) {
        for (; j + VB <= n; j += VB) {
            VB_T lo, hi;
            VB_UNZIP(k_vb_load_xor(elems + 2 * j, base, 2 * j),
                     k_vb_load_xor(elems + 2 * j + VB, base, 2 * j + VB), lo, hi);
            VB_STOREU(planes + j, hi);
            VB_STOREU(planes + stride + j, lo);
        }
    } else if (unit == 4) {
        for (; j + VB <= n; j += VB) {
            VB_T v[4], e0, e1, o0, o1, b0, b1, b2, b3;
            for (int q = 0; q < 4; q++)
                v[q] = k_vb_load_xor(elems + 4 * j + (size_t)q * VB, base,
                                     4 * j + (size_t)q * VB);
            VB_UNZIP(v[0], v[1], e0, o0);
            VB_UNZIP(v[2], v[3], e1, o1);
            VB_UNZIP(e0, e1, b0, b2);
            VB_UNZIP(o0, o1, b1, b3);
            VB_STOREU(planes + j, b3);
            VB_STOREU(planes + stride + j, b2);
            VB_STOREU(planes + 2 * stride + j, b1);
            VB_STOREU(planes + 3 * stride + j, b0);
        }
    }
    smelt_ref_delta_split(planes + j, stride, elems + j * unit, n - j, unit,
                          base ? base + j * unit : NULL);
}

const smelt_kernels K_CAT(smelt_kernels_, KLEVEL) = {
    .name = KLEVEL_NAME,
    .decode_bf16 = k_decode_bf16,
    .decode_f16 = k_decode_f16,
    .encode_bf16 = k_encode_bf16,
    .encode_f16 = k_encode_f16,
    .axpy = k_axpy,
    .scale = k_scale,
    .lora_delta = k_lora_delta,
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
    .hist_mag = k_hist_mag,
    .mask_mag_range = k_mask_mag_range,
    .philox_uniform = k_philox_uniform,
    .delta_join = k_delta_join,
    .delta_split = k_delta_split,
#define K_DQ_ENTRY(name, TYPE) [SMELT_GGML_##TYPE] = k_dq_##name,
    .dequant = {SMELT_DEQUANT_TYPES(K_DQ_ENTRY)},
#undef K_DQ_ENTRY
};
