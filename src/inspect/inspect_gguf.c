/* `smelt inspect FILE.gguf`: a GGUF file's (or split set's) tensors and metadata, from the
 * headers alone. */
#include "inspect/report.h"

#include "format/gguf.h"
#include "plan/plan.h"

#include <stdlib.h>
#include <string.h>

typedef unsigned long long ull;

/* Array values are summarized by their first elements: a tokenizer's 150k strings would bury
 * everything else. */
#define GGUF_ARRAY_HEAD 8

static json_t *str_json(const char *s, uint64_t len)
{
    json_t *j = json_stringn(s, (size_t)len);
    if (!j) { /* jansson refuses invalid UTF-8; say what it was instead */
        char t[64];
        snprintf(t, sizeof t, "<%llu bytes, not UTF-8>", (ull)len);
        j = json_string(t);
    }
    return j;
}

/* One scalar or string value as JSON (integers beyond int64 as strings). */
static json_t *scalar_json(const smelt_gguf_kv *kv)
{
    uint64_t u;
    int64_t i;
    double f;
    int b;
    const char *s;
    uint64_t len;
    if (!smelt_gguf_kv_int(kv, &i))
        return json_integer((json_int_t)i);
    if (!smelt_gguf_kv_uint(kv, &u)) {
        char t[32];
        snprintf(t, sizeof t, "%llu", (ull)u);
        return json_string(t);
    }
    if (!smelt_gguf_kv_float(kv, &f))
        return smelt_report_json_real(f);
    if (!smelt_gguf_kv_bool(kv, &b))
        return json_boolean(b);
    if (!smelt_gguf_kv_str(kv, &s, &len))
        return str_json(s, len);
    return json_null();
}

/* A value: scalars as themselves; arrays as {"array": elem type, "count": n, "first": [...]}. */
static json_t *value_json(const smelt_gguf_kv *kv)
{
    if (kv->type != SMELT_GGUF_ARRAY)
        return scalar_json(kv);
    json_t *head = json_array();
    smelt_gguf_kv e;
    for (uint64_t k = 0; head && k < kv->count && k < GGUF_ARRAY_HEAD; k++)
        if (!smelt_gguf_kv_elem(kv, k, &e))
            json_array_append_new(head, scalar_json(&e));
    return json_pack("{s:s, s:I, s:o}", "array", smelt_gguf_vtype_name(kv->elem_type), "count",
                     (json_int_t)kv->count, "first", head);
}

/* The torch-order shape: ne reversed. */
static void torch_shape(const smelt_gguf_tensor *t, uint64_t *shape)
{
    for (uint32_t d = 0; d < t->ndim; d++)
        shape[d] = t->ne[t->ndim - 1 - d];
}

static long layer_count(const smelt_gguf_set *g)
{
    long top = -1;
    for (size_t i = 0; i < g->ntensors; i++) {
        long l = smelt_layer_index(g->tensors[i].t->name);
        top = l > top ? l : top;
    }
    return top + 1;
}

/* Bytes of the tensors of one type (UINT32_MAX: of all). */
static uint64_t total_bytes(const smelt_gguf_set *g, uint32_t type)
{
    uint64_t n = 0;
    for (size_t i = 0; i < g->ntensors; i++)
        if (type == UINT32_MAX || g->tensors[i].t->type == type)
            n += g->tensors[i].t->nbytes;
    return n;
}

static uint64_t type_tensors(const smelt_gguf_set *g, uint32_t type)
{
    uint64_t n = 0;
    for (size_t i = 0; i < g->ntensors; i++)
        n += g->tensors[i].t->type == type;
    return n;
}

static int print_text(const smelt_gguf_set *set, FILE *out)
{
    const smelt_gguf *g = set->files[0]; /* the model's metadata lives in the first split */
    uint64_t bytes = total_bytes(set, UINT32_MAX);
    fprintf(out, "model: %s\n", g->path);
    fprintf(out, "format: GGUF v%u  alignment %u  data at byte %llu\n", g->version, g->alignment,
            (ull)g->data_start);
    fprintf(out, "files: %u\n", set->nfiles);
    for (uint32_t f = 0; f < set->nfiles; f++)
        fprintf(out, "  %s  %llu bytes  %zu tensors\n", set->files[f]->path,
                (ull)set->files[f]->size, set->files[f]->ntensors);
    fprintf(out, "tensors: %zu  bytes: %llu (%.2f GB)\n", set->ntensors, (ull)bytes,
            (double)bytes / 1e9);
    for (uint32_t t = 0; t < SMELT_GGML_TYPE_COUNT; t++)
        if (type_tensors(set, t))
            fprintf(out, "  %-12s %llu tensors  %llu bytes\n", smelt_ggml_type_get(t)->name,
                    (ull)type_tensors(set, t), (ull)total_bytes(set, t));
    fprintf(out, "layers: %ld\n", layer_count(set));
    fprintf(out, "metadata: %zu keys\n", g->nkv);
    for (size_t i = 0; i < g->nkv; i++) {
        json_t *v = value_json(&g->kvs[i]);
        char *s = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        json_decref(v);
        if (!s)
            return -1;
        fprintf(out, "  %s  %s  %s\n", g->kvs[i].key, smelt_gguf_vtype_name(g->kvs[i].type), s);
        free(s);
    }
    fputc('\n', out);

    size_t wname = strlen("TENSOR"), wshape = strlen("SHAPE");
    char shape[256];
    uint64_t sh[SMELT_GGUF_MAX_DIMS];
    for (size_t i = 0; i < set->ntensors; i++) {
        torch_shape(set->tensors[i].t, sh);
        smelt_format_shape(shape, sizeof shape, sh, set->tensors[i].t->ndim);
        size_t n = strlen(set->tensors[i].t->name), h = strlen(shape);
        wname = n > wname ? n : wname;
        wshape = h > wshape ? h : wshape;
    }
    fprintf(out, "%-*s  %-8s  %-*s  %14s  %14s  %s\n", (int)wname, "TENSOR", "TYPE", (int)wshape,
            "SHAPE", "BYTES", "OFFSET", "FILE");
    for (size_t i = 0; i < set->ntensors; i++) {
        const smelt_gguf_tensor *t = set->tensors[i].t;
        torch_shape(t, sh);
        smelt_format_shape(shape, sizeof shape, sh, t->ndim);
        fprintf(out, "%-*s  %-8s  %-*s  %14llu  %14llu  %s\n", (int)wname, t->name,
                smelt_ggml_type_get(t->type)->name, (int)wshape, shape, (ull)t->nbytes,
                (ull)t->file_offset,
                smelt_report_base_name(set->files[set->tensors[i].file]->path));
    }
    return 0;
}

static int print_json(const smelt_gguf_set *set, FILE *out)
{
    const smelt_gguf *g = set->files[0];
    json_t *root = json_object(), *files = json_array(), *types = json_object(),
           *meta = json_object(), *tensors = json_array();
    int rc = -1;
    if (!root || !files || !types || !meta || !tensors)
        goto out;
    json_object_set_new(root, "ref", json_string(g->path));
    json_object_set_new(root, "format", json_string("gguf"));
    json_object_set_new(root, "version", json_integer(g->version));
    json_object_set_new(root, "alignment", json_integer(g->alignment));
    json_object_set_new(root, "data_offset", json_integer((json_int_t)g->data_start));
    for (uint32_t f = 0; f < set->nfiles; f++)
        json_array_append_new(files, json_pack("{s:s, s:s, s:I, s:I}", "name",
                                               smelt_report_base_name(set->files[f]->path), "path",
                                               set->files[f]->path, "bytes",
                                               (json_int_t)set->files[f]->size, "tensors",
                                               (json_int_t)set->files[f]->ntensors));
    json_object_set(root, "files", files);
    json_object_set_new(root, "tensor_count", json_integer((json_int_t)set->ntensors));
    json_object_set_new(root, "total_bytes", json_integer((json_int_t)total_bytes(set, UINT32_MAX)));
    for (uint32_t t = 0; t < SMELT_GGML_TYPE_COUNT; t++)
        if (type_tensors(set, t))
            json_object_set_new(types, smelt_ggml_type_get(t)->name,
                                json_pack("{s:I, s:I}", "tensors", (json_int_t)type_tensors(set, t),
                                          "bytes", (json_int_t)total_bytes(set, t)));
    json_object_set(root, "types", types);
    json_object_set_new(root, "layers", json_integer(layer_count(set)));
    for (size_t i = 0; i < g->nkv; i++)
        if (json_object_set_new(meta, g->kvs[i].key, value_json(&g->kvs[i])) != 0)
            goto out;
    json_object_set(root, "metadata", meta);
    for (size_t i = 0; i < set->ntensors; i++) {
        const smelt_gguf_tensor *t = set->tensors[i].t;
        uint64_t sh[SMELT_GGUF_MAX_DIMS];
        torch_shape(t, sh);
        json_t *shape = json_array(), *ne = json_array();
        for (uint32_t d = 0; shape && ne && d < t->ndim; d++) {
            json_array_append_new(shape, json_integer((json_int_t)sh[d]));
            json_array_append_new(ne, json_integer((json_int_t)t->ne[d]));
        }
        json_t *e = json_pack("{s:s, s:s, s:o, s:o, s:I, s:s, s:I}", "name", t->name, "type",
                              smelt_ggml_type_get(t->type)->name, "shape", shape, "ne", ne,
                              "bytes", (json_int_t)t->nbytes, "file",
                              smelt_report_base_name(set->files[set->tensors[i].file]->path),
                              "offset", (json_int_t)t->file_offset);
        if (!e || json_array_append_new(tensors, e) != 0)
            goto out;
    }
    json_object_set(root, "tensors", tensors);
    rc = smelt_report_dump_json(root, out);
out:
    json_decref(tensors);
    json_decref(meta);
    json_decref(types);
    json_decref(files);
    json_decref(root);
    return rc;
}

int smelt_inspect_gguf(smelt_ctx *ctx, const char *path, int json, FILE *out)
{
    smelt_gguf_set *set;
    int rc = smelt_gguf_open_set(ctx, path, &set);
    if (rc != SMELT_OK)
        return rc;
    int bad = json ? print_json(set, out) : print_text(set, out);
    smelt_gguf_set_close(set);
    if (bad && !ferror(out))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory building the report");
    if (fflush(out) != 0 || ferror(out))
        return smelt_fail(ctx, SMELT_E_IO, "cannot write the report");
    return SMELT_OK;
}
