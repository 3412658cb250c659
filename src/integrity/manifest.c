#include "integrity/manifest.h"

#include "common/util.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MANIFEST_FORMAT "smelt-manifest"

static json_t *hash_json(const smelt_hash128 *h)
{
    char hex[SMELT_HASH_HEX_LEN + 1];
    smelt_hash_hex(h, hex);
    return json_string(hex);
}

int smelt_manifest_to_json(smelt_ctx *ctx, const smelt_manifest *m, char **text, size_t *len)
{
    json_t *root = json_object(), *inputs = json_array(), *files = json_object();
    int ok = root && inputs && files;
    if (ok) {
        ok &= !json_object_set_new(root, "format", json_string(MANIFEST_FORMAT));
        ok &= !json_object_set_new(root, "format_version", json_integer(SMELT_MANIFEST_VERSION));
        ok &= !json_object_set_new(root, "algorithm", json_string("xxh3-128"));
        ok &= !json_object_set_new(root, "smelt_version", json_string(m->smelt_version));
        ok &= !json_object_set_new(root, "config", hash_json(&m->config));
    }
    for (size_t i = 0; ok && i < m->ninputs; i++) {
        json_t *in = json_object();
        ok &= in && !json_object_set_new(in, "path", json_string(m->inputs[i].path)) &&
              !json_object_set_new(in, "header", hash_json(&m->inputs[i].header)) &&
              !json_array_append_new(inputs, in);
    }
    for (size_t f = 0; ok && f < m->nfiles; f++) {
        const smelt_manifest_file *mf = &m->files[f];
        json_t *file = json_object(), *tensors = json_object();
        ok &= file && tensors;
        for (size_t t = 0; ok && t < mf->ntensors; t++) {
            const smelt_manifest_tensor *mt = &mf->tensors[t];
            json_t *entry = json_object(), *shape = json_array();
            ok &= entry && shape;
            for (uint32_t d = 0; ok && d < mt->ndim; d++)
                ok &= !json_array_append_new(shape, json_integer((json_int_t)mt->shape[d]));
            ok &= ok && !json_object_set_new(entry, "data", hash_json(&mt->hash)) &&
                  !json_object_set_new(entry, "dtype", json_string(smelt_dtype_name(mt->dtype))) &&
                  !json_object_set(entry, "shape", shape) &&
                  !json_object_set(tensors, mt->name, entry);
            json_decref(shape);
            json_decref(entry);
        }
        ok &= !json_object_set_new(file, "header", hash_json(&mf->header));
        ok &= !json_object_set_new(file, "size", json_integer((json_int_t)mf->size));
        ok &= !json_object_set_new(file, "tensors", tensors);
        ok &= !json_object_set_new(files, mf->name, file);
    }
    if (ok) {
        ok &= !json_object_set(root, "inputs", inputs);
        ok &= !json_object_set(root, "files", files);
    }
    char *dump = ok ? json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
    json_decref(root);
    json_decref(inputs);
    json_decref(files);
    if (!dump)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory (or a name that is not UTF-8) "
                          "writing the manifest");
    size_t n = strlen(dump);
    char *with_nl = realloc(dump, n + 2);
    if (!with_nl) {
        free(dump);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    with_nl[n] = '\n';
    with_nl[n + 1] = '\0';
    *text = with_nl;
    *len = n + 1;
    return SMELT_OK;
}

void smelt_manifest_free(smelt_manifest *m)
{
    if (!m)
        return;
    free(m->smelt_version);
    for (size_t i = 0; m->inputs && i < m->ninputs; i++)
        free(m->inputs[i].path);
    free(m->inputs);
    for (size_t f = 0; m->files && f < m->nfiles; f++) {
        for (size_t t = 0; m->files[f].tensors && t < m->files[f].ntensors; t++)
            free(m->files[f].tensors[t].name);
        free(m->files[f].tensors);
        free(m->files[f].name);
    }
    free(m->files);
    free(m);
}

static int get_hash(smelt_ctx *ctx, const char *path, json_t *v, const char *what,
                    smelt_hash128 *out)
{
    if (!json_is_string(v) || smelt_hash_parse(json_string_value(v), out) != 0)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: %s: expected 32 hex digits", path, what);
    return SMELT_OK;
}

/* A version 2 tensor entry: {"data": hex, "dtype": name, "shape": [n, ...]}. */
static int parse_tensor(smelt_ctx *ctx, const char *path, const char *fname, const char *tname,
                        json_t *h, smelt_manifest_tensor *mt)
{
    json_t *data = json_object_get(h, "data"), *dtype = json_object_get(h, "dtype"),
           *shape = json_object_get(h, "shape");
    if (!json_is_string(data) || smelt_hash_parse(json_string_value(data), &mt->hash) != 0)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: files.%s: tensor '%s': \"data\" is not 32 "
                          "hex digits", path, fname, tname);
    if (!json_is_string(dtype) ||
        (mt->dtype = smelt_dtype_from_any_name(json_string_value(dtype))) == SMELT_DT_INVALID)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: files.%s: tensor '%s': \"dtype\" is not a "
                          "safetensors or GGUF dtype", path, fname, tname);
    if (!json_is_array(shape) || json_array_size(shape) > SMELT_MAX_DIMS)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: files.%s: tensor '%s': \"shape\" is not a "
                          "list of at most %d sizes", path, fname, tname, SMELT_MAX_DIMS);
    mt->ndim = (uint32_t)json_array_size(shape);
    for (uint32_t d = 0; d < mt->ndim; d++) {
        json_t *v = json_array_get(shape, d);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: files.%s: tensor '%s': shape[%u] is not "
                              "a size", path, fname, tname, d);
        mt->shape[d] = (uint64_t)json_integer_value(v);
    }
    return SMELT_OK;
}

static int parse_root(smelt_ctx *ctx, const char *path, json_t *root, smelt_manifest *m)
{
    if (!json_is_object(root))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: not a JSON object", path);
    json_t *format = json_object_get(root, "format");
    json_t *fv = json_object_get(root, "format_version");
    if (!json_is_string(format) || strcmp(json_string_value(format), MANIFEST_FORMAT) != 0)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: \"format\" is not \"%s\"", path,
                          MANIFEST_FORMAT);
    if (!json_is_integer(fv) || json_integer_value(fv) < SMELT_MANIFEST_VERSION_OLDEST)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: \"format_version\" is not a version from %d "
                          "to %d", path, SMELT_MANIFEST_VERSION_OLDEST, SMELT_MANIFEST_VERSION);
    if (json_integer_value(fv) > SMELT_MANIFEST_VERSION)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: format_version %lld was made by a newer smelt "
                          "(this one reads up to %d)", path, (long long)json_integer_value(fv),
                          SMELT_MANIFEST_VERSION);
    m->version = (int)json_integer_value(fv);
    json_t *alg = json_object_get(root, "algorithm");
    if (!json_is_string(alg) || strcmp(json_string_value(alg), "xxh3-128") != 0)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: \"algorithm\" is not \"xxh3-128\"", path);
    json_t *ver = json_object_get(root, "smelt_version");
    if (!json_is_string(ver))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: \"smelt_version\" is not a string", path);
    if (!(m->smelt_version = strdup(json_string_value(ver))))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    int rc = get_hash(ctx, path, json_object_get(root, "config"), "\"config\"", &m->config);
    if (rc != SMELT_OK)
        return rc;
    json_t *inputs = json_object_get(root, "inputs"), *files = json_object_get(root, "files");
    if (!json_is_array(inputs))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: \"inputs\" is not an array", path);
    if (!json_is_object(files))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: \"files\" is not an object", path);
    size_t n = json_array_size(inputs);
    if (!(m->inputs = calloc(n + 1, sizeof *m->inputs)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *in = json_array_get(inputs, i), *p = json_object_get(in, "path");
        if (!json_is_string(p))
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: inputs[%zu]: \"path\" is not a string",
                              path, i);
        if (!(m->inputs[i].path = strdup(json_string_value(p))))
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        m->ninputs = i + 1;
        if ((rc = get_hash(ctx, path, json_object_get(in, "header"), "inputs[].header",
                           &m->inputs[i].header)) != SMELT_OK)
            return rc;
    }
    if (!(m->files = calloc(json_object_size(files) + 1, sizeof *m->files)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    const char *fname;
    json_t *fobj;
    json_object_foreach(files, fname, fobj) {
        smelt_manifest_file *mf = &m->files[m->nfiles];
        if (!(mf->name = strdup(fname)))
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        m->nfiles++;
        json_t *size = json_object_get(fobj, "size"), *tensors = json_object_get(fobj, "tensors");
        if (!json_is_integer(size) || json_integer_value(size) < 0)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: files.%s.size is not a size", path, fname);
        if (!json_is_object(tensors))
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: files.%s.tensors is not an object", path,
                              fname);
        mf->size = (uint64_t)json_integer_value(size);
        if (m->version >= 2 && (rc = get_hash(ctx, path, json_object_get(fobj, "header"),
                                              "files.*.header", &mf->header)) != SMELT_OK)
            return rc;
        if (!(mf->tensors = calloc(json_object_size(tensors) + 1, sizeof *mf->tensors)))
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        const char *tname;
        json_t *h;
        json_object_foreach(tensors, tname, h) {
            smelt_manifest_tensor *mt = &mf->tensors[mf->ntensors];
            if (!(mt->name = strdup(tname)))
                return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
            mf->ntensors++;
            mt->dtype = SMELT_DT_INVALID;
            if (m->version >= 2 && (rc = parse_tensor(ctx, path, fname, tname, h, mt)) != SMELT_OK)
                return rc;
            if (m->version < 2 &&
                (!json_is_string(h) || smelt_hash_parse(json_string_value(h), &mt->hash) != 0))
                return smelt_fail(ctx, SMELT_E_FORMAT, "%s: files.%s: tensor '%s': expected 32 "
                                  "hex digits", path, fname, tname);
        }
    }
    return SMELT_OK;
}

int smelt_manifest_parse(smelt_ctx *ctx, const char *path, const char *text, size_t len,
                         smelt_manifest **out)
{
    *out = NULL;
    json_error_t err;
    /* Duplicate keys would let two hashes claim one tensor: refuse them. */
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s:%d:%d: %s", path, err.line, err.column,
                          err.text);
    smelt_manifest *m = calloc(1, sizeof *m);
    int rc = m ? parse_root(ctx, path, root, m) : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    json_decref(root);
    if (rc != SMELT_OK) {
        smelt_manifest_free(m);
        return rc;
    }
    *out = m;
    return SMELT_OK;
}

int smelt_manifest_write(smelt_ctx *ctx, const char *dir, const smelt_manifest *m)
{
    char *text;
    size_t len;
    int rc = smelt_manifest_to_json(ctx, m, &text, &len);
    if (rc != SMELT_OK)
        return rc;
    char *path = smelt_path_join(dir, SMELT_MANIFEST_NAME);
    rc = path ? smelt_write_file_atomic(ctx, path, text, len)
              : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    free(path);
    free(text);
    return rc;
}

int smelt_manifest_load(smelt_ctx *ctx, const char *dir, smelt_manifest **out)
{
    *out = NULL;
    char *path = smelt_path_join(dir, SMELT_MANIFEST_NAME);
    if (!path)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        free(path);
        return SMELT_OK;
    }
    char *text;
    size_t len;
    /* ~100 bytes per tensor: 256 MiB is far beyond any real model. */
    int rc = smelt_read_file(ctx, path, (size_t)256 << 20, &text, &len);
    if (rc == SMELT_OK) {
        rc = smelt_manifest_parse(ctx, path, text, len, out);
        free(text);
    }
    free(path);
    return rc;
}
