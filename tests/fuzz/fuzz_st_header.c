/* libFuzzer target: the safetensors header parser. The input is a whole safetensors file (the
 * 8-byte length, the JSON header, the data), which is what smelt_st_parse sees through mmap. */
#include "format/safetensors.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    smelt_ctx *ctx = smelt_ctx_new();
    if (!ctx)
        return 0;
    smelt_tensor_info *tensors;
    size_t n;
    uint64_t data_start;
    char *meta;
    if (smelt_st_parse(ctx, "fuzz.safetensors", data, size, size, &tensors, &n, &data_start,
                       &meta) == SMELT_OK) {
        smelt_tensors_free(tensors, n);
        free(meta);
    }
    smelt_ctx_free(ctx);
    return 0;
}
