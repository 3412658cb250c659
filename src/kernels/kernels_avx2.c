/* The AVX2 level (with F16C for the half conversions). Built with -mavx2 -mfma -mf16c; FMA is
 * allowed by the flags but never used: -ffp-contract=off keeps every multiply and add separate,
 * as in the reference. */
#include <immintrin.h>
#include <stdint.h>

#define KLEVEL avx2
#define KLEVEL_NAME "avx2"
#define VL 8
typedef __m256 VF;
typedef __m256i VI;
typedef __m128i VH;
typedef __m256 VM; /* all-ones lanes, as the compares return them */
typedef __m256d VD;
#define DL 4

#define VF_LOADU(p) _mm256_loadu_ps(p)
#define VF_STOREU(p, v) _mm256_storeu_ps((p), (v))
#define VF_SET1(x) _mm256_set1_ps(x)
#define VF_ADD(a, b) _mm256_add_ps((a), (b))
#define VF_SUB(a, b) _mm256_sub_ps((a), (b))
#define VF_MUL(a, b) _mm256_mul_ps((a), (b))
#define VI_SET1(x) _mm256_set1_epi32((int)(uint32_t)(x))
#define VI_IOTA _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
#define VI_ADD(a, b) _mm256_add_epi32((a), (b))
#define VI_AND(a, b) _mm256_and_si256((a), (b))
#define VI_MIN_U(a, b) _mm256_min_epu32((a), (b))
#define VI_XOR(a, b) _mm256_xor_si256((a), (b))
#define VI_SRLI(a, k) _mm256_srli_epi32((a), (k))
#define VI_SLLI(a, k) _mm256_slli_epi32((a), (k))
#define VI_TO_VF(a) _mm256_cvtepi32_ps(a)
#define VF_AS_VI(a) _mm256_castps_si256(a)
#define VI_AS_VF(a) _mm256_castsi256_ps(a)
#define VH_LOADU(p) _mm_loadu_si128((const __m128i *)(const void *)(p))
#define VH_STOREU(p, v) _mm_storeu_si128((__m128i *)(void *)(p), (v))
#define VI_FROM_VH(h) _mm256_cvtepu16_epi32(h)
/* Unsigned saturation never triggers: every lane already fits 16 bits. */
#define VH_FROM_VI(a) _mm_packus_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256((a), 1))
/* One in-lane pack of two vectors, then one cross-lane permute back into element order. */
#define VH2_STOREU(p, a, b)                                                                  \
    _mm256_storeu_si256((__m256i *)(void *)(p),                                               \
                        _mm256_permute4x64_epi64(_mm256_packus_epi32((a), (b)), 0xD8))
#define VF_FROM_F16(h) _mm256_cvtph_ps(h)
#define F16_FROM_VF(v) _mm256_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VM_LT(a, b) _mm256_cmp_ps((a), (b), _CMP_LT_OQ)
#define VM_GT(a, b) _mm256_cmp_ps((a), (b), _CMP_GT_OQ)
#define VM_UNORD(a) _mm256_cmp_ps((a), (a), _CMP_UNORD_Q)
#define VM_AND(a, b) _mm256_and_ps((a), (b))
#define VM_OR(a, b) _mm256_or_ps((a), (b))
#define VM_ANDNOT(a, b) _mm256_andnot_ps((a), (b))
#define VM_EQ_I(a, b) _mm256_castsi256_ps(_mm256_cmpeq_epi32((a), (b)))
#define VM_BITS(m) ((unsigned)_mm256_movemask_ps(m))
#define VF_SELECT(m, a, b) _mm256_blendv_ps((b), (a), (m))
#define VI_SELECT(m, a, b) \
    _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(b), _mm256_castsi256_ps(a), (m)))
#define VD_ZERO _mm256_setzero_pd()
#define VD_LOAD_F32(p) _mm256_cvtps_pd(_mm_loadu_ps(p))
#define VD_ADD(a, b) _mm256_add_pd((a), (b))
#define VD_MUL(a, b) _mm256_mul_pd((a), (b))
#define VD_ABS(a) _mm256_andnot_pd(_mm256_set1_pd(-0.0), (a))
#define VD_STOREU(p, v) _mm256_storeu_pd((p), (v))

/* vpmuludq multiplies the even 32-bit lanes; the odd lanes go through a 64-bit shift. */
static inline void k_mulhilo(VI a, VI m, VI *hi, VI *lo)
{
    __m256i even = _mm256_mul_epu32(a, m);
    __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

static inline void k_store4(float *p, VF a, VF b, VF c, VF d)
{
    __m256d ab_lo = _mm256_castps_pd(_mm256_unpacklo_ps(a, b)); /* a0 b0 a1 b1 | a4 b4 a5 b5 */
    __m256d ab_hi = _mm256_castps_pd(_mm256_unpackhi_ps(a, b)); /* a2 b2 a3 b3 | a6 b6 a7 b7 */
    __m256d cd_lo = _mm256_castps_pd(_mm256_unpacklo_ps(c, d));
    __m256d cd_hi = _mm256_castps_pd(_mm256_unpackhi_ps(c, d));
    __m256 r0 = _mm256_castpd_ps(_mm256_unpacklo_pd(ab_lo, cd_lo)); /* element 0 | 4 */
    __m256 r1 = _mm256_castpd_ps(_mm256_unpackhi_pd(ab_lo, cd_lo)); /* 1 | 5 */
    __m256 r2 = _mm256_castpd_ps(_mm256_unpacklo_pd(ab_hi, cd_hi)); /* 2 | 6 */
    __m256 r3 = _mm256_castpd_ps(_mm256_unpackhi_pd(ab_hi, cd_hi)); /* 3 | 7 */
    _mm256_storeu_ps(p, _mm256_permute2f128_ps(r0, r1, 0x20));
    _mm256_storeu_ps(p + 8, _mm256_permute2f128_ps(r2, r3, 0x20));
    _mm256_storeu_ps(p + 16, _mm256_permute2f128_ps(r0, r1, 0x31));
    _mm256_storeu_ps(p + 24, _mm256_permute2f128_ps(r2, r3, 0x31));
}

/* For the dequantization kernels (kernels_simd.h). */
#define VI_OR(a, b) _mm256_or_si256((a), (b))
#define VI_LOAD_U8(p) _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p)))
#define VI_LOAD_I8(p) _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p)))
#define VI_SRLV(a, c) _mm256_srlv_epi32((a), (c))
#define VI_TO_VF_S(a) _mm256_cvtepi32_ps(a)

#include "kernels/kernels_ref.h" /* smelt_iq4nl_values */

static inline float k_f16_at(const uint8_t *p)
{
    return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8));
}

/* Two 8-entry permutes, blended on index bit 3 (moved up to the sign bit blendv reads). */
static inline __m256i k_lut_iq4(__m256i i)
{
    const __m128i t = _mm_loadu_si128((const __m128i *)(const void *)smelt_iq4nl_values);
    __m256i lo = _mm256_permutevar8x32_epi32(_mm256_cvtepi8_epi32(t), i);
    __m256i hi = _mm256_permutevar8x32_epi32(_mm256_cvtepi8_epi32(_mm_srli_si128(t, 8)), i);
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi),
                                                _mm256_castsi256_ps(_mm256_slli_epi32(i, 28))));
}

/* For the delta byte planes: unpack works inside 128-bit lanes, so one cross-lane permute puts
 * the halves back in element order; the unzip groups even and odd bytes per lane first. */
#define VB 32
typedef __m256i VB_T;
#define VB_LOADU(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define VB_STOREU(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), (v))
#define VB_XOR(a, b) _mm256_xor_si256((a), (b))
#define VB_ZIP(x, y, a, b)                                                                   \
    do {                                                                                     \
        __m256i zl_ = _mm256_unpacklo_epi8((x), (y)), zh_ = _mm256_unpackhi_epi8((x), (y));  \
        (a) = _mm256_permute2x128_si256(zl_, zh_, 0x20);                                     \
        (b) = _mm256_permute2x128_si256(zl_, zh_, 0x31);                                     \
    } while (0)
#define VB_UNZIP(a, b, e, o)                                                                 \
    do {                                                                                     \
        const __m256i eo_ = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11,   \
                                             13, 15, 0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7,  \
                                             9, 11, 13, 15);                                 \
        __m256i ua_ = _mm256_permute4x64_epi64(_mm256_shuffle_epi8((a), eo_), 0xD8);        \
        __m256i ub_ = _mm256_permute4x64_epi64(_mm256_shuffle_epi8((b), eo_), 0xD8);        \
        (e) = _mm256_permute2x128_si256(ua_, ub_, 0x20);                                     \
        (o) = _mm256_permute2x128_si256(ua_, ub_, 0x31);                                     \
    } while (0)

#include "kernels/kernels_simd.h"
