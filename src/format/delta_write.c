/* Building the smelt delta container's header (see delta.h). */
#include "format/delta.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define PLACEHOLDER 999999999999999999ll /* 18 nines: at least as wide as any real size */

static json_t *shape_json(const uint64_t *shape, uint32_t ndim)
{
    json_t *a = json_array();
    for (uint32_t k = 0; a && k < ndim; k++)
        if (json_array_append_new(a, json_integer((json_int_t)shape[k]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *hex_json(const uint8_t h[16])
{
    char hex[33];
    smelt_delta_hex(h, hex);
    return json_string(hex);
}

/* The metadata document: every field but the blob sizes, which the safetensors part holds. */
static char *document(const smelt_delta *d)
{
    json_t *doc = json_object(), *base = json_array(), *entries = json_array(),
           *files = json_array();
    int ok = doc && base && entries && files &&
             !json_object_set_new(doc, "version", json_integer(SMELT_DELTA_VERSION)) &&
             !json_object_set_new(doc, "frame_elements", json_integer(SMELT_DELTA_FRAME_ELEMS));
    for (size_t i = 0; ok && i < d->nbase; i++) {
        json_t *b = json_object();
        ok = b && !json_object_set_new(b, "file", json_string(d->base[i].name)) &&
             !json_object_set_new(b, "header_xxh3", hex_json(d->base[i].header_xxh3)) &&
             !json_object_set_new(b, "sample_xxh3", hex_json(d->base[i].sample_xxh3)) &&
             !json_array_append_new(base, b);
    }
    for (size_t i = 0; ok && i < d->nentries; i++) {
        const smelt_delta_entry *e = &d->entries[i];
        json_t *o = json_object();
        ok = o && !json_object_set_new(o, "name", json_string(e->name)) &&
             !json_object_set_new(o, "dtype", json_string(smelt_dtype_name(e->dtype))) &&
             !json_object_set_new(o, "shape", shape_json(e->shape, e->ndim)) &&
             !json_object_set_new(o, "mode",
                                  json_string(e->mode == SMELT_DELTA_XOR ? "xor" : "raw")) &&
             !json_array_append_new(entries, o);
    }
    for (size_t i = 0; ok && i < d->nfiles; i++) {
        const smelt_delta_file *f = &d->files[i];
        json_t *o = json_object();
        ok = o && !json_object_set_new(o, "name", json_string(f->name)) &&
             !json_object_set_new(o, "size", json_integer((json_int_t)f->size)) &&
             !json_object_set_new(o, "xxh3", hex_json(f->xxh3));
        if (ok && f->safetensors) {
            json_t *data = json_array();
            ok = data && f->nparts >= 1 &&
                 !json_object_set_new(o, "header", json_string(d->entries[f->parts[0]].name));
            for (size_t k = 1; ok && k < f->nparts; k++)
                ok = !json_array_append_new(data, json_string(d->entries[f->parts[k]].name));
            ok = ok && !json_object_set_new(o, "data", data);
            if (!ok)
                json_decref(data);
        } else if (ok) {
            ok = f->nparts == 1 &&
                 !json_object_set_new(o, "blob", json_string(d->entries[f->parts[0]].name));
        }
        ok = ok && !json_array_append_new(files, o);
    }
    char *text = NULL;
    if (ok && !json_object_set_new(doc, "base", base) &&
        !json_object_set_new(doc, "entries", entries) && !json_object_set_new(doc, "files", files))
        text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    else if (!ok) {
        json_decref(base);
        json_decref(entries);
        json_decref(files);
    }
    json_decref(doc);
    return text;
}

int smelt_delta_header(smelt_ctx *ctx, smelt_delta *d, int placeholder, size_t pad_to,
                       uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    char *doc = document(d);
    json_t *root = json_object(), *meta = json_object();
    int ok = doc && root && meta &&
             !json_object_set_new(meta, "format", json_string(SMELT_DELTA_FORMAT_NAME)) &&
             !json_object_set_new(meta, "smelt_delta_version", json_string("1")) &&
             !json_object_set_new(meta, "smelt_delta", json_string(doc)) &&
             !json_object_set_new(root, "__metadata__", meta);
    if (!ok)
        json_decref(meta);
    free(doc);
    uint64_t at = 0;
    for (size_t i = 0; ok && i < d->nentries; i++) {
        smelt_delta_entry *e = &d->entries[i];
        json_int_t begin = placeholder ? PLACEHOLDER : (json_int_t)at;
        json_int_t end = placeholder ? PLACEHOLDER : (json_int_t)(at + e->blob_size);
        json_int_t n = placeholder ? PLACEHOLDER : (json_int_t)e->blob_size;
        json_t *t = json_object(), *shape = json_array(), *offs = json_array();
        ok = t && shape && offs && !json_array_append_new(shape, json_integer(n)) &&
             !json_array_append_new(offs, json_integer(begin)) &&
             !json_array_append_new(offs, json_integer(end)) &&
             !json_object_set_new(t, "dtype", json_string("U8")) &&
             !json_object_set_new(t, "shape", shape) &&
             !json_object_set_new(t, "data_offsets", offs);
        if (!ok) {
            json_decref(shape);
            json_decref(offs);
        }
        ok = ok && !json_object_set_new(root, e->name, t);
        e->blob_offset = at; /* relative for now */
        at += e->blob_size;
    }
    char *text = ok ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!text)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory building the delta header");
    size_t natural = 8 + strlen(text), total = pad_to ? pad_to : (natural + 7) / 8 * 8;
    if (total < natural || total % 8) {
        free(text);
        return smelt_fail(ctx, SMELT_E_INTERNAL, "delta header of %zu bytes does not fit the "
                          "%zu reserved", natural, total);
    }
    uint8_t *buf = malloc(total);
    if (!buf) {
        free(text);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory building the delta header");
    }
    uint64_t hlen = total - 8;
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(buf + 8, text, natural - 8);
    memset(buf + natural, ' ', total - natural);
    free(text);
    for (size_t i = 0; i < d->nentries; i++)
        d->entries[i].blob_offset += total;
    *out = buf;
    *len = total;
    return SMELT_OK;
}
