/* Decoding ggml's tensor types to f32 (dequantization) and the reference quantizers, bit for bit
 * as ggml's dequantize_row_* and quantize_row_*_ref (ggml/src/ggml-quants.c) compute them, which
 * tests/tools/ggml_check.c verifies against libggml-base itself. Scalar only: the block types
 * decode through the scalar kernel table's dequant entries (kernels_ops.h), which are this
 * reference and against which every SIMD level's entries are tested bit for bit; the merge
 * engine goes through the selected level's table (smelt_decode). The numbers are ggml types
 * (common/ggml_type.h). Thread-safe: pure functions. */
#ifndef SMELT_KERNELS_QUANT_H
#define SMELT_KERNELS_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* 1 when smelt_dequantize handles the type (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K,
 * Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS). */
int smelt_dequant_supported(uint32_t type);

/* 1 when smelt_quantize handles the type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K). */
int smelt_quant_supported(uint32_t type);

/* Decodes n elements (a whole number of the type's blocks) of `src`, which holds them in the
 * type's block layout (any alignment), into dst: for block types, the scalar table's
 * dequant[type] entry. Returns 0, or -1 (nothing written) when the type
 * is not supported or n is not a multiple of its block size. */
int smelt_dequantize(uint32_t type, float *dst, const void *src, size_t n);

/* Encodes n elements (a whole number of blocks) of src into dst in the type's layout, as ggml's
 * reference quantizer does. Returns 0, or -1 as smelt_dequantize. Inputs should be finite: ggml's
 * casts of NaN or huge quotients to int8 are undefined, and smelt's follow them. */
int smelt_quantize(uint32_t type, void *dst, const float *src, size_t n);

#endif
