/* The whole merge through the library on hand-made files: integer tensors copied, empty and
 * scalar tensors, mixed dtypes, chunking under tiny budgets, cancellation. */
#include "config/config.h"
#include "engine/engine_layout.h"
#include "format/safetensors.h"
#include "plan/plan.h"
#include "kernels/kernels.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct fake_tensor {
    const char *name;
    smelt_dtype dtype;
    uint32_t ndim;
    uint64_t shape[2];
} fake_tensor;

static uint64_t numel_of(const fake_tensor *t)
{
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->ndim; d++)
        n *= t->shape[d];
    return n;
}

static float value_at(int model, size_t tensor, uint64_t i)
{
    return (float)((int)((i * 7 + tensor * 13 + (uint64_t)model * 5) % 23) - 11) * 0.125f;
}

/* Writes dir/model.safetensors holding `tensors` with values from value_at (integers: i*model). */
static void write_model(const char *dir, int model, const fake_tensor *tensors, size_t n)
{
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_st_out_tensor descs[16];
    uint64_t offsets[16], file_size;
    for (size_t i = 0; i < n; i++)
        descs[i] = (smelt_st_out_tensor){tensors[i].name, tensors[i].dtype, tensors[i].ndim,
                                         tensors[i].shape,
                                         numel_of(&tensors[i]) * smelt_dtype_size(tensors[i].dtype)};
    uint8_t *header;
    size_t header_len;
    ck_assert_int_eq(smelt_st_layout(ctx, descs, n, &header, &header_len, offsets, &file_size),
                     SMELT_OK);
    uint8_t *file = calloc(1, file_size);
    memcpy(file, header, header_len);
    for (size_t t = 0; t < n; t++) {
        uint64_t count = numel_of(&tensors[t]);
        float *f32 = malloc((count + 1) * sizeof(float));
        for (uint64_t i = 0; i < count; i++)
            f32[i] = value_at(model, t, i);
        uint8_t *dst = file + offsets[t];
        if (smelt_dtype_mergeable(tensors[t].dtype)) {
            smelt_encode(smelt_kernels_get(), dst, f32, tensors[t].dtype, count);
        } else {
            for (uint64_t i = 0; i < count; i++) {
                int64_t v = (int64_t)i * (model + 1);
                memcpy(dst + i * 8, &v, 8);
            }
        }
        free(f32);
    }
    char *path = tu_path(dir, "model.safetensors");
    tu_write_file(path, file, file_size);
    free(path);
    free(file);
    free(header);
    smelt_ctx_free(ctx);
}

static const fake_tensor model_tensors[] = {
    {"model.embed_tokens.weight", SMELT_DT_BF16, 2, {300, 1001}},
    {"model.layers.0.norm.weight", SMELT_DT_F32, 1, {1001}},
    {"model.layers.1.mlp.weight", SMELT_DT_F16, 2, {17, 33}},
    {"position_ids", SMELT_DT_I64, 1, {4099}},
    {"empty", SMELT_DT_BF16, 2, {0, 8}},
    {"scale", SMELT_DT_F32, 0, {0}},
};
#define NT (sizeof model_tensors / sizeof model_tensors[0])

static char *setup(char **out_dir)
{
    char *root = tu_tmpdir();
    for (int m = 0; m < 2; m++) {
        char name[8];
        snprintf(name, sizeof name, "m%d", m);
        char *dir = tu_path(root, name);
        ck_assert_int_eq(mkdir(dir, 0755), 0);
        write_model(dir, m, model_tensors, NT);
        free(dir);
    }
    char *cfg = tu_path(root, "c.yml");
    char text[2048];
    snprintf(text, sizeof text,
             "merge_method: linear\nbase_model: %s/m0\nmodels:\n"
             "  - model: %s/m0\n    parameters: {weight: 1}\n"
             "  - model: %s/m1\n    parameters: {weight: 3}\n", root, root, root);
    tu_write_file(cfg, text, strlen(text));
    *out_dir = tu_path(root, "out");
    free(root);
    return cfg;
}

static uint8_t *tensor_bytes(const smelt_model *m, const char *name, const smelt_tensor_info **info)
{
    const smelt_tensor_info *t = smelt_model_find(m, name);
    ck_assert_msg(t != NULL, "output lacks %s", name);
    uint8_t *buf = malloc(t->nbytes + 1);
    ck_assert_int_eq(pread(m->files[t->file].fd, buf, t->nbytes, (off_t)t->offset), (ssize_t)t->nbytes);
    *info = t;
    return buf;
}

START_TEST(merges_every_kind_of_tensor)
{
    char *out_dir, *cfg = setup(&out_dir);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_merge_options opts;
    smelt_merge_options_default(&opts);
    opts.max_memory = 2 << 20; /* several chunks for the large tensor */
    ck_assert_msg(smelt_merge(ctx, cfg, out_dir, &opts) == SMELT_OK, "%s", smelt_errmsg(ctx));
    smelt_model *out;
    ck_assert_msg(smelt_model_open(ctx, out_dir, &out) == SMELT_OK, "%s", smelt_errmsg(ctx));
    ck_assert_uint_eq(out->ntensors, NT);
    for (size_t t = 0; t < NT; t++) {
        const smelt_tensor_info *info;
        uint8_t *bytes = tensor_bytes(out, model_tensors[t].name, &info);
        ck_assert_int_eq(info->dtype, model_tensors[t].dtype); /* no dtype given: base's */
        ck_assert_uint_eq(info->numel, numel_of(&model_tensors[t]));
        ck_assert_uint_eq(info->ndim, model_tensors[t].ndim);
        if (info->dtype == SMELT_DT_I64) {
            for (uint64_t i = 0; i < info->numel; i++) {
                int64_t v;
                memcpy(&v, bytes + i * 8, 8);
                ck_assert_int_eq(v, (int64_t)i); /* copied from the base, not averaged */
            }
        } else {
            float *got = malloc((info->numel + 1) * sizeof(float));
            smelt_decode(smelt_kernels_get(), got, bytes, info->dtype, info->numel);
            for (uint64_t i = 0; i < info->numel; i++) {
                /* The inputs hold exact multiples of 1/8 that every dtype represents. */
                float want = 0.25f * value_at(0, t, i) + 0.75f * value_at(1, t, i);
                float tol = info->dtype == SMELT_DT_F32 ? 0 : fabsf(want) / 256;
                ck_assert_msg(fabsf(got[i] - want) <= tol, "%s[%llu]: %g != %g",
                              info->name, (unsigned long long)i, got[i], want);
            }
            free(got);
        }
        free(bytes);
    }
    smelt_model_close(out);
    smelt_ctx_free(ctx);
    free(cfg);
    free(out_dir);
}
END_TEST

static char *file_digest(const char *dir)
{
    char *path = tu_path(dir, "model.safetensors");
    size_t len;
    char *data = tu_read_file(path, &len);
    free(path);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)data[i]) * 1099511628211ull;
    free(data);
    char *s = malloc(32);
    snprintf(s, 32, "%016llx", (unsigned long long)h);
    return s;
}

START_TEST(budget_and_threads_do_not_change_bytes)
{
    char *out_dir, *cfg = setup(&out_dir);
    smelt_ctx *ctx = smelt_ctx_new();
    char *first = NULL;
    uint64_t budgets[] = {2u << 20, 3u << 20, 64u << 20};
    int threads[] = {1, 3};
    for (size_t b = 0; b < 3; b++)
        for (size_t t = 0; t < 2; t++) {
            smelt_merge_options opts;
            smelt_merge_options_default(&opts);
            opts.max_memory = budgets[b];
            opts.threads = threads[t];
            opts.overwrite = 1;
            opts.force_pread = (int)t;
            ck_assert_msg(smelt_merge(ctx, cfg, out_dir, &opts) == SMELT_OK, "%s", smelt_errmsg(ctx));
            char *digest = file_digest(out_dir);
            if (!first)
                first = digest;
            else {
                ck_assert_str_eq(digest, first);
                free(digest);
            }
        }
    free(first);
    smelt_ctx_free(ctx);
    free(cfg);
    free(out_dir);
}
END_TEST

static smelt_progress last_progress;

static void keep_progress(void *user, const smelt_progress *p)
{
    (void)user;
    last_progress = *p;
}

/* `smelt plan`'s figures for a budget: the bytes it says the merge reads, and the input bytes. */
static void planned_reads(smelt_ctx *ctx, const char *cfg, const smelt_merge_options *opts,
                          unsigned long long *to_read, unsigned long long *in_bytes,
                          int streamed)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_msg(smelt_plan_print(ctx, cfg, opts, f) == SMELT_OK, "%s", smelt_errmsg(ctx));
    fclose(f);
    const char *line = strstr(text, "\nread:");
    ck_assert_ptr_nonnull(line);
    double ratio;
    ck_assert_int_eq(sscanf(line, "\nread: %llu bytes (%lf x the input tensors' %llu bytes)",
                            to_read, &ratio, in_bytes), 3);
    /* Per tensor: ties' statistics passes over resident bytes, or two reads streamed (the
     * first digit's histogram, with the second digit for the bins its sample guessed; the
     * equal-key count shares the apply read), a third only where the sample misses. */
    ck_assert_ptr_nonnull(strstr(text, "model.layers.1.mlp.weight F16 [17, 33]"));
    ck_assert_ptr_nonnull(strstr(text, ", resident, read 1x\n"));
    if (streamed)
        ck_assert_ptr_nonnull(strstr(text, ", streamed, read 2x (+1 if its sample misses)\n"));
    else
        ck_assert_ptr_null(strstr(text, "streamed"));
    free(text);
}

/* Read once: a tensor whose chunks fit in the buffers stays resident through its statistics
 * passes (ties has three); a larger one is streamed and read again per pass. The read ring's
 * own count equals what `smelt plan` promised, on both I/O paths, and the bytes written do not
 * depend on which way a tensor went. */
START_TEST(resident_tensors_are_read_once)
{
    char *out_dir, *cfg = setup(&out_dir);
    char text[2048];
    char *root = strdup(cfg);
    *strrchr(root, '/') = 0;
    snprintf(text, sizeof text,
             "merge_method: ties\nbase_model: %s/m0\nmodels:\n"
             "  - model: %s/m1\n    parameters: {weight: 0.7, density: 0.4}\n", root, root);
    tu_write_file(cfg, text, strlen(text));
    smelt_ctx *ctx = smelt_ctx_new();
    char *first = NULL;
    uint64_t budgets[] = {64u << 20, 3u << 20};
    for (size_t b = 0; b < 2; b++)
        for (int pread_only = 0; pread_only < 2; pread_only++) {
            smelt_merge_options opts;
            smelt_merge_options_default(&opts);
            opts.max_memory = budgets[b];
            opts.threads = 2; /* ties' per-worker histograms: the same chunks on any machine */
            opts.overwrite = 1;
            opts.force_pread = pread_only;
            opts.progress = keep_progress;
            unsigned long long to_read, in_bytes;
            planned_reads(ctx, cfg, &opts, &to_read, &in_bytes, b == 1);
            memset(&last_progress, 0, sizeof last_progress);
            ck_assert_msg(smelt_merge(ctx, cfg, out_dir, &opts) == SMELT_OK, "%s",
                          smelt_errmsg(ctx));
            ck_assert_uint_eq(last_progress.bytes_from_files, to_read);
            ck_assert_uint_eq(last_progress.bytes_read, to_read);
            if (b == 0)
                ck_assert_uint_eq(to_read, in_bytes); /* everything resident: read once */
            else
                ck_assert_uint_gt(to_read, in_bytes); /* the embedding is streamed */
            char *digest = file_digest(out_dir);
            if (!first)
                first = digest;
            else {
                ck_assert_str_eq(digest, first);
                free(digest);
            }
        }
    free(first);
    free(root);
    smelt_ctx_free(ctx);
    free(cfg);
    free(out_dir);
}
END_TEST

/* DELLA leaves its keep masks in the carry for apply (smelt_method.carry_bytes): the carry takes
 * only what the chunks leave of the budget, so at every budget each tensor is resident with it
 * exactly when it is without it (no extra read), the buffers stay inside the budget, and some
 * budgets do carry. */
START_TEST(carry_costs_no_residency)
{
    char *out_dir, *cfg = setup(&out_dir);
    char text[2048];
    char *root = strdup(cfg);
    *strrchr(root, '/') = 0;
    snprintf(text, sizeof text,
             "merge_method: della\nbase_model: %s/m0\nmodels:\n"
             "  - model: %s/m1\n    parameters: {weight: 0.7, density: 0.4, epsilon: 0.1}\n",
             root, root);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_merge_spec *spec;
    ck_assert_int_eq(smelt_config_parse(ctx, cfg, text, strlen(text), &spec), SMELT_OK);
    smelt_plan_options popts = {.random_seed = 1};
    smelt_plan *plan;
    ck_assert_msg(smelt_plan_build(ctx, spec, &popts, &plan) == SMELT_OK, "%s",
                  smelt_errmsg(ctx));
    const smelt_plan *const plans[1] = {plan};
    size_t carried = 0, layouts = 0;
    for (uint64_t budget = 256u << 10; budget <= (64u << 20); budget += budget / 8) {
        smelt_engine_layout without, with;
        int rc = smelt_engine_layout_chunks(ctx, plans, 1, budget, 2, &without);
        ck_assert_int_eq(smelt_engine_layout_for(ctx, plan, budget, 2, &with), rc);
        if (rc != SMELT_OK)
            continue;
        layouts++;
        ck_assert_uint_le(with.buffer_bytes, budget);
        ck_assert_uint_eq(with.chunk_elements, without.chunk_elements);
        for (size_t t = 0; t < plan->ntensors; t++) {
            ck_assert_int_eq(smelt_engine_tensor_resident(plans, 1, &with, t),
                             smelt_engine_tensor_resident(plans, 1, &without, t));
            carried += smelt_engine_tensor_carry(plans, 1, &with, t) > 0;
        }
    }
    ck_assert_uint_gt(layouts, 10);
    ck_assert_uint_gt(carried, 0);
    smelt_plan_free(plan);
    smelt_ctx_free(ctx);
    free(root);
    free(cfg);
    free(out_dir);
}
END_TEST

START_TEST(cancel_leaves_nothing_complete)
{
    char *out_dir, *cfg = setup(&out_dir);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_merge_options opts;
    smelt_merge_options_default(&opts);
    volatile int cancel = 1;
    opts.cancel = &cancel;
    ck_assert_int_eq(smelt_merge(ctx, cfg, out_dir, &opts), SMELT_E_INTERRUPTED);
    char *model = tu_path(out_dir, "model.safetensors");
    char *tmp = tu_path(out_dir, "model.safetensors.smelt-tmp");
    char *journal = tu_path(out_dir, ".smelt-journal");
    /* Interrupted: a resumable state (journal + temporary file), nothing with a final name. */
    ck_assert_int_ne(access(model, F_OK), 0);
    ck_assert_int_eq(smelt_merge_resumable(ctx), 1);
    ck_assert_int_eq(access(tmp, F_OK), 0);
    ck_assert_int_eq(access(journal, F_OK), 0);
    /* Without --resume that state is refused; with it the merge completes and cleans up. */
    cancel = 0;
    ck_assert_int_eq(smelt_merge(ctx, cfg, out_dir, &opts), SMELT_E_ARG);
    opts.resume = 1;
    ck_assert_msg(smelt_merge(ctx, cfg, out_dir, &opts) == SMELT_OK, "%s", smelt_errmsg(ctx));
    ck_assert_int_eq(smelt_merge_resumable(ctx), 0);
    ck_assert_int_eq(access(model, F_OK), 0);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    ck_assert_int_ne(access(journal, F_OK), 0);
    free(journal);
    free(model);
    free(tmp);
    smelt_ctx_free(ctx);
    free(cfg);
    free(out_dir);
}
END_TEST

START_TEST(budget_too_small_is_refused_before_writing)
{
    char *out_dir, *cfg = setup(&out_dir);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_merge_options opts;
    smelt_merge_options_default(&opts);
    opts.max_memory = 4096;
    ck_assert_int_eq(smelt_merge(ctx, cfg, out_dir, &opts), SMELT_E_BUDGET);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "raise --max-memory"));
    ck_assert_int_ne(access(out_dir, F_OK), 0); /* not even the directory */
    smelt_ctx_free(ctx);
    free(cfg);
    free(out_dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine");
    TCase *tc = tcase_create("engine");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, merges_every_kind_of_tensor);
    tcase_add_test(tc, budget_and_threads_do_not_change_bytes);
    tcase_add_test(tc, resident_tensors_are_read_once);
    tcase_add_test(tc, carry_costs_no_residency);
    tcase_add_test(tc, cancel_leaves_nothing_complete);
    tcase_add_test(tc, budget_too_small_is_refused_before_writing);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
