/* integrity: the journal's record format (torn and mis-sealed records) and the manifest's
 * round trip through JSON. */
#include "integrity/journal.h"
#include "integrity/manifest.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

static smelt_journal_header sample_header(void)
{
    static smelt_journal_input inputs[2];
    inputs[0] = (smelt_journal_input){.path = "a/model.safetensors",
                                      .header = smelt_hash_bytes("a", 1), .size = 1000,
                                      .mtime_ns = 1700000000123456789ull, .ino = 42, .dev = 7,
                                      .sample = smelt_hash_bytes("sa", 2)};
    inputs[1] = (smelt_journal_input){.path = "b/model.safetensors",
                                      .header = smelt_hash_bytes("b", 1), .size = 2000,
                                      .mtime_ns = 1700000000000000001ull, .ino = 43, .dev = 7,
                                      .sample = smelt_hash_bytes("sb", 2)};
    return (smelt_journal_header){smelt_hash_bytes("config", 6), smelt_hash_bytes("plan", 4), 2,
                                  inputs};
}

static void change_size(smelt_journal_input *in) { in->size++; }
static void change_mtime(smelt_journal_input *in) { in->mtime_ns++; } /* 1 ns is a change */
static void change_ino(smelt_journal_input *in) { in->ino++; }
static void change_dev(smelt_journal_input *in) { in->dev++; }
static void change_sample(smelt_journal_input *in) { in->sample = smelt_hash_bytes("x", 1); }

/* A header and three records in one buffer; rec_end[i] = where record i ends. */
static uint8_t *sample_journal(size_t *len, size_t rec_end[3])
{
    smelt_journal_header h = sample_header();
    uint8_t *head, *buf;
    size_t head_len;
    ck_assert_int_eq(smelt_journal_encode_header(NULL, &h, &head, &head_len), SMELT_OK);
    buf = malloc(head_len + 3 * 200);
    memcpy(buf, head, head_len);
    *len = head_len;
    free(head);
    static const char *const names[] = {"model.embed_tokens.weight", "lm_head.weight", "x"};
    for (int i = 0; i < 3; i++) {
        uint8_t *rec;
        size_t rec_len;
        smelt_hash128 hash = smelt_hash_bytes(names[i], strlen(names[i]));
        ck_assert_int_eq(smelt_journal_encode_record(NULL, names[i], &hash, &rec, &rec_len),
                         SMELT_OK);
        ck_assert_uint_eq(rec_len, 4 + strlen(names[i]) + 16 + 8);
        memcpy(buf + *len, rec, rec_len);
        *len += rec_len;
        rec_end[i] = *len;
        free(rec);
    }
    return buf;
}

START_TEST(journal_round_trip)
{
    size_t len, end[3];
    uint8_t *buf = sample_journal(&len, end);
    smelt_journal_contents c;
    ck_assert_int_eq(smelt_journal_parse(NULL, "j", buf, len, &c), SMELT_OK);
    ck_assert_uint_eq(c.nrecords, 3);
    ck_assert_int_eq(c.torn, 0);
    ck_assert_uint_eq(c.valid_len, len);
    ck_assert_str_eq(c.records[1].name, "lm_head.weight");
    smelt_hash128 want = smelt_hash_bytes("lm_head.weight", 14);
    ck_assert(smelt_hash_eq(&c.records[1].hash, &want));
    smelt_journal_header h = sample_header();
    char why[256];
    ck_assert_int_eq(smelt_journal_header_diff(&c.header, &h, why, sizeof why), 0);
    h.inputs[1].header = smelt_hash_bytes("changed", 7);
    ck_assert_int_eq(smelt_journal_header_diff(&c.header, &h, why, sizeof why), 1);
    ck_assert_ptr_nonnull(strstr(why, "b/model.safetensors"));
    h.inputs[1].header = smelt_hash_bytes("b", 1);
    /* Every part of an input's identity round-trips and is compared, each with its reason. */
    ck_assert_uint_eq(c.header.inputs[0].mtime_ns, 1700000000123456789ull);
    ck_assert_uint_eq(c.header.inputs[1].size, 2000);
    struct {
        void (*change)(smelt_journal_input *);
        const char *why;
    } cases[] = {
        {change_size, "its size differs"},
        {change_mtime, "its modification time differs"},
        {change_ino, "another file"},
        {change_dev, "another file"},
        {change_sample, "sampled blocks"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        smelt_journal_header now = sample_header();
        cases[k].change(&now.inputs[0]);
        ck_assert_int_eq(smelt_journal_header_diff(&c.header, &now, why, sizeof why), 1);
        ck_assert_ptr_nonnull(strstr(why, "a/model.safetensors"));
        ck_assert_msg(strstr(why, cases[k].why), "case %zu: %s", k, why);
    }
    smelt_journal_contents_free(&c);
    free(buf);
}
END_TEST

/* Every truncation inside a record keeps exactly the records before it. */
START_TEST(journal_torn_tail)
{
    size_t len, end[3];
    uint8_t *buf = sample_journal(&len, end);
    for (size_t cut = end[0]; cut < len; cut++) {
        smelt_journal_contents c;
        ck_assert_int_eq(smelt_journal_parse(NULL, "j", buf, cut, &c), SMELT_OK);
        size_t want = cut >= end[1] ? 2 : 1;
        ck_assert_uint_eq(c.nrecords, want);
        ck_assert_uint_eq(c.valid_len, end[want - 1]);
        ck_assert_int_eq(c.torn, cut != end[want - 1]);
        smelt_journal_contents_free(&c);
    }
    free(buf);
}
END_TEST

/* A flipped bit anywhere in a record ends the list there; in the header it is an error. */
START_TEST(journal_bad_checksum)
{
    size_t len, end[3];
    uint8_t *buf = sample_journal(&len, end);
    for (size_t at = 0; at < len; at++) {
        buf[at] ^= 0x10;
        smelt_journal_contents c;
        int rc = smelt_journal_parse(NULL, "j", buf, len, &c);
        if (at < end[0] - (4 + 25 + 16 + 8)) {
            ck_assert_int_eq(rc, SMELT_E_FORMAT);
        } else {
            ck_assert_int_eq(rc, SMELT_OK);
            size_t good = at < end[0] ? 0 : at < end[1] ? 1 : 2;
            ck_assert_uint_eq(c.nrecords, good);
            ck_assert_int_eq(c.torn, 1);
        }
        smelt_journal_contents_free(&c);
        buf[at] ^= 0x10;
    }
    smelt_journal_contents c;
    ck_assert_int_eq(smelt_journal_parse(NULL, "j", buf, 10, &c), SMELT_E_FORMAT);
    smelt_journal_contents_free(&c);
    free(buf);
}
END_TEST

/* The file API: create with records, append in a batch, read back. */
START_TEST(journal_file)
{
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, SMELT_JOURNAL_NAME);
    char *data = tu_path(dir, "data");
    tu_write_file(data, "x", 1);
    int fd = open(data, O_RDWR);
    ck_assert_int_ge(fd, 0);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_journal_header h = sample_header();
    smelt_journal_record first = {"first", smelt_hash_bytes("1", 1)};
    smelt_journal *j;
    ck_assert_int_eq(smelt_journal_create(ctx, path, &h, &first, 1, &j), SMELT_OK);
    smelt_hash128 two = smelt_hash_bytes("2", 1);
    ck_assert_int_eq(smelt_journal_add(ctx, j, fd, "second", &two), SMELT_OK);
    ck_assert_int_eq(smelt_journal_flush(ctx, j), SMELT_OK);
    smelt_journal_close(j);
    smelt_journal_contents c;
    ck_assert_int_eq(smelt_journal_read(ctx, path, &c), SMELT_OK);
    ck_assert_uint_eq(c.nrecords, 2);
    ck_assert_str_eq(c.records[1].name, "second");
    ck_assert_int_eq(c.torn, 0);
    smelt_journal_contents_free(&c);
    close(fd);
    smelt_ctx_free(ctx);
    free(path);
    free(data);
    free(dir);
}
END_TEST

START_TEST(manifest_round_trip)
{
    smelt_manifest_tensor t1[] = {
        {.name = "b.weight", .hash = smelt_hash_bytes("b", 1), .dtype = SMELT_DT_BF16, .ndim = 2,
         .shape = {3, 4}},
        {.name = "a.weight", .hash = smelt_hash_bytes("a", 1), .dtype = SMELT_DT_F16, .ndim = 0}};
    smelt_manifest_tensor t2[] = {{.name = "c \"quoted\" \xc3\xa9", .hash = smelt_hash_bytes("", 0),
                                   .dtype = SMELT_DT_F32, .ndim = 1, .shape = {0}}};
    smelt_manifest_file files[] = {
        {.name = "model-00001-of-00002.safetensors", .header = smelt_hash_bytes("h1", 2),
         .size = 1234, .tensors = t1, .ntensors = 2},
        {.name = "model-00002-of-00002.safetensors", .header = smelt_hash_bytes("h2", 2),
         .size = 99, .tensors = t2, .ntensors = 1}};
    smelt_manifest_input inputs[] = {{"/m/x.safetensors", smelt_hash_bytes("h", 1)}};
    smelt_manifest m = {.smelt_version = "0.1.0", .config = smelt_hash_bytes("cfg", 3),
                        .inputs = inputs, .ninputs = 1, .files = files, .nfiles = 2};
    char *text;
    size_t len;
    ck_assert_int_eq(smelt_manifest_to_json(NULL, &m, &text, &len), SMELT_OK);
    ck_assert_uint_eq(strlen(text), len);
    smelt_manifest *back;
    ck_assert_int_eq(smelt_manifest_parse(NULL, "m.json", text, len, &back), SMELT_OK);
    ck_assert_str_eq(back->smelt_version, "0.1.0");
    ck_assert(smelt_hash_eq(&back->config, &m.config));
    ck_assert_uint_eq(back->ninputs, 1);
    ck_assert_str_eq(back->inputs[0].path, "/m/x.safetensors");
    ck_assert_uint_eq(back->nfiles, 2);
    /* Keys come back sorted: files by name, tensors by name. */
    ck_assert_str_eq(back->files[0].name, files[0].name);
    ck_assert_uint_eq(back->files[0].size, 1234);
    ck_assert_uint_eq(back->files[0].ntensors, 2);
    ck_assert_str_eq(back->files[0].tensors[0].name, "a.weight");
    ck_assert(smelt_hash_eq(&back->files[0].tensors[0].hash, &t1[1].hash));
    ck_assert_str_eq(back->files[1].tensors[0].name, t2[0].name);
    /* Version 2 binds what the bytes mean: dtype, shape, and the file's whole header. */
    ck_assert_int_eq(back->version, SMELT_MANIFEST_VERSION);
    ck_assert(smelt_hash_eq(&back->files[1].header, &files[1].header));
    ck_assert_int_eq(back->files[0].tensors[0].dtype, SMELT_DT_F16);
    ck_assert_uint_eq(back->files[0].tensors[0].ndim, 0);
    ck_assert_int_eq(back->files[0].tensors[1].dtype, SMELT_DT_BF16);
    ck_assert_uint_eq(back->files[0].tensors[1].ndim, 2);
    ck_assert_uint_eq(back->files[0].tensors[1].shape[0], 3);
    ck_assert_uint_eq(back->files[0].tensors[1].shape[1], 4);
    ck_assert_uint_eq(back->files[1].tensors[0].ndim, 1);
    /* The same manifest always gives the same text. */
    char *again;
    size_t again_len;
    ck_assert_int_eq(smelt_manifest_to_json(NULL, back, &again, &again_len), SMELT_OK);
    ck_assert_str_eq(again, text);
    free(again);
    smelt_manifest_free(back);
    free(text);
}
END_TEST

START_TEST(manifest_rejects_bad)
{
    static const char *const bad[] = {
        "", "[]", "{\"format\": \"smelt-manifest\"}",
        "{\"format\":\"smelt-manifest\",\"format_version\":1,\"algorithm\":\"xxh3-128\","
        "\"smelt_version\":\"0\",\"config\":\"zz\",\"inputs\":[],\"files\":{}}",
        "{\"format\":\"smelt-manifest\",\"format_version\":1,\"algorithm\":\"xxh3-128\","
        "\"smelt_version\":\"0\",\"config\":\"00000000000000000000000000000000\",\"inputs\":[],"
        "\"files\":{\"f\":{\"size\":-1,\"tensors\":{}}}}",
        "{\"format\":\"smelt-manifest\",\"format_version\":1,\"algorithm\":\"xxh3-128\","
        "\"smelt_version\":\"0\",\"config\":\"00000000000000000000000000000000\",\"inputs\":[],"
        "\"files\":{\"f\":{\"size\":1,\"tensors\":{\"t\":\"0\",\"t\":\"1\"}}}}",
        /* Version 2: a bare hash, a file without its header, a bad dtype or shape, a future
         * version. */
        "{\"format\":\"smelt-manifest\",\"format_version\":2,\"algorithm\":\"xxh3-128\","
        "\"smelt_version\":\"0\",\"config\":\"00000000000000000000000000000000\",\"inputs\":[],"
        "\"files\":{\"f\":{\"header\":\"00000000000000000000000000000000\",\"size\":1,"
        "\"tensors\":{\"t\":\"00000000000000000000000000000000\"}}}}",
        "{\"format\":\"smelt-manifest\",\"format_version\":2,\"algorithm\":\"xxh3-128\","
        "\"smelt_version\":\"0\",\"config\":\"00000000000000000000000000000000\",\"inputs\":[],"
        "\"files\":{\"f\":{\"size\":1,\"tensors\":{}}}}",
        "{\"format\":\"smelt-manifest\",\"format_version\":2,\"algorithm\":\"xxh3-128\","
        "\"smelt_version\":\"0\",\"config\":\"00000000000000000000000000000000\",\"inputs\":[],"
        "\"files\":{\"f\":{\"header\":\"00000000000000000000000000000000\",\"size\":1,"
        "\"tensors\":{\"t\":{\"data\":\"00000000000000000000000000000000\",\"dtype\":\"F12\","
        "\"shape\":[1]}}}}}",
        "{\"format\":\"smelt-manifest\",\"format_version\":2,\"algorithm\":\"xxh3-128\","
        "\"smelt_version\":\"0\",\"config\":\"00000000000000000000000000000000\",\"inputs\":[],"
        "\"files\":{\"f\":{\"header\":\"00000000000000000000000000000000\",\"size\":1,"
        "\"tensors\":{\"t\":{\"data\":\"00000000000000000000000000000000\",\"dtype\":\"F32\","
        "\"shape\":[-1]}}}}}",
        "{\"format\":\"smelt-manifest\",\"format_version\":3,\"algorithm\":\"xxh3-128\","
        "\"smelt_version\":\"0\",\"config\":\"00000000000000000000000000000000\",\"inputs\":[],"
        "\"files\":{}}",
    };
    smelt_ctx *ctx = smelt_ctx_new();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        smelt_manifest *m = (smelt_manifest *)1;
        ck_assert_int_eq(smelt_manifest_parse(ctx, "m.json", bad[i], strlen(bad[i]), &m),
                         SMELT_E_FORMAT);
        ck_assert_ptr_null(m);
        ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "m.json"));
    }
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(hash_hex)
{
    smelt_hash128 h = smelt_hash_bytes("", 0), back;
    char hex[33];
    smelt_hash_hex(&h, hex);
    ck_assert_str_eq(hex, "99aa06d3014798d86001c324468d497f"); /* xxhsum -H2 /dev/null */
    ck_assert_int_eq(smelt_hash_parse(hex, &back), 0);
    ck_assert(smelt_hash_eq(&h, &back));
    ck_assert_int_eq(smelt_hash_parse("99aa", &back), -1);
    ck_assert_int_eq(smelt_hash_parse("g9aa06d3014798d86001c324468d497f", &back), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("integrity");
    TCase *tc = tcase_create("integrity");
    tcase_add_test(tc, journal_round_trip);
    tcase_add_test(tc, journal_torn_tail);
    tcase_add_test(tc, journal_bad_checksum);
    tcase_add_test(tc, journal_file);
    tcase_add_test(tc, manifest_round_trip);
    tcase_add_test(tc, manifest_rejects_bad);
    tcase_add_test(tc, hash_hex);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
