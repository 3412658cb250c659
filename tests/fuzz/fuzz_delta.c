/* libFuzzer target: the delta container's header and metadata parser (format/delta.h). The
 * input is the start of a delta file (the 8-byte length, the JSON header with its
 * "smelt_delta" metadata document); the file is taken to end where the input does. */
#include "format/delta.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    smelt_ctx *ctx = smelt_ctx_new();
    if (!ctx)
        return 0;
    smelt_delta *d;
    if (smelt_delta_parse(ctx, "fuzz.safetensors", data, size, size, &d) == SMELT_OK) {
        for (size_t i = 0; i < d->nentries; i++)
            (void)smelt_delta_find(d, d->entries[i].name);
        smelt_delta_close(d);
    }
    smelt_ctx_free(ctx);
    return 0;
}
