/* The AVX-512 level (F, BW, VL, plus F16C-style conversions of AVX512F). Built with
 * -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma -mf16c; no FMA is used (-ffp-contract=off).
 * Masks are k-registers, so the blends cost nothing extra. */
#include <immintrin.h>
#include <stdint.h>

#define KLEVEL avx512
#define KLEVEL_NAME "avx512"
#define VL 16
typedef __m512 VF;
typedef __m512i VI;
typedef __m256i VH;
typedef __mmask16 VM;
typedef __m512d VD;
#define DL 8

#define VF_LOADU(p) _mm512_loadu_ps(p)
#define VF_STOREU(p, v) _mm512_storeu_ps((p), (v))
#define VF_SET1(x) _mm512_set1_ps(x)
#define VF_ADD(a, b) _mm512_add_ps((a), (b))
#define VF_SUB(a, b) _mm512_sub_ps((a), (b))
#define VF_MUL(a, b) _mm512_mul_ps((a), (b))
#define VI_SET1(x) _mm512_set1_epi32((int)(uint32_t)(x))
#define VI_IOTA _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define VI_ADD(a, b) _mm512_add_epi32((a), (b))
#define VI_AND(a, b) _mm512_and_si512((a), (b))
#define VI_MIN_U(a, b) _mm512_min_epu32((a), (b))
#define VI_XOR(a, b) _mm512_xor_si512((a), (b))
#define VI_SRLI(a, k) _mm512_srli_epi32((a), (k))
#define VI_SLLI(a, k) _mm512_slli_epi32((a), (k))
#define VI_TO_VF(a) _mm512_cvtepi32_ps(a)
#define VF_AS_VI(a) _mm512_castps_si512(a)
#define VI_AS_VF(a) _mm512_castsi512_ps(a)
#define VH_LOADU(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define VH_STOREU(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), (v))
#define VI_FROM_VH(h) _mm512_cvtepu16_epi32(h)
#define VH_FROM_VI(a) _mm512_cvtepi32_epi16(a)
#define VF_FROM_F16(h) _mm512_cvtph_ps(h)
#define F16_FROM_VF(v) _mm512_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VM_LT(a, b) _mm512_cmp_ps_mask((a), (b), _CMP_LT_OQ)
#define VM_GT(a, b) _mm512_cmp_ps_mask((a), (b), _CMP_GT_OQ)
#define VM_UNORD(a) _mm512_cmp_ps_mask((a), (a), _CMP_UNORD_Q)
#define VM_AND(a, b) ((VM)((a) & (b)))
#define VM_OR(a, b) ((VM)((a) | (b)))
#define VM_ANDNOT(a, b) ((VM)(~(a) & (b)))
#define VM_EQ_I(a, b) _mm512_cmpeq_epi32_mask((a), (b))
#define VM_BITS(m) ((unsigned)(m))
#define VF_SELECT(m, a, b) _mm512_mask_blend_ps((m), (b), (a))
#define VI_SELECT(m, a, b) _mm512_mask_blend_epi32((m), (b), (a))
#define VD_ZERO _mm512_setzero_pd()
#define VD_LOAD_F32(p) _mm512_cvtps_pd(_mm256_loadu_ps(p))
#define VD_ADD(a, b) _mm512_add_pd((a), (b))
#define VD_MUL(a, b) _mm512_mul_pd((a), (b))
#define VD_ABS(a) _mm512_abs_pd(a)
#define VD_STOREU(p, v) _mm512_storeu_pd((p), (v))

static inline void k_mulhilo(VI a, VI m, VI *hi, VI *lo)
{
    __m512i even = _mm512_mul_epu32(a, m);
    __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
    *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
    *lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

/* Per 128-bit lane L, r_k holds element 4L + k's four words; the two shuffle stages gather
 * lane L of r0..r3 into output vector L. */
static inline void k_store4(float *p, VF a, VF b, VF c, VF d)
{
    __m512d ab_lo = _mm512_castps_pd(_mm512_unpacklo_ps(a, b));
    __m512d ab_hi = _mm512_castps_pd(_mm512_unpackhi_ps(a, b));
    __m512d cd_lo = _mm512_castps_pd(_mm512_unpacklo_ps(c, d));
    __m512d cd_hi = _mm512_castps_pd(_mm512_unpackhi_ps(c, d));
    __m512 r0 = _mm512_castpd_ps(_mm512_unpacklo_pd(ab_lo, cd_lo));
    __m512 r1 = _mm512_castpd_ps(_mm512_unpackhi_pd(ab_lo, cd_lo));
    __m512 r2 = _mm512_castpd_ps(_mm512_unpacklo_pd(ab_hi, cd_hi));
    __m512 r3 = _mm512_castpd_ps(_mm512_unpackhi_pd(ab_hi, cd_hi));
    __m512 r01_lo = _mm512_shuffle_f32x4(r0, r1, 0x44); /* r0.0 r0.1 r1.0 r1.1 */
    __m512 r23_lo = _mm512_shuffle_f32x4(r2, r3, 0x44);
    __m512 r01_hi = _mm512_shuffle_f32x4(r0, r1, 0xEE); /* r0.2 r0.3 r1.2 r1.3 */
    __m512 r23_hi = _mm512_shuffle_f32x4(r2, r3, 0xEE);
    _mm512_storeu_ps(p, _mm512_shuffle_f32x4(r01_lo, r23_lo, 0x88));      /* r0.0 r1.0 r2.0 r3.0 */
    _mm512_storeu_ps(p + 16, _mm512_shuffle_f32x4(r01_lo, r23_lo, 0xDD)); /* lane 1 */
    _mm512_storeu_ps(p + 32, _mm512_shuffle_f32x4(r01_hi, r23_hi, 0x88)); /* lane 2 */
    _mm512_storeu_ps(p + 48, _mm512_shuffle_f32x4(r01_hi, r23_hi, 0xDD)); /* lane 3 */
}

/* For the dequantization kernels (kernels_simd.h). */
#define VI_OR(a, b) _mm512_or_si512((a), (b))
#define VI_LOAD_U8(p) _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define VI_LOAD_I8(p) _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define VI_SRLV(a, c) _mm512_srlv_epi32((a), (c))
#define VI_TO_VF_S(a) _mm512_cvtepi32_ps(a)

#include "kernels/kernels_ref.h" /* smelt_iq4nl_values */

static inline float k_f16_at(const uint8_t *p)
{
    return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8));
}

/* One 16-entry permute. */
static inline __m512i k_lut_iq4(__m512i i)
{
    const __m128i t = _mm_loadu_si128((const __m128i *)(const void *)smelt_iq4nl_values);
    return _mm512_permutexvar_epi32(i, _mm512_cvtepi8_epi32(t));
}

/* For the delta byte planes (AVX512BW): unpack and the byte shuffle work inside 128-bit lanes;
 * one two-source qword permute puts the lanes back in element order. */
#define VB 64
typedef __m512i VB_T;
#define VB_LOADU(p) _mm512_loadu_si512((const void *)(p))
#define VB_STOREU(p, v) _mm512_storeu_si512((void *)(p), (v))
#define VB_XOR(a, b) _mm512_xor_si512((a), (b))
#define VB_ZIP(x, y, a, b)                                                                   \
    do {                                                                                     \
        __m512i zl_ = _mm512_unpacklo_epi8((x), (y)), zh_ = _mm512_unpackhi_epi8((x), (y));  \
        (a) = _mm512_permutex2var_epi64(zl_, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11),    \
                                        zh_);                                                \
        (b) = _mm512_permutex2var_epi64(zl_, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15),  \
                                        zh_);                                                \
    } while (0)
#define VB_UNZIP(a, b, e, o)                                                                 \
    do {                                                                                     \
        const __m512i eo_ = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14,  \
                                                                 1, 3, 5, 7, 9, 11, 13, 15)); \
        __m512i ua_ = _mm512_shuffle_epi8((a), eo_), ub_ = _mm512_shuffle_epi8((b), eo_);    \
        (e) = _mm512_permutex2var_epi64(ua_, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14),   \
                                        ub_);                                                \
        (o) = _mm512_permutex2var_epi64(ua_, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15),   \
                                        ub_);                                                \
    } while (0)

#include "kernels/kernels_simd.h"
