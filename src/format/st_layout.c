/* The safetensors writer's side: header layout and shard names, following the reference
 * serializer in https://github.com/huggingface/safetensors (safetensors/src/tensor.rs:
 * prepare, serialize) and the Hugging Face sharding convention. */
#include "format/safetensors.h"

#include "common/util.h"
#include "format/st_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long long ull;

/* Natural alignment of an element; the sub-byte types are packed bytes. */
static unsigned dtype_align(smelt_dtype dt)
{
    unsigned size = smelt_dtype_size(dt);
    return size ? size : 1;
}

static const char *out_name_at(const void *array, size_t i)
{
    return ((const smelt_st_out_tensor *)array)[i].name;
}

static int check_out_tensor(smelt_ctx *ctx, const smelt_st_out_tensor *t)
{
    if (t->dtype < 0 || t->dtype >= SMELT_DT_COUNT)
        return smelt_fail(ctx, SMELT_E_ARG, "tensor '%s': invalid dtype %d", t->name,
                          (int)t->dtype);
    if (t->ndim > SMELT_MAX_DIMS)
        return smelt_fail(ctx, SMELT_E_ARG, "tensor '%s': %u dimensions; at most %d", t->name,
                          t->ndim, SMELT_MAX_DIMS);
    if (strcmp(t->name, "__metadata__") == 0)
        return smelt_fail(ctx, SMELT_E_ARG,
                          "tensor '__metadata__': the name is reserved for the metadata map");
    size_t len = strlen(t->name);
    if (smelt_utf8_check((const uint8_t *)t->name, len) != len)
        return smelt_fail(ctx, SMELT_E_ARG, "tensor '%s': the name is not valid UTF-8", t->name);
    uint64_t bits = smelt_dtype_bits(t->dtype);
    for (uint32_t d = 0; d < t->ndim; d++)
        if (smelt_mul_overflow(bits, t->shape[d], &bits))
            return smelt_fail(ctx, SMELT_E_ARG, "tensor '%s': element count overflow", t->name);
    /* A readable file needs exactly the bytes its shape implies (the reader checks the same). */
    if (bits % 8 || bits / 8 != t->nbytes)
        return smelt_fail(ctx, SMELT_E_ARG,
                          "tensor '%s': %llu bytes given, but its shape of %s needs %llu bits",
                          t->name, (ull)t->nbytes, smelt_dtype_name(t->dtype), (ull)bits);
    return SMELT_OK;
}

/* A JSON string literal: quote, backslash and control characters escaped; other UTF-8 bytes
 * pass through, as serde_json writes them. */
static void put_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

int smelt_st_layout(smelt_ctx *ctx, const smelt_st_out_tensor *tensors, size_t n,
                    uint8_t **header, size_t *header_len, uint64_t *offsets, uint64_t *file_size)
{
    *header = NULL;
    for (size_t i = 0; i < n; i++) {
        int rc = check_out_tensor(ctx, &tensors[i]);
        if (rc != SMELT_OK)
            return rc;
    }
    smelt_name_index names;
    size_t dup_a, dup_b;
    int built = smelt_name_index_build(&names, tensors, n, out_name_at, &dup_a, &dup_b);
    if (built < 0)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (built > 0)
        return smelt_fail(ctx, SMELT_E_ARG, "tensor '%s' appears twice (positions %zu and %zu)",
                          tensors[dup_a].name, dup_a, dup_b);
    smelt_name_index_free(&names);

    /* Descending alignment with every size a multiple of the next smaller alignment keeps each
     * tensor naturally aligned with no padding between tensors. Alignments are 8, 4, 2 or 1, so
     * four stable passes do the sort. */
    size_t *order = malloc((n + 1) * sizeof *order);
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    if (!order || !f) {
        free(order);
        if (f)
            fclose(f);
        free(text);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    size_t k = 0;
    for (unsigned align = 8; align >= 1; align /= 2)
        for (size_t i = 0; i < n; i++)
            if (dtype_align(tensors[i].dtype) == align)
                order[k++] = i;

    /* transformers refuses to load a file whose metadata lacks {"format": "pt"}. */
    fputs("{\"__metadata__\":{\"format\":\"pt\"}", f);
    uint64_t at = 0;
    int overflow = 0;
    for (size_t j = 0; j < n; j++) {
        const smelt_st_out_tensor *t = &tensors[order[j]];
        fputc(',', f);
        put_json_string(f, t->name);
        fprintf(f, ":{\"dtype\":\"%s\",\"shape\":[", smelt_dtype_name(t->dtype));
        for (uint32_t d = 0; d < t->ndim; d++)
            fprintf(f, "%s%llu", d ? "," : "", (ull)t->shape[d]);
        fprintf(f, "],\"data_offsets\":[%llu,%llu]}", (ull)at, (ull)(at + t->nbytes));
        offsets[order[j]] = at;
        if (__builtin_add_overflow(at, t->nbytes, &at) || at > UINT64_MAX / 2)
            overflow = 1;
    }
    fputc('}', f);
    /* The reference writer pads with spaces so the data buffer starts 8-aligned. */
    while ((8 + ftell(f)) % 8)
        fputc(' ', f);
    int failed = ferror(f);
    if (fclose(f) != 0 || failed) {
        free(order);
        free(text);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    free(order);
    if (overflow) {
        free(text);
        return smelt_fail(ctx, SMELT_E_ARG, "the %zu tensors hold more than 2^63 bytes", n);
    }
    if (text_len > SMELT_ST_MAX_HEADER) {
        free(text);
        return smelt_fail(ctx, SMELT_E_ARG,
                          "the header of %zu tensors would be %zu bytes, larger than the limit of "
                          "%llu bytes that readers accept", n, text_len, (ull)SMELT_ST_MAX_HEADER);
    }
    uint8_t *out = malloc(8 + text_len);
    if (!out) {
        free(text);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)((uint64_t)text_len >> (8 * i));
    memcpy(out + 8, text, text_len);
    free(text);
    for (size_t i = 0; i < n; i++)
        offsets[i] += 8 + text_len;
    *header = out;
    *header_len = 8 + text_len;
    *file_size = 8 + text_len + at;
    return SMELT_OK;
}

void smelt_shard_name(char *buf, size_t len, unsigned index, unsigned total)
{
    if (total <= 1)
        snprintf(buf, len, "model.safetensors");
    else
        snprintf(buf, len, "model-%05u-of-%05u.safetensors", index + 1, total);
}
