/* libFuzzer target: the tensor-name / plan path. Each input becomes two small models in a
 * scratch directory and a config over them, planned with smelt_plan_build (which reads no tensor
 * data): layer indices read off names, renumbering, slices' layer ranges, pre/post tensors,
 * duplicate output names, shapes and dtypes across models, parameter resolution.
 *
 * Input layout: byte 0 picks the config, byte 1 the second model, the rest is tensor names, one
 * per line (written JSON-escaped into a valid header, so the fuzzer spends its time on names,
 * not on JSON syntax; fuzz_st_header covers that). The last byte of a name, when a digit,
 * becomes the tensor's 1-D length.
 *   byte 0 & 3: 0 linear over models, 1 linear slices, 2 slerp over models, 3 passthrough
 *               slices; the slices' layer ranges start at (byte 1 >> 2) % 4 and span
 *               (byte 0 >> 3) % 4 layers
 *   byte 0 & 4: the second model is BF16 instead of F32
 *   byte 1 & 1: the second model drops its last name; & 2: it repeats the names with "0"
 *               appended to each layer index (so layers renumber differently) */
#include "config/config.h"
#include "plan/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

static void quiet(void *user, int level, const char *message)
{
    (void)user, (void)level, (void)message;
}

static void remove_dir(void)
{
    static const char *names[] = {"a.safetensors", "b.safetensors"};
    char path[160];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
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

/* Writes dir/file: a safetensors file with one tensor per name (zero data). `renumber` appends a
 * '0' after the first digit run following ".layers." (layers.3 -> layers.30). */
static void write_model(const char *file, const char *const *names, const size_t *lens,
                        size_t n, int bf16, int renumber)
{
    buf h = {0};
    put_str(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        char name[512];
        size_t len = lens[i] < 400 ? lens[i] : 400;
        memcpy(name, names[i], len);
        if (renumber) {
            char *l = memmem(name, len, ".layers.", 8);
            if (l) {
                char *d = l + 8;
                while (d < name + len && *d >= '0' && *d <= '9')
                    d++;
                memmove(d + 1, d, (size_t)(name + len - d));
                *d = '0';
                len++;
            }
        }
        uint64_t elems = len && name[len - 1] >= '0' && name[len - 1] <= '9'
                             ? (uint64_t)(name[len - 1] - '0') + 1 : 2;
        uint64_t bytes = elems * (bf16 ? 2 : 4);
        char desc[160];
        put_str(&h, ",");
        put_json_name(&h, name, len);
        snprintf(desc, sizeof desc, ":{\"dtype\":\"%s\",\"shape\":[%llu],\"data_offsets\":[%llu,%llu]}",
                 bf16 ? "BF16" : "F32", (unsigned long long)elems, (unsigned long long)at,
                 (unsigned long long)(at + bytes));
        put_str(&h, desc);
        at += bytes;
    }
    put_str(&h, "}");
    while (h.len % 8)
        put_str(&h, " ");
    char path[160];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    uint8_t prefix[8];
    for (int i = 0; i < 8; i++)
        prefix[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    fwrite(prefix, 1, 8, f);
    fwrite(h.p, 1, h.len, f);
    static const uint8_t zeros[4096];
    for (uint64_t left = at; left;) {
        size_t chunk = left < sizeof zeros ? (size_t)left : sizeof zeros;
        fwrite(zeros, 1, chunk, f);
        left -= chunk;
    }
    if (fclose(f) != 0)
        abort();
    free(h.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready = 0;
    if (!ready) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(dir, sizeof dir, "%s/smelt-fuzz-plan.XXXXXX", base);
        if (!mkdtemp(dir))
            abort();
        atexit(remove_dir);
        ready = 1;
    }
    if (size < 2 || size > 8192)
        return 0;
    uint8_t mode = data[0], variant = data[1];
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
    write_model("a.safetensors", names, lens, n, 0, 0);
    size_t nb = (variant & 1) && n > 1 ? n - 1 : n;
    write_model("b.safetensors", names, lens, nb, (mode & 4) != 0, (variant & 2) != 0);

    char config[1024];
    unsigned lo = (unsigned)(variant >> 2) % 4, span = (unsigned)(mode >> 3) % 4;
    switch (mode & 3) {
    case 0:
        snprintf(config, sizeof config, "merge_method: linear\nmodels:\n"
                 "  - {model: %s/a.safetensors, parameters: {weight: 0.5}}\n"
                 "  - {model: %s/b.safetensors, parameters: {weight: 0.5}}\n", dir, dir);
        break;
    case 1:
        snprintf(config, sizeof config, "merge_method: linear\nslices:\n"
                 "  - sources:\n"
                 "      - {model: %s/a.safetensors, layer_range: [%u, %u], parameters: {weight: 1.0}}\n"
                 "      - {model: %s/b.safetensors, layer_range: [%u, %u], parameters: {weight: 1.0}}\n"
                 "  - sources:\n"
                 "      - {model: %s/a.safetensors, layer_range: [0, %u], parameters: {weight: 1.0}}\n"
                 "      - {model: %s/b.safetensors, layer_range: [0, %u], parameters: {weight: 1.0}}\n",
                 dir, lo, lo + span, dir, lo, lo + span, dir, span, dir, span);
        break;
    case 2:
        snprintf(config, sizeof config, "merge_method: slerp\nbase_model: %s/a.safetensors\n"
                 "parameters: {t: [0.0, 0.5, 1.0]}\nmodels:\n"
                 "  - {model: %s/a.safetensors}\n  - {model: %s/b.safetensors}\n", dir, dir, dir);
        break;
    default:
        snprintf(config, sizeof config, "merge_method: passthrough\nslices:\n"
                 "  - sources: [{model: %s/b.safetensors, layer_range: [%u, %u]}]\n"
                 "  - sources: [{model: %s/a.safetensors, layer_range: [0, %u]}]\n",
                 dir, lo, lo + span, dir, span);
        break;
    }
    smelt_ctx *ctx = smelt_ctx_new();
    if (!ctx)
        return 0;
    smelt_ctx_set_log(ctx, quiet, NULL);
    smelt_merge_spec *spec;
    if (smelt_config_parse(ctx, "fuzz.yml", config, strlen(config), &spec) == SMELT_OK) {
        smelt_plan_options opts = {.out_shard_size = 1u << 20, .random_seed = 1,
                                   .copy_tokenizer = 0, .allow_crimes = 1};
        smelt_plan *plan;
        if (smelt_plan_build(ctx, spec, &opts, &plan) == SMELT_OK)
            smelt_plan_free(plan);
    }
    smelt_ctx_free(ctx);
    return 0;
}
