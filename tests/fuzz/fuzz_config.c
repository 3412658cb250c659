/* libFuzzer target: the mergekit YAML config reader (YAML syntax, document shape, scalar typing,
 * parameter values). */
#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    smelt_ctx *ctx = smelt_ctx_new();
    if (!ctx)
        return 0;
    smelt_merge_spec *spec;
    if (smelt_config_parse(ctx, "fuzz.yml", (const char *)data, size, &spec) == SMELT_OK)
        smelt_spec_free(spec);
    smelt_ctx_free(ctx);
    return 0;
}
