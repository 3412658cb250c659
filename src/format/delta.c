/* The smelt delta container: parsing, validation and frame decoding (see delta.h). */
#include "format/delta.h"

#include "common/util.h"
#include "format/st_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#define ZSTD_STATIC_LINKING_ONLY /* the context size estimates, for the budget */
#include <zstd.h>

typedef unsigned long long ull;

/* ---- small helpers ---------------------------------------------------------------------- */

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void smelt_delta_put_record(uint8_t rec[SMELT_DELTA_TABLE_RECORD], uint64_t end, uint64_t xxh3)
{
    put_le64(rec, end);
    put_le64(rec + 8, xxh3);
}

void smelt_delta_get_record(const uint8_t rec[SMELT_DELTA_TABLE_RECORD], uint64_t *end,
                            uint64_t *xxh3)
{
    *end = get_le64(rec);
    *xxh3 = get_le64(rec + 8);
}

void smelt_delta_hex(const uint8_t h[16], char hex[33])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        hex[2 * i] = digits[h[i] >> 4];
        hex[2 * i + 1] = digits[h[i] & 15];
    }
    hex[32] = '\0';
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int smelt_delta_unhex(const char *text, uint8_t h[16])
{
    if (!text || strlen(text) != 32)
        return -1;
    for (int i = 0; i < 16; i++) {
        int hi = hexval(text[2 * i]), lo = hexval(text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        h[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

unsigned smelt_delta_unit(smelt_dtype dt)
{
    unsigned s = smelt_dtype_size(dt);
    return s ? s : 1;
}

uint64_t smelt_delta_frame_elems(const smelt_delta *d, const smelt_delta_entry *e, uint64_t f)
{
    if (f >= e->nframes)
        return 0;
    uint64_t start = f * d->frame_elems;
    return e->nelems - start < d->frame_elems ? e->nelems - start : d->frame_elems;
}

/* "tensor 'x'" for model tensors, "blob 'file:config.json'" for the others. */
static const char *entry_kind(const char *name)
{
    return strncmp(name, SMELT_DELTA_HEADER_PREFIX, strlen(SMELT_DELTA_HEADER_PREFIX)) == 0 ||
                   strncmp(name, SMELT_DELTA_FILE_PREFIX, strlen(SMELT_DELTA_FILE_PREFIX)) == 0
               ? "blob"
               : "tensor";
}

/* ---- closing ---------------------------------------------------------------------------- */

void smelt_delta_close(smelt_delta *d)
{
    if (!d)
        return;
    if (d->fd >= 0)
        close(d->fd);
    for (size_t i = 0; i < d->nentries; i++)
        free(d->entries[i].name);
    free(d->entries);
    for (size_t i = 0; i < d->nbase; i++)
        free(d->base[i].name);
    free(d->base);
    for (size_t i = 0; i < d->nfiles; i++) {
        free(d->files[i].name);
        free(d->files[i].parts);
    }
    free(d->files);
    if (d->name_index) {
        smelt_name_index_free(d->name_index);
        free(d->name_index);
    }
    free(d->path);
    free(d);
}

static const char *entry_name_at(const void *array, size_t i)
{
    return ((const smelt_delta_entry *)array)[i].name;
}

const smelt_delta_entry *smelt_delta_find(const smelt_delta *d, const char *name)
{
    if (!d || !d->name_index || !name)
        return NULL;
    size_t i = smelt_name_index_find(d->name_index, d->entries, entry_name_at, name);
    return i == (size_t)-1 ? NULL : &d->entries[i];
}

/* ---- parsing the metadata document -------------------------------------------------------- */

/* A file name the apply step may create: one path component, not "." or "..", no NUL. */
static int safe_file_name(const char *name)
{
    return name[0] && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 && !strchr(name, '/') &&
           strlen(name) < 256;
}

static int get_u64(json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_entry(smelt_ctx *ctx, const char *path, smelt_delta *d, size_t i, json_t *v)
{
    smelt_delta_entry *e = &d->entries[i];
    const char *name = json_string_value(json_object_get(v, "name"));
    if (!json_is_object(v) || !name)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: entries[%zu] has no name",
                          path, i);
    if (!(e->name = strdup(name)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    const char *kind = entry_kind(name);
    const char *dt = json_string_value(json_object_get(v, "dtype"));
    e->dtype = dt ? smelt_dtype_from_name(dt) : SMELT_DT_INVALID;
    if (e->dtype == SMELT_DT_INVALID || e->dtype >= SMELT_DT_COUNT)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: %s '%s': dtype %s is not a "
                          "safetensors dtype", path, kind, name, dt ? dt : "(missing)");
    json_t *shape = json_object_get(v, "shape");
    if (!json_is_array(shape) || json_array_size(shape) > SMELT_MAX_DIMS)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: %s '%s': shape is not an "
                          "array of at most %d sizes", path, kind, name, SMELT_MAX_DIMS);
    e->ndim = (uint32_t)json_array_size(shape);
    uint64_t numel = 1;
    for (uint32_t k = 0; k < e->ndim; k++)
        if (get_u64(json_array_get(shape, k), &e->shape[k]) ||
            smelt_mul_overflow(numel, e->shape[k], &numel))
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: %s '%s': shape entry "
                              "%u is not a size (or the element count overflows)", path, kind,
                              name, k);
    unsigned bits = smelt_dtype_bits(e->dtype);
    uint64_t bitsz;
    if (smelt_mul_overflow(numel, bits, &bitsz) || bitsz % 8)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: %s '%s': %llu elements of "
                          "%s are not a whole number of bytes", path, kind, name, (ull)numel,
                          dt);
    e->nbytes = bitsz / 8;
    e->unit = smelt_delta_unit(e->dtype);
    e->nelems = e->nbytes / e->unit;
    e->nframes = e->nelems / d->frame_elems + (e->nelems % d->frame_elems != 0);
    const char *mode = json_string_value(json_object_get(v, "mode"));
    if (mode && strcmp(mode, "xor") == 0)
        e->mode = SMELT_DELTA_XOR;
    else if (mode && strcmp(mode, "raw") == 0)
        e->mode = SMELT_DELTA_RAW;
    else
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: %s '%s': mode is %s, not "
                          "\"xor\" or \"raw\"", path, kind, name, mode ? mode : "missing");
    if (e->mode == SMELT_DELTA_XOR && strcmp(kind, "tensor") != 0)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: blob '%s' has mode xor; "
                          "only tensors may", path, name);
    return SMELT_OK;
}

static int parse_base(smelt_ctx *ctx, const char *path, smelt_delta *d, json_t *arr)
{
    if (!json_is_array(arr))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: 'base' is not an array",
                          path);
    d->nbase = 0;
    if (!(d->base = calloc(json_array_size(arr) + 1, sizeof *d->base)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        const char *name = json_string_value(json_object_get(v, "file"));
        const char *hex = json_string_value(json_object_get(v, "header_xxh3"));
        if (!name || !safe_file_name(name))
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: base[%zu] has no file "
                              "name (one path component)", path, i);
        for (size_t k = 0; k < i; k++)
            if (strcmp(d->base[k].name, name) == 0)
                return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: base file '%s' is "
                                  "listed twice", path, name);
        if (!(d->base[i].name = strdup(name)))
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        d->nbase = i + 1;
        if (smelt_delta_unhex(hex, d->base[i].header_xxh3))
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: base file '%s': "
                              "header_xxh3 is not 32 hex digits", path, name);
        if (smelt_delta_unhex(json_string_value(json_object_get(v, "sample_xxh3")),
                              d->base[i].sample_xxh3))
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: base file '%s': "
                              "sample_xxh3 is not 32 hex digits", path, name);
    }
    return SMELT_OK;
}

/* Each entry belongs to exactly one file. */
static int add_part(smelt_ctx *ctx, const char *path, smelt_delta *d, smelt_delta_file *f,
                    const char *name, uint8_t *used)
{
    const smelt_delta_entry *e = name ? smelt_delta_find(d, name) : NULL;
    if (!e)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: file '%s' lists %s%s%s, "
                          "which has no entry", path, f->name, name ? "'" : "a part that is not "
                          "a string", name ? name : "", name ? "'" : "");
    size_t idx = (size_t)(e - d->entries);
    if (used[idx])
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: %s '%s' is listed twice in "
                          "the files", path, entry_kind(name), name);
    used[idx] = 1;
    f->parts[f->nparts++] = idx;
    return SMELT_OK;
}

static int parse_file(smelt_ctx *ctx, const char *path, smelt_delta *d, size_t i, json_t *v,
                      uint8_t *used)
{
    smelt_delta_file *f = &d->files[i];
    const char *name = json_string_value(json_object_get(v, "name"));
    if (!json_is_object(v) || !name || !safe_file_name(name))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: files[%zu] has no name "
                          "(one path component)", path, i);
    for (size_t k = 0; k < i; k++)
        if (strcmp(d->files[k].name, name) == 0)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: file '%s' is listed "
                              "twice", path, name);
    if (!(f->name = strdup(name)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (get_u64(json_object_get(v, "size"), &f->size) ||
        smelt_delta_unhex(json_string_value(json_object_get(v, "xxh3")), f->xxh3))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: file '%s': 'size' or "
                          "'xxh3' (32 hex digits) is missing or malformed", path, name);
    json_t *header = json_object_get(v, "header"), *data = json_object_get(v, "data");
    json_t *blob = json_object_get(v, "blob");
    f->safetensors = header != NULL;
    if (f->safetensors ? !json_is_string(header) || !json_is_array(data) || blob
                       : !json_is_string(blob) || data)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: file '%s' needs either "
                          "'header' and 'data' (a safetensors file) or 'blob'", path, name);
    size_t n = f->safetensors ? 1 + json_array_size(data) : 1;
    if (!(f->parts = calloc(n, sizeof *f->parts)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    int rc = add_part(ctx, path, d, f, json_string_value(f->safetensors ? header : blob), used);
    for (size_t k = 0; f->safetensors && k < json_array_size(data) && rc == SMELT_OK; k++) {
        const char *t = json_string_value(json_array_get(data, k));
        rc = add_part(ctx, path, d, f, t, used);
        if (rc == SMELT_OK && strcmp(entry_kind(t), "tensor") != 0)
            rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: file '%s': data lists "
                            "blob '%s', which is not a tensor", path, name, t);
    }
    if (rc != SMELT_OK)
        return rc;
    uint64_t total = 0;
    for (size_t k = 0; k < f->nparts; k++)
        if (__builtin_add_overflow(total, d->entries[f->parts[k]].nbytes, &total))
            total = UINT64_MAX;
    if (total != f->size)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: file '%s' is %llu bytes "
                          "but its parts decode to %llu", path, name, (ull)f->size, (ull)total);
    return SMELT_OK;
}

static int parse_document(smelt_ctx *ctx, const char *path, smelt_delta *d, json_t *doc,
                          const smelt_tensor_info *blobs, size_t nblobs)
{
    if (!json_is_object(doc))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: the document is not a "
                          "JSON object", path);
    uint64_t version, fe;
    if (get_u64(json_object_get(doc, "version"), &version) || version != SMELT_DELTA_VERSION)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: version is not %d (this "
                          "smelt reads version %d)", path, SMELT_DELTA_VERSION,
                          SMELT_DELTA_VERSION);
    if (get_u64(json_object_get(doc, "frame_elements"), &fe) || fe != SMELT_DELTA_FRAME_ELEMS)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: frame_elements is not %u",
                          path, SMELT_DELTA_FRAME_ELEMS);
    d->frame_elems = fe;
    int rc = parse_base(ctx, path, d, json_object_get(doc, "base"));
    if (rc != SMELT_OK)
        return rc;
    json_t *entries = json_object_get(doc, "entries");
    if (!json_is_array(entries))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: 'entries' is not an array",
                          path);
    size_t n = json_array_size(entries);
    if (n != nblobs)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata lists %zu entries but the "
                          "file holds %zu blobs", path, n, nblobs);
    if (!(d->entries = calloc(n + 1, sizeof *d->entries)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        d->nentries = i + 1;
        if ((rc = parse_entry(ctx, path, d, i, json_array_get(entries, i))) != SMELT_OK)
            return rc;
    }
    if (!(d->name_index = calloc(1, sizeof(smelt_name_index))))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    size_t a, b;
    int built = smelt_name_index_build(d->name_index, d->entries, n, entry_name_at, &a, &b);
    if (built) {
        free(d->name_index);
        d->name_index = NULL;
        return built < 0 ? smelt_fail(ctx, SMELT_E_NOMEM, "out of memory")
                         : smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: entry '%s' is "
                                      "listed twice", path, d->entries[a].name);
    }
    /* Every blob has its entry; sizes must fit the frame count. */
    for (size_t i = 0; i < nblobs; i++) {
        const smelt_tensor_info *t = &blobs[i];
        smelt_delta_entry *e = (smelt_delta_entry *)smelt_delta_find(d, t->name);
        if (!e)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: blob '%s' has no entry in the delta "
                              "metadata", path, t->name);
        if (t->dtype != SMELT_DT_U8 || t->ndim != 1)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: %s '%s': its blob must be U8 of one "
                              "dimension", path, entry_kind(t->name), t->name);
        e->blob_offset = t->offset;
        e->blob_size = t->nbytes;
        uint64_t table = e->nframes * SMELT_DELTA_TABLE_RECORD;
        if (e->nframes == 0 ? e->blob_size != 0 : e->blob_size < table + e->nframes)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: %s '%s': the blob of %llu bytes cannot "
                              "hold %llu frames (a %llu-byte frame table and the frames)", path,
                              entry_kind(t->name), t->name, (ull)e->blob_size, (ull)e->nframes,
                              (ull)table);
    }
    json_t *files = json_object_get(doc, "files");
    if (!json_is_array(files))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: 'files' is not an array",
                          path);
    uint8_t *used = calloc(n + 1, 1);
    if (!used || !(d->files = calloc(json_array_size(files) + 1, sizeof *d->files))) {
        free(used);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < json_array_size(files) && rc == SMELT_OK; i++) {
        d->nfiles = i + 1;
        rc = parse_file(ctx, path, d, i, json_array_get(files, i), used);
    }
    for (size_t i = 0; i < n && rc == SMELT_OK; i++)
        if (!used[i])
            rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata: %s '%s' belongs to no "
                            "file", path, entry_kind(d->entries[i].name), d->entries[i].name);
    free(used);
    return rc;
}

int smelt_delta_parse(smelt_ctx *ctx, const char *path, const uint8_t *bytes, uint64_t avail,
                      uint64_t file_size, smelt_delta **out)
{
    *out = NULL;
    smelt_tensor_info *blobs = NULL;
    size_t nblobs = 0;
    uint64_t data_start;
    char *meta_text = NULL;
    int rc = smelt_st_parse(ctx, path, bytes, avail, file_size, &blobs, &nblobs, &data_start,
                            &meta_text);
    if (rc != SMELT_OK)
        return rc;
    smelt_delta *d = calloc(1, sizeof *d);
    json_t *meta = NULL, *doc = NULL;
    if (!d || !(d->path = strdup(path))) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    d->fd = -1;
    d->file_size = file_size;
    meta = meta_text ? json_loads(meta_text, 0, NULL) : NULL;
    const char *format = json_string_value(json_object_get(meta, "format"));
    const char *version = json_string_value(json_object_get(meta, "smelt_delta_version"));
    const char *text = json_string_value(json_object_get(meta, "smelt_delta"));
    if (!format || strcmp(format, SMELT_DELTA_FORMAT_NAME) != 0) {
        rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: not a smelt delta: its __metadata__ has no "
                        "\"format\": \"%s\"", path, SMELT_DELTA_FORMAT_NAME);
        goto out;
    }
    if (!version || strcmp(version, "1") != 0) {
        rc = smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%s: smelt delta version %s; this smelt "
                        "reads version %d", path, version ? version : "(missing)",
                        SMELT_DELTA_VERSION);
        goto out;
    }
    if (!text) {
        rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: __metadata__ has no 'smelt_delta' document",
                        path);
        goto out;
    }
    json_error_t jerr;
    if (!(doc = json_loads(text, JSON_REJECT_DUPLICATES, &jerr))) {
        rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: delta metadata is not valid JSON (line %d, "
                        "column %d): %s", path, jerr.line, jerr.column, jerr.text);
        goto out;
    }
    rc = parse_document(ctx, path, d, doc, blobs, nblobs);
out:
    json_decref(doc);
    json_decref(meta);
    free(meta_text);
    smelt_tensors_free(blobs, nblobs);
    if (rc != SMELT_OK) {
        smelt_delta_close(d);
        return rc;
    }
    *out = d;
    return SMELT_OK;
}

/* ---- opening ---------------------------------------------------------------------------- */

/* Reads one entry's frame table in pieces and checks it against the blob. */
static int check_table(smelt_ctx *ctx, const smelt_delta *d, const smelt_delta_entry *e,
                       uint8_t *buf, size_t buf_records)
{
    uint64_t table = e->nframes * SMELT_DELTA_TABLE_RECORD, frames_size = e->blob_size - table;
    uint64_t prev = 0;
    for (uint64_t f0 = 0; f0 < e->nframes; f0 += buf_records) {
        uint64_t k = e->nframes - f0 < buf_records ? e->nframes - f0 : buf_records;
        int err = smelt_pread_all(d->fd, buf, (size_t)(k * SMELT_DELTA_TABLE_RECORD),
                                  e->blob_offset + f0 * SMELT_DELTA_TABLE_RECORD);
        if (err)
            return smelt_fail_errno(ctx, err, "%s: %s '%s': cannot read the frame table",
                                    d->path, entry_kind(e->name), e->name);
        for (uint64_t j = 0; j < k; j++) {
            uint64_t f = f0 + j, end, sum;
            smelt_delta_get_record(buf + j * SMELT_DELTA_TABLE_RECORD, &end, &sum);
            uint64_t raw = smelt_delta_frame_elems(d, e, f) * e->unit;
            if (end <= prev || end - prev > ZSTD_compressBound((size_t)raw) ||
                end > frames_size)
                return smelt_fail(ctx, SMELT_E_FORMAT, "%s: %s '%s': frame %llu of %llu: the "
                                  "frame table gives it bytes [%llu, %llu) of %llu, which is "
                                  "not possible for %llu decoded bytes", d->path,
                                  entry_kind(e->name), e->name, (ull)f, (ull)e->nframes,
                                  (ull)prev, (ull)end, (ull)frames_size, (ull)raw);
            prev = end;
        }
    }
    if (prev != frames_size)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: %s '%s': the frames end at byte %llu of "
                          "the blob's %llu (the frame count or sizes do not match the header)",
                          d->path, entry_kind(e->name), e->name, (ull)(prev + table),
                          (ull)e->blob_size);
    return SMELT_OK;
}

int smelt_delta_open(smelt_ctx *ctx, const char *path, smelt_delta **out)
{
    *out = NULL;
    struct stat st;
    char *file = NULL;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        file = smelt_path_join(path, SMELT_DELTA_FILE_NAME);
    else
        file = smelt_strdup(path);
    if (!file)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    int fd = -1;
    int rc = smelt_open_regular(ctx, file, 0, &fd, &st);
    uint8_t *head = NULL;
    smelt_delta *d = NULL;
    if (rc != SMELT_OK)
        goto out;
    uint8_t len8[8];
    uint64_t size = (uint64_t)st.st_size, hlen = 0;
    if (size >= 8) {
        int err = smelt_pread_all(fd, len8, 8, 0);
        if (err) {
            rc = smelt_fail_errno(ctx, err, "%s: cannot read", file);
            goto out;
        }
        hlen = get_le64(len8);
    }
    /* A bad length is the parser's to report: then read only the 8 bytes. */
    uint64_t avail = size < 8 ? size
                     : hlen > SMELT_ST_MAX_HEADER || hlen > size - 8 ? 8 : 8 + hlen;
    if (!(head = malloc(avail ? (size_t)avail : 1))) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    int err = avail ? smelt_pread_all(fd, head, (size_t)avail, 0) : 0;
    if (err) {
        rc = smelt_fail_errno(ctx, err, "%s: cannot read its header", file);
        goto out;
    }
    if ((rc = smelt_delta_parse(ctx, file, head, avail, size, &d)) != SMELT_OK)
        goto out;
    d->fd = fd;
    fd = -1;
    enum { RECORDS = 4096 };
    uint8_t *buf = malloc(RECORDS * SMELT_DELTA_TABLE_RECORD);
    if (!buf) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < d->nentries && rc == SMELT_OK; i++)
        rc = check_table(ctx, d, &d->entries[i], buf, RECORDS);
    free(buf);
out:
    free(head);
    free(file);
    if (fd >= 0)
        close(fd);
    if (rc != SMELT_OK) {
        smelt_delta_close(d);
        return rc;
    }
    *out = d;
    return SMELT_OK;
}

/* ---- decoding --------------------------------------------------------------------------- */

struct smelt_delta_scratch {
    ZSTD_DCtx *dctx;
    uint8_t *comp;   /* one compressed frame */
    uint8_t *planes; /* one decompressed frame */
    size_t comp_cap, planes_cap;
};

size_t smelt_delta_scratch_bytes(const smelt_delta *d, unsigned max_unit)
{
    size_t raw = (size_t)d->frame_elems * max_unit;
    return raw + ZSTD_compressBound(raw) + ZSTD_estimateDCtxSize();
}

smelt_delta_scratch *smelt_delta_scratch_new(const smelt_delta *d, unsigned max_unit)
{
    smelt_delta_scratch *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->planes_cap = (size_t)d->frame_elems * (max_unit ? max_unit : 1);
    s->comp_cap = ZSTD_compressBound(s->planes_cap);
    s->dctx = ZSTD_createDCtx();
    s->comp = malloc(s->comp_cap);
    s->planes = malloc(s->planes_cap);
    if (!s->dctx || !s->comp || !s->planes) {
        smelt_delta_scratch_free(s);
        return NULL;
    }
    return s;
}

void smelt_delta_scratch_free(smelt_delta_scratch *s)
{
    if (!s)
        return;
    ZSTD_freeDCtx(s->dctx);
    free(s->comp);
    free(s->planes);
    free(s);
}

int smelt_delta_read_table(smelt_ctx *ctx, const smelt_delta *d, const smelt_delta_entry *e,
                           uint64_t f0, uint64_t f1, uint8_t *records)
{
    if (f0 > f1 || f1 > e->nframes)
        return smelt_fail(ctx, SMELT_E_ARG, "%s: %s '%s': frames [%llu, %llu) are not within "
                          "its %llu frames", d->path, entry_kind(e->name), e->name, (ull)f0,
                          (ull)f1, (ull)e->nframes);
    int err = smelt_pread_all(d->fd, records, (size_t)(f1 - f0) * SMELT_DELTA_TABLE_RECORD,
                              e->blob_offset + f0 * SMELT_DELTA_TABLE_RECORD);
    if (err)
        return smelt_fail_errno(ctx, err, "%s: %s '%s': frames [%llu, %llu): cannot read the "
                                "frame table", d->path, entry_kind(e->name), e->name, (ull)f0,
                                (ull)f1);
    return SMELT_OK;
}

int smelt_delta_decode_frame(smelt_ctx *ctx, const smelt_delta *d, const smelt_delta_entry *e,
                             uint64_t f, uint64_t start, uint64_t end, uint64_t sum,
                             smelt_delta_scratch *s, const uint8_t **planes)
{
    const char *kind = entry_kind(e->name);
    if (f >= e->nframes)
        return smelt_fail(ctx, SMELT_E_ARG, "%s: %s '%s': there is no frame %llu of %llu",
                          d->path, kind, e->name, (ull)f, (ull)e->nframes);
    const size_t raw = (size_t)(smelt_delta_frame_elems(d, e, f) * e->unit);
    if (raw > s->planes_cap)
        return smelt_fail(ctx, SMELT_E_ARG, "%s: %s '%s': the scratch is for smaller elements",
                          d->path, kind, e->name);
    if (end <= start || end - start > s->comp_cap ||
        end > e->blob_size - e->nframes * SMELT_DELTA_TABLE_RECORD)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: %s '%s': frame %llu of %llu: the frame "
                          "table gives it bytes [%llu, %llu), which is not possible", d->path,
                          kind, e->name, (ull)f, (ull)e->nframes, (ull)start, (ull)end);
    const uint64_t frames_at = e->blob_offset + e->nframes * SMELT_DELTA_TABLE_RECORD;
    size_t clen = (size_t)(end - start);
    int err = smelt_pread_all(d->fd, s->comp, clen, frames_at + start);
    if (err)
        return smelt_fail_errno(ctx, err, "%s: %s '%s': frame %llu: cannot read it", d->path,
                                kind, e->name, (ull)f);
    /* The frames carry no zstd content checksum (extract turns it off): the frame table's
     * XXH3-64 below is the one check of the decoded bytes. */
    size_t got = ZSTD_decompressDCtx(s->dctx, s->planes, raw, s->comp, clen);
    if (ZSTD_isError(got))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: %s '%s': frame %llu of %llu is damaged: "
                          "zstd says: %s", d->path, kind, e->name, (ull)f, (ull)e->nframes,
                          ZSTD_getErrorName(got));
    if (got != raw)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: %s '%s': frame %llu of %llu decodes to "
                          "%zu bytes, not %zu", d->path, kind, e->name, (ull)f, (ull)e->nframes,
                          got, raw);
    uint64_t h = XXH3_64bits(s->planes, raw);
    if (h != sum)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: %s '%s': frame %llu of %llu: checksum "
                          "mismatch (its bytes hash to %016llx, the frame table says %016llx): "
                          "the delta is damaged", d->path, kind, e->name, (ull)f,
                          (ull)e->nframes, (ull)h, (ull)sum);
    *planes = s->planes;
    return SMELT_OK;
}

int smelt_delta_prefix_bytes(smelt_ctx *ctx, const smelt_delta *d, const smelt_delta_entry *e,
                             uint64_t nelems, uint64_t *bytes)
{
    uint64_t nframes = (nelems + d->frame_elems - 1) / d->frame_elems;
    if (nframes >= e->nframes) {
        *bytes = e->blob_size;
        return SMELT_OK;
    }
    *bytes = 0;
    if (nframes == 0)
        return SMELT_OK;
    uint8_t rec[SMELT_DELTA_TABLE_RECORD];
    uint64_t end, sum;
    int rc = smelt_delta_read_table(ctx, d, e, nframes - 1, nframes, rec);
    if (rc != SMELT_OK)
        return rc;
    smelt_delta_get_record(rec, &end, &sum);
    *bytes = nframes * SMELT_DELTA_TABLE_RECORD + end;
    return SMELT_OK;
}

int smelt_delta_decode(smelt_ctx *ctx, const smelt_delta *d, const smelt_delta_entry *e,
                       uint64_t f, smelt_delta_scratch *s, const uint8_t **planes)
{
    uint8_t rec[2 * SMELT_DELTA_TABLE_RECORD];
    uint64_t start = 0, end, sum, ignored;
    if (f >= e->nframes)
        return smelt_fail(ctx, SMELT_E_ARG, "%s: %s '%s': there is no frame %llu of %llu",
                          d->path, entry_kind(e->name), e->name, (ull)f, (ull)e->nframes);
    /* Frame f starts where frame f - 1 ends. */
    uint64_t first = f ? f - 1 : 0;
    int rc = smelt_delta_read_table(ctx, d, e, first, f + 1, rec);
    if (rc != SMELT_OK)
        return rc;
    if (f)
        smelt_delta_get_record(rec, &start, &ignored);
    smelt_delta_get_record(rec + (f - first) * SMELT_DELTA_TABLE_RECORD, &end, &sum);
    return smelt_delta_decode_frame(ctx, d, e, f, start, end, sum, s, planes);
}
