/* The safetensors header reader. The rules are those of the format description and of the
 * reference reader's validation in https://github.com/huggingface/safetensors
 * (safetensors/src/tensor.rs: read_metadata, Metadata::validate); each gets its own message. */
#include "format/safetensors.h"

#include "common/util.h"
#include "format/st_internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long long ull;

static uint64_t read_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static int nonneg_int(const json_t *v) { return json_is_integer(v) && json_integer_value(v) >= 0; }

/* The JSON text of a value for a message; "?" when out of memory. Caller frees. */
static char *json_text(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    return s ? s : strdup("?");
}

/* Validates one tensor entry. Leaves data_offsets' BEGIN (relative) in t->offset. */
static int parse_tensor(smelt_ctx *ctx, const char *path, const char *name, json_t *v,
                        smelt_tensor_info *t)
{
    if (!json_is_object(v))
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: tensor '%s': the entry is %s; it must be an object with dtype, "
                          "shape and data_offsets", path, name, json_kind(v));
    const char *key;
    json_t *val;
    /* The reference reader deserializes entries into a struct of exactly these three fields. */
    json_object_foreach(v, key, val)
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return smelt_fail(ctx, SMELT_E_FORMAT,
                              "%s: tensor '%s': unknown key '%s' (an entry holds only dtype, "
                              "shape and data_offsets)", path, name, key);
    static const char *const required[] = {"dtype", "shape", "data_offsets"};
    for (int i = 0; i < 3; i++)
        if (!json_object_get(v, required[i]))
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: tensor '%s': the entry is missing '%s'",
                              path, name, required[i]);

    json_t *dtype = json_object_get(v, "dtype");
    if (!json_is_string(dtype))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: tensor '%s': dtype is %s, not a string", path,
                          name, json_kind(dtype));
    t->dtype = smelt_dtype_from_name(json_string_value(dtype));
    if (t->dtype == SMELT_DT_INVALID)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: tensor '%s': unknown dtype '%s'", path, name,
                          json_string_value(dtype));

    json_t *shape = json_object_get(v, "shape");
    int shape_ok = json_is_array(shape);
    for (size_t d = 0; shape_ok && d < json_array_size(shape); d++)
        shape_ok = nonneg_int(json_array_get(shape, d));
    if (!shape_ok) {
        char *text = json_text(shape);
        int rc = smelt_fail(ctx, SMELT_E_FORMAT,
                            "%s: tensor '%s': shape %s: dimensions must be non-negative integers",
                            path, name, text);
        free(text);
        return rc;
    }
    if (json_array_size(shape) > SMELT_MAX_DIMS)
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: tensor '%s': shape has %zu dimensions; smelt supports at most %d",
                          path, name, json_array_size(shape), SMELT_MAX_DIMS);
    t->ndim = (uint32_t)json_array_size(shape);
    for (uint32_t d = 0; d < t->ndim; d++)
        t->shape[d] = (uint64_t)json_integer_value(json_array_get(shape, d));

    json_t *offs = json_object_get(v, "data_offsets");
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        !nonneg_int(json_array_get(offs, 0)) || !nonneg_int(json_array_get(offs, 1))) {
        char *text = json_text(offs);
        int rc = smelt_fail(ctx, SMELT_E_FORMAT,
                            "%s: tensor '%s': data_offsets %s: they must be exactly 2 "
                            "non-negative integers [BEGIN, END]", path, name, text);
        free(text);
        return rc;
    }
    uint64_t begin = (uint64_t)json_integer_value(json_array_get(offs, 0));
    uint64_t end = (uint64_t)json_integer_value(json_array_get(offs, 1));
    if (end < begin)
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", path,
                          name, (ull)begin, (ull)end);

    char shape_text[256];
    smelt_format_shape(shape_text, sizeof shape_text, t->shape, t->ndim);
    const char *dt_name = smelt_dtype_name(t->dtype);
    /* A scalar (shape []) is one element: the empty product. */
    uint64_t numel = 1, bits;
    for (uint32_t d = 0; d < t->ndim; d++)
        if (smelt_mul_overflow(numel, t->shape[d], &numel))
            return smelt_fail(ctx, SMELT_E_FORMAT,
                              "%s: tensor '%s': shape %s: element count overflow (more than "
                              "2^64 elements)", path, name, shape_text);
    if (smelt_mul_overflow(numel, smelt_dtype_bits(t->dtype), &bits))
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: tensor '%s': shape %s of %s: element count overflow (its byte "
                          "count does not fit in 64 bits)", path, name, shape_text, dt_name);
    if (bits % 8)
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: tensor '%s': shape %s of %s holds %llu elements of %u bits, which "
                          "is not a whole number of bytes", path, name, shape_text, dt_name,
                          (ull)numel, smelt_dtype_bits(t->dtype));
    if (end - begin != bits / 8)
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] span %llu bytes but shape "
                          "%s of %s needs %llu", path, name, (ull)begin, (ull)end,
                          (ull)(end - begin), shape_text, dt_name, (ull)(bits / 8));
    t->numel = numel;
    t->nbytes = bits / 8;
    t->offset = begin;
    return SMELT_OK;
}

/* An object holding any of the tensor keys: someone wrote a tensor called __metadata__. */
static int looks_like_tensor(const json_t *v)
{
    return json_object_get(v, "dtype") || json_object_get(v, "shape") ||
           json_object_get(v, "data_offsets");
}

static int check_metadata(smelt_ctx *ctx, const char *path, json_t *meta)
{
    if (!json_is_object(meta))
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: '__metadata__' is %s; it must be an object of string values", path,
                          json_kind(meta));
    const char *key;
    json_t *val;
    json_object_foreach(meta, key, val) {
        if (json_is_string(val))
            continue;
        if (looks_like_tensor(meta))
            return smelt_fail(ctx, SMELT_E_FORMAT,
                              "%s: tensor '__metadata__': the name '__metadata__' is reserved "
                              "for the metadata map of strings", path);
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: __metadata__ key '%s' is %s: metadata values must be strings",
                          path, key, json_kind(val));
    }
    return SMELT_OK;
}

/* Data order; empty tensors sharing an offset (and preceding a tensor starting there) go by
 * name so the order never depends on the header's key order. */
static int by_offset(const void *pa, const void *pb)
{
    const smelt_tensor_info *a = pa, *b = pb;
    if (a->offset != b->offset)
        return a->offset < b->offset ? -1 : 1;
    if (a->nbytes != b->nbytes)
        return a->nbytes < b->nbytes ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* The reference reader requires the tensors, in data order, to cover the buffer exactly. */
static int check_tiling(smelt_ctx *ctx, const char *path, const smelt_tensor_info *t, size_t n,
                        uint64_t data_len)
{
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t begin = t[i].offset, end = begin + t[i].nbytes;
        if (begin > at)
            return smelt_fail(ctx, SMELT_E_FORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] leave a hole: bytes "
                              "[%llu, %llu) of the data buffer belong to no tensor", path,
                              t[i].name, (ull)begin, (ull)end, (ull)at, (ull)begin);
        if (begin < at)
            return smelt_fail(ctx, SMELT_E_FORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] overlap the previous "
                              "tensor '%s', which ends at %llu", path, t[i].name, (ull)begin,
                              (ull)end, t[i - 1].name, (ull)at);
        at = end;
    }
    if (at > data_len) {
        size_t i = 0;
        while (t[i].offset + t[i].nbytes <= data_len)
            i++;
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the "
                          "file: its data buffer holds %llu bytes", path, t[i].name,
                          (ull)t[i].offset, (ull)(t[i].offset + t[i].nbytes), (ull)data_len);
    }
    if (at < data_len)
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: %llu bytes after the end of the last tensor (the data buffer "
                          "must end where the last tensor ends, at %llu)", path,
                          (ull)(data_len - at), (ull)at);
    return SMELT_OK;
}

static int parse_entries(smelt_ctx *ctx, const char *path, json_t *root, smelt_tensor_info *out,
                         size_t *n, json_t **meta)
{
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            int rc = check_metadata(ctx, path, val);
            if (rc != SMELT_OK)
                return rc;
            *meta = val;
            continue;
        }
        smelt_tensor_info *t = &out[*n];
        int rc = parse_tensor(ctx, path, key, val, t);
        if (rc != SMELT_OK)
            return rc;
        if (!(t->name = strdup(key)))
            return smelt_fail(ctx, SMELT_E_NOMEM, "%s: out of memory", path);
        ++*n;
    }
    return SMELT_OK;
}

int smelt_st_parse(smelt_ctx *ctx, const char *path, const uint8_t *bytes, uint64_t avail,
                   uint64_t file_size, smelt_tensor_info **tensors, size_t *ntensors,
                   uint64_t *data_start, char **metadata_json)
{
    *tensors = NULL;
    *ntensors = 0;
    *data_start = 0;
    if (metadata_json)
        *metadata_json = NULL;
    if (file_size < 8)
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: the file is %llu bytes, shorter than the 8-byte header length",
                          path, (ull)file_size);
    if (avail < 8)
        return smelt_fail(ctx, SMELT_E_INTERNAL, "%s: only %llu bytes of the header were read",
                          path, (ull)avail);
    uint64_t hlen = read_le64(bytes);
    if (hlen > SMELT_ST_MAX_HEADER)
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: the header length %llu is larger than the limit of %llu bytes",
                          path, (ull)hlen, (ull)SMELT_ST_MAX_HEADER);
    if (hlen > file_size - 8)
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: the header of %llu bytes runs past the end of the file (%llu "
                          "bytes)", path, (ull)hlen, (ull)file_size);
    if (avail < 8 + hlen)
        return smelt_fail(ctx, SMELT_E_INTERNAL,
                          "%s: only %llu of the %llu header bytes were read", path, (ull)avail,
                          (ull)(8 + hlen));
    const uint8_t *text = bytes + 8;
    /* Checked here, before jansson sees it, so the message says what is wrong. */
    size_t bad = smelt_utf8_check(text, (size_t)hlen);
    if (bad != hlen)
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: the header is not valid UTF-8 (at byte %zu of the header)", path,
                          bad);

    json_error_t jerr;
    json_t *root = json_loadb((const char *)text, (size_t)hlen,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_duplicate_key)
            return smelt_fail(ctx, SMELT_E_FORMAT,
                              "%s: the header has a duplicate key (line %d, column %d): %s",
                              path, jerr.line, jerr.column, jerr.text);
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return smelt_fail(ctx, SMELT_E_NOMEM, "%s: out of memory reading the header", path);
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: the header is not valid JSON (line %d, column %d): %s", path,
                          jerr.line, jerr.column, jerr.text);
    }
    int rc = SMELT_OK;
    smelt_tensor_info *arr = NULL;
    size_t n = 0;
    json_t *meta = NULL;
    if (!json_is_object(root)) {
        rc = smelt_fail(ctx, SMELT_E_FORMAT,
                        "%s: the header is %s; the top level must be a JSON object", path,
                        json_kind(root));
        goto out;
    }
    if (!(arr = calloc(json_object_size(root) + 1, sizeof *arr))) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "%s: out of memory", path);
        goto out;
    }
    if ((rc = parse_entries(ctx, path, root, arr, &n, &meta)) != SMELT_OK)
        goto out;
    qsort(arr, n, sizeof *arr, by_offset);
    if ((rc = check_tiling(ctx, path, arr, n, file_size - 8 - hlen)) != SMELT_OK)
        goto out;
    for (size_t i = 0; i < n; i++)
        arr[i].offset += 8 + hlen;
    if (meta && metadata_json &&
        !(*metadata_json = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER)))
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "%s: out of memory", path);
out:
    json_decref(root);
    if (rc != SMELT_OK) {
        smelt_tensors_free(arr, n);
        return rc;
    }
    *tensors = arr;
    *ntensors = n;
    *data_start = 8 + hlen;
    return SMELT_OK;
}

void smelt_tensors_free(smelt_tensor_info *tensors, size_t n)
{
    if (!tensors)
        return;
    for (size_t i = 0; i < n; i++)
        free(tensors[i].name);
    free(tensors);
}
