/* inspect/: smelt_inspect and smelt_diff through the public API, on files built here: figures
 * against a plain f64 reference, reports identical for any thread count and budget, and the
 * argument and budget errors. */
#include "smelt.h"
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One tensor for write_st. */
typedef struct tensor {
    const char *name, *dtype;
    size_t n; /* 1-D shape */
    const void *data;
    size_t bytes;
} tensor;

static void write_st(const char *path, const tensor *t, size_t count)
{
    char header[4096];
    size_t at = (size_t)snprintf(header, sizeof header, "{"), off = 0;
    for (size_t i = 0; i < count; i++) {
        at += (size_t)snprintf(header + at, sizeof header - at,
                               "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%zu],\"data_offsets\":[%zu,%zu]}",
                               i ? "," : "", t[i].name, t[i].dtype, t[i].n, off, off + t[i].bytes);
        off += t[i].bytes;
    }
    at += (size_t)snprintf(header + at, sizeof header - at, "}");
    while (at % 8)
        header[at++] = ' ';
    size_t len = 8 + at + off;
    uint8_t *file = malloc(len);
    ck_assert_ptr_nonnull(file);
    for (int i = 0; i < 8; i++)
        file[i] = (uint8_t)((uint64_t)at >> (8 * i));
    memcpy(file + 8, header, at);
    for (size_t i = 0, pos = 8 + at; i < count; pos += t[i].bytes, i++)
        memcpy(file + pos, t[i].data, t[i].bytes);
    tu_write_file(path, file, len);
    free(file);
}

static uint16_t to_bf16(float f) /* truncation is enough for test data */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Runs smelt_diff into memory; returns the report (caller frees) and the status in *rc. */
static char *run_diff(const char *a, const char *b, int threads, uint64_t max_memory, int json,
                      int *rc)
{
    smelt_ctx *ctx = smelt_ctx_new();
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(out);
    smelt_diff_options opts;
    smelt_diff_options_default(&opts);
    opts.threads = threads;
    opts.max_memory = max_memory;
    opts.json = json;
    *rc = smelt_diff(ctx, a, b, &opts, out);
    fclose(out);
    smelt_ctx_free(ctx);
    return text;
}

/* 100003 elements: neither a multiple of the reduction block nor of any chunk. */
#define N 100003

START_TEST(diff_figures_and_determinism)
{
    char *dir = tu_tmpdir(), *pa = tu_path(dir, "a.safetensors"), *pb = tu_path(dir, "b.safetensors");
    float *a = malloc(N * sizeof *a);
    uint16_t *b = malloc(N * sizeof *b);
    ck_assert(a && b);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        a[i] = (float)((double)(x >> 11) / 9007199254740992.0 - 0.5);
        b[i] = to_bf16(a[i] * 1.01f + 0.001f);
    }
    tensor ta[] = {{"w", "F32", N, a, N * 4}, {"ids", "I32", 2, "\1\0\0\0\2\0\0\0", 8}};
    tensor tb[] = {{"w", "BF16", N, b, N * 2}, {"ids", "I32", 2, "\1\0\0\0\2\0\0\0", 8}};
    write_st(pa, ta, 2);
    write_st(pb, tb, 2);

    int rc;
    char *ref = run_diff(pa, pb, 1, 0, 1, &rc);
    ck_assert_int_eq(rc, SMELT_OK);
    json_t *doc = json_loads(ref, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    json_t *w = json_array_get(json_object_get(doc, "tensors"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(w, "name")), "w");
    double dot = 0, aa = 0, bb = 0, dd = 0, mx = 0;
    for (size_t i = 0; i < N; i++) {
        double u = a[i], v = from_bf16(b[i]);
        dot += u * v, aa += u * u, bb += v * v, dd += (u - v) * (u - v);
        mx = fabs(u - v) > mx ? fabs(u - v) : mx;
    }
    double cos = json_real_value(json_object_get(w, "cosine"));
    double rel = json_real_value(json_object_get(w, "rel_l2"));
    double max = json_real_value(json_object_get(w, "max_abs"));
    ck_assert_double_eq_tol(cos, dot / sqrt(aa * bb), 1e-12);
    ck_assert_double_eq_tol(rel, sqrt(dd / aa), 1e-6 * rel); /* a-b is rounded to f32 */
    ck_assert_double_eq_tol(max, mx, 1e-6 * mx);
    json_t *ids = json_array_get(json_object_get(doc, "tensors"), 1);
    ck_assert_str_eq(json_string_value(json_object_get(ids, "status")), "identical");
    json_decref(doc);

    /* Budgets down to two one-block chunks, and thread counts, change nothing. */
    const uint64_t budgets[] = {0, 4u << 20, 1u << 20, 1000000, 800000};
    for (int t = 1; t <= 4; t++)
        for (size_t m = 0; m < sizeof budgets / sizeof *budgets; m++) {
            char *again = run_diff(pa, pb, t, budgets[m], 1, &rc);
            ck_assert_int_eq(rc, SMELT_OK);
            ck_assert_str_eq(again, ref);
            free(again);
        }
    free(ref);
    free(a), free(b), free(pa), free(pb), free(dir);
}
END_TEST

START_TEST(diff_errors)
{
    char *dir = tu_tmpdir(), *pa = tu_path(dir, "a.safetensors"), *pb = tu_path(dir, "b.safetensors");
    float v[4] = {1, 2, 3, 4};
    tensor ta[] = {{"w", "F32", 4, v, 16}};
    tensor tb[] = {{"w", "F32", 2, v, 8}};
    write_st(pa, ta, 1);
    write_st(pb, tb, 1);
    smelt_ctx *ctx = smelt_ctx_new();
    ck_assert_int_eq(smelt_diff(ctx, NULL, pb, NULL, stdout), SMELT_E_ARG);
    ck_assert_int_eq(smelt_inspect(ctx, pa, 0, NULL), SMELT_E_ARG);
    smelt_ctx_free(ctx);
    int rc;
    free(run_diff(pa, pa, 1, 1000, 0, &rc));
    ck_assert_int_eq(rc, SMELT_E_BUDGET);
    char *text = run_diff(pa, pb, 1, 0, 0, &rc);
    ck_assert_int_eq(rc, SMELT_E_PLAN);
    ck_assert_ptr_nonnull(strstr(text, "[4] vs [2]"));
    free(text);
    free(pa), free(pb), free(dir);
}
END_TEST

START_TEST(inspect_json)
{
    char *dir = tu_tmpdir(), *p = tu_path(dir, "m.safetensors");
    float v[2] = {1, 2};
    tensor t[] = {{"model.layers.0.x", "F32", 1, v, 4},
                  {"model.layers.11.y", "F32", 1, v + 1, 4},
                  {"blk.3.z", "U8", 4, "abcd", 4}};
    write_st(p, t, 3);
    smelt_ctx *ctx = smelt_ctx_new();
    char *text = NULL;
    size_t len;
    FILE *out = open_memstream(&text, &len);
    ck_assert_int_eq(smelt_inspect(ctx, p, 1, out), SMELT_OK);
    fclose(out);
    json_t *doc = json_loads(text, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "layers")), 12);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "tensor_count")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "total_bytes")), 12);
    ck_assert(json_is_null(json_object_get(doc, "directory")));
    json_decref(doc);
    free(text);
    smelt_ctx_free(ctx);
    free(p), free(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("inspect");
    TCase *tc = tcase_create("inspect");
    tcase_add_test(tc, diff_figures_and_determinism);
    tcase_add_test(tc, diff_errors);
    tcase_add_test(tc, inspect_json);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(suite()); }
