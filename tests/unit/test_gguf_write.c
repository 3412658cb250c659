/* format/gguf_write: pairs and tensors laid out, assembled in memory with their data and read
 * back through smelt's strict reader (values, types, offsets, data bytes); pairs copied from a
 * parsed file verbatim (types the builder cannot make: u64, i16, f64, nested arrays); the
 * alignment rules; every refusal with its message; a failed add leaves the buffer unchanged.
 * ggml's own reader parses the writer's output in tests/e2e/test_gguf.sh (ggml_check write). */
#include "format/gguf_write.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

static smelt_ctx *ctx;

static void setup(void) { ctx = smelt_ctx_new(); }
static void teardown(void) { smelt_ctx_free(ctx); }

/* A whole file: the layout's header, then each tensor's data (byte i of tensor t is t*31+i)
 * at its offset, the padding zero. */
static uint8_t *assemble(const smelt_gguf_kvbuf *kb, const smelt_gguf_out_tensor *t, size_t n,
                         uint32_t alignment, uint64_t *size, uint64_t *offsets, uint64_t *nbytes)
{
    uint8_t *header;
    size_t header_len;
    ck_assert_int_eq(smelt_gguf_layout(ctx, kb, t, n, alignment, &header, &header_len, offsets,
                                       nbytes, size), SMELT_OK);
    uint8_t *file = calloc(1, *size);
    memcpy(file, header, header_len);
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_ge(offsets[i], header_len);
        for (uint64_t b = 0; b < nbytes[i]; b++)
            file[offsets[i] + b] = (uint8_t)(i * 31 + b);
    }
    free(header);
    return file;
}

static const smelt_gguf_out_tensor tensors[] = {
    {"token_embd.weight", SMELT_GGML_Q8_0, 2, {64, 2}},    /* 136 bytes */
    {"blk.0.attn_q.weight", SMELT_GGML_Q4_K, 2, {256, 3}}, /* 432 */
    {"blk.0.ffn_down.weight", SMELT_GGML_Q6_K, 2, {512, 1}},
    {"output_norm.weight", SMELT_GGML_F32, 1, {3}},        /* 12: padding after the last */
    {"x.f16", SMELT_GGML_F16, 3, {5, 2, 3}},
    {"x.bf16", SMELT_GGML_BF16, 4, {2, 1, 1, 2}},
};
#define NT (sizeof tensors / sizeof tensors[0])

static void build_kvs(smelt_gguf_kvbuf *kb)
{
    static const char *const toks[] = {"<unk>", "<s>", "", "\xe2\x96\x81hello"};
    static const float scores[] = {0.0f, -1.5f, 2.25f, -0.0f};
    static const int32_t types[] = {2, 3, 1, -7};
    smelt_gguf_kvbuf_init(kb);
    ck_assert_int_eq(smelt_gguf_kvbuf_add_str(ctx, kb, "general.architecture", "llama", 5), 0);
    ck_assert_int_eq(smelt_gguf_kvbuf_add_str(ctx, kb, "general.name", "base", 4), 0);
    ck_assert_int_eq(smelt_gguf_kvbuf_add_u32(ctx, kb, "llama.block_count", 0xFFFFFFFEu), 0);
    ck_assert_int_eq(smelt_gguf_kvbuf_add_i32(ctx, kb, "t.i32", -5), 0);
    ck_assert_int_eq(smelt_gguf_kvbuf_add_u16(ctx, kb, "t.u16", 0xFFFEu), 0);
    ck_assert_int_eq(smelt_gguf_kvbuf_add_f32(ctx, kb, "t.f32", 1e-5f), 0);
    ck_assert_int_eq(smelt_gguf_kvbuf_add_bool(ctx, kb, "t.bool", 7), 0);
    ck_assert_int_eq(smelt_gguf_kvbuf_add_str_array(ctx, kb, "tokenizer.ggml.tokens", toks, 4), 0);
    ck_assert_int_eq(smelt_gguf_kvbuf_add_f32_array(ctx, kb, "tokenizer.ggml.scores", scores, 4),
                     0);
    ck_assert_int_eq(smelt_gguf_kvbuf_add_i32_array(ctx, kb, "tokenizer.ggml.token_type", types,
                                                    4), 0);
    ck_assert_int_eq(smelt_gguf_kvbuf_add_i32_array(ctx, kb, "t.empty", NULL, 0), 0);
    ck_assert_int_eq(smelt_gguf_kvbuf_add_u32(ctx, kb, "split.count", 1), 0);
    ck_assert_uint_eq(kb->count, 12);
}

START_TEST(test_round_trip)
{
    smelt_gguf_kvbuf kb;
    build_kvs(&kb);
    uint64_t size, offsets[NT], nbytes[NT];
    uint8_t *file = assemble(&kb, tensors, NT, 0, &size, offsets, nbytes);
    smelt_gguf *g;
    ck_assert_msg(smelt_gguf_parse(ctx, "w.gguf", file, size, &g) == SMELT_OK, "%s",
                  smelt_errmsg(ctx));
    ck_assert_uint_eq(g->version, 3);
    ck_assert_uint_eq(g->alignment, 32);
    ck_assert_uint_eq(g->nkv, 12); /* no general.alignment added for 32 */
    ck_assert_ptr_null(smelt_gguf_find(g, "general.alignment"));
    ck_assert_uint_eq(g->data_start % 32, 0);

    const char *s;
    uint64_t len, u;
    int64_t i;
    double f;
    int b;
    ck_assert_int_eq(smelt_gguf_get_str(ctx, g, "general.name", &s, &len), 0);
    ck_assert(len == 4 && !memcmp(s, "base", 4));
    ck_assert_int_eq(smelt_gguf_get_uint(ctx, g, "llama.block_count", &u), 0);
    ck_assert_uint_eq(u, 0xFFFFFFFEu);
    ck_assert_int_eq(smelt_gguf_find(g, "llama.block_count")->type, SMELT_GGUF_U32);
    ck_assert_int_eq(smelt_gguf_kv_int(smelt_gguf_find(g, "t.i32"), &i), 0);
    ck_assert_int_eq(i, -5);
    ck_assert_int_eq(smelt_gguf_find(g, "t.u16")->type, SMELT_GGUF_U16);
    ck_assert_int_eq(smelt_gguf_kv_uint(smelt_gguf_find(g, "t.u16"), &u), 0);
    ck_assert_uint_eq(u, 0xFFFEu);
    ck_assert_int_eq(smelt_gguf_kv_float(smelt_gguf_find(g, "t.f32"), &f), 0);
    ck_assert(f == (double)1e-5f);
    ck_assert_int_eq(smelt_gguf_find(g, "t.bool")->value[0], 1);
    ck_assert_int_eq(smelt_gguf_kv_bool(smelt_gguf_find(g, "t.bool"), &b), 0);
    const smelt_gguf_kv *toks = smelt_gguf_find(g, "tokenizer.ggml.tokens");
    ck_assert(toks->type == SMELT_GGUF_ARRAY && toks->elem_type == SMELT_GGUF_STRING);
    ck_assert_uint_eq(toks->count, 4);
    smelt_gguf_kv e;
    ck_assert_int_eq(smelt_gguf_kv_elem(toks, 3, &e), 0);
    ck_assert_int_eq(smelt_gguf_kv_str(&e, &s, &len), 0);
    ck_assert(len == 8 && !memcmp(s, "\xe2\x96\x81hello", 8));
    ck_assert_int_eq(smelt_gguf_kv_elem(toks, 2, &e), 0);
    ck_assert_int_eq(smelt_gguf_kv_str(&e, &s, &len), 0);
    ck_assert_uint_eq(len, 0);
    const smelt_gguf_kv *sc = smelt_gguf_find(g, "tokenizer.ggml.scores");
    ck_assert(sc->elem_type == SMELT_GGUF_F32 && sc->count == 4 && sc->size == 16);
    ck_assert_int_eq(smelt_gguf_kv_elem(sc, 2, &e), 0);
    ck_assert_int_eq(smelt_gguf_kv_float(&e, &f), 0);
    ck_assert(f == 2.25);
    ck_assert_int_eq(smelt_gguf_kv_elem(smelt_gguf_find(g, "tokenizer.ggml.token_type"), 3, &e), 0);
    ck_assert_int_eq(smelt_gguf_kv_int(&e, &i), 0);
    ck_assert_int_eq(i, -7);
    ck_assert_uint_eq(smelt_gguf_find(g, "t.empty")->count, 0);
    for (size_t k = 0; k < g->nkv; k++) /* file order is the order of the adds */
        ck_assert_str_eq(g->kvs[k].key, kb.keys[k].key);

    ck_assert_uint_eq(g->ntensors, NT);
    uint64_t expect_rel = 0;
    for (size_t k = 0; k < NT; k++) {
        const smelt_gguf_tensor *t = &g->tensors[k];
        ck_assert_str_eq(t->name, tensors[k].name);
        ck_assert_uint_eq(t->type, tensors[k].type);
        ck_assert_uint_eq(t->ndim, tensors[k].ndim);
        for (unsigned d = 0; d < t->ndim; d++)
            ck_assert_uint_eq(t->ne[d], tensors[k].ne[d]);
        ck_assert_uint_eq(t->nbytes, nbytes[k]);
        ck_assert_uint_eq(t->file_offset, offsets[k]);
        ck_assert_uint_eq(t->offset, expect_rel); /* ggml's reader requires exactly these */
        expect_rel += (nbytes[k] + 31) / 32 * 32;
        for (uint64_t x = 0; x < t->nbytes; x++)
            ck_assert_uint_eq(g->base[t->file_offset + x], (uint8_t)(k * 31 + x));
    }
    ck_assert_uint_eq(nbytes[0], 136);
    ck_assert_uint_eq(nbytes[1], 432);
    ck_assert_uint_eq(nbytes[2], 420);
    ck_assert_uint_eq(nbytes[3], 12);
    ck_assert_uint_eq(size, g->data_start + expect_rel); /* the last tensor padded too */
    ck_assert_uint_eq(size % 32, 0);
    smelt_gguf_close(g);
    free(file);
    smelt_gguf_kvbuf_free(&kb);
}
END_TEST

/* A source file holding values only a copy can carry: u64, i16, f64, an array of arrays. */
static uint8_t *source_file(uint64_t *size)
{
    smelt_gguf_kvbuf kb;
    build_kvs(&kb);
    /* Appended by hand in the buffer's own encoding: key, type, value. */
    static const uint8_t extra[] = {
        5, 0, 0, 0, 0, 0, 0, 0, 't', '.', 'u', '6', '4', 10, 0, 0, 0,
        1, 2, 3, 4, 5, 6, 7, 0x88,
        5, 0, 0, 0, 0, 0, 0, 0, 't', '.', 'i', '1', '6', 3, 0, 0, 0, 0xFE, 0xFF,
        5, 0, 0, 0, 0, 0, 0, 0, 't', '.', 'f', '6', '4', 12, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0xF0, 0x3F,
        5, 0, 0, 0, 0, 0, 0, 0, 't', '.', 'n', 'e', 's', 9, 0, 0, 0, 9, 0, 0, 0,
        2, 0, 0, 0, 0, 0, 0, 0,                              /* two arrays: */
        0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0xAA, 0xBB,      /* u8 [0xAA, 0xBB] */
        8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 'z', /* ["z"] */
    };
    kb.bytes = realloc(kb.bytes, kb.len + sizeof extra);
    memcpy(kb.bytes + kb.len, extra, sizeof extra);
    kb.len += sizeof extra;
    static const char *const names[] = {"t.u64", "t.i16", "t.f64", "t.nes"};
    for (int k = 0; k < 4; k++) {
        kb.keys = realloc(kb.keys, (kb.count + 1) * sizeof *kb.keys);
        kb.keys[kb.count++] = (smelt_gguf_kvbuf_key){strdup(names[k]), 0, 0};
    }
    kb.keys_cap = kb.count;
    uint64_t offsets[NT], nbytes[NT];
    uint8_t *file = assemble(&kb, tensors, 2, 0, size, offsets, nbytes);
    smelt_gguf_kvbuf_free(&kb);
    return file;
}

START_TEST(test_copy)
{
    uint64_t size;
    uint8_t *src_bytes = source_file(&size);
    smelt_gguf *src;
    ck_assert_msg(smelt_gguf_parse(ctx, "src.gguf", src_bytes, size, &src) == SMELT_OK, "%s",
                  smelt_errmsg(ctx));
    ck_assert_uint_eq(src->nkv, 16);

    smelt_gguf_kvbuf kb;
    smelt_gguf_kvbuf_init(&kb);
    static const char *const skip[] = {"general.name", "split.*", "t.nothing"};
    ck_assert_int_eq(smelt_gguf_kvbuf_copy_all(ctx, &kb, src, skip, 3), SMELT_OK);
    ck_assert_uint_eq(kb.count, 14);
    ck_assert(!smelt_gguf_kvbuf_has(&kb, "general.name"));
    ck_assert(!smelt_gguf_kvbuf_has(&kb, "split.count"));
    ck_assert_int_eq(smelt_gguf_kvbuf_add_str(ctx, &kb, "general.name", "merged", 6), SMELT_OK);
    /* Copying again collides on the first key. */
    ck_assert_int_eq(smelt_gguf_kvbuf_copy_all(ctx, &kb, src, skip, 3), SMELT_E_ARG);
    ck_assert(strstr(smelt_errmsg(ctx), "'general.architecture' is added twice"));
    ck_assert_uint_eq(kb.count, 15);

    uint64_t out_size, offsets[NT], nbytes[NT];
    uint8_t *out_bytes = assemble(&kb, tensors, NT, 0, &out_size, offsets, nbytes);
    smelt_gguf *out;
    ck_assert_msg(smelt_gguf_parse(ctx, "out.gguf", out_bytes, out_size, &out) == SMELT_OK, "%s",
                  smelt_errmsg(ctx));
    ck_assert_uint_eq(out->nkv, 15);
    size_t k = 0;
    for (size_t j = 0; j < src->nkv; j++) {
        const smelt_gguf_kv *a = &src->kvs[j];
        if (!strcmp(a->key, "general.name") || !strncmp(a->key, "split.", 6))
            continue;
        const smelt_gguf_kv *b = &out->kvs[k++]; /* same order */
        ck_assert_str_eq(a->key, b->key);
        ck_assert(a->type == b->type && a->elem_type == b->elem_type && a->count == b->count);
        ck_assert(a->size == b->size && !memcmp(a->value, b->value, a->size));
    }
    ck_assert_uint_eq(smelt_gguf_find(out, "t.nes")->count, 2);
    ck_assert_uint_eq(smelt_gguf_find(out, "t.nes")->elem_type, SMELT_GGUF_ARRAY);
    const char *s;
    uint64_t len;
    ck_assert_int_eq(smelt_gguf_get_str(ctx, out, "general.name", &s, &len), 0);
    ck_assert(len == 6 && !memcmp(s, "merged", 6));
    smelt_gguf_close(out);
    smelt_gguf_close(src);
    free(out_bytes);
    free(src_bytes);
    smelt_gguf_kvbuf_free(&kb);
}
END_TEST

START_TEST(test_alignment)
{
    smelt_gguf_kvbuf kb;
    build_kvs(&kb);
    uint64_t size, offsets[NT], nbytes[NT];
    uint8_t *file = assemble(&kb, tensors, NT, 64, &size, offsets, nbytes);
    smelt_gguf *g;
    ck_assert_msg(smelt_gguf_parse(ctx, "a.gguf", file, size, &g) == SMELT_OK, "%s",
                  smelt_errmsg(ctx));
    ck_assert_uint_eq(g->alignment, 64);
    ck_assert_uint_eq(g->nkv, 13); /* general.alignment added, last */
    ck_assert_str_eq(g->kvs[12].key, "general.alignment");
    ck_assert_uint_eq(g->data_start % 64, 0);
    ck_assert_uint_eq(size % 64, 0);
    for (size_t k = 0; k < NT; k++)
        ck_assert_uint_eq(offsets[k] % 64, 0);
    /* Copied with the rest, the key is kept and not added again. */
    smelt_gguf_kvbuf copy;
    smelt_gguf_kvbuf_init(&copy);
    ck_assert_int_eq(smelt_gguf_kvbuf_copy_all(ctx, &copy, g, NULL, 0), SMELT_OK);
    uint8_t *header;
    size_t header_len;
    uint64_t file_size;
    ck_assert_int_eq(smelt_gguf_layout(ctx, &copy, tensors, NT, 64, &header, &header_len,
                                       offsets, NULL, &file_size), SMELT_OK);
    ck_assert_uint_eq(header[16], 13); /* the key count */
    ck_assert_uint_eq(file_size, size);
    ck_assert(!memcmp(header, file, header_len)); /* the same header, byte for byte */
    free(header);
    /* A copied key that disagrees with the layout is refused. */
    ck_assert_int_eq(smelt_gguf_layout(ctx, &copy, tensors, NT, 32, &header, &header_len,
                                       offsets, NULL, &file_size), SMELT_E_ARG);
    ck_assert(strstr(smelt_errmsg(ctx), "general.alignment' = 64 disagrees"));
    ck_assert_ptr_null(header);
    ck_assert_int_eq(smelt_gguf_layout(ctx, &kb, tensors, NT, 48, &header, &header_len,
                                       offsets, NULL, &file_size), SMELT_E_ARG);
    ck_assert(strstr(smelt_errmsg(ctx), "alignment 48 is not a power of two"));
    smelt_gguf_kvbuf_free(&copy);
    smelt_gguf_kvbuf_init(&copy);
    ck_assert_int_eq(smelt_gguf_kvbuf_add_i32(ctx, &copy, "general.alignment", 64), 0);
    ck_assert_int_eq(smelt_gguf_layout(ctx, &copy, tensors, NT, 64, &header, &header_len,
                                       offsets, NULL, &file_size), SMELT_E_ARG);
    ck_assert(strstr(smelt_errmsg(ctx), "is a i32, not a u32"));
    smelt_gguf_kvbuf_free(&copy);
    smelt_gguf_close(g);
    free(file);
    smelt_gguf_kvbuf_free(&kb);
}
END_TEST

START_TEST(test_empty)
{
    smelt_gguf_kvbuf kb;
    smelt_gguf_kvbuf_init(&kb);
    uint8_t *header;
    size_t header_len;
    uint64_t size, off;
    ck_assert_int_eq(smelt_gguf_layout(ctx, &kb, NULL, 0, 0, &header, &header_len, &off, NULL,
                                       &size), SMELT_OK);
    ck_assert_uint_eq(header_len, 32);
    ck_assert_uint_eq(size, 32);
    static const uint8_t expect[24] = {'G', 'G', 'U', 'F', 3};
    ck_assert(!memcmp(header, expect, 24));
    smelt_gguf *g;
    ck_assert_int_eq(smelt_gguf_parse(ctx, "e.gguf", header, size, &g), SMELT_OK);
    ck_assert(g->nkv == 0 && g->ntensors == 0);
    smelt_gguf_close(g);
    free(header);
}
END_TEST

/* One layout that must be refused with `phrase` in the message. */
static void refused(const smelt_gguf_out_tensor *t, size_t n, const char *phrase)
{
    smelt_gguf_kvbuf kb;
    smelt_gguf_kvbuf_init(&kb);
    uint8_t *header = (uint8_t *)1;
    size_t header_len;
    uint64_t size, off[4];
    ck_assert_int_eq(smelt_gguf_layout(ctx, &kb, t, n, 0, &header, &header_len, off, NULL, &size),
                     SMELT_E_ARG);
    ck_assert_ptr_null(header);
    ck_assert_msg(strstr(smelt_errmsg(ctx), phrase), "'%s' lacks '%s'", smelt_errmsg(ctx), phrase);
}

START_TEST(test_refusals)
{
    char long_name[SMELT_GGUF_MAX_NAME + 2];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    smelt_gguf_out_tensor t = {long_name, SMELT_GGML_F32, 1, {4}};
    refused(&t, 1, "a name of 64 bytes (1 to 63 allowed");
    long_name[SMELT_GGUF_MAX_NAME] = 0; /* 63 bytes: allowed */
    smelt_gguf_out_tensor two[2] = {t, {"b", SMELT_GGML_F32, 1, {1}}};
    smelt_gguf_kvbuf kb;
    smelt_gguf_kvbuf_init(&kb);
    uint8_t *header;
    size_t header_len;
    uint64_t size, off[4];
    ck_assert_int_eq(smelt_gguf_layout(ctx, &kb, two, 2, 0, &header, &header_len, off, NULL,
                                       &size), SMELT_OK);
    free(header);
    two[1].name = long_name;
    refused(two, 2, "tensor 'nnnn");
    ck_assert(strstr(smelt_errmsg(ctx), "appears more than once"));
    refused(&(smelt_gguf_out_tensor){"", SMELT_GGML_F32, 1, {4}}, 1, "a name of 0 bytes");
    refused(&(smelt_gguf_out_tensor){"q", SMELT_GGML_Q4_K, 2, {128, 2}}, 1,
            "tensor 'q': ne[0] = 128 is not a multiple of q4_K's block size 256");
    refused(&(smelt_gguf_out_tensor){"q", SMELT_GGML_Q8_0, 2, {48, 2}}, 1,
            "ne[0] = 48 is not a multiple of q8_0's block size 32");
    refused(&(smelt_gguf_out_tensor){"z", SMELT_GGML_F32, 2, {4, 0}}, 1,
            "tensor 'z': dimension 1 is 0");
    refused(&(smelt_gguf_out_tensor){"d", SMELT_GGML_F32, 0, {4}}, 1,
            "tensor 'd': 0 dimensions (1 to 4 allowed)");
    refused(&(smelt_gguf_out_tensor){"d", SMELT_GGML_F32, 5, {4, 1, 1, 1}}, 1, "5 dimensions");
    refused(&(smelt_gguf_out_tensor){"u", 4, 1, {4}}, 1, "tensor 'u': unknown ggml type 4");
    refused(&(smelt_gguf_out_tensor){"o", SMELT_GGML_F64, 2, {1ull << 32, 1ull << 31}}, 1,
            "tensor 'o': element count or size overflows");
    refused(&(smelt_gguf_out_tensor){"o", SMELT_GGML_F64, 1, {1ull << 62}}, 1,
            "tensor 'o': element count or size overflows");
    ck_assert_uint_eq(smelt_gguf_tensor_bytes(SMELT_GGML_Q6_K, 2, (uint64_t[]){512, 3}), 1260);
    ck_assert_uint_eq(smelt_gguf_tensor_bytes(SMELT_GGML_Q6_K, 2, (uint64_t[]){500, 3}), 0);
}
END_TEST

START_TEST(test_key_refusals)
{
    smelt_gguf_kvbuf kb;
    smelt_gguf_kvbuf_init(&kb);
    ck_assert_int_eq(smelt_gguf_kvbuf_add_u32(ctx, &kb, "a", 1), SMELT_OK);
    size_t len = kb.len;
    ck_assert_int_eq(smelt_gguf_kvbuf_add_str(ctx, &kb, "a", "x", 1), SMELT_E_ARG);
    ck_assert(strstr(smelt_errmsg(ctx), "key 'a' is added twice"));
    ck_assert_int_eq(smelt_gguf_kvbuf_add_f32(ctx, &kb, "", 1), SMELT_E_ARG);
    ck_assert(strstr(smelt_errmsg(ctx), "a key may not be empty"));
    static const char *const s[] = {"x"};
    ck_assert_int_eq(smelt_gguf_kvbuf_add_str_array(ctx, &kb, "a", s, 1), SMELT_E_ARG);
    ck_assert(kb.len == len && kb.count == 1); /* unchanged by the refusals */
    ck_assert(smelt_gguf_kvbuf_has(&kb, "a") && !smelt_gguf_kvbuf_has(&kb, "b"));
    /* Many keys: the buffers grow, every key stays findable. */
    char key[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "k.%d", i);
        ck_assert_int_eq(smelt_gguf_kvbuf_add_str(ctx, &kb, key, key, strlen(key)), SMELT_OK);
    }
    ck_assert(smelt_gguf_kvbuf_has(&kb, "k.999") && kb.count == 1001);
    smelt_gguf_kvbuf_free(&kb);
    ck_assert(kb.count == 0 && kb.len == 0 && !smelt_gguf_kvbuf_has(&kb, "a"));
    smelt_gguf_kvbuf_free(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gguf_write");
    TCase *tc = tcase_create("gguf_write");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_copy);
    tcase_add_test(tc, test_alignment);
    tcase_add_test(tc, test_empty);
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_key_refusals);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
