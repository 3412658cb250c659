/* plan/: smelt_plan_build_with, the planner over models that a caller opens (the plan fuzzer's
 * in-memory headers). The planner's behaviour itself is tested end to end (tests/e2e); here the
 * point is that a model built from a header in memory plans exactly as the file does, that the
 * opener sees each distinct reference once, that its errors come back unchanged, and that the
 * borrowed spec survives its plans (freed by the caller, plannable again). */
#include "config/config.h"
#include "format/st_internal.h"
#include "plan/plan.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Two layers, an embedding and a final norm: pre, layer and post tensors, renumbered by the
 * slices below. */
static const char HEADER[] =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"model.embed_tokens.weight\":{\"dtype\":\"F32\",\"shape\":[4,2],\"data_offsets\":[0,32]},"
    "\"model.layers.0.mlp.w\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[32,40]},"
    "\"model.layers.1.mlp.w\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[40,48]},"
    "\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[48,56]}}";

#define DATA_LEN 56

/* The file's bytes: length prefix, header, zero data. */
static uint8_t *file_bytes(size_t *len)
{
    size_t hlen = strlen(HEADER);
    *len = 8 + hlen + DATA_LEN;
    uint8_t *b = calloc(1, *len);
    ck_assert_ptr_nonnull(b);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(b + 8, HEADER, hlen);
    return b;
}

typedef struct opener {
    const uint8_t *bytes;
    size_t len;
    int calls;
    int fail; /* refuse every reference, as a missing file would be refused */
} opener;

static const char *info_name_at(const void *array, size_t i)
{
    return ((const smelt_tensor_info *)array)[i].name;
}

/* Every reference is the same in-memory file (fd -1, no directory). */
static int open_memory(void *user, smelt_ctx *ctx, const char *ref, smelt_model **out)
{
    opener *o = user;
    o->calls++;
    *out = NULL;
    if (o->fail)
        return smelt_fail(ctx, SMELT_E_IO, "%s: refused by the test's opener", ref);
    smelt_model *m = calloc(1, sizeof *m);
    ck_assert_ptr_nonnull(m);
    m->ref = strdup(ref);
    m->files = calloc(1, sizeof *m->files);
    ck_assert_ptr_nonnull(m->files);
    m->files[0] = (smelt_st_file){.path = strdup(ref), .fd = -1, .size = o->len};
    m->nfiles = 1;
    ck_assert_int_eq(smelt_st_parse(ctx, ref, o->bytes, o->len, o->len, &m->tensors,
                                    &m->ntensors, &m->files[0].data_start, &m->metadata_json),
                     SMELT_OK);
    smelt_name_index *index = calloc(1, sizeof *index);
    size_t a, b;
    ck_assert_int_eq(smelt_name_index_build(index, m->tensors, m->ntensors, info_name_at, &a, &b),
                     0);
    m->name_index = index;
    *out = m;
    return SMELT_OK;
}

/* Layer 1 of a, then layers 0-1 of b: the output has 3 layers, renumbered. */
static smelt_merge_spec *spec_over(smelt_ctx *ctx, const char *a, const char *b)
{
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "merge_method: linear\nslices:\n"
             "  - sources:\n"
             "      - {model: %s, layer_range: [1, 2], parameters: {weight: 0.25}}\n"
             "      - {model: %s, layer_range: [0, 1], parameters: {weight: 0.75}}\n"
             "  - sources:\n"
             "      - {model: %s, layer_range: [0, 2], parameters: {weight: [0.0, 1.0]}}\n"
             "      - {model: %s, layer_range: [0, 2], parameters: {weight: 1.0}}\n",
             a, b, b, a);
    smelt_merge_spec *spec;
    ck_assert_int_eq(smelt_config_parse(ctx, "test.yml", yaml, strlen(yaml), &spec), SMELT_OK);
    return spec;
}

START_TEST(in_memory_plans_as_files)
{
    char *dir = tu_tmpdir();
    char *a = tu_path(dir, "a.safetensors"), *b = tu_path(dir, "b.safetensors");
    size_t len;
    uint8_t *bytes = file_bytes(&len);
    tu_write_file(a, bytes, len);
    tu_write_file(b, bytes, len);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_plan_options opts = {.out_shard_size = 40, .random_seed = 7};

    smelt_plan *from_files, *from_memory;
    ck_assert_int_eq(smelt_plan_build(ctx, spec_over(ctx, a, b), &opts, &from_files), SMELT_OK);
    /* The borrowed spec is planned twice: the first plan must leave it as it was. */
    smelt_merge_spec *spec = spec_over(ctx, a, b);
    opener o = {.bytes = bytes, .len = len};
    ck_assert_int_eq(smelt_plan_build_with(ctx, spec, &opts, open_memory, &o, &from_memory),
                     SMELT_OK);
    ck_assert_int_eq(o.calls, 2); /* a and b, each once, though each is named twice */
    smelt_plan_free(from_memory);
    ck_assert_int_eq(smelt_plan_build_with(ctx, spec, &opts, open_memory, &o, &from_memory),
                     SMELT_OK);
    ck_assert_int_eq(o.calls, 4);

    ck_assert_uint_eq(from_memory->ntensors, from_files->ntensors);
    ck_assert_uint_eq(from_files->ntensors, 5); /* embed, 3 renumbered layers, norm */
    ck_assert_uint_eq(from_memory->num_layers, 3);
    for (size_t i = 0; i < from_files->ntensors; i++) {
        const smelt_plan_tensor *x = &from_files->tensors[i], *y = &from_memory->tensors[i];
        ck_assert_str_eq(y->name, x->name);
        ck_assert_int_eq(y->kind, x->kind);
        ck_assert_int_eq(y->out_dtype, x->out_dtype);
        ck_assert_uint_eq(y->shard, x->shard);
        ck_assert_uint_eq(y->out_offset, x->out_offset);
        ck_assert_uint_eq(y->slice, x->slice);
        ck_assert(y->layer_t == x->layer_t);
        ck_assert_uint_eq(y->ninputs, x->ninputs);
        for (size_t k = 0; k < x->ninputs; k++) {
            ck_assert_str_eq(y->inputs[k]->name, x->inputs[k]->name);
            ck_assert_uint_eq(y->inputs[k]->offset, x->inputs[k]->offset);
        }
    }
    ck_assert_uint_gt(from_files->nshards, 1); /* 40-byte shards: the layout is exercised */
    ck_assert_uint_eq(from_memory->nshards, from_files->nshards);
    for (size_t s = 0; s < from_files->nshards; s++) {
        ck_assert_uint_eq(from_memory->shards[s].header_len, from_files->shards[s].header_len);
        ck_assert_mem_eq(from_memory->shards[s].header, from_files->shards[s].header,
                         from_files->shards[s].header_len);
    }
    smelt_plan_free(from_files);
    smelt_plan_free(from_memory);
    smelt_spec_free(spec); /* borrowed: still ours after the plan */
    smelt_ctx_free(ctx);
    free(bytes);
    free(a);
    free(b);
    free(dir);
}
END_TEST

START_TEST(opener_errors_come_back)
{
    size_t len;
    uint8_t *bytes = file_bytes(&len);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_plan_options opts = {.out_shard_size = 1 << 20};
    opener o = {.bytes = bytes, .len = len, .fail = 1};
    smelt_plan *plan = NULL;
    smelt_merge_spec *spec = spec_over(ctx, "x", "y");
    ck_assert_int_eq(smelt_plan_build_with(ctx, spec, &opts, open_memory, &o, &plan), SMELT_E_IO);
    ck_assert_ptr_null(plan);
    ck_assert_int_eq(o.calls, 1); /* the first failure stops the build */
    ck_assert_str_eq(smelt_errmsg(ctx), "x: refused by the test's opener");
    smelt_spec_free(spec); /* borrowed, also when the build fails */
    smelt_ctx_free(ctx);
    free(bytes);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("build_with");
    tcase_add_test(tc, in_memory_plans_as_files);
    tcase_add_test(tc, opener_errors_come_back);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
