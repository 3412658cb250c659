/* format/gguf and kernels_quant: a GGUF header built in memory read back through every getter;
 * every prefix of a valid file refused cleanly; element, byte and offset arithmetic; known
 * values of the block formats (the bit-for-bit comparison with ggml itself is
 * tests/tools/ggml_check.c, run by tests/e2e/test_gguf.sh). */
#include "format/gguf.h"
#include "kernels/kernels_quant.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
    uint8_t p[4096];
    size_t n;
} buf;

static void le(buf *b, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        b->p[b->n++] = (uint8_t)(v >> (8 * i));
}

static void str(buf *b, const char *s)
{
    le(b, strlen(s), 8);
    memcpy(b->p + b->n, s, strlen(s));
    b->n += strlen(s);
}

/* general.architecture = "llama", n.u32 = 7, n.i16 = -2, n.f32 = 0.5, n.bool, names (3 strings);
 * tensors: "a" q8_0 ne {64, 2} at 0, "b" f32 ne {3} at 160 (136 bytes padded to 32). */
static void valid_file(buf *b)
{
    b->n = 0;
    memcpy(b->p, "GGUF", 4);
    b->n = 4;
    le(b, 3, 4);
    le(b, 2, 8);
    le(b, 6, 8);
    str(b, "general.architecture"); le(b, 8, 4); str(b, "llama");
    str(b, "n.u32"); le(b, 4, 4); le(b, 7, 4);
    str(b, "n.i16"); le(b, 3, 4); le(b, (uint16_t)-2, 2);
    str(b, "n.f32"); le(b, 6, 4); le(b, 0x3f000000, 4);
    str(b, "n.bool"); le(b, 7, 4); le(b, 1, 1);
    str(b, "names"); le(b, 9, 4); le(b, 8, 4); le(b, 3, 8); str(b, "x"); str(b, "yy"); str(b, "");
    str(b, "a"); le(b, 2, 4); le(b, 64, 8); le(b, 2, 8); le(b, 8, 4); le(b, 0, 8);
    str(b, "b"); le(b, 1, 4); le(b, 3, 8); le(b, 0, 4); le(b, 160, 8);
    while (b->n % 32)
        le(b, 0, 1);
    b->n += 160 + 12;
}

START_TEST(test_parse_getters)
{
    buf b;
    valid_file(&b);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_gguf *g;
    ck_assert_int_eq(smelt_gguf_parse(ctx, "t.gguf", b.p, b.n, &g), SMELT_OK);
    ck_assert_uint_eq(g->version, 3);
    ck_assert_uint_eq(g->alignment, 32);
    ck_assert_uint_eq(g->nkv, 6);
    ck_assert_uint_eq(g->ntensors, 2);
    uint64_t u;
    int64_t i;
    double f;
    int bl;
    const char *s;
    uint64_t len;
    ck_assert_int_eq(smelt_gguf_get_uint(ctx, g, "n.u32", &u), SMELT_OK);
    ck_assert_uint_eq(u, 7);
    ck_assert_int_eq(smelt_gguf_kv_int(smelt_gguf_find(g, "n.i16"), &i), 0);
    ck_assert_int_eq(i, -2);
    ck_assert_int_eq(smelt_gguf_kv_uint(smelt_gguf_find(g, "n.i16"), &u), -1); /* negative */
    ck_assert_int_eq(smelt_gguf_kv_float(smelt_gguf_find(g, "n.f32"), &f), 0);
    ck_assert(f == 0.5);
    ck_assert_int_eq(smelt_gguf_kv_bool(smelt_gguf_find(g, "n.bool"), &bl), 0);
    ck_assert_int_eq(bl, 1);
    ck_assert_int_eq(smelt_gguf_get_str(ctx, g, "general.architecture", &s, &len), SMELT_OK);
    ck_assert(len == 5 && !memcmp(s, "llama", 5));
    ck_assert_int_eq(smelt_gguf_get_uint(ctx, g, "general.architecture", &u), SMELT_E_FORMAT);
    ck_assert_str_eq(smelt_errmsg(ctx),
                     "t.gguf: key 'general.architecture' is a string, not an unsigned integer");
    ck_assert_int_eq(smelt_gguf_get_uint(ctx, g, "nope", &u), SMELT_E_FORMAT);
    ck_assert_str_eq(smelt_errmsg(ctx), "t.gguf: key 'nope' is missing");

    const smelt_gguf_kv *names = smelt_gguf_find(g, "names");
    ck_assert_uint_eq(names->count, 3);
    ck_assert_uint_eq(names->elem_type, SMELT_GGUF_STRING);
    smelt_gguf_kv e;
    ck_assert_int_eq(smelt_gguf_kv_elem(names, 1, &e), 0);
    ck_assert_int_eq(smelt_gguf_kv_str(&e, &s, &len), 0);
    ck_assert(len == 2 && !memcmp(s, "yy", 2));
    ck_assert_int_eq(smelt_gguf_kv_elem(names, 2, &e), 0);
    ck_assert_int_eq(smelt_gguf_kv_str(&e, &s, &len), 0);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(smelt_gguf_kv_elem(names, 3, &e), -1);

    const smelt_gguf_tensor *a = smelt_gguf_find_tensor(g, "a"), *t = smelt_gguf_find_tensor(g, "b");
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(a->numel, 128);
    ck_assert_uint_eq(a->nbytes, 4 * 34);
    ck_assert_uint_eq(a->ndim, 2);
    ck_assert_uint_eq(a->ne[2], 1);
    ck_assert_uint_eq(t->offset, 160);
    ck_assert_uint_eq(t->file_offset, g->data_start + 160);
    ck_assert_uint_eq(g->data_start % 32, 0);
    ck_assert_ptr_null(smelt_gguf_find_tensor(g, "c"));
    smelt_gguf_close(g);
    smelt_ctx_free(ctx);
}
END_TEST

/* Every proper prefix of a valid file is refused with SMELT_E_FORMAT and a message naming the
 * file, never read past (ASan watches the heap copy of exactly that many bytes). */
START_TEST(test_prefixes)
{
    buf b;
    valid_file(&b);
    smelt_ctx *ctx = smelt_ctx_new();
    for (size_t n = 0; n < b.n; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, b.p, n);
        smelt_gguf *g;
        ck_assert_int_eq(smelt_gguf_parse(ctx, "p.gguf", copy, n, &g), SMELT_E_FORMAT);
        ck_assert_ptr_null(g);
        ck_assert_msg(!strncmp(smelt_errmsg(ctx), "p.gguf: ", 8), "%zu: %s", n, smelt_errmsg(ctx));
        free(copy);
    }
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(test_open_file)
{
    buf b;
    valid_file(&b);
    char *dir = tu_tmpdir(), *path = tu_path(dir, "m.gguf");
    tu_write_file(path, b.p, b.n);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_gguf *g;
    ck_assert_int_eq(smelt_gguf_open(ctx, path, &g), SMELT_OK);
    ck_assert_uint_eq(g->size, b.n);
    smelt_gguf_close(g);
    char *missing = tu_path(dir, "missing.gguf");
    ck_assert_int_eq(smelt_gguf_open(ctx, missing, &g), SMELT_E_IO);
    ck_assert(smelt_gguf_is_path(path) && !smelt_gguf_is_path("x.safetensors"));
    smelt_ctx_free(ctx);
    free(missing);
    free(path);
    free(dir);
}
END_TEST

/* Hand-computed blocks: the layouts, the biases and the nibble order. */
START_TEST(test_known_blocks)
{
    float y[256];
    uint8_t q8[34] = {0x00, 0x38}; /* d = 0.5 */
    for (int j = 0; j < 32; j++)
        q8[2 + j] = (uint8_t)(int8_t)(j - 16);
    ck_assert_int_eq(smelt_dequantize(SMELT_GGML_Q8_0, y, q8, 32), 0);
    for (int j = 0; j < 32; j++)
        ck_assert(y[j] == (float)(j - 16) * 0.5f);

    uint8_t q4[18] = {0x00, 0x40}; /* d = 2 */
    for (int j = 0; j < 16; j++)
        q4[2 + j] = (uint8_t)(j | (15 - j) << 4);
    ck_assert_int_eq(smelt_dequantize(SMELT_GGML_Q4_0, y, q4, 32), 0);
    for (int j = 0; j < 16; j++) {
        ck_assert(y[j] == (float)(j - 8) * 2.0f);
        ck_assert(y[j + 16] == (float)(7 - j) * 2.0f);
    }
    /* Q6_K with every quant 32 (the bias) and d = 1 decodes to zeros of the scale's sign. */
    uint8_t q6[210] = {0};
    memset(q6 + 128, 0xAA, 64); /* high bits 2 -> quant 32 */
    for (int i = 0; i < 16; i++)
        q6[192 + i] = (uint8_t)(int8_t)(i % 2 ? -1 : 1);
    q6[208] = 0x00;
    q6[209] = 0x3c;
    ck_assert_int_eq(smelt_dequantize(SMELT_GGML_Q6_K, y, q6, 256), 0);
    for (int i = 0; i < 256; i++)
        ck_assert_msg(y[i] == 0.0f && !signbit(y[i]) == !((i / 16) % 2), "%d", i);

    ck_assert_int_eq(smelt_dequantize(SMELT_GGML_Q8_0, y, q8, 31), -1);
    ck_assert_int_eq(smelt_dequantize(SMELT_GGML_Q8_1, y, q8, 32), -1);
    ck_assert(smelt_dequant_supported(SMELT_GGML_IQ4_XS) && !smelt_dequant_supported(16));
    ck_assert(smelt_quant_supported(SMELT_GGML_Q6_K) && !smelt_quant_supported(SMELT_GGML_Q3_K));
}
END_TEST

/* K-quants: a smooth ramp over a super-block comes back within a few percent of its range. */
START_TEST(test_round_trip_k)
{
    static const uint32_t types[] = {SMELT_GGML_Q4_K, SMELT_GGML_Q5_K, SMELT_GGML_Q6_K};
    float x[256], y[256];
    uint8_t blk[256];
    for (int j = 0; j < 256; j++)
        x[j] = sinf((float)j * 0.1f);
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        ck_assert_int_eq(smelt_quantize(types[k], blk, x, 256), 0);
        ck_assert_int_eq(smelt_dequantize(types[k], y, blk, 256), 0);
        for (int j = 0; j < 256; j++)
            ck_assert_msg(fabsf(y[j] - x[j]) <= 0.1f, "type %u: %g vs %g", types[k], y[j], x[j]);
    }
}
END_TEST

/* Quantize then dequantize: within half a step of the scale, and exact on the grid. */
START_TEST(test_round_trip)
{
    static const uint32_t types[] = {SMELT_GGML_Q8_0, SMELT_GGML_Q4_0, SMELT_GGML_Q4_1,
                                     SMELT_GGML_Q5_0, SMELT_GGML_Q5_1};
    float x[32], y[32];
    uint8_t blk[64];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16) / 4.0f;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        ck_assert_int_eq(smelt_quantize(types[k], blk, x, 32), 0);
        ck_assert_int_eq(smelt_dequantize(types[k], y, blk, 32), 0);
        float step = types[k] == SMELT_GGML_Q8_0 ? 4.0f / 127 : 8.0f / 15;
        for (int j = 0; j < 32; j++)
            ck_assert_msg(fabsf(y[j] - x[j]) <= step, "type %u: %g vs %g", types[k], y[j], x[j]);
    }
}
END_TEST

START_TEST(test_split_names)
{
    size_t plen;
    unsigned no, count;
    ck_assert(smelt_gguf_split_name("d/m-00002-of-00005.gguf", &plen, &no, &count));
    ck_assert(plen == 3 && no == 2 && count == 5);
    ck_assert(!smelt_gguf_split_name("m-00006-of-00005.gguf", &plen, &no, &count));
    ck_assert(!smelt_gguf_split_name("m-00000-of-00005.gguf", &plen, &no, &count));
    ck_assert(!smelt_gguf_split_name("m-0002-of-00005.gguf", &plen, &no, &count));
    ck_assert(!smelt_gguf_split_name("-00001-of-00001.gguf", &plen, &no, &count));
    ck_assert(!smelt_gguf_split_name("m.gguf", &plen, &no, &count));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("gguf");
    tcase_add_test(tc, test_parse_getters);
    tcase_add_test(tc, test_prefixes);
    tcase_add_test(tc, test_open_file);
    tcase_add_test(tc, test_known_blocks);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_round_trip_k);
    tcase_add_test(tc, test_split_names);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(suite()); }
