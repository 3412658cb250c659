/* libFuzzer target: the tensor-name / plan path. Each input becomes the headers of two small
 * models and a config over them, planned with smelt_plan_build_with (the planner reads no
 * tensor data): layer indices read off names, renumbering, slices' layer ranges, pre/post
 * tensors, duplicate output names, shapes and dtypes across models, integer tensors copied,
 * vocabulary rows cut, parameter resolution (gradients over layers), the base model, the
 * tokenizer source and the shard layout.
 *
 * Nothing touches the file system: the models are built in memory from their headers through
 * smelt_st_parse, exactly as smelt_model_open builds a lone file's model (one file, its
 * tensors, the name index; fd -1 and no directory, as a lone file without config.json has), and
 * reach the planner through smelt_plan_build_with's opener. Writing the two files per execution
 * cost ~100x in speed (86 K executions in 10 minutes).
 *
 * Input layout: byte 0 picks the config, byte 1 the second model, the rest is tensor names, one
 * per line (written JSON-escaped into a valid header, so the fuzzer spends its time on names,
 * not on JSON syntax; fuzz_st_header covers that). The last byte of a name, when a digit d,
 * makes the tensor 1-D of d + 1 elements; when the byte before it is a digit c too, 2-D of
 * [c + 1, d + 1]; otherwise the tensor is [2].
 *   byte 0 & 3: 0 linear over models, 1 linear slices, 2 slerp over models, 3 passthrough
 *               slices; the slices' layer ranges start at (byte 1 >> 2) % 4 and span
 *               (byte 0 >> 3) % 4 layers
 *   byte 0 & 4: the second model is BF16 instead of F32
 *   byte 0 >> 5 & 3: 1 the config forces dtype: float16 and the second model's tensors have
 *               one more row (vocabulary cut or shape mismatch); 2 tensors whose last digit is
 *               odd are I32 (copied, not merged), in the second model only when it is not BF16,
 *               where its even-digit ones are I32 instead (a float pattern against an integer
 *               input); 3 tokenizer_source is the second model, copied, and shards are at most
 *               64 bytes (one tensor each)
 *   byte 0 & 0x80: config 0 becomes ties and config 2 task_arithmetic, over base model a with
 *               per-model gradients (density, weight) resolved per layer
 *   byte 1 & 1: the second model drops its last name; & 2: it repeats the names with "0"
 *               appended to each layer index (so layers renumber differently) */
#include "config/config.h"
#include "format/st_internal.h"
#include "plan/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void quiet(void *user, int level, const char *message)
{
    (void)user, (void)level, (void)message;
}

/* A growable string. */
typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            abort();
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void put_str(buf *b, const char *s) { put(b, s, strlen(s)); }

/* name as a JSON string: quotes, backslashes and control bytes escaped; other bytes as they are
 * (invalid UTF-8 is for the parser to refuse). */
static void put_json_name(buf *b, const char *name, size_t n)
{
    put_str(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        char esc[8];
        if (c == '"' || c == '\\' || c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put_str(b, esc);
        } else {
            put(b, (const char *)&name[i], 1);
        }
    }
    put_str(b, "\"");
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* How one model's tensors are written. */
typedef struct model_kind {
    int bf16;        /* BF16 instead of F32 */
    int renumber;    /* a '0' after the first digit run following ".layers." (3 -> 30) */
    int extra_row;   /* one more row in dimension 0 */
    int int_parity;  /* 1: tensors whose last digit is odd are I32; 0: even; -1: none */
} model_kind;

/* The model file's bytes as far as the planner sees them: the 8-byte length prefix and the
 * JSON header (the data would follow; only its size is kept). */
typedef struct model_header {
    buf bytes;
    uint64_t file_size;
} model_header;

/* Builds the header of a safetensors file with one tensor per name (data not stored). */
static void build_model(model_header *out, const char *const *names, const size_t *lens,
                        size_t n, const model_kind *kind)
{
    buf h = {0};
    put(&h, "\0\0\0\0\0\0\0\0", 8); /* the length prefix, filled in below */
    put_str(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        char name[512];
        size_t len = lens[i] < 400 ? lens[i] : 400;
        memcpy(name, names[i], len);
        if (kind->renumber) {
            char *l = memmem(name, len, ".layers.", 8);
            if (l) {
                char *d = l + 8;
                while (d < name + len && is_digit(*d))
                    d++;
                memmove(d + 1, d, (size_t)(name + len - d));
                *d = '0';
                len++;
            }
        }
        uint64_t shape[2] = {2, 0};
        int ndim = 1;
        if (len && is_digit(name[len - 1])) {
            shape[0] = (uint64_t)(name[len - 1] - '0') + 1;
            if (len > 1 && is_digit(name[len - 2])) {
                shape[1] = shape[0];
                shape[0] = (uint64_t)(name[len - 2] - '0') + 1;
                ndim = 2;
            }
        }
        if (kind->extra_row)
            shape[0]++;
        const char *dtype = kind->bf16 ? "BF16" : "F32";
        if (kind->int_parity >= 0 && len && is_digit(name[len - 1]) &&
            (name[len - 1] - '0') % 2 == kind->int_parity)
            dtype = "I32";
        uint64_t elems = ndim == 2 ? shape[0] * shape[1] : shape[0];
        uint64_t bytes = elems * (strcmp(dtype, "BF16") == 0 ? 2 : 4);
        char desc[200];
        put_str(&h, ",");
        put_json_name(&h, name, len);
        if (ndim == 2)
            snprintf(desc, sizeof desc, ":{\"dtype\":\"%s\",\"shape\":[%llu,%llu],", dtype,
                     (unsigned long long)shape[0], (unsigned long long)shape[1]);
        else
            snprintf(desc, sizeof desc, ":{\"dtype\":\"%s\",\"shape\":[%llu],", dtype,
                     (unsigned long long)shape[0]);
        put_str(&h, desc);
        snprintf(desc, sizeof desc, "\"data_offsets\":[%llu,%llu]}", (unsigned long long)at,
                 (unsigned long long)(at + bytes));
        put_str(&h, desc);
        at += bytes;
    }
    put_str(&h, "}");
    while (h.len % 8)
        put_str(&h, " ");
    uint64_t hlen = h.len - 8;
    for (int i = 0; i < 8; i++)
        h.p[i] = (char)(uint8_t)(hlen >> (8 * i));
    out->bytes = h;
    out->file_size = h.len + at;
}

static const char *info_name_at(const void *array, size_t i)
{
    return ((const smelt_tensor_info *)array)[i].name;
}

/* The opener smelt_plan_build_with calls: "a.safetensors" and "b.safetensors" are the two
 * in-memory models (models[0] and [1]); any other reference does not exist. */
static int open_in_memory(void *user, smelt_ctx *ctx, const char *ref, smelt_model **out)
{
    const model_header *models = user;
    *out = NULL;
    const model_header *mh = strcmp(ref, "a.safetensors") == 0   ? &models[0]
                             : strcmp(ref, "b.safetensors") == 0 ? &models[1]
                                                                 : NULL;
    if (!mh)
        return smelt_fail(ctx, SMELT_E_IO, "%s: no such file or directory", ref);
    smelt_model *m = calloc(1, sizeof *m);
    if (!m)
        abort();
    m->ref = strdup(ref);
    m->files = calloc(1, sizeof *m->files);
    if (!m->ref || !m->files || !(m->files[0].path = strdup(ref)))
        abort();
    m->nfiles = 1;
    m->files[0].fd = -1;
    m->files[0].size = mh->file_size;
    int rc = smelt_st_parse(ctx, ref, (const uint8_t *)mh->bytes.p, mh->bytes.len, mh->file_size,
                            &m->tensors, &m->ntensors, &m->files[0].data_start,
                            &m->metadata_json);
    if (rc == SMELT_OK) {
        smelt_name_index *index = calloc(1, sizeof *index);
        size_t x, y;
        if (!index)
            abort();
        int built = smelt_name_index_build(index, m->tensors, m->ntensors, info_name_at, &x, &y);
        if (built < 0)
            abort();
        if (built > 0) {
            /* One file cannot repeat a name (smelt_st_parse refuses it): a duplicate here is a
             * parser bug, so make it a crash the fuzzer reports. */
            abort();
        }
        m->name_index = index;
    }
    if (rc != SMELT_OK) {
        smelt_model_close(m);
        return rc;
    }
    *out = m;
    return SMELT_OK;
}

/* The spec of a config, parsed once: there are about a hundred distinct configs, and the
 * YAML parse (fuzz_config's subject) cost more than the plan itself. The planner borrows the
 * spec and never modifies it, so every plan of a config sees the same spec. */
static smelt_merge_spec *spec_for(smelt_ctx *ctx, const char *config)
{
    static struct {
        char *text;
        smelt_merge_spec *spec;
    } cache[256];
    static size_t n;
    for (size_t i = 0; i < n; i++)
        if (strcmp(cache[i].text, config) == 0)
            return cache[i].spec;
    if (n == sizeof cache / sizeof *cache)
        abort(); /* more configs than the input layout can make */
    smelt_merge_spec *spec;
    if (smelt_config_parse(ctx, "fuzz.yml", config, strlen(config), &spec) != SMELT_OK)
        abort(); /* every config is valid: a refusal means the fuzzer tests nothing */
    if (!(cache[n].text = strdup(config)))
        abort();
    cache[n++].spec = spec;
    return spec;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 8192)
        return 0;
    uint8_t mode = data[0], variant = data[1];
    unsigned extra = (unsigned)(mode >> 5) & 3;
    int alt_method = (mode & 0x80) != 0;
    const char *names[256];
    size_t lens[256], n = 0;
    const char *text = (const char *)data + 2, *end = (const char *)data + size;
    while (text < end && n < 256) {
        const char *nl = memchr(text, '\n', (size_t)(end - text));
        size_t len = (size_t)((nl ? nl : end) - text);
        if (len) {
            names[n] = text;
            lens[n++] = len;
        }
        text += len + 1;
    }
    if (n == 0)
        return 0;
    model_header models[2];
    model_kind ka = {.int_parity = extra == 2 ? 1 : -1};
    model_kind kb = {.bf16 = (mode & 4) != 0, .renumber = (variant & 2) != 0,
                     .extra_row = extra == 1,
                     .int_parity = extra != 2 ? -1 : (mode & 4) ? 0 : 1};
    build_model(&models[0], names, lens, n, &ka);
    size_t nb = (variant & 1) && n > 1 ? n - 1 : n;
    build_model(&models[1], names, lens, nb, &kb);

    char config[1024];
    size_t at = 0;
    unsigned lo = (unsigned)(variant >> 2) % 4, span = (unsigned)(mode >> 3) % 4;
    switch (mode & 3) {
    case 0:
        if (alt_method)
            at = (size_t)snprintf(config, sizeof config,
                                  "merge_method: ties\nbase_model: a.safetensors\n"
                                  "parameters: {normalize: true}\nmodels:\n"
                                  "  - {model: a.safetensors}\n"
                                  "  - {model: b.safetensors, parameters: {weight: [0.2, 0.8], "
                                  "density: [1.0, 0.5]}}\n");
        else
            at = (size_t)snprintf(config, sizeof config,
                                  "merge_method: linear\nmodels:\n"
                                  "  - {model: a.safetensors, parameters: {weight: 0.5}}\n"
                                  "  - {model: b.safetensors, parameters: {weight: 0.5}}\n");
        break;
    case 1:
        at = (size_t)snprintf(
            config, sizeof config,
            "merge_method: linear\nslices:\n"
            "  - sources:\n"
            "      - {model: a.safetensors, layer_range: [%u, %u], parameters: {weight: 1.0}}\n"
            "      - {model: b.safetensors, layer_range: [%u, %u], parameters: {weight: 1.0}}\n"
            "  - sources:\n"
            "      - {model: a.safetensors, layer_range: [0, %u], parameters: {weight: 1.0}}\n"
            "      - {model: b.safetensors, layer_range: [0, %u], parameters: {weight: 1.0}}\n",
            lo, lo + span, lo, lo + span, span, span);
        break;
    case 2:
        if (alt_method)
            at = (size_t)snprintf(config, sizeof config,
                                  "merge_method: task_arithmetic\nbase_model: a.safetensors\n"
                                  "models:\n  - {model: b.safetensors, parameters: "
                                  "{weight: [0.0, 1.0, 0.5]}}\n");
        else
            at = (size_t)snprintf(config, sizeof config,
                                  "merge_method: slerp\nbase_model: a.safetensors\n"
                                  "parameters: {t: [0.0, 0.5, 1.0]}\nmodels:\n"
                                  "  - {model: a.safetensors}\n  - {model: b.safetensors}\n");
        break;
    default:
        at = (size_t)snprintf(config, sizeof config,
                              "merge_method: passthrough\nslices:\n"
                              "  - sources: [{model: b.safetensors, layer_range: [%u, %u]}]\n"
                              "  - sources: [{model: a.safetensors, layer_range: [0, %u]}]\n",
                              lo, lo + span, span);
        break;
    }
    if (extra == 1)
        snprintf(config + at, sizeof config - at, "dtype: float16\n");
    else if (extra == 3)
        snprintf(config + at, sizeof config - at, "tokenizer_source: b.safetensors\n");

    static smelt_ctx *ctx;
    if (!ctx && !(ctx = smelt_ctx_new()))
        abort();
    smelt_ctx_clear(ctx);
    smelt_ctx_set_log(ctx, quiet, NULL);
    smelt_plan_options opts = {.out_shard_size = extra == 3 ? 64 : 1u << 20, .random_seed = 1,
                               .copy_tokenizer = extra == 3, .allow_crimes = 1};
    smelt_plan *plan;
    if (smelt_plan_build_with(ctx, spec_for(ctx, config), &opts, open_in_memory, models,
                              &plan) == SMELT_OK)
        smelt_plan_free(plan);
    free(models[0].bytes.p);
    free(models[1].bytes.p);
    return 0;
}
