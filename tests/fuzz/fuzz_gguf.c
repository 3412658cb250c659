/* libFuzzer target: the GGUF reader. The input is a whole GGUF file, which is what
 * smelt_gguf_parse sees through mmap. An accepted file is also walked the way inspect and the
 * engine will: every key through the getters (arrays element by element) and every tensor's
 * data decoded when its type is supported, so the bounds the parser promises are exercised. */
#include "format/gguf.h"
#include "kernels/kernels_quant.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    smelt_ctx *ctx = smelt_ctx_new();
    if (!ctx)
        return 0;
    smelt_gguf *g;
    if (smelt_gguf_parse(ctx, "fuzz.gguf", data, size, &g) == SMELT_OK) {
        for (size_t i = 0; i < g->nkv; i++) {
            const smelt_gguf_kv *kv = &g->kvs[i];
            smelt_gguf_kv e;
            uint64_t u, len;
            const char *s;
            for (uint64_t k = 0; k < kv->count && k < 64 && !smelt_gguf_kv_elem(kv, k, &e); k++)
                (void)smelt_gguf_kv_str(&e, &s, &len);
            (void)smelt_gguf_kv_uint(kv, &u);
            (void)smelt_gguf_kv_str(kv, &s, &len);
            (void)smelt_gguf_find(g, kv->key);
        }
        for (size_t i = 0; i < g->ntensors; i++) {
            const smelt_gguf_tensor *t = &g->tensors[i];
            if (t->numel > (1u << 16) || !smelt_dequant_supported(t->type))
                continue;
            float *y = malloc(t->numel * sizeof *y);
            if (y)
                smelt_dequantize(t->type, y, data + t->file_offset, t->numel);
            free(y);
        }
        smelt_gguf_close(g);
    }
    smelt_ctx_free(ctx);
    return 0;
}
