/* ggml's tensor types (the `ggml_type` of a GGUF tensor info): names and block geometry, shared
 * by the GGUF reader (sizes, validation) and the quantization kernels. Kept in common/ because
 * both format/ and kernels/ may depend on nothing but common/. The numbers are ggml's, fixed by
 * the file format; tests/tools/ggml_check.c compares this table with libggml-base's. */
#ifndef SMELT_GGML_TYPE_H
#define SMELT_GGML_TYPE_H

#include <stdint.h>

enum {
    SMELT_GGML_F32 = 0, SMELT_GGML_F16 = 1, SMELT_GGML_Q4_0 = 2, SMELT_GGML_Q4_1 = 3,
    SMELT_GGML_Q5_0 = 6, SMELT_GGML_Q5_1 = 7, SMELT_GGML_Q8_0 = 8, SMELT_GGML_Q8_1 = 9,
    SMELT_GGML_Q2_K = 10, SMELT_GGML_Q3_K = 11, SMELT_GGML_Q4_K = 12, SMELT_GGML_Q5_K = 13,
    SMELT_GGML_Q6_K = 14, SMELT_GGML_Q8_K = 15, SMELT_GGML_IQ4_NL = 20, SMELT_GGML_IQ4_XS = 23,
    SMELT_GGML_I8 = 24, SMELT_GGML_I16 = 25, SMELT_GGML_I32 = 26, SMELT_GGML_I64 = 27,
    SMELT_GGML_F64 = 28, SMELT_GGML_BF16 = 30,
    SMELT_GGML_TYPE_COUNT = 43 /* one past the highest type this table knows (q2_0 = 42) */
};

/* One ggml type: `block` elements are stored in `bytes` bytes. */
typedef struct smelt_ggml_type {
    const char *name; /* ggml's spelling: "q4_K", "bf16" */
    uint32_t block;
    uint32_t bytes;
} smelt_ggml_type;

/* The type with this number, or NULL when it is unknown or was removed from ggml (4, 5, the
 * 31-33 and 36-38 repacked layouts). */
const smelt_ggml_type *smelt_ggml_type_get(uint32_t type);

#endif
