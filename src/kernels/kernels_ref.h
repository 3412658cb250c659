/* Internal to kernels/: the scalar reference entries (the SIMD levels call them for the tails
 * that do not fill a vector), the pieces of the fixed-order reductions and of Philox, and the
 * per-level tables. Not for use outside src/kernels/. */
#ifndef SMELT_KERNELS_REF_H
#define SMELT_KERNELS_REF_H

#include "kernels/kernels.h"

extern const smelt_kernels smelt_kernels_scalar;
extern const smelt_kernels smelt_kernels_avx2;
extern const smelt_kernels smelt_kernels_avx512;
extern const smelt_kernels smelt_kernels_neon;

void smelt_ref_decode_bf16(float *dst, const uint16_t *src, size_t n);
void smelt_ref_decode_f16(float *dst, const uint16_t *src, size_t n);
void smelt_ref_encode_bf16(uint16_t *dst, const float *src, size_t n);
void smelt_ref_encode_f16(uint16_t *dst, const float *src, size_t n);
void smelt_ref_encode_f32(float *dst, const float *src, size_t n);
void smelt_ref_axpy(float *acc, const float *x, float w, size_t n);
void smelt_ref_lora_delta(float *delta, size_t delta_stride, const float *coef,
                          size_t coef_stride, size_t nrows, const float *rows, size_t row_stride,
                          size_t rank, size_t n);
void smelt_ref_scale(float *dst, const float *x, float w, size_t n);
void smelt_ref_axpy_bf16(float *acc, const uint16_t *x, float w, size_t n);
void smelt_ref_axpy_f16(float *acc, const uint16_t *x, float w, size_t n);
void smelt_ref_scale_bf16(float *dst, const uint16_t *x, float w, size_t n);
void smelt_ref_scale_f16(float *dst, const uint16_t *x, float w, size_t n);
void smelt_ref_axpy_bf16_encode(uint16_t *out, const float *acc, const uint16_t *x, float w,
                                size_t n);
void smelt_ref_sub(float *dst, const float *a, const float *b, size_t n);
void smelt_ref_masked_accum(float *mixed, float *div, const float *wd, const float *vote, float w,
                            size_t n);
double smelt_ref_dot_f64(const float *a, const float *b, size_t n);
double smelt_ref_sumsq_f64(const float *a, size_t n);
double smelt_ref_sum_abs_f64(const float *a, size_t n);
void smelt_ref_hist_mag(uint32_t *hist, const float *x, size_t n, uint32_t prefix,
                        unsigned prefix_shift, unsigned shift, unsigned bits);
size_t smelt_ref_mask_mag_range(uint32_t *keep, uint32_t *at, const float *x, size_t n,
                                uint32_t lo, uint32_t hi, uint32_t lo_eq, uint32_t hi_eq);
void smelt_ref_philox_uniform(float *dst, uint64_t key, uint64_t index0, size_t n);

/* The block types with a dequant entry: X(suffix, ggml type name) for each (kernels_ops.h). */
#define SMELT_DEQUANT_TYPES(X)                                                                  \
    X(q4_0, Q4_0) X(q4_1, Q4_1) X(q5_0, Q5_0) X(q5_1, Q5_1) X(q8_0, Q8_0) X(q2_K, Q2_K)          \
    X(q3_K, Q3_K) X(q4_K, Q4_K) X(q5_K, Q5_K) X(q6_K, Q6_K) X(iq4_nl, IQ4_NL) X(iq4_xs, IQ4_XS)
#define SMELT_DEQUANT_DECL(name, TYPE) \
    void smelt_ref_dequant_##name(float *dst, const void *src, size_t nblocks);
SMELT_DEQUANT_TYPES(SMELT_DEQUANT_DECL)
#undef SMELT_DEQUANT_DECL

/* Where a block of `type` keeps its fp16 scale d and, for the types with one, its fp16 dmin or
 * min: byte offsets into the block, -1 when there is none. Returns the number of fields (1 or
 * 2), 0 for a type without a dequant entry. For tests, the self-test and benchmarks that set the
 * scales of generated blocks. */
int smelt_ref_dequant_f16_fields(uint32_t type, int off[2]);

/* IQ4_NL's and IQ4_XS's non-linear 4-bit code book (ggml's kvalues_iq4nl). */
extern const int8_t smelt_iq4nl_values[16];

/* The 6-bit scale and min j (0..7) of a Q4_K or Q5_K block, packed in its 12 scale bytes q
 * (ggml's get_scale_min_k4); shared by every level so the unpacking cannot differ. */
static inline void smelt_k4_scale_min(int j, const uint8_t *q, int *d, int *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q3_K's sixteen 6-bit scales, biased by 32, from its 12 scale bytes s: the low 4 bits are
 * scales[0..7]'s low then high nibbles, the high 2 bits come from scales[8..11]. */
static inline int smelt_q3k_scale(int i, const uint8_t *s)
{
    int lo = i < 8 ? s[i] & 0xF : s[i - 8] >> 4;
    int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
    return (lo | hi << 4) - 32;
}

/* IQ4_XS's 6-bit scale of sub-block ib (0..7), biased by 32: scales_h (sh) gives 2 high bits,
 * scales_l (sl, 4 bytes) the low nibbles. */
static inline int smelt_iq4xs_scale(int ib, unsigned sh, const uint8_t *sl)
{
    return (((sl[ib / 2] >> 4 * (ib % 2)) & 0xF) | (((sh >> 2 * ib) & 3) << 4)) - 32;
}

/* The reductions' lanes: element i of the call adds into lanes[i % 16]. A SIMD level runs whole
 * groups of 16 and hands the rest to these, so lane membership stays i % 16. */
#define SMELT_REDUCE_LANES 16
void smelt_ref_dot_lanes(double *lanes, const float *a, const float *b, size_t n);
void smelt_ref_sumsq_lanes(double *lanes, const float *a, size_t n);
void smelt_ref_sum_abs_lanes(double *lanes, const float *a, size_t n);
/* The one combining order of the 16 lanes (overwrites them). */
double smelt_ref_reduce_combine(double *lanes);

#define SMELT_PHILOX_M0 0xD2511F53u
#define SMELT_PHILOX_M1 0xCD9E8D57u
#define SMELT_PHILOX_W0 0x9E3779B9u
#define SMELT_PHILOX_W1 0xBB67AE85u
/* One Philox4x32-10 block: out = philox(ctr, key). */
void smelt_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* The delta byte-plane transforms (kernels_ops.h delta_join / delta_split), element by element:
 * the reference and every level's tail. */
void smelt_ref_delta_join(uint8_t *out, const uint8_t *planes, size_t stride, size_t n,
                          unsigned unit, const uint8_t *base);
void smelt_ref_delta_split(uint8_t *planes, size_t stride, const uint8_t *elems, size_t n,
                           unsigned unit, const uint8_t *base);

#endif
