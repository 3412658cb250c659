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
    SMELT_DT_COUNT,
    SMELT_DT_INVALID = -1
} smelt_dtype;

/* The safetensors spelling ("BF16"). */
const char *smelt_dtype_name(smelt_dtype dt);

/* Parses the safetensors spelling; SMELT_DT_INVALID when unknown. */
smelt_dtype smelt_dtype_from_name(const char *name);

/* Parses a torch/mergekit spelling ("bfloat16", "bf16", "float16", "fp16", "half", "float32",
 * "fp32", "float"); SMELT_DT_INVALID when unknown. */
smelt_dtype smelt_dtype_from_torch_name(const char *name);

/* The torch spelling used in config.json's torch_dtype ("bfloat16"). */
const char *smelt_dtype_torch_name(smelt_dtype dt);

/* Bits per element (4 and 6 for the sub-byte types). */
unsigned smelt_dtype_bits(smelt_dtype dt);

/* Bytes per element for byte-sized types; 0 for sub-byte types. */
unsigned smelt_dtype_size(smelt_dtype dt);

/* 1 for the floating types smelt merges (F32, F16, BF16). */
int smelt_dtype_mergeable(smelt_dtype dt);

/* 1 for any floating type, merged or not (F64, F8_*, F4, F6_* too). */
int smelt_dtype_is_float(smelt_dtype dt);

#endif
