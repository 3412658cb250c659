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
void smelt_ref_philox_uniform(float *dst, uint64_t key, uint64_t index0, size_t n);

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

#endif
