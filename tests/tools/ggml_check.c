/* Compares smelt's GGUF pieces with the real ggml, loaded with dlopen from libggml-base.so
 * (node-llama-cpp's build, installed by tools/setup.sh):
 *   ggml_check LIB types          the type table (block size, bytes) against ggml_blck_size/type_size
 *   ggml_check LIB dequant N      N blocks per type through smelt_dequantize and ggml's
 *                                 dequantize_row_*, bit for bit: random blocks and adversarial ones
 *                                 (zero, subnormal, smallest normal and largest scales; all-zero,
 *                                 all-ones and all-equal quants); never NaN or Inf inputs
 *   ggml_check LIB quant N        N blocks per type through smelt_quantize and quantize_row_*_ref,
 *                                 byte for byte (random, scaled, all-equal, zero, outlier rows)
 *   ggml_check LIB gguf FILE      smelt's reader against gguf_init_from_file: versions, counts,
 *                                 keys, value types and values, tensor names, types, offsets,
 *                                 sizes, and every tensor's data as ggml loads it
 *   ggml_check LIB write DIR      files made by smelt's GGUF writer (format/gguf_write.h), with
 *                                 alignment 32 and 64, checked as `gguf` checks a file
 *   ggml_check LIB reject FILE    ggml refuses FILE too (gguf_init_from_file returns NULL)
 *   ggml_check LIB to-st IN.gguf OUT.safetensors
 *                                 every float tensor of IN decoded to f32 by ggml's own
 *                                 dequantize_row_* / *_to_fp32_row, written as an F32
 *                                 safetensors file (same names, row-major shapes): the inputs of
 *                                 a reference merge
 *   ggml_check LIB match REF OUT.gguf
 *                                 every tensor of OUT equals ggml's encoding of REF's F32 tensor
 *                                 of the same name (REF: a safetensors file or directory): bit
 *                                 for bit for F32, else quantize_row_*_ref / fp32_to_fp16_row /
 *                                 fp32_to_bf16_row byte for byte
 * Prints what it compared; exits 1 on the first difference, 2 on a usage or loading error. */
#include "common/ggml_type.h"
#include "format/gguf.h"
#include "format/gguf_write.h"
#include "format/safetensors.h"
#include "kernels/kernels_quant.h"

#include <dlfcn.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef unsigned long long ull;
static void *lib;

static void *sym(const char *name)
{
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "ggml_check: %s not found in libggml-base: %s\n", name, dlerror());
        exit(2);
    }
    return p;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int check_types(void)
{
    size_t (*type_size)(int) = (size_t (*)(int))sym("ggml_type_size");
    int64_t (*blck_size)(int) = (int64_t (*)(int))sym("ggml_blck_size");
    for (int t = 0; t < SMELT_GGML_TYPE_COUNT; t++) {
        const smelt_ggml_type *s = smelt_ggml_type_get((uint32_t)t);
        size_t gs = type_size(t);
        int64_t gb = blck_size(t);
        if (s ? (gs != s->bytes || gb != (int64_t)s->block) : gs != 0) {
            fprintf(stderr, "type %d: smelt %u/%u, ggml %lld/%zu\n", t, s ? s->block : 0,
                    s ? s->bytes : 0, (long long)gb, gs);
            return 1;
        }
    }
    printf("types: %d ggml types agree\n", SMELT_GGML_TYPE_COUNT);
    return 0;
}

/* The fp16 fields of each block type (byte offsets; -1 ends). */
typedef struct qtype {
    uint32_t type;
    const char *fn;
    int fp16[3];
} qtype;

static const qtype qtypes[] = {
    {SMELT_GGML_F32, "f32", {-1}},       {SMELT_GGML_F16, "fp16", {-1}},
    {SMELT_GGML_BF16, "bf16", {-1}},     {SMELT_GGML_Q4_0, "q4_0", {0, -1}},
    {SMELT_GGML_Q4_1, "q4_1", {0, 2, -1}}, {SMELT_GGML_Q5_0, "q5_0", {0, -1}},
    {SMELT_GGML_Q5_1, "q5_1", {0, 2, -1}}, {SMELT_GGML_Q8_0, "q8_0", {0, -1}},
    {SMELT_GGML_Q2_K, "q2_K", {80, 82, -1}}, {SMELT_GGML_Q3_K, "q3_K", {108, -1}},
    {SMELT_GGML_Q4_K, "q4_K", {0, 2, -1}}, {SMELT_GGML_Q5_K, "q5_K", {0, 2, -1}},
    {SMELT_GGML_Q6_K, "q6_K", {208, -1}}, {SMELT_GGML_IQ4_NL, "iq4_nl", {0, -1}},
    {SMELT_GGML_IQ4_XS, "iq4_xs", {0, -1}},
};

/* A finite fp16 for the adversarial mode, or a random finite one. */
static uint16_t scale16(int mode)
{
    uint16_t sign = (uint16_t)(next() & 0x8000);
    switch (mode) {
    case 1: return sign;                                    /* zero */
    case 2: return (uint16_t)(sign | (1 + next() % 0x3FF)); /* subnormal */
    case 3: return (uint16_t)(sign | 0x7BFF);               /* largest finite */
    case 4: return (uint16_t)(sign | 0x0400);               /* smallest normal */
    }
    uint16_t h = (uint16_t)next();
    return (h & 0x7C00) == 0x7C00 ? (uint16_t)(h & ~0x4000) : h;
}

static void fill_block(const qtype *q, const smelt_ggml_type *t, uint8_t *b, uint64_t blk)
{
    int mode = (int)(blk % 8);
    if (q->type == SMELT_GGML_F32 || q->type == SMELT_GGML_F16 || q->type == SMELT_GGML_BF16) {
        unsigned esz = t->bytes;
        uint64_t v = next();
        if (esz == 4) {
            uint32_t u = (uint32_t)v;
            if (mode == 2)
                u &= 0x807FFFFF; /* subnormal */
            if ((u & 0x7F800000) == 0x7F800000)
                u &= ~0x40000000u;
            memcpy(b, &u, 4);
        } else {
            uint16_t h = (uint16_t)v;
            uint16_t expmask = q->type == SMELT_GGML_F16 ? 0x7C00 : 0x7F80;
            if (mode == 2)
                h &= (uint16_t)~expmask;
            if ((h & expmask) == expmask)
                h &= (uint16_t)~(q->type == SMELT_GGML_F16 ? 0x4000 : 0x4000);
            memcpy(b, &h, 2);
        }
        return;
    }
    int qmode = (int)(blk / 8 % 4); /* 0 random, 1 all zero, 2 all ones, 3 all one value */
    uint8_t same = (uint8_t)next();
    for (unsigned i = 0; i < t->bytes; i++)
        b[i] = qmode == 0 ? (uint8_t)next() : qmode == 1 ? 0 : qmode == 2 ? 0xFF : same;
    for (int k = 0; q->fp16[k] >= 0; k++) {
        uint16_t h = scale16(mode < 5 ? mode : 0);
        b[q->fp16[k]] = (uint8_t)h;
        b[q->fp16[k] + 1] = (uint8_t)(h >> 8);
    }
}

static int check_dequant(uint64_t nblocks)
{
    uint64_t total = 0;
    for (size_t k = 0; k < sizeof qtypes / sizeof qtypes[0]; k++) {
        const qtype *q = &qtypes[k];
        const smelt_ggml_type *t = smelt_ggml_type_get(q->type);
        char name[64];
        snprintf(name, sizeof name, q->type == SMELT_GGML_F32 || q->type == SMELT_GGML_F16 ||
                 q->type == SMELT_GGML_BF16 ? "ggml_%s_to_fp32_row" : "dequantize_row_%s",
                 q->fn);
        if (q->type == SMELT_GGML_F32)
            snprintf(name, sizeof name, "memcpy"); /* ggml's F32 "dequantization" is a copy */
        /* One row of 64 blocks at a time: ggml's row functions take any multiple of a block. */
        enum { ROW = 64 };
        uint8_t *src = malloc((size_t)t->bytes * ROW);
        float *a = malloc(sizeof(float) * t->block * ROW), *b = malloc(sizeof(float) * t->block * ROW);
        void (*ref)(const void *, float *, int64_t) =
            q->type == SMELT_GGML_F32 ? NULL : (void (*)(const void *, float *, int64_t))sym(name);
        for (uint64_t done = 0; done < nblocks; done += ROW) {
            for (int i = 0; i < ROW; i++)
                fill_block(q, t, src + (size_t)i * t->bytes, done + (uint64_t)i);
            size_t n = (size_t)t->block * ROW;
            if (smelt_dequantize(q->type, a, src, n) != 0) {
                fprintf(stderr, "smelt_dequantize refused %s\n", t->name);
                return 1;
            }
            if (ref)
                ref(src, b, (int64_t)n);
            else
                memcpy(b, src, n * 4);
            if (memcmp(a, b, n * 4)) {
                for (size_t i = 0; i < n; i++)
                    if (memcmp(&a[i], &b[i], 4)) {
                        fprintf(stderr, "%s: block %llu element %zu: smelt %a, ggml %a\n", t->name,
                                (ull)(done + i / t->block), i % t->block, a[i], b[i]);
                        break;
                    }
                return 1;
            }
        }
        printf("dequant %-7s %llu blocks bit-identical\n", t->name, (ull)nblocks);
        total += nblocks;
        free(src);
        free(a);
        free(b);
    }
    printf("dequant: %llu blocks in all\n", (ull)total);
    return 0;
}

/* A row for the quantizers: finite values, several shapes. */
static void fill_row(float *x, unsigned n, uint64_t blk)
{
    int mode = (int)(blk % 6);
    double scale = pow(10.0, (double)(int)(next() % 9) - 4.0); /* 1e-4 .. 1e4 */
    float same = (float)(((double)(next() >> 11) / 9007199254740992.0 - 0.5) * scale);
    for (unsigned i = 0; i < n; i++) {
        double u = (double)(next() >> 11) / 9007199254740992.0 * 2.0 - 1.0;
        x[i] = mode == 0 ? (float)(u * scale)
             : mode == 1 ? same
             : mode == 2 ? 0.0f
             : mode == 3 ? (i == (unsigned)(blk % n) ? (float)(scale * 100) : (float)(u * scale * 1e-3))
             : mode == 4 ? (float)(fabs(u) * scale)      /* one sign: the affine types' min */
                         : (float)((int)(u * 8) * scale); /* on a grid: ties in rounding */
    }
}

static int check_quant(uint64_t nblocks)
{
    static const uint32_t types[] = {SMELT_GGML_Q8_0, SMELT_GGML_Q4_0, SMELT_GGML_Q4_1,
                                     SMELT_GGML_Q5_0, SMELT_GGML_Q5_1, SMELT_GGML_Q4_K,
                                     SMELT_GGML_Q5_K, SMELT_GGML_Q6_K};
    uint64_t total = 0;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const smelt_ggml_type *t = smelt_ggml_type_get(types[k]);
        char name[64];
        snprintf(name, sizeof name, "quantize_row_%s_ref", t->name);
        void (*ref)(const float *, void *, int64_t) = (void (*)(const float *, void *, int64_t))sym(name);
        float *x = malloc(sizeof(float) * t->block);
        uint8_t *a = malloc(t->bytes), *b = malloc(t->bytes);
        for (uint64_t blk = 0; blk < nblocks; blk++) {
            fill_row(x, t->block, blk);
            if (smelt_quantize(types[k], a, x, t->block) != 0) {
                fprintf(stderr, "smelt_quantize refused %s\n", t->name);
                return 1;
            }
            ref(x, b, t->block);
            if (memcmp(a, b, t->bytes)) {
                for (unsigned i = 0; i < t->bytes; i++)
                    if (a[i] != b[i]) {
                        fprintf(stderr, "%s: block %llu (mode %d) byte %u: smelt %02x, ggml %02x\n",
                                t->name, (ull)blk, (int)(blk % 6), i, a[i], b[i]);
                        break;
                    }
                return 1;
            }
        }
        printf("quant %-5s %llu blocks byte-identical\n", t->name, (ull)nblocks);
        total += nblocks;
        free(x);
        free(a);
        free(b);
    }
    printf("quant: %llu blocks in all\n", (ull)total);
    return 0;
}

struct gguf_init_params {
    bool no_alloc;
    void **ctx;
};

/* Every value as ggml reads it against smelt's bytes: scalars and numeric arrays byte for byte,
 * strings (alone or in arrays) by content. Nested arrays never get here: ggml refuses them. */
static int check_values(const char *path, const smelt_gguf *s, const void *g)
{
    const void *(*val_data)(const void *, int64_t) = (const void *(*)(const void *, int64_t))sym("gguf_get_val_data");
    const char *(*val_str)(const void *, int64_t) = (const char *(*)(const void *, int64_t))sym("gguf_get_val_str");
    int (*arr_type)(const void *, int64_t) = (int (*)(const void *, int64_t))sym("gguf_get_arr_type");
    size_t (*arr_n)(const void *, int64_t) = (size_t (*)(const void *, int64_t))sym("gguf_get_arr_n");
    const void *(*arr_data)(const void *, int64_t) = (const void *(*)(const void *, int64_t))sym("gguf_get_arr_data");
    const char *(*arr_str)(const void *, int64_t, size_t) = (const char *(*)(const void *, int64_t, size_t))sym("gguf_get_arr_str");
    for (size_t i = 0; i < s->nkv; i++) {
        const smelt_gguf_kv *kv = &s->kvs[i];
        int64_t k = (int64_t)i;
        int ok = 1;
        if (kv->type == SMELT_GGUF_STRING) {
            const char *str;
            uint64_t len;
            smelt_gguf_kv_str(kv, &str, &len);
            ok = strlen(val_str(g, k)) == len && !memcmp(val_str(g, k), str, len);
        } else if (kv->type != SMELT_GGUF_ARRAY) {
            ok = !memcmp(val_data(g, k), kv->value, kv->size);
        } else if (arr_type(g, k) != (int)kv->elem_type || arr_n(g, k) != kv->count) {
            ok = 0;
        } else if (kv->elem_type == SMELT_GGUF_STRING) {
            for (uint64_t j = 0; ok && j < kv->count; j++) {
                smelt_gguf_kv e;
                const char *str;
                uint64_t len;
                smelt_gguf_kv_elem(kv, j, &e);
                smelt_gguf_kv_str(&e, &str, &len);
                const char *gs = arr_str(g, k, (size_t)j);
                ok = strlen(gs) == len && !memcmp(gs, str, len);
            }
        } else {
            ok = kv->size == 0 || !memcmp(arr_data(g, k), kv->value, kv->size);
        }
        if (!ok) {
            fprintf(stderr, "%s: the value of key '%s' differs\n", path, kv->key);
            return 1;
        }
    }
    return 0;
}

/* Every tensor's data as ggml loads it (gguf_init_from_file with no_alloc = false reads the whole
 * data section into a ggml context) against the bytes at smelt's offsets. */
static int check_data(const char *path, const smelt_gguf *s)
{
    void *(*init)(const char *, struct gguf_init_params) =
        (void *(*)(const char *, struct gguf_init_params))sym("gguf_init_from_file");
    void (*gfree)(void *) = (void (*)(void *))sym("gguf_free");
    void *(*get_tensor)(void *, const char *) = (void *(*)(void *, const char *))sym("ggml_get_tensor");
    void *(*get_data)(const void *) = (void *(*)(const void *))sym("ggml_get_data");
    size_t (*nbytes)(const void *) = (size_t (*)(const void *))sym("ggml_nbytes");
    void (*ggml_free)(void *) = (void (*)(void *))sym("ggml_free");
    void *gctx = NULL;
    void *g = init(path, (struct gguf_init_params){false, &gctx});
    if (!g || !gctx) {
        fprintf(stderr, "%s: ggml cannot load the tensor data\n", path);
        return 1;
    }
    int bad = 0;
    for (size_t i = 0; !bad && i < s->ntensors; i++) {
        const smelt_gguf_tensor *t = &s->tensors[i];
        void *gt = get_tensor(gctx, t->name);
        if (!gt || nbytes(gt) != t->nbytes || memcmp(get_data(gt), s->base + t->file_offset, t->nbytes)) {
            fprintf(stderr, "%s: tensor '%s': ggml loads other data\n", path, t->name);
            bad = 1;
        }
    }
    ggml_free(gctx);
    gfree(g);
    return bad;
}

static int check_gguf(const char *path, int expect_reject)
{
    void *(*init)(const char *, struct gguf_init_params) =
        (void *(*)(const char *, struct gguf_init_params))sym("gguf_init_from_file");
    void (*gfree)(void *) = (void (*)(void *))sym("gguf_free");
    int64_t (*n_tensors)(const void *) = (int64_t (*)(const void *))sym("gguf_get_n_tensors");
    int64_t (*n_kv)(const void *) = (int64_t (*)(const void *))sym("gguf_get_n_kv");
    const char *(*get_key)(const void *, int64_t) = (const char *(*)(const void *, int64_t))sym("gguf_get_key");
    int (*get_kv_type)(const void *, int64_t) = (int (*)(const void *, int64_t))sym("gguf_get_kv_type");
    const char *(*t_name)(const void *, int64_t) = (const char *(*)(const void *, int64_t))sym("gguf_get_tensor_name");
    int (*t_type)(const void *, int64_t) = (int (*)(const void *, int64_t))sym("gguf_get_tensor_type");
    size_t (*t_off)(const void *, int64_t) = (size_t (*)(const void *, int64_t))sym("gguf_get_tensor_offset");
    size_t (*t_size)(const void *, int64_t) = (size_t (*)(const void *, int64_t))sym("gguf_get_tensor_size");
    size_t (*data_off)(const void *) = (size_t (*)(const void *))sym("gguf_get_data_offset");
    uint32_t (*get_align)(const void *) = (uint32_t (*)(const void *))sym("gguf_get_alignment");
    void *g = init(path, (struct gguf_init_params){true, NULL});
    if (expect_reject) {
        if (g) {
            fprintf(stderr, "%s: ggml accepts the file\n", path);
            gfree(g);
            return 1;
        }
        printf("%s: ggml refuses it too\n", path);
        return 0;
    }
    if (!g) {
        fprintf(stderr, "%s: ggml refuses the file\n", path);
        return 1;
    }
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_gguf *s;
    if (smelt_gguf_open(ctx, path, &s) != SMELT_OK) {
        fprintf(stderr, "%s: smelt refuses it: %s\n", path, smelt_errmsg(ctx));
        return 1;
    }
    int bad = 0;
    if ((int64_t)s->ntensors != n_tensors(g) || (int64_t)s->nkv != n_kv(g) ||
        s->data_start != data_off(g) || s->alignment != get_align(g)) {
        fprintf(stderr, "%s: counts differ: tensors %zu/%lld keys %zu/%lld data %llu/%zu align %u/%u\n",
                path, s->ntensors, (long long)n_tensors(g), s->nkv, (long long)n_kv(g),
                (ull)s->data_start, data_off(g), s->alignment, get_align(g));
        bad = 1;
    }
    for (size_t i = 0; !bad && i < s->nkv; i++)
        if (strcmp(s->kvs[i].key, get_key(g, (int64_t)i)) ||
            (int)s->kvs[i].type != get_kv_type(g, (int64_t)i)) {
            fprintf(stderr, "%s: key %zu differs: %s/%s\n", path, i, s->kvs[i].key, get_key(g, (int64_t)i));
            bad = 1;
        }
    for (size_t i = 0; !bad && i < s->ntensors; i++) {
        const smelt_gguf_tensor *t = &s->tensors[i];
        if (strcmp(t->name, t_name(g, (int64_t)i)) || (int)t->type != t_type(g, (int64_t)i) ||
            t->offset != t_off(g, (int64_t)i) || t->nbytes != t_size(g, (int64_t)i)) {
            fprintf(stderr, "%s: tensor %zu differs: %s/%s\n", path, i, t->name, t_name(g, (int64_t)i));
            bad = 1;
        }
    }
    if (!bad)
        bad = check_values(path, s, g) || check_data(path, s);
    if (!bad)
        printf("%s: %zu keys, %zu tensors agree with ggml (values and data too)\n", path, s->nkv,
               s->ntensors);
    smelt_gguf_close(s);
    smelt_ctx_free(ctx);
    gfree(g);
    return bad;
}

typedef void (*row_fn)(const void *src, void *dst, int64_t n);

/* ggml's function that decodes a row of `type` to f32 (decode) or encodes f32 to it; NULL for
 * F32, which is a copy either way. Exits when ggml lacks it. */
static row_fn ggml_row(uint32_t type, int decode)
{
    const smelt_ggml_type *t = smelt_ggml_type_get(type);
    char name[64];
    if (type == SMELT_GGML_F32 || !t)
        return NULL;
    if (type == SMELT_GGML_F16 || type == SMELT_GGML_BF16)
        snprintf(name, sizeof name, decode ? "ggml_%s_to_fp32_row" : "ggml_fp32_to_%s_row",
                 type == SMELT_GGML_F16 ? "fp16" : "bf16");
    else
        snprintf(name, sizeof name, decode ? "dequantize_row_%s" : "quantize_row_%s_ref", t->name);
    return (row_fn)sym(name);
}

static int is_float_type(uint32_t type)
{
    return type != SMELT_GGML_I8 && type != SMELT_GGML_I16 && type != SMELT_GGML_I32 &&
           type != SMELT_GGML_I64 && type != SMELT_GGML_F64;
}

static int to_safetensors(const char *in, const char *out)
{
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_gguf *g;
    if (smelt_gguf_open(ctx, in, &g) != SMELT_OK) {
        fprintf(stderr, "%s\n", smelt_errmsg(ctx));
        return 2;
    }
    size_t cap = 1 << 16, len = 0;
    char *json = malloc(cap);
    uint64_t at = 0;
    len += (size_t)snprintf(json + len, cap - len, "{");
    for (size_t i = 0; i < g->ntensors; i++) {
        const smelt_gguf_tensor *t = &g->tensors[i];
        if (!is_float_type(t->type))
            continue;
        if (cap - len < 512) {
            cap *= 2;
            json = realloc(json, cap);
        }
        len += (size_t)snprintf(json + len, cap - len, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[",
                                len > 1 ? "," : "", t->name);
        for (uint32_t d = 0; d < t->ndim; d++)
            len += (size_t)snprintf(json + len, cap - len, "%s%llu", d ? "," : "",
                                    (ull)t->ne[t->ndim - 1 - d]);
        len += (size_t)snprintf(json + len, cap - len, "],\"data_offsets\":[%llu,%llu]}", (ull)at,
                                (ull)(at + t->numel * 4));
        at += t->numel * 4;
    }
    len += (size_t)snprintf(json + len, cap - len, "}");
    while ((len + 8) % 8)
        json[len++] = ' ';
    FILE *f = fopen(out, "wb");
    if (!f) {
        perror(out);
        return 2;
    }
    uint64_t hlen = len;
    fwrite(&hlen, 8, 1, f);
    fwrite(json, 1, len, f);
    size_t n_done = 0;
    for (size_t i = 0; i < g->ntensors; i++) {
        const smelt_gguf_tensor *t = &g->tensors[i];
        if (!is_float_type(t->type))
            continue;
        float *x = malloc(t->numel * 4 + 4);
        const uint8_t *src = g->base + t->file_offset;
        row_fn dec = ggml_row(t->type, 1);
        if (dec)
            dec(src, x, (int64_t)t->numel);
        else
            memcpy(x, src, t->numel * 4);
        fwrite(x, 4, t->numel, f);
        free(x);
        n_done++;
    }
    int bad = fclose(f) != 0;
    printf("%s: %zu tensors decoded by ggml into %s\n", in, n_done, out);
    free(json);
    smelt_gguf_close(g);
    smelt_ctx_free(ctx);
    return bad;
}

static int match_reference(const char *ref_path, const char *out)
{
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_gguf *g;
    smelt_model *ref;
    if (smelt_gguf_open(ctx, out, &g) != SMELT_OK || smelt_model_open(ctx, ref_path, &ref) != SMELT_OK) {
        fprintf(stderr, "%s\n", smelt_errmsg(ctx));
        return 2;
    }
    size_t bad = 0, checked = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < g->ntensors; i++) {
        const smelt_gguf_tensor *t = &g->tensors[i];
        const smelt_tensor_info *r = smelt_model_find(ref, t->name);
        if (!r || r->dtype != SMELT_DT_F32 || r->numel != t->numel) {
            fprintf(stderr, "%s: tensor '%s': no F32 tensor of %llu elements in %s\n", out,
                    t->name, (ull)t->numel, ref_path);
            bad++;
            continue;
        }
        float *x = malloc(r->nbytes + 4);
        uint8_t *want = malloc(t->nbytes + 4);
        if (pread(ref->files[r->file].fd, x, r->nbytes, (off_t)r->offset) != (ssize_t)r->nbytes) {
            perror(ref_path);
            return 2;
        }
        row_fn enc = ggml_row(t->type, 0);
        if (enc)
            enc(x, want, (int64_t)t->numel);
        else
            memcpy(want, x, t->nbytes);
        const uint8_t *have = g->base + t->file_offset;
        if (memcmp(want, have, t->nbytes) != 0) {
            size_t at = 0;
            while (want[at] == have[at])
                at++;
            fprintf(stderr, "%s: tensor '%s' (%s): byte %zu differs from ggml's encoding of the "
                    "reference: %02x, ggml %02x\n", out, t->name, smelt_ggml_type_get(t->type)->name,
                    at, have[at], want[at]);
            bad++;
        }
        checked++;
        bytes += t->nbytes;
        free(x);
        free(want);
    }
    if (!bad)
        printf("%s: %zu tensors (%llu bytes) equal ggml's encoding of %s\n", out, checked,
               (ull)bytes, ref_path);
    smelt_model_close(ref);
    smelt_gguf_close(g);
    smelt_ctx_free(ctx);
    return bad ? 1 : 0;
}

/* Writes a file with smelt's GGUF writer: keys of each kind the builder makes, tensors of several
 * types and shapes (data: a byte pattern) at the layout's offsets. */
static int write_file(const char *path, uint32_t alignment)
{
    static const char *const toks[] = {"<unk>", "<s>", "", "\xe2\x96\x81hi"};
    static const float scores[] = {0.0f, -1.5f, 2.25f, 1e-30f};
    static const int32_t types[] = {2, 3, 1, 1};
    static const smelt_gguf_out_tensor tensors[] = {
        {"token_embd.weight", SMELT_GGML_Q8_0, 2, {64, 3}},
        {"blk.0.attn_q.weight", SMELT_GGML_Q4_K, 2, {256, 2}},
        {"blk.0.ffn_down.weight", SMELT_GGML_Q6_K, 2, {256, 1}},
        {"blk.0.attn_norm.weight", SMELT_GGML_F32, 1, {7}},
        {"x.f16", SMELT_GGML_F16, 3, {5, 2, 3}},
        {"x.bf16", SMELT_GGML_BF16, 4, {2, 1, 1, 2}},
    };
    enum { NT = sizeof tensors / sizeof tensors[0] };
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_gguf_kvbuf kb;
    smelt_gguf_kvbuf_init(&kb);
    int rc = smelt_gguf_kvbuf_add_str(ctx, &kb, "general.architecture", "llama", 5);
    if (!rc) rc = smelt_gguf_kvbuf_add_u32(ctx, &kb, "llama.block_count", 1);
    if (!rc) rc = smelt_gguf_kvbuf_add_i32(ctx, &kb, "t.i32", -3);
    if (!rc) rc = smelt_gguf_kvbuf_add_f32(ctx, &kb, "t.f32", 1e-5f);
    if (!rc) rc = smelt_gguf_kvbuf_add_bool(ctx, &kb, "t.bool", 1);
    if (!rc) rc = smelt_gguf_kvbuf_add_str_array(ctx, &kb, "tokenizer.ggml.tokens", toks, 4);
    if (!rc) rc = smelt_gguf_kvbuf_add_f32_array(ctx, &kb, "tokenizer.ggml.scores", scores, 4);
    if (!rc) rc = smelt_gguf_kvbuf_add_i32_array(ctx, &kb, "tokenizer.ggml.token_type", types, 4);
    uint8_t *header = NULL;
    size_t header_len = 0;
    uint64_t offsets[NT], nb[NT], size = 0;
    if (!rc)
        rc = smelt_gguf_layout(ctx, &kb, tensors, NT, alignment, &header, &header_len, offsets,
                               nb, &size);
    if (rc) {
        fprintf(stderr, "ggml_check: the writer failed: %s\n", smelt_errmsg(ctx));
        return 2;
    }
    uint8_t *file = calloc(1, size);
    memcpy(file, header, header_len);
    for (int i = 0; i < NT; i++)
        for (uint64_t b = 0; b < nb[i]; b++)
            file[offsets[i] + b] = (uint8_t)(i * 37 + b * 3 + 1);
    /* Only bytes are compared: the pattern need not be finite numbers. */
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(file, 1, size, f) != size || fclose(f)) {
        fprintf(stderr, "ggml_check: cannot write %s\n", path);
        return 2;
    }
    free(file);
    free(header);
    smelt_gguf_kvbuf_free(&kb);
    smelt_ctx_free(ctx);
    return 0;
}

static int check_write(const char *dir)
{
    static const uint32_t alignments[] = {32, 64};
    for (int i = 0; i < 2; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/written-%u.gguf", dir, alignments[i]);
        int rc = write_file(path, alignments[i]);
        if (rc || (rc = check_gguf(path, 0)))
            return rc;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: ggml_check LIB types|dequant N|quant N|gguf FILE|reject FILE|"
                "write DIR|to-st IN.gguf OUT.safetensors|match REF OUT.gguf\n");
        return 2;
    }
    lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "ggml_check: cannot load %s: %s\n", argv[1], dlerror());
        return 2;
    }
    const char *what = argv[2];
    if (!strcmp(what, "types"))
        return check_types();
    if (argc == 5 && !strcmp(what, "to-st"))
        return to_safetensors(argv[3], argv[4]);
    if (argc == 5 && !strcmp(what, "match"))
        return match_reference(argv[3], argv[4]);
    if (argc != 4)
        return 2;
    if (!strcmp(what, "dequant"))
        return check_dequant(strtoull(argv[3], NULL, 10));
    if (!strcmp(what, "quant"))
        return check_quant(strtoull(argv[3], NULL, 10));
    if (!strcmp(what, "gguf"))
        return check_gguf(argv[3], 0);
    if (!strcmp(what, "reject"))
        return check_gguf(argv[3], 1);
    if (!strcmp(what, "write"))
        return check_write(argv[3]);
    return 2;
}
