/* format/: the safetensors header rules (one test per rule, each checking its own message),
 * layout -> parse round trips, and opening models: directories, shards with an index, lone
 * files and hub ids in the Hugging Face cache. */
#include "format/safetensors.h"
#include "format/st_internal.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- in-memory headers ---- */

/* prefix (little-endian) + header + data_len zero bytes. */
static uint8_t *st_bytes_prefix(const char *header, size_t header_len, uint64_t prefix,
                                size_t data_len, size_t *len)
{
    *len = 8 + header_len + data_len;
    uint8_t *b = calloc(1, *len);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(prefix >> (8 * i));
    memcpy(b + 8, header, header_len);
    return b;
}

static uint8_t *st_bytes(const char *header, size_t data_len, size_t *len)
{
    return st_bytes_prefix(header, strlen(header), strlen(header), data_len, len);
}

typedef struct parsed {
    int rc;
    smelt_tensor_info *t;
    size_t n;
    uint64_t data_start;
    char *meta;
} parsed;

static parsed parse_raw(smelt_ctx *ctx, const uint8_t *b, size_t len)
{
    parsed p;
    p.rc = smelt_st_parse(ctx, "x.safetensors", b, len, len, &p.t, &p.n, &p.data_start, &p.meta);
    return p;
}

static void parsed_free(parsed *p)
{
    smelt_tensors_free(p->t, p->n);
    free(p->meta);
}

/* Parses header + data_len zero bytes; the status goes to the return value, message in ctx. */
static int parse_header(smelt_ctx *ctx, const char *header, size_t data_len)
{
    size_t len;
    uint8_t *b = st_bytes(header, data_len, &len);
    parsed p = parse_raw(ctx, b, len);
    if (p.rc != SMELT_OK) {
        ck_assert_ptr_null(p.t);
        ck_assert_uint_eq(p.n, 0);
    }
    parsed_free(&p);
    free(b);
    return p.rc;
}

#define EXPECT_FORMAT_ERROR(header, data_len, phrase)                                          \
    do {                                                                                       \
        smelt_ctx *ctx_ = smelt_ctx_new();                                                     \
        ck_assert_int_eq(parse_header(ctx_, (header), (data_len)), SMELT_E_FORMAT);            \
        ck_assert_msg(strstr(smelt_errmsg(ctx_), (phrase)) != NULL, "'%s' lacks '%s'",         \
                      smelt_errmsg(ctx_), (phrase));                                           \
        ck_assert_msg(strstr(smelt_errmsg(ctx_), "x.safetensors") != NULL, "no file name");    \
        smelt_ctx_free(ctx_);                                                                  \
    } while (0)

#define W "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

START_TEST(rule_short_file)
{
    smelt_ctx *ctx = smelt_ctx_new();
    const uint8_t five[5] = {5};
    parsed p = parse_raw(ctx, five, 5);
    ck_assert_int_eq(p.rc, SMELT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "shorter than the 8-byte header length"));
    p = parse_raw(ctx, five, 0);
    ck_assert_int_eq(p.rc, SMELT_E_FORMAT);
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(rule_header_too_large)
{
    smelt_ctx *ctx = smelt_ctx_new();
    size_t len;
    uint8_t *b = st_bytes_prefix("{}", 2, 100000001ull, 0, &len);
    parsed p = parse_raw(ctx, b, len);
    ck_assert_int_eq(p.rc, SMELT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "larger than the limit of 100000000 bytes"));
    free(b);
    b = st_bytes_prefix("{}", 2, UINT64_MAX, 0, &len); /* 8 + N must not wrap around */
    p = parse_raw(ctx, b, len);
    ck_assert_int_eq(p.rc, SMELT_E_FORMAT);
    free(b);
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(rule_header_past_eof)
{
    smelt_ctx *ctx = smelt_ctx_new();
    size_t len;
    uint8_t *b = st_bytes_prefix("{}", 2, 1000, 0, &len);
    parsed p = parse_raw(ctx, b, len);
    ck_assert_int_eq(p.rc, SMELT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "runs past the end of the file"));
    free(b);
    /* Exactly at the end is fine: an empty header object needs no data. */
    b = st_bytes_prefix("{}", 2, 2, 0, &len);
    p = parse_raw(ctx, b, len);
    ck_assert_int_eq(p.rc, SMELT_OK);
    parsed_free(&p);
    free(b);
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(rule_not_utf8)
{
    EXPECT_FORMAT_ERROR("{\"w\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                        8, "is not valid UTF-8");
    EXPECT_FORMAT_ERROR("{\"\xc0\xaf\":1}", 0, "is not valid UTF-8");     /* overlong '/' */
    EXPECT_FORMAT_ERROR("{\"\xed\xa0\x80\":1}", 0, "is not valid UTF-8"); /* surrogate */
    EXPECT_FORMAT_ERROR("{\"\xf4\x90\x80\x80\":1}", 0, "is not valid UTF-8"); /* > U+10FFFF */
    EXPECT_FORMAT_ERROR("{\"\xe2\x82", 0, "is not valid UTF-8"); /* cut short */
    const uint8_t ok[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z";
    ck_assert_uint_eq(smelt_utf8_check(ok, sizeof ok - 1), sizeof ok - 1);
    const uint8_t bad[] = "ab\x80";
    ck_assert_uint_eq(smelt_utf8_check(bad, 3), 2);
}
END_TEST

START_TEST(rule_not_json)
{
    EXPECT_FORMAT_ERROR("{\"w\": {\"dtype\": ", 8, "is not valid JSON");
    EXPECT_FORMAT_ERROR("", 0, "is not valid JSON");
    EXPECT_FORMAT_ERROR("{} {}", 0, "is not valid JSON");
    /* NUL is not JSON whitespace. */
    smelt_ctx *ctx = smelt_ctx_new();
    size_t len;
    uint8_t *b = st_bytes_prefix("{}\0\0", 4, 4, 0, &len);
    ck_assert_int_eq(parse_raw(ctx, b, len).rc, SMELT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "is not valid JSON"));
    free(b);
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(rule_top_level_object)
{
    EXPECT_FORMAT_ERROR("[1, 2, 3]", 0, "the top level must be a JSON object");
    EXPECT_FORMAT_ERROR("5", 0, "the top level must be a JSON object");
    EXPECT_FORMAT_ERROR("\"w\"", 0, "the top level must be a JSON object");
}
END_TEST

START_TEST(rule_duplicate_key)
{
    EXPECT_FORMAT_ERROR("{" W "," W "}", 8, "duplicate key");
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],"
                        "\"data_offsets\":[0,8]}}", 8, "duplicate key");
    EXPECT_FORMAT_ERROR("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0, "duplicate key");
}
END_TEST

START_TEST(rule_metadata_strings)
{
    EXPECT_FORMAT_ERROR("{\"__metadata__\":{\"format\":1}," W "}", 8,
                        "metadata values must be strings");
    EXPECT_FORMAT_ERROR("{\"__metadata__\":{\"format\":null}}", 0,
                        "metadata values must be strings");
    EXPECT_FORMAT_ERROR("{\"__metadata__\":\"pt\"}", 0, "it must be an object of string values");
    EXPECT_FORMAT_ERROR("{\"__metadata__\":[]}", 0, "it must be an object of string values");
}
END_TEST

START_TEST(rule_metadata_reserved)
{
    EXPECT_FORMAT_ERROR(
        "{\"__metadata__\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
        "'__metadata__' is reserved");
}
END_TEST

START_TEST(rule_unknown_dtype)
{
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"F12\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                        "tensor 'w': unknown dtype 'F12'");
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                        "unknown dtype 'f32'");
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                        "dtype is an integer, not a string");
}
END_TEST

START_TEST(rule_shape)
{
    static const char *const shapes[] = {"[-2]", "[1.5]", "\"2\"", "[null]", "[[2]]", "{}",
                                         "[true]", "2"};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        char h[256];
        snprintf(h, sizeof h, "{\"w\":{\"dtype\":\"F32\",\"shape\":%s,\"data_offsets\":[0,8]}}",
                 shapes[i]);
        EXPECT_FORMAT_ERROR(h, 8, "dimensions must be non-negative integers");
    }
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                        "\"data_offsets\":[0,1]}}", 1, "shape has 9 dimensions; smelt supports at "
                                                       "most 8");
    smelt_ctx *ctx = smelt_ctx_new();
    ck_assert_int_eq(parse_header(ctx, "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1],"
                                       "\"data_offsets\":[0,1]}}", 1), SMELT_OK);
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(rule_data_offsets)
{
    static const char *const offs[] = {"[8]", "[0,8,9]", "[-1,8]", "[0,8.0]", "\"0,8\"", "[]",
                                       "{\"0\":8}", "[0,null]"};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        char h[256];
        snprintf(h, sizeof h, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":%s}}",
                 offs[i]);
        EXPECT_FORMAT_ERROR(h, 8, "exactly 2 non-negative integers");
    }
}
END_TEST

START_TEST(rule_unknown_key)
{
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"foo\":1}}",
                        8, "tensor 'w': unknown key 'foo'");
}
END_TEST

START_TEST(rule_missing_key)
{
    EXPECT_FORMAT_ERROR("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                        "tensor 'w': the entry is missing 'dtype'");
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8,
                        "is missing 'shape'");
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8,
                        "is missing 'data_offsets'");
    EXPECT_FORMAT_ERROR("{\"w\":[1,2]}", 8, "the entry is a list; it must be an object");
}
END_TEST

START_TEST(rule_end_before_begin)
{
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
                        "data_offsets [8, 0] end before they begin");
}
END_TEST

START_TEST(rule_element_count_overflow)
{
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
                        "\"data_offsets\":[0,8]}}", 8, "element count overflow");
    /* The element count fits; the byte count does not. */
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"F64\",\"shape\":[1152921504606846976],"
                        "\"data_offsets\":[0,8]}}", 8, "element count overflow");
    /* A zero dimension makes any product empty, whatever follows. */
    smelt_ctx *ctx = smelt_ctx_new();
    ck_assert_int_eq(parse_header(ctx, "{\"w\":{\"dtype\":\"F32\",\"shape\":[0,4294967296,"
                                       "4294967296,16],\"data_offsets\":[0,0]}}", 0), SMELT_OK);
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(rule_size_mismatch)
{
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                        "data_offsets [0, 8] span 8 bytes but shape [3] of F32 needs 12");
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,4]}}", 4,
                        "span 4 bytes but shape [] of BF16 needs 2");
}
END_TEST

START_TEST(rule_sub_byte)
{
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2,
                        "not a whole number of bytes");
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"F6_E2M3\",\"shape\":[2,1],\"data_offsets\":[0,2]}}",
                        2, "not a whole number of bytes");
    smelt_ctx *ctx = smelt_ctx_new();
    ck_assert_int_eq(parse_header(ctx, "{\"a\":{\"dtype\":\"F4\",\"shape\":[2,2],"
                                       "\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"F6_E3M2\","
                                       "\"shape\":[4],\"data_offsets\":[2,5]}}", 5), SMELT_OK);
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(rule_tiling)
{
    EXPECT_FORMAT_ERROR("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                        "tensor 'w': data_offsets [4, 12] leave a hole");
    EXPECT_FORMAT_ERROR("{" W ",\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                        20, "tensor 'v': data_offsets [12, 20] leave a hole");
    EXPECT_FORMAT_ERROR("{" W ",\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                        12, "tensor 'v': data_offsets [4, 12] overlap the previous tensor 'w'");
    /* Two tensors over the same bytes overlap too. */
    EXPECT_FORMAT_ERROR("{" W ",\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                        8, "overlap the previous tensor");
    /* An empty tensor inside another one. */
    EXPECT_FORMAT_ERROR("{" W ",\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
                        8, "tensor 'e': data_offsets [4, 4] overlap the previous tensor 'w'");
}
END_TEST

START_TEST(rule_data_past_eof)
{
    EXPECT_FORMAT_ERROR("{" W "}", 4, "tensor 'w': data_offsets [0, 8] run past the end of the file");
    EXPECT_FORMAT_ERROR("{" W "}", 0, "run past the end of the file");
}
END_TEST

START_TEST(rule_trailing_bytes)
{
    EXPECT_FORMAT_ERROR("{" W "}", 12, "4 bytes after the end of the last tensor");
    EXPECT_FORMAT_ERROR("{}", 1, "1 bytes after the end of the last tensor");
}
END_TEST

/* Every rule of make_bad_st (tests/tools) yields a message of its own. */
START_TEST(rules_have_distinct_messages)
{
    static const struct { const char *header; size_t data; const char *phrase; } cases[] = {
        {"{\"w\xff\":1}", 0, "is not valid UTF-8"},
        {"{\"w\": {\"dtype\": ", 8, "is not valid JSON"},
        {"[1, 2, 3]", 0, "the top level must be a JSON object"},
        {"{" W "," W "}", 8, "duplicate key"},
        {"{\"__metadata__\":{\"format\":1}," W "}", 8, "metadata values must be strings"},
        {"{\"__metadata__\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
         "'__metadata__' is reserved"},
        {"{\"w\":{\"dtype\":\"F12\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
         "dimensions must be non-negative integers"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8,
         "exactly 2 non-negative integers"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"foo\":1}}", 8,
         "unknown key 'foo'"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
         "end before they begin"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,8]}}",
         8, "element count overflow"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
         "span 8 bytes but shape"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "leave a hole"},
        {"{" W ",\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
         "overlap the previous tensor"},
        {"{" W "}", 4, "run past the end of the file"},
        {"{" W "}", 12, "bytes after the end of the last tensor"},
    };
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++) {
        smelt_ctx *ctx = smelt_ctx_new();
        ck_assert_int_eq(parse_header(ctx, cases[i].header, cases[i].data), SMELT_E_FORMAT);
        for (size_t j = 0; j < n; j++)
            ck_assert_msg((strstr(smelt_errmsg(ctx), cases[j].phrase) != NULL) == (i == j),
                          "case %zu: '%s' vs phrase '%s'", i, smelt_errmsg(ctx), cases[j].phrase);
        smelt_ctx_free(ctx);
    }
}
END_TEST

START_TEST(allowed_headers)
{
    smelt_ctx *ctx = smelt_ctx_new();
    size_t len;
    /* Whitespace around the JSON, empty tensors at shared offsets, a scalar, metadata. */
    const char *h = "  \n{\"__metadata__\":{\"format\":\"pt\", \"b\":\"x\"},"
                    "\"z_empty\":{\"dtype\":\"BF16\",\"shape\":[0,8],\"data_offsets\":[8,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]},"
                    "\"a_empty\":{\"dtype\":\"I64\",\"shape\":[4,0],\"data_offsets\":[8,8]},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}   \t\r\n";
    uint8_t *b = st_bytes(h, 12, &len);
    parsed p = parse_raw(ctx, b, len);
    ck_assert_msg(p.rc == SMELT_OK, "%s", smelt_errmsg(ctx));
    ck_assert_uint_eq(p.n, 4);
    uint64_t ds = 8 + strlen(h);
    ck_assert_uint_eq(p.data_start, ds);
    /* Data order; empty tensors at the same offset by name, before the tensor starting there. */
    static const char *const order[] = {"a", "a_empty", "z_empty", "b"};
    static const uint64_t offs[] = {0, 8, 8, 8}, nbytes[] = {8, 0, 0, 4}, numel[] = {2, 0, 0, 1};
    for (size_t i = 0; i < 4; i++) {
        ck_assert_str_eq(p.t[i].name, order[i]);
        ck_assert_uint_eq(p.t[i].offset, ds + offs[i]);
        ck_assert_uint_eq(p.t[i].nbytes, nbytes[i]);
        ck_assert_uint_eq(p.t[i].numel, numel[i]);
        ck_assert_uint_eq(p.t[i].file, 0);
    }
    ck_assert_uint_eq(p.t[3].ndim, 0);
    ck_assert_int_eq(p.t[1].dtype, SMELT_DT_I64);
    ck_assert_uint_eq(p.t[1].ndim, 2);
    ck_assert_uint_eq(p.t[1].shape[0], 4);
    ck_assert_str_eq(p.meta, "{\"format\":\"pt\",\"b\":\"x\"}");
    parsed_free(&p);
    free(b);

    /* An empty header with an empty buffer; no metadata. */
    b = st_bytes("{}", 0, &len);
    p = parse_raw(ctx, b, len);
    ck_assert_int_eq(p.rc, SMELT_OK);
    ck_assert_uint_eq(p.n, 0);
    ck_assert_ptr_null(p.meta);
    ck_assert_uint_eq(p.data_start, 10);
    parsed_free(&p);
    free(b);

    /* Only empty tensors: the buffer is empty. */
    ck_assert_int_eq(parse_header(ctx, "{\"e\":{\"dtype\":\"F16\",\"shape\":[0],"
                                       "\"data_offsets\":[0,0]}}", 0), SMELT_OK);
    /* A metadata pointer is optional. */
    b = st_bytes("{\"__metadata__\":{}}", 0, &len);
    smelt_tensor_info *t;
    size_t n;
    uint64_t ds2;
    ck_assert_int_eq(smelt_st_parse(ctx, "x", b, len, len, &t, &n, &ds2, NULL), SMELT_OK);
    smelt_tensors_free(t, n);
    smelt_tensors_free(NULL, 0);
    free(b);
    smelt_ctx_free(ctx);
}
END_TEST

/* Hostile bytes: every truncation and many corruptions of a valid file parse or fail cleanly
 * (run under ASan to mean anything). */
START_TEST(hostile_bytes_never_crash)
{
    smelt_ctx *ctx = smelt_ctx_new();
    size_t len;
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],"
                    "\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F4\",\"shape\":[4],"
                    "\"data_offsets\":[16,18]}}";
    uint8_t *good = st_bytes(h, 18, &len);
    for (size_t cut = 0; cut <= len; cut++) {
        uint8_t *copy = malloc(cut + 1); /* exact size: ASan catches any read past it */
        memcpy(copy, good, cut);
        parsed p = parse_raw(ctx, copy, cut);
        ck_assert_int_eq(p.rc, cut == len ? SMELT_OK : SMELT_E_FORMAT);
        parsed_free(&p);
        free(copy);
    }
    uint64_t seed = 12345;
    for (int round = 0; round < 3000; round++) {
        uint8_t *copy = malloc(len);
        memcpy(copy, good, len);
        for (int k = 0; k < 1 + round % 4; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(seed >> 33) % (8 + strlen(h));
            copy[at] = (uint8_t)(seed >> 13);
        }
        parsed p = parse_raw(ctx, copy, len);
        ck_assert(p.rc == SMELT_OK || p.rc == SMELT_E_FORMAT);
        parsed_free(&p);
        free(copy);
    }
    free(good);
    smelt_ctx_free(ctx);
}
END_TEST

/* ---- layout ---- */

START_TEST(layout_round_trip)
{
    smelt_ctx *ctx = smelt_ctx_new();
    static const uint64_t s_mat[] = {3, 5}, s_vec[] = {7}, s_empty[] = {0, 8}, s_f4[] = {6},
                          s_big[] = {2, 3, 1, 1, 1, 1, 1, 2};
    const smelt_st_out_tensor in[] = {
        {"u8", SMELT_DT_U8, 1, s_vec, 7},
        {"quote\"back\\slash", SMELT_DT_BF16, 2, s_mat, 30},
        {"scalar", SMELT_DT_F32, 0, NULL, 4},
        {"unicode.\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", SMELT_DT_I64, 1, s_vec, 56},
        {"empty", SMELT_DT_BF16, 2, s_empty, 0},
        {"ctl\n\t\x01", SMELT_DT_F16, 1, s_vec, 14},
        {"f4", SMELT_DT_F4, 1, s_f4, 3},
        {"f64.8d", SMELT_DT_F64, 8, s_big, 96},
        {"", SMELT_DT_F32, 2, s_mat, 60},
    };
    size_t n = sizeof in / sizeof in[0];
    uint8_t *header;
    size_t header_len;
    uint64_t offsets[16], file_size;
    ck_assert_msg(smelt_st_layout(ctx, in, n, &header, &header_len, offsets, &file_size) ==
                  SMELT_OK, "%s", smelt_errmsg(ctx));
    ck_assert_uint_eq(header_len % 8, 0);
    ck_assert_int_eq(header[8], '{');
    ck_assert(header[header_len - 1] == ' ' || header[header_len - 1] == '}');
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned size = smelt_dtype_size(in[i].dtype);
        ck_assert_uint_eq(offsets[i] % (size ? size : 1), 0);
        ck_assert_uint_ge(offsets[i], header_len);
        total += in[i].nbytes;
    }
    ck_assert_uint_eq(file_size, header_len + total);
    /* Alignment descending, stable: I64 and F64 first in input order, then F32 ... */
    ck_assert_uint_eq(offsets[3], header_len);
    ck_assert_uint_eq(offsets[7], header_len + 56);
    ck_assert_uint_eq(offsets[2], header_len + 56 + 96);
    ck_assert_uint_eq(offsets[8], header_len + 56 + 96 + 4);

    uint8_t *file = calloc(1, file_size);
    memcpy(file, header, header_len);
    parsed p = parse_raw(ctx, file, file_size);
    ck_assert_msg(p.rc == SMELT_OK, "%s", smelt_errmsg(ctx));
    ck_assert_uint_eq(p.n, n);
    ck_assert_uint_eq(p.data_start, header_len);
    ck_assert_str_eq(p.meta, "{\"format\":\"pt\"}");
    for (size_t i = 0; i < n; i++) {
        const smelt_tensor_info *t = NULL;
        for (size_t j = 0; j < p.n; j++)
            if (strcmp(p.t[j].name, in[i].name) == 0)
                t = &p.t[j];
        ck_assert_msg(t != NULL, "lost '%s'", in[i].name);
        ck_assert_int_eq(t->dtype, in[i].dtype);
        ck_assert_uint_eq(t->ndim, in[i].ndim);
        for (uint32_t d = 0; d < t->ndim; d++)
            ck_assert_uint_eq(t->shape[d], in[i].shape[d]);
        ck_assert_uint_eq(t->nbytes, in[i].nbytes);
        ck_assert_uint_eq(t->offset, offsets[i]);
    }
    parsed_free(&p);
    free(file);
    free(header);

    /* No tensors at all is a valid (empty) file. */
    ck_assert_int_eq(smelt_st_layout(ctx, NULL, 0, &header, &header_len, offsets, &file_size),
                     SMELT_OK);
    ck_assert_uint_eq(file_size, header_len);
    p = parse_raw(ctx, header, header_len);
    ck_assert_int_eq(p.rc, SMELT_OK);
    ck_assert_uint_eq(p.n, 0);
    parsed_free(&p);
    free(header);
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(layout_refuses_bad_input)
{
    smelt_ctx *ctx = smelt_ctx_new();
    static const uint64_t s2[] = {2};
    uint8_t *header = NULL;
    size_t header_len;
    uint64_t offsets[4], file_size;
    const smelt_st_out_tensor dup[] = {{"a", SMELT_DT_F32, 1, s2, 8}, {"a", SMELT_DT_F16, 1, s2, 4}};
    ck_assert_int_eq(smelt_st_layout(ctx, dup, 2, &header, &header_len, offsets, &file_size),
                     SMELT_E_ARG);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "'a' appears twice"));
    const smelt_st_out_tensor reserved[] = {{"__metadata__", SMELT_DT_F32, 1, s2, 8}};
    ck_assert_int_eq(smelt_st_layout(ctx, reserved, 1, &header, &header_len, offsets, &file_size),
                     SMELT_E_ARG);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "reserved"));
    const smelt_st_out_tensor wrong[] = {{"w", SMELT_DT_F32, 1, s2, 7}};
    ck_assert_int_eq(smelt_st_layout(ctx, wrong, 1, &header, &header_len, offsets, &file_size),
                     SMELT_E_ARG);
    const smelt_st_out_tensor badname[] = {{"w\xff", SMELT_DT_F32, 1, s2, 8}};
    ck_assert_int_eq(smelt_st_layout(ctx, badname, 1, &header, &header_len, offsets, &file_size),
                     SMELT_E_ARG);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "UTF-8"));
    ck_assert_ptr_null(header);
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(shard_names)
{
    char buf[40];
    smelt_shard_name(buf, sizeof buf, 0, 1);
    ck_assert_str_eq(buf, "model.safetensors");
    smelt_shard_name(buf, sizeof buf, 0, 3);
    ck_assert_str_eq(buf, "model-00001-of-00003.safetensors");
    smelt_shard_name(buf, sizeof buf, 2, 3);
    ck_assert_str_eq(buf, "model-00003-of-00003.safetensors");
}
END_TEST

/* ---- models ---- */

typedef struct spec {
    const char *name;
    smelt_dtype dtype;
    uint64_t len;
} spec;

/* Writes a safetensors file of 1-d tensors (data byte k of tensor i = i + k). */
static void write_st(const char *path, const spec *s, size_t n)
{
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_st_out_tensor *d = calloc(n + 1, sizeof *d);
    uint64_t *offsets = calloc(n + 1, sizeof *offsets), file_size;
    for (size_t i = 0; i < n; i++)
        d[i] = (smelt_st_out_tensor){s[i].name, s[i].dtype, 1, &s[i].len,
                                     s[i].len * smelt_dtype_size(s[i].dtype)};
    uint8_t *header;
    size_t header_len;
    ck_assert_msg(smelt_st_layout(ctx, d, n, &header, &header_len, offsets, &file_size) ==
                  SMELT_OK, "%s", smelt_errmsg(ctx));
    uint8_t *file = calloc(1, file_size);
    memcpy(file, header, header_len);
    for (size_t i = 0; i < n; i++)
        for (uint64_t k = 0; k < d[i].nbytes; k++)
            file[offsets[i] + k] = (uint8_t)(i + k);
    tu_write_file(path, file, file_size);
    free(file);
    free(header);
    free(offsets);
    free(d);
    smelt_ctx_free(ctx);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char *path = tu_path(dir, name);
    tu_write_file(path, text, strlen(text));
    free(path);
}

static char *subdir(const char *root, const char *name)
{
    char *dir = tu_path(root, name);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    return dir;
}

static const spec shard1[] = {{"a", SMELT_DT_F32, 4}, {"b", SMELT_DT_BF16, 6}};
static const spec shard2[] = {{"c", SMELT_DT_F16, 2}, {"d", SMELT_DT_I64, 0}};
#define S1 "model-00001-of-00002.safetensors"
#define S2 "model-00002-of-00002.safetensors"

/* A sharded model directory whose index is `index` (NULL: the correct one). */
static char *sharded_dir(const char *root, const char *name, const char *index)
{
    char *dir = subdir(root, name);
    char *p1 = tu_path(dir, S1), *p2 = tu_path(dir, S2);
    write_st(p1, shard1, 2);
    write_st(p2, shard2, 2);
    free(p1);
    free(p2);
    write_text(dir, "model.safetensors.index.json",
               index ? index
                     : "{\"metadata\": {\"total_size\": 32},\n \"weight_map\": {\"a\": \"" S1
                       "\", \"b\": \"" S1 "\", \"c\": \"" S2 "\", \"d\": \"" S2 "\"}}");
    return dir;
}

#define EXPECT_OPEN_ERROR(ref, status, phrase)                                                 \
    do {                                                                                       \
        smelt_ctx *ctx_ = smelt_ctx_new();                                                     \
        smelt_model *m_ = (smelt_model *)1;                                                    \
        ck_assert_int_eq(smelt_model_open(ctx_, (ref), &m_), (status));                        \
        ck_assert_ptr_null(m_);                                                                \
        ck_assert_msg(strstr(smelt_errmsg(ctx_), (phrase)) != NULL, "'%s' lacks '%s'",         \
                      smelt_errmsg(ctx_), (phrase));                                           \
        smelt_ctx_free(ctx_);                                                                  \
    } while (0)

START_TEST(model_single_file_dir)
{
    char *root = tu_tmpdir(), *dir = subdir(root, "m");
    char *path = tu_path(dir, "model.safetensors");
    write_st(path, shard1, 2);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_model *m;
    ck_assert_msg(smelt_model_open(ctx, dir, &m) == SMELT_OK, "%s", smelt_errmsg(ctx));
    ck_assert_str_eq(m->ref, dir);
    ck_assert_str_eq(m->dir, dir);
    ck_assert_uint_eq(m->nfiles, 1);
    ck_assert_str_eq(m->files[0].path, path);
    ck_assert_int_ge(m->files[0].fd, 0);
    ck_assert_uint_eq(m->ntensors, 2);
    ck_assert_str_eq(m->metadata_json, "{\"format\":\"pt\"}");
    const smelt_tensor_info *b = smelt_model_find(m, "b");
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(b->dtype, SMELT_DT_BF16);
    uint8_t byte;
    ck_assert_int_eq(pread(m->files[0].fd, &byte, 1, (off_t)b->offset + 3), 1);
    ck_assert_int_eq(byte, 1 + 3);
    ck_assert_ptr_null(smelt_model_find(m, "z"));
    smelt_model_close(m);
    smelt_model_close(NULL);
    smelt_ctx_free(ctx);
    free(path);
    free(dir);
    free(root);
}
END_TEST

START_TEST(model_sharded)
{
    char *root = tu_tmpdir(), *dir = sharded_dir(root, "m", NULL);
    /* A stray model.safetensors beside an index is ignored. */
    char *stray = tu_path(dir, "model.safetensors");
    write_st(stray, shard2, 1);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_model *m;
    ck_assert_msg(smelt_model_open(ctx, dir, &m) == SMELT_OK, "%s", smelt_errmsg(ctx));
    ck_assert_uint_eq(m->nfiles, 2);
    ck_assert_ptr_nonnull(strstr(m->files[0].path, S1));
    ck_assert_ptr_nonnull(strstr(m->files[1].path, S2));
    ck_assert_uint_eq(m->ntensors, 4);
    for (size_t i = 1; i < m->ntensors; i++) {
        const smelt_tensor_info *a = &m->tensors[i - 1], *b = &m->tensors[i];
        ck_assert(a->file < b->file || (a->file == b->file && a->offset <= b->offset));
    }
    ck_assert_uint_eq(smelt_model_find(m, "a")->file, 0);
    ck_assert_uint_eq(smelt_model_find(m, "d")->file, 1);
    ck_assert_uint_eq(smelt_model_find(m, "d")->nbytes, 0);
    ck_assert_str_eq(m->metadata_json, "{\"format\":\"pt\"}");
    smelt_model_close(m);
    smelt_ctx_free(ctx);
    free(stray);
    free(dir);
    free(root);
}
END_TEST

START_TEST(model_index_errors)
{
    char *root = tu_tmpdir();
    static const struct { const char *index; int status; const char *phrase; } cases[] = {
        /* a shard the index names is missing */
        {"{\"weight_map\":{\"a\":\"" S1 "\",\"b\":\"" S1 "\",\"c\":\"" S2 "\",\"d\":\"" S2 "\","
         "\"e\":\"model-00003-of-00003.safetensors\"}}", SMELT_E_IO,
         "shard 'model-00003-of-00003.safetensors' does not exist (the index assigns tensor 'e'"},
        /* a tensor in the wrong shard */
        {"{\"weight_map\":{\"a\":\"" S2 "\",\"b\":\"" S1 "\",\"c\":\"" S2 "\",\"d\":\"" S2 "\"}}",
         SMELT_E_FORMAT, "shard '" S1 "' holds tensor 'a', but the index assigns it to '" S2 "'"},
        /* a tensor of a shard the index does not list */
        {"{\"weight_map\":{\"a\":\"" S1 "\",\"c\":\"" S2 "\",\"d\":\"" S2 "\"}}", SMELT_E_FORMAT,
         "shard '" S1 "' holds tensor 'b', which the index does not list"},
        /* the index lists a tensor its shard does not hold */
        {"{\"weight_map\":{\"a\":\"" S1 "\",\"b\":\"" S1 "\",\"c\":\"" S2 "\",\"d\":\"" S2 "\","
         "\"x\":\"" S2 "\"}}", SMELT_E_FORMAT,
         "assigns tensor 'x' to shard '" S2 "', which does not hold it"},
        {"{\"metadata\":{\"total_size\":\"32\"},\"weight_map\":{\"a\":\"" S1 "\",\"b\":\"" S1
         "\",\"c\":\"" S2 "\",\"d\":\"" S2 "\"}}",
         SMELT_E_FORMAT, "total_size must be a non-negative integer"},
        {"{\"weight_map\":{\"a\":\"../m/" S1 "\"}}", SMELT_E_FORMAT,
         "a shard must be a plain file name"},
        {"{\"weight_map\":{\"a\":\"..\"}}", SMELT_E_FORMAT, "a shard must be a plain file name"},
        {"{\"weight_map\":{\"a\":\"/etc/passwd\"}}", SMELT_E_FORMAT, "no '/' or '..'"},
        {"{\"weight_map\":{\"a\":1}}", SMELT_E_FORMAT, "tensor 'a' maps to a non-string"},
        {"{\"metadata\":{}}", SMELT_E_FORMAT, "there is no 'weight_map'"},
        {"{\"weight_map\":[]}", SMELT_E_FORMAT, "'weight_map' is not an object"},
        {"{\"weight_map\":{}}", SMELT_E_FORMAT, "'weight_map' lists no tensors"},
        {"[]", SMELT_E_FORMAT, "the top level must be a JSON object"},
        {"{\"weight_map\":{\"a\":\"" S1 "\",\"a\":\"" S1 "\"}}", SMELT_E_FORMAT, "duplicate"},
        {"{\"weight_map\":", SMELT_E_FORMAT, "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[16];
        snprintf(name, sizeof name, "m%zu", i);
        char *dir = sharded_dir(root, name, cases[i].index);
        EXPECT_OPEN_ERROR(dir, cases[i].status, cases[i].phrase);
        EXPECT_OPEN_ERROR(dir, cases[i].status, "model.safetensors.index.json");
        free(dir);
    }
    /* A float total_size that is an exact integer is accepted. */
    char *dir = sharded_dir(root, "float", "{\"metadata\":{\"total_size\":3.2e1},\"weight_map\":{"
                                           "\"a\":\"" S1 "\",\"b\":\"" S1 "\",\"c\":\"" S2 "\","
                                           "\"d\":\"" S2 "\"}}");
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_model *m;
    ck_assert_msg(smelt_model_open(ctx, dir, &m) == SMELT_OK, "%s", smelt_errmsg(ctx));
    smelt_model_close(m);
    free(dir);
    /* A stale total_size is a notice, not a refusal: the shards themselves are checked. */
    dir = sharded_dir(root, "stale", "{\"metadata\":{\"total_size\":33},\"weight_map\":{"
                                     "\"a\":\"" S1 "\",\"b\":\"" S1 "\",\"c\":\"" S2 "\","
                                     "\"d\":\"" S2 "\"}}");
    ck_assert_msg(smelt_model_open(ctx, dir, &m) == SMELT_OK, "%s", smelt_errmsg(ctx));
    smelt_model_close(m);
    free(dir);
    /* A tensor in two shards. */
    dir = sharded_dir(root, "twice", "{\"weight_map\":{\"a\":\"" S1 "\",\"b\":\"" S1 "\","
                                     "\"c\":\"" S2 "\",\"d\":\"" S2 "\"}}");
    char *p2 = tu_path(dir, S2);
    static const spec with_a[] = {{"c", SMELT_DT_F16, 2}, {"d", SMELT_DT_I64, 0},
                                  {"a", SMELT_DT_F32, 4}};
    write_st(p2, with_a, 3);
    EXPECT_OPEN_ERROR(dir, SMELT_E_FORMAT, "tensor 'a' is in two files");
    /* A truncated shard. */
    free(dir);
    free(p2);
    dir = sharded_dir(root, "trunc", NULL);
    p2 = tu_path(dir, S2);
    struct stat st;
    ck_assert_int_eq(stat(p2, &st), 0);
    ck_assert_int_eq(truncate(p2, st.st_size - 1), 0);
    EXPECT_OPEN_ERROR(dir, SMELT_E_FORMAT, "run past the end of the file");
    EXPECT_OPEN_ERROR(dir, SMELT_E_FORMAT, S2);
    ck_assert_int_eq(truncate(p2, 5), 0);
    EXPECT_OPEN_ERROR(dir, SMELT_E_FORMAT, "shorter than the 8-byte header length");
    free(p2);
    free(dir);
    smelt_ctx_free(ctx);
    free(root);
}
END_TEST

START_TEST(model_lone_file)
{
    char *root = tu_tmpdir(), *dir = sharded_dir(root, "m", NULL);
    char *p1 = tu_path(dir, S1);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_model *m;
    ck_assert_msg(smelt_model_open(ctx, p1, &m) == SMELT_OK, "%s", smelt_errmsg(ctx));
    ck_assert_ptr_null(m->dir);
    ck_assert_uint_eq(m->nfiles, 1);
    ck_assert_uint_eq(m->ntensors, 2);
    ck_assert_ptr_null(smelt_model_find(m, "c"));
    smelt_model_close(m);
    write_text(dir, "config.json", "{}");
    ck_assert_msg(smelt_model_open(ctx, p1, &m) == SMELT_OK, "%s", smelt_errmsg(ctx));
    ck_assert_ptr_nonnull(m->dir);
    char *cfg = tu_path(m->dir, "config.json");
    ck_assert_int_eq(access(cfg, F_OK), 0);
    free(cfg);
    smelt_model_close(m);
    smelt_ctx_free(ctx);
    free(p1);
    free(dir);
    free(root);
}
END_TEST

START_TEST(model_missing)
{
    char *root = tu_tmpdir();
    char *nowhere = tu_path(root, "nowhere");
    EXPECT_OPEN_ERROR(nowhere, SMELT_E_IO, "no such file or directory");
    EXPECT_OPEN_ERROR(nowhere, SMELT_E_IO, nowhere);
    EXPECT_OPEN_ERROR("", SMELT_E_ARG, "empty");
    char *empty = subdir(root, "empty");
    EXPECT_OPEN_ERROR(empty, SMELT_E_IO, "neither model.safetensors.index.json nor "
                                         "model.safetensors is in this directory");
    char *torch = subdir(root, "torch");
    write_text(torch, "pytorch_model.bin", "\x80\x02junk");
    EXPECT_OPEN_ERROR(torch, SMELT_E_UNSUPPORTED, "smelt reads safetensors and GGUF only");
    char *bin = tu_path(torch, "pytorch_model.bin");
    write_text(torch, "pytorch_model.bin", "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20junk");
    EXPECT_OPEN_ERROR(bin, SMELT_E_UNSUPPORTED, "smelt reads safetensors and GGUF only");
    char *gguf = tu_path(torch, "m.gguf");
    tu_write_file(gguf, "GGUF\x03\0\0\0\x05\0\0\0\0\0\0\0", 16);
    /* A GGUF file is a model reference; this one is cut short. */
    EXPECT_OPEN_ERROR(gguf, SMELT_E_FORMAT, "m.gguf");
    char *only_shard = subdir(root, "noindex");
    char *p = tu_path(only_shard, S1);
    write_st(p, shard1, 2);
    EXPECT_OPEN_ERROR(only_shard, SMELT_E_IO, S1);
    free(p);
    free(only_shard);
    free(gguf);
    free(bin);
    free(torch);
    free(empty);
    free(nowhere);
    free(root);
}
END_TEST

/* A Hugging Face cache under `hub`: models--acme--tiny with refs/main -> commit, a tag, and the
 * snapshot's files as symlinks into blobs. */
static void make_hub(const char *hub)
{
    char *repo = tu_path(hub, "models--acme--tiny");
    char *blobs = tu_path(repo, "blobs"), *snaps = tu_path(repo, "snapshots"),
         *refs = tu_path(repo, "refs");
    char *snap = tu_path(snaps, "0123abcd");
    ck_assert_int_eq(mkdir(hub, 0755), 0);
    ck_assert_int_eq(mkdir(repo, 0755), 0);
    ck_assert_int_eq(mkdir(blobs, 0755), 0);
    ck_assert_int_eq(mkdir(snaps, 0755), 0);
    ck_assert_int_eq(mkdir(refs, 0755), 0);
    ck_assert_int_eq(mkdir(snap, 0755), 0);
    char *blob = tu_path(blobs, "9f86d081884c7d659a2feaa0c55ad015");
    write_st(blob, shard1, 2);
    char *link = tu_path(snap, "model.safetensors");
    ck_assert_int_eq(symlink("../../blobs/9f86d081884c7d659a2feaa0c55ad015", link), 0);
    write_text(refs, "main", "0123abcd\n");
    write_text(refs, "v1", "0123abcd");
    free(link);
    free(blob);
    free(snap);
    free(refs);
    free(snaps);
    free(blobs);
    free(repo);
}

START_TEST(model_hub_cache)
{
    char *root = tu_tmpdir();
    char *home = tu_path(root, "hf"), *hub = tu_path(home, "hub");
    ck_assert_int_eq(mkdir(home, 0755), 0);
    make_hub(hub);
    unsetenv("HF_HUB_CACHE");
    setenv("HF_HOME", home, 1);
    ck_assert_int_eq(chdir(root), 0); /* "acme/tiny" must not exist as a local path */
    smelt_ctx *ctx = smelt_ctx_new();
    static const char *const refs[] = {"acme/tiny", "acme/tiny@0123abcd", "acme/tiny@v1"};
    for (size_t i = 0; i < 3; i++) {
        smelt_model *m;
        ck_assert_msg(smelt_model_open(ctx, refs[i], &m) == SMELT_OK, "%s: %s", refs[i],
                      smelt_errmsg(ctx));
        ck_assert_str_eq(m->ref, refs[i]);
        ck_assert_ptr_nonnull(strstr(m->dir, "models--acme--tiny/snapshots/0123abcd"));
        ck_assert_uint_eq(m->ntensors, 2);
        ck_assert_ptr_nonnull(smelt_model_find(m, "a"));
        smelt_model_close(m);
    }
    EXPECT_OPEN_ERROR("acme/tiny@v2", SMELT_E_IO, "never downloads");
    EXPECT_OPEN_ERROR("acme/tiny@v2", SMELT_E_IO, "snapshots/v2");
    EXPECT_OPEN_ERROR("acme/other", SMELT_E_IO, "never downloads");
    EXPECT_OPEN_ERROR("acme/other", SMELT_E_IO, "models--acme--other");
    EXPECT_OPEN_ERROR("acme/other", SMELT_E_IO, "acme/other");
    /* Not hub ids: plain missing paths. */
    EXPECT_OPEN_ERROR("acme/../tiny", SMELT_E_IO, "no such file or directory");
    EXPECT_OPEN_ERROR("a/b/c", SMELT_E_IO, "no such file or directory");
    EXPECT_OPEN_ERROR("acme/tiny@../x", SMELT_E_IO, "no such file or directory");
    /* HF_HUB_CACHE wins over HF_HOME. */
    setenv("HF_HUB_CACHE", root, 1);
    EXPECT_OPEN_ERROR("acme/tiny", SMELT_E_IO, "never downloads");
    setenv("HF_HUB_CACHE", hub, 1);
    setenv("HF_HOME", "/nonexistent", 1);
    smelt_model *m;
    ck_assert_msg(smelt_model_open(ctx, "acme/tiny", &m) == SMELT_OK, "%s", smelt_errmsg(ctx));
    smelt_model_close(m);
    /* XDG_CACHE_HOME/huggingface/hub, then ~/.cache/huggingface/hub. */
    unsetenv("HF_HUB_CACHE");
    unsetenv("HF_HOME");
    char *xdg = tu_path(root, "xdg"), *xdg_hf = tu_path(xdg, "huggingface"),
         *xdg_hub = tu_path(xdg_hf, "hub");
    ck_assert_int_eq(mkdir(xdg, 0755), 0);
    ck_assert_int_eq(mkdir(xdg_hf, 0755), 0);
    make_hub(xdg_hub);
    setenv("XDG_CACHE_HOME", xdg, 1);
    ck_assert_msg(smelt_model_open(ctx, "acme/tiny", &m) == SMELT_OK, "%s", smelt_errmsg(ctx));
    smelt_model_close(m);
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", root, 1);
    EXPECT_OPEN_ERROR("acme/tiny", SMELT_E_IO, ".cache/huggingface/hub/models--acme--tiny");
    free(xdg_hub);
    free(xdg_hf);
    free(xdg);
    smelt_ctx_free(ctx);
    free(hub);
    free(home);
    free(root);
}
END_TEST

START_TEST(model_find_many)
{
    enum { N = 5000 };
    char *root = tu_tmpdir(), *dir = subdir(root, "m");
    spec *s = calloc(N, sizeof *s);
    char (*names)[32] = calloc(N, sizeof *names);
    for (size_t i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "model.layers.%zu.weight", i);
        s[i] = (spec){names[i], i % 3 ? SMELT_DT_BF16 : SMELT_DT_F32, i % 5};
    }
    char *path = tu_path(dir, "model.safetensors");
    write_st(path, s, N);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_model *m;
    ck_assert_msg(smelt_model_open(ctx, dir, &m) == SMELT_OK, "%s", smelt_errmsg(ctx));
    ck_assert_uint_eq(m->ntensors, N);
    for (size_t i = 0; i < N; i++) {
        const smelt_tensor_info *t = smelt_model_find(m, names[i]);
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(t->name, names[i]);
        ck_assert_uint_eq(t->numel, i % 5);
    }
    static const char *const misses[] = {"", "model.layers.5000.weight", "model.layers.1.weigh",
                                         "model.layers.1.weightx", "__metadata__"};
    for (size_t i = 0; i < sizeof misses / sizeof misses[0]; i++)
        ck_assert_ptr_null(smelt_model_find(m, misses[i]));
    ck_assert_ptr_null(smelt_model_find(NULL, "a"));
    smelt_model_close(m);
    smelt_ctx_free(ctx);
    free(path);
    free(names);
    free(s);
    free(dir);
    free(root);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *rules = tcase_create("rules");
    tcase_add_test(rules, rule_short_file);
    tcase_add_test(rules, rule_header_too_large);
    tcase_add_test(rules, rule_header_past_eof);
    tcase_add_test(rules, rule_not_utf8);
    tcase_add_test(rules, rule_not_json);
    tcase_add_test(rules, rule_top_level_object);
    tcase_add_test(rules, rule_duplicate_key);
    tcase_add_test(rules, rule_metadata_strings);
    tcase_add_test(rules, rule_metadata_reserved);
    tcase_add_test(rules, rule_unknown_dtype);
    tcase_add_test(rules, rule_shape);
    tcase_add_test(rules, rule_data_offsets);
    tcase_add_test(rules, rule_unknown_key);
    tcase_add_test(rules, rule_missing_key);
    tcase_add_test(rules, rule_end_before_begin);
    tcase_add_test(rules, rule_element_count_overflow);
    tcase_add_test(rules, rule_size_mismatch);
    tcase_add_test(rules, rule_sub_byte);
    tcase_add_test(rules, rule_tiling);
    tcase_add_test(rules, rule_data_past_eof);
    tcase_add_test(rules, rule_trailing_bytes);
    tcase_add_test(rules, rules_have_distinct_messages);
    tcase_add_test(rules, allowed_headers);
    tcase_add_test(rules, hostile_bytes_never_crash);
    suite_add_tcase(s, rules);
    TCase *layout = tcase_create("layout");
    tcase_add_test(layout, layout_round_trip);
    tcase_add_test(layout, layout_refuses_bad_input);
    tcase_add_test(layout, shard_names);
    suite_add_tcase(s, layout);
    TCase *model = tcase_create("model");
    tcase_add_test(model, model_single_file_dir);
    tcase_add_test(model, model_sharded);
    tcase_add_test(model, model_index_errors);
    tcase_add_test(model, model_lone_file);
    tcase_add_test(model, model_missing);
    tcase_add_test(model, model_hub_cache);
    tcase_add_test(model, model_find_many);
    suite_add_tcase(s, model);
    return s;
}

int main(void) { return tu_run_suite(suite()); }
