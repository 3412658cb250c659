/* The element types of safetensors (and their sizes), shared by the format, kernel and engine
 * layers. Kept in common/ because kernels/ may depend on nothing but common/. */
#ifndef SMELT_DTYPE_H
#define SMELT_DTYPE_H

#include <stdint.h>

typedef enum smelt_dtype {
    SMELT_DT_BOOL, SMELT_DT_U8, SMELT_DT_I8, SMELT_DT_I16, SMELT_DT_U16, SMELT_DT_F16,
    SMELT_DT_BF16, SMELT_DT_I32, SMELT_DT_U32, SMELT_DT_F32, SMELT_DT_F64, SMELT_DT_I64,
    SMELT_DT_U64, SMELT_DT_C64, SMELT_DT_F8_E4M3, SMELT_DT_F8_E5M2, SMELT_DT_F8_E8M0,
    SMELT_DT_F8_E4M3FNUZ, SMELT_DT_F8_E5M2FNUZ, SMELT_DT_F4, SMELT_DT_F6_E2M3, SMELT_DT_F6_E3M2,
    SMELT_DT_COUNT, /* the safetensors types end here; ggml's block types follow */
    /* ggml's block-quantized types, as GGUF files hold them: SMELT_DT_GGML_BASE + ggml's type
     * number (common/ggml_type.h). `block` elements are stored in a fixed number of bytes, so
     * these have no per-element size: offsets and lengths go through smelt_dtype_span(). */
    SMELT_DT_GGML_BASE = 64,
    SMELT_DT_Q4_0 = SMELT_DT_GGML_BASE + 2, SMELT_DT_Q4_1 = SMELT_DT_GGML_BASE + 3,
    SMELT_DT_Q5_0 = SMELT_DT_GGML_BASE + 6, SMELT_DT_Q5_1 = SMELT_DT_GGML_BASE + 7,
    SMELT_DT_Q8_0 = SMELT_DT_GGML_BASE + 8, SMELT_DT_Q2_K = SMELT_DT_GGML_BASE + 10,
    SMELT_DT_Q3_K = SMELT_DT_GGML_BASE + 11, SMELT_DT_Q4_K = SMELT_DT_GGML_BASE + 12,
    SMELT_DT_Q5_K = SMELT_DT_GGML_BASE + 13, SMELT_DT_Q6_K = SMELT_DT_GGML_BASE + 14,
    SMELT_DT_IQ4_NL = SMELT_DT_GGML_BASE + 20, SMELT_DT_IQ4_XS = SMELT_DT_GGML_BASE + 23,
    SMELT_DT_GGML_END = SMELT_DT_GGML_BASE + 43,
    SMELT_DT_INVALID = -1
} smelt_dtype;

/* The safetensors spelling ("BF16"); ggml's for the block types ("q4_K"). */
const char *smelt_dtype_name(smelt_dtype dt);

/* Parses the safetensors spelling; SMELT_DT_INVALID when unknown. */
smelt_dtype smelt_dtype_from_name(const char *name);

/* Parses what smelt_dtype_name writes: the safetensors spellings and ggml's block type names
 * ("q4_K"); SMELT_DT_INVALID when unknown. */
smelt_dtype smelt_dtype_from_any_name(const char *name);

/* Parses a torch/mergekit spelling ("bfloat16", "bf16", "float16", "fp16", "half", "float32",
 * "fp32", "float"); SMELT_DT_INVALID when unknown. */
smelt_dtype smelt_dtype_from_torch_name(const char *name);

/* The torch spelling used in config.json's torch_dtype ("bfloat16"). */
const char *smelt_dtype_torch_name(smelt_dtype dt);

/* Bits per element (4 and 6 for the sub-byte types); 0 for the block types. */
unsigned smelt_dtype_bits(smelt_dtype dt);

/* Bytes per element for byte-sized types; 0 for sub-byte and block types. */
unsigned smelt_dtype_size(smelt_dtype dt);

/* Elements per block: 32 or 256 for the block types, 1 for byte-sized types, 0 otherwise. */
unsigned smelt_dtype_block(smelt_dtype dt);

/* Bytes that n elements take: n * size for byte-sized types, whole blocks for the block types
 * (n is then a multiple of the block, as every offset into such a tensor is; a partial block
 * counts whole). 0 for sub-byte types. */
uint64_t smelt_dtype_span(smelt_dtype dt, uint64_t n);

/* 1 for the block types. */
int smelt_dtype_is_block(smelt_dtype dt);

/* The dtype of a GGUF tensor of ggml type `ggml_type`: F32, F16, BF16, F64 and the integer
 * types map to their safetensors twins, the block types smelt decodes (Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q2_K..Q6_K, IQ4_NL, IQ4_XS) to SMELT_DT_GGML_BASE + ggml_type; SMELT_DT_INVALID for the
 * rest. */
smelt_dtype smelt_dtype_from_ggml(uint32_t ggml_type);

/* The inverse: ggml's type number for a dtype GGUF can hold, or -1. */
int smelt_dtype_to_ggml(smelt_dtype dt);

/* 1 for the floating types smelt merges: F32, F16, BF16, and the block types, which decode to
 * f32 (kernels/kernels_quant.h). */
int smelt_dtype_mergeable(smelt_dtype dt);

/* 1 for any floating type, merged or not (F64, F8_*, F4, F6_* too). */
int smelt_dtype_is_float(smelt_dtype dt);

#endif
