/* `smelt inspect`: what a model reference holds, from its headers alone. */
#include "inspect/report.h"

#include "common/util.h"

#include "format/gguf.h"
#include "format/safetensors.h"
#include "plan/plan.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long long ull;

typedef struct dtype_total {
    uint64_t tensors, bytes;
} dtype_total;

typedef struct summary {
    uint64_t bytes;
    dtype_total per_dtype[SMELT_DT_COUNT];
    uint64_t *file_tensors; /* per file */
    long layers;
} summary;

static int summarize(const smelt_model *m, summary *s)
{
    memset(s, 0, sizeof *s);
    s->file_tensors = calloc(m->nfiles + 1, sizeof *s->file_tensors);
    if (!s->file_tensors)
        return -1;
    long top = -1;
    for (size_t i = 0; i < m->ntensors; i++) {
        const smelt_tensor_info *t = &m->tensors[i];
        s->bytes += t->nbytes;
        s->per_dtype[t->dtype].tensors++;
        s->per_dtype[t->dtype].bytes += t->nbytes;
        s->file_tensors[t->file]++;
        long layer = smelt_layer_index(t->name);
        if (layer > top)
            top = layer;
    }
    s->layers = top + 1;
    return 0;
}

static int print_text(const smelt_model *m, const summary *s, FILE *out)
{
    fprintf(out, "model: %s\n", m->ref);
    fprintf(out, "files: %u\n", m->nfiles);
    for (uint32_t f = 0; f < m->nfiles; f++)
        fprintf(out, "  %s  %llu bytes  %llu tensors\n", m->files[f].path,
                (ull)m->files[f].size, (ull)s->file_tensors[f]);
    fprintf(out, "tensors: %zu  bytes: %llu (%.2f GB)\n", m->ntensors, (ull)s->bytes,
            (double)s->bytes / 1e9);
    for (int d = 0; d < SMELT_DT_COUNT; d++)
        if (s->per_dtype[d].tensors)
            fprintf(out, "  %-12s %llu tensors  %llu bytes\n", smelt_dtype_name((smelt_dtype)d),
                    (ull)s->per_dtype[d].tensors, (ull)s->per_dtype[d].bytes);
    fprintf(out, "layers: %ld\n", s->layers);
    fprintf(out, "metadata: %s\n", m->metadata_json ? m->metadata_json : "(none)");
    fputc('\n', out);

    /* Column widths from the data so the table lines up whatever the names. */
    size_t wname = strlen("TENSOR"), wdtype = strlen("DTYPE"), wshape = strlen("SHAPE");
    char shape[256];
    for (size_t i = 0; i < m->ntensors; i++) {
        const smelt_tensor_info *t = &m->tensors[i];
        smelt_format_shape(shape, sizeof shape, t->shape, t->ndim);
        size_t n = strlen(t->name), d = strlen(smelt_dtype_name(t->dtype)), h = strlen(shape);
        wname = n > wname ? n : wname;
        wdtype = d > wdtype ? d : wdtype;
        wshape = h > wshape ? h : wshape;
    }
    fprintf(out, "%-*s  %-*s  %-*s  %14s  %s\n", (int)wname, "TENSOR", (int)wdtype, "DTYPE",
            (int)wshape, "SHAPE", "BYTES", "FILE");
    for (size_t i = 0; i < m->ntensors; i++) {
        const smelt_tensor_info *t = &m->tensors[i];
        smelt_format_shape(shape, sizeof shape, t->shape, t->ndim);
        fprintf(out, "%-*s  %-*s  %-*s  %14llu  %s\n", (int)wname, t->name, (int)wdtype,
                smelt_dtype_name(t->dtype), (int)wshape, shape, (ull)t->nbytes,
                smelt_report_base_name(m->files[t->file].path));
    }
    return 0;
}

static json_t *shape_json(const smelt_tensor_info *t)
{
    json_t *a = json_array();
    for (uint32_t d = 0; a && d < t->ndim; d++)
        json_array_append_new(a, json_integer((json_int_t)t->shape[d]));
    return a;
}

static int print_json(const smelt_model *m, const summary *s, FILE *out)
{
    json_t *root = json_object(), *files = json_array(), *dtypes = json_object(),
           *tensors = json_array();
    json_t *meta = m->metadata_json ? json_loads(m->metadata_json, JSON_DECODE_ANY, NULL) : NULL;
    int rc = -1;
    if (!root || !files || !dtypes || !tensors || (m->metadata_json && !meta))
        goto out;
    json_object_set_new(root, "ref", json_string(m->ref));
    json_object_set_new(root, "directory", m->dir ? json_string(m->dir) : json_null());
    for (uint32_t f = 0; f < m->nfiles; f++)
        json_array_append_new(files,
                              json_pack("{s:s, s:s, s:I, s:I}", "name",
                                        smelt_report_base_name(m->files[f].path), "path",
                                        m->files[f].path, "bytes", (json_int_t)m->files[f].size,
                                        "tensors", (json_int_t)s->file_tensors[f]));
    json_object_set(root, "files", files);
    json_object_set_new(root, "tensor_count", json_integer((json_int_t)m->ntensors));
    json_object_set_new(root, "total_bytes", json_integer((json_int_t)s->bytes));
    for (int d = 0; d < SMELT_DT_COUNT; d++)
        if (s->per_dtype[d].tensors)
            json_object_set_new(dtypes, smelt_dtype_name((smelt_dtype)d),
                                json_pack("{s:I, s:I}", "tensors",
                                          (json_int_t)s->per_dtype[d].tensors, "bytes",
                                          (json_int_t)s->per_dtype[d].bytes));
    json_object_set(root, "dtypes", dtypes);
    json_object_set_new(root, "layers", json_integer(s->layers));
    json_object_set(root, "metadata", meta ? meta : json_null());
    for (size_t i = 0; i < m->ntensors; i++) {
        const smelt_tensor_info *t = &m->tensors[i];
        json_t *e = json_pack("{s:s, s:s, s:o, s:I, s:s, s:I}", "name", t->name, "dtype",
                              smelt_dtype_name(t->dtype), "shape", shape_json(t), "bytes",
                              (json_int_t)t->nbytes, "file",
                              smelt_report_base_name(m->files[t->file].path), "offset",
                              (json_int_t)t->offset);
        if (!e || json_array_append_new(tensors, e) != 0)
            goto out;
    }
    json_object_set(root, "tensors", tensors);
    rc = smelt_report_dump_json(root, out);
out:
    json_decref(meta);
    json_decref(tensors);
    json_decref(dtypes);
    json_decref(files);
    json_decref(root);
    return rc;
}

int smelt_inspect(smelt_ctx *ctx, const char *ref, int json, FILE *out)
{
    if (!ref || !out)
        return smelt_fail(ctx, SMELT_E_ARG, "smelt_inspect: ref and out are required");
    if (smelt_gguf_is_path(ref))
        return smelt_inspect_gguf(ctx, ref, json, out);
    smelt_model *m;
    int rc = smelt_model_open(ctx, ref, &m);
    if (rc != SMELT_OK)
        return rc;
    if (m->gguf) { /* a directory holding a GGUF merge's model.gguf */
        char *path = smelt_strdup(m->files[0].path);
        smelt_model_close(m);
        if (!path)
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        rc = smelt_inspect_gguf(ctx, path, json, out);
        free(path);
        return rc;
    }
    if ((rc = smelt_layer_check_model(ctx, m)) != SMELT_OK) {
        smelt_model_close(m);
        return rc;
    }
    summary s;
    if (summarize(m, &s) != 0) {
        smelt_model_close(m);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    int bad = json ? print_json(m, &s, out) : print_text(m, &s, out);
    free(s.file_tensors);
    smelt_model_close(m);
    if (bad && !ferror(out))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory building the report");
    if (fflush(out) != 0 || ferror(out))
        return smelt_fail(ctx, SMELT_E_IO, "cannot write the report");
    return SMELT_OK;
}
