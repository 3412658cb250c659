/* The GGUF reader (see gguf.h). One bounds-checked cursor walks the header; every read that
 * could pass the end of the file fails with the rule it broke, so no later code needs to
 * re-check what the header claims. */
#include "format/gguf.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef unsigned long long ull;

typedef struct cursor {
    smelt_ctx *ctx;
    const char *path;
    const uint8_t *p;
    uint64_t size, pos;
} cursor;

/* Little-endian loads: GGUF is little-endian whatever the host. */
static uint64_t load_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static uint64_t left(const cursor *c)
{
    return c->size - c->pos;
}

/* Reads an n-byte little-endian integer; `what` names it in the message when it does not fit. */
static int read_uint(cursor *c, unsigned n, uint64_t *v, const char *what)
{
    *v = 0;
    if (left(c) < n)
        return smelt_fail(c->ctx, SMELT_E_FORMAT, "%s: %s at byte %llu runs past the end of the file",
                          c->path, what, (ull)c->pos);
    *v = load_le(c->p + c->pos, n);
    c->pos += n;
    return SMELT_OK;
}

/* A string: u64 length + bytes. Returns a pointer into the file. */
static int read_str(cursor *c, const uint8_t **s, uint64_t *len, const char *what)
{
    int rc = read_uint(c, 8, len, what);
    if (rc)
        return rc;
    if (*len > left(c))
        return smelt_fail(c->ctx, SMELT_E_FORMAT,
                          "%s: %s: string length %llu at byte %llu runs past the end of the file",
                          c->path, what, (ull)*len, (ull)(c->pos - 8));
    *s = c->p + c->pos;
    c->pos += *len;
    return SMELT_OK;
}

static char *dup_str(const uint8_t *s, uint64_t len)
{
    char *d = malloc(len + 1);
    if (d) {
        memcpy(d, s, len);
        d[len] = 0;
    }
    return d;
}

/* Bytes of one scalar value type; 0 for string and array (variable). */
static unsigned scalar_size(uint32_t t)
{
    static const unsigned sz[SMELT_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < SMELT_GGUF_VTYPE_COUNT ? sz[t] : 0;
}

const char *smelt_gguf_vtype_name(uint32_t type)
{
    static const char *names[SMELT_GGUF_VTYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64",
        "f64"};
    return type < SMELT_GGUF_VTYPE_COUNT ? names[type] : "?";
}

/* Skips one value of `type` (the cursor is at its first byte), arrays recursively. `key` names
 * it in messages; `depth` is the array nesting so far. */
static int skip_value(cursor *c, const char *key, uint32_t type, unsigned depth)
{
    if (type >= SMELT_GGUF_VTYPE_COUNT)
        return smelt_fail(c->ctx, SMELT_E_FORMAT, "%s: key '%s': unknown value type %u", c->path,
                          key, type);
    if (type == SMELT_GGUF_STRING) {
        const uint8_t *s;
        uint64_t len;
        char what[256];
        snprintf(what, sizeof what, "key '%.200s'", key);
        return read_str(c, &s, &len, what);
    }
    if (type != SMELT_GGUF_ARRAY) {
        if (left(c) < scalar_size(type))
            return smelt_fail(c->ctx, SMELT_E_FORMAT,
                              "%s: key '%s': %s value runs past the end of the file", c->path,
                              key, smelt_gguf_vtype_name(type));
        c->pos += scalar_size(type);
        return SMELT_OK;
    }
    if (depth >= SMELT_GGUF_MAX_DEPTH)
        return smelt_fail(c->ctx, SMELT_E_FORMAT,
                          "%s: key '%s': arrays nested deeper than %d levels", c->path, key,
                          SMELT_GGUF_MAX_DEPTH);
    uint64_t et, n;
    int rc = read_uint(c, 4, &et, "array element type");
    if (!rc)
        rc = read_uint(c, 8, &n, "array length");
    if (rc)
        return rc;
    if (et >= SMELT_GGUF_VTYPE_COUNT)
        return smelt_fail(c->ctx, SMELT_E_FORMAT, "%s: key '%s': unknown array element type %llu",
                          c->path, key, (ull)et);
    /* Every element takes at least one byte (strings 8, arrays 12): a count that cannot fit
     * is refused before walking it, so a huge count cannot make the walk slow. */
    uint64_t min = scalar_size((uint32_t)et) ? scalar_size((uint32_t)et)
                   : et == SMELT_GGUF_STRING ? 8 : 12;
    if (n > left(c) / min)
        return smelt_fail(c->ctx, SMELT_E_FORMAT,
                          "%s: key '%s': array length %llu runs past the end of the file",
                          c->path, key, (ull)n);
    if (scalar_size((uint32_t)et)) {
        c->pos += n * min;
        return SMELT_OK;
    }
    for (uint64_t i = 0; i < n; i++)
        if ((rc = skip_value(c, key, (uint32_t)et, depth + 1)))
            return rc;
    return SMELT_OK;
}

/* Sorting without shared state (C11's qsort has no context argument, and files may be opened
 * from several threads at once): sort (key, index) pairs, keep the indices. */
typedef struct sort_item {
    const char *name;
    uint64_t offset;
    size_t i;
} sort_item;

static int name_cmp(const void *a, const void *b)
{
    return strcmp(((const sort_item *)a)->name, ((const sort_item *)b)->name);
}

static int offset_cmp(const void *a, const void *b)
{
    uint64_t x = ((const sort_item *)a)->offset, y = ((const sort_item *)b)->offset;
    return x < y ? -1 : x > y;
}

/* The indices of g's keys sorted by key (what = 0), of its tensors by name (1) or by offset
 * (2). NULL when out of memory. */
static size_t *sorted_index(const smelt_gguf *g, int what)
{
    size_t n = what == 0 ? g->nkv : g->ntensors;
    sort_item *items = malloc((n ? n : 1) * sizeof *items);
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!items || !idx) {
        free(items);
        free(idx);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        items[i] = (sort_item){what == 0 ? g->kvs[i].key : g->tensors[i].name,
                               what == 2 ? g->tensors[i].offset : 0, i};
    qsort(items, n, sizeof *items, what == 2 ? offset_cmp : name_cmp);
    for (size_t i = 0; i < n; i++)
        idx[i] = items[i].i;
    free(items);
    return idx;
}

static int parse_kvs(cursor *c, smelt_gguf *g, uint64_t nkv)
{
    for (uint64_t i = 0; i < nkv; i++) {
        smelt_gguf_kv *kv = &g->kvs[i];
        const uint8_t *k;
        uint64_t klen, type;
        char what[64];
        snprintf(what, sizeof what, "key #%llu", (ull)i);
        int rc = read_str(c, &k, &klen, what);
        if (rc)
            return rc;
        if (!(kv->key = dup_str(k, klen)))
            return smelt_fail(c->ctx, SMELT_E_NOMEM, "out of memory");
        g->nkv = i + 1;
        if (memchr(kv->key, 0, klen))
            return smelt_fail(c->ctx, SMELT_E_FORMAT, "%s: key #%llu contains a NUL byte", c->path,
                              (ull)i);
        if ((rc = read_uint(c, 4, &type, "value type")))
            return rc;
        kv->type = kv->elem_type = (uint32_t)type;
        kv->count = 1;
        if (type >= SMELT_GGUF_VTYPE_COUNT)
            return smelt_fail(c->ctx, SMELT_E_FORMAT, "%s: key '%s': unknown value type %llu",
                              c->path, kv->key, (ull)type);
        uint64_t start = c->pos;
        if ((rc = skip_value(c, kv->key, kv->type, 0)))
            return rc;
        kv->value = c->p + start;
        kv->size = c->pos - start;
        if (type == SMELT_GGUF_ARRAY) {
            kv->elem_type = (uint32_t)load_le(kv->value, 4);
            kv->count = load_le(kv->value + 4, 8);
            kv->value += 12;
            kv->size -= 12;
        }
    }
    return SMELT_OK;
}

static int parse_tensor(cursor *c, smelt_gguf *g, uint64_t i)
{
    smelt_gguf_tensor *t = &g->tensors[i];
    const uint8_t *s;
    uint64_t len, v;
    char what[64];
    snprintf(what, sizeof what, "tensor #%llu name", (ull)i);
    int rc = read_str(c, &s, &len, what);
    if (rc)
        return rc;
    if (!(t->name = dup_str(s, len)))
        return smelt_fail(c->ctx, SMELT_E_NOMEM, "out of memory");
    g->ntensors = i + 1;
    if (len > SMELT_GGUF_MAX_NAME || memchr(t->name, 0, len))
        return smelt_fail(c->ctx, SMELT_E_FORMAT,
                          "%s: tensor #%llu: name of %llu bytes is longer than ggml's %d or holds a NUL",
                          c->path, (ull)i, (ull)len, SMELT_GGUF_MAX_NAME);
    if ((rc = read_uint(c, 4, &v, "tensor dimension count")))
        return rc;
    if (v > SMELT_GGUF_MAX_DIMS)
        return smelt_fail(c->ctx, SMELT_E_FORMAT, "%s: tensor '%s': %llu dimensions, more than %d",
                          c->path, t->name, (ull)v, SMELT_GGUF_MAX_DIMS);
    t->ndim = (uint32_t)v;
    t->numel = 1;
    for (unsigned d = 0; d < SMELT_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (unsigned d = 0; d < t->ndim; d++) {
        if ((rc = read_uint(c, 8, &t->ne[d], "tensor dimension")))
            return rc;
        if (t->ne[d] == 0)
            return smelt_fail(c->ctx, SMELT_E_FORMAT, "%s: tensor '%s': dimension %u is 0",
                              c->path, t->name, d);
        /* ggml holds element counts in int64_t. */
        if (t->ne[d] > (uint64_t)INT64_MAX / t->numel)
            return smelt_fail(c->ctx, SMELT_E_FORMAT,
                              "%s: tensor '%s': element count overflows 63 bits", c->path, t->name);
        t->numel *= t->ne[d];
    }
    if ((rc = read_uint(c, 4, &v, "tensor type")))
        return rc;
    t->type = (uint32_t)v;
    const smelt_ggml_type *ty = smelt_ggml_type_get(t->type);
    if (!ty)
        return smelt_fail(c->ctx, SMELT_E_FORMAT, "%s: tensor '%s': unknown ggml type %llu",
                          c->path, t->name, (ull)v);
    if (t->ne[0] % ty->block)
        return smelt_fail(c->ctx, SMELT_E_FORMAT,
                          "%s: tensor '%s': ne[0] = %llu is not a multiple of %s's block size %u",
                          c->path, t->name, (ull)t->ne[0], ty->name, ty->block);
    /* 8-byte elements (i64, f64) can take a 63-bit element count past 64 bits of bytes. */
    if (t->numel / ty->block > UINT64_MAX / ty->bytes)
        return smelt_fail(c->ctx, SMELT_E_FORMAT, "%s: tensor '%s': byte size overflows",
                          c->path, t->name);
    t->nbytes = t->numel / ty->block * ty->bytes;
    return read_uint(c, 8, &t->offset, "tensor offset");
}

/* Checks that the tensors' data lies inside the file, aligned and without overlap. */
static int check_layout(cursor *c, smelt_gguf *g)
{
    for (size_t i = 0; i < g->ntensors; i++) {
        const smelt_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment)
            return smelt_fail(c->ctx, SMELT_E_FORMAT,
                              "%s: tensor '%s': offset %llu is not a multiple of the alignment %u",
                              c->path, t->name, (ull)t->offset, g->alignment);
        if (t->offset > g->size - g->data_start || t->nbytes > g->size - g->data_start - t->offset)
            return smelt_fail(c->ctx, SMELT_E_FORMAT,
                              "%s: tensor '%s': data [%llu, +%llu) lies past the end of the file "
                              "(data section of %llu bytes)", c->path, t->name, (ull)t->offset,
                              (ull)t->nbytes, (ull)(g->size - g->data_start));
        g->tensors[i].file_offset = g->data_start + t->offset;
    }
    size_t *by_off = sorted_index(g, 2);
    if (!by_off)
        return smelt_fail(c->ctx, SMELT_E_NOMEM, "out of memory");
    int rc = SMELT_OK;
    for (size_t i = 1; i < g->ntensors && !rc; i++) {
        const smelt_gguf_tensor *a = &g->tensors[by_off[i - 1]], *b = &g->tensors[by_off[i]];
        if (b->offset < a->offset + a->nbytes)
            rc = smelt_fail(c->ctx, SMELT_E_FORMAT,
                            "%s: tensor '%s': data at %llu overlaps tensor '%s' [%llu, %llu)",
                            c->path, b->name, (ull)b->offset, a->name, (ull)a->offset,
                            (ull)(a->offset + a->nbytes));
    }
    free(by_off);
    return rc;
}

static int check_unique(cursor *c, smelt_gguf *g)
{
    if (!(g->kv_by_key = sorted_index(g, 0)) || !(g->tensor_by_name = sorted_index(g, 1)))
        return smelt_fail(c->ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 1; i < g->nkv; i++)
        if (!strcmp(g->kvs[g->kv_by_key[i - 1]].key, g->kvs[g->kv_by_key[i]].key))
            return smelt_fail(c->ctx, SMELT_E_FORMAT, "%s: key '%s' appears more than once",
                              c->path, g->kvs[g->kv_by_key[i]].key);
    for (size_t i = 1; i < g->ntensors; i++)
        if (!strcmp(g->tensors[g->tensor_by_name[i - 1]].name,
                    g->tensors[g->tensor_by_name[i]].name))
            return smelt_fail(c->ctx, SMELT_E_FORMAT, "%s: tensor '%s' appears more than once",
                              c->path, g->tensors[g->tensor_by_name[i]].name);
    return SMELT_OK;
}

static int check_alignment(cursor *c, smelt_gguf *g)
{
    g->alignment = SMELT_GGUF_DEFAULT_ALIGNMENT;
    const smelt_gguf_kv *kv = smelt_gguf_find(g, "general.alignment");
    if (!kv)
        return SMELT_OK;
    if (kv->type != SMELT_GGUF_U32) /* ggml reads it as u32 only */
        return smelt_fail(c->ctx, SMELT_E_FORMAT, "%s: key 'general.alignment' is a %s, not a u32",
                          c->path, smelt_gguf_vtype_name(kv->type));
    uint32_t a = (uint32_t)load_le(kv->value, 4);
    if (a == 0 || (a & (a - 1)))
        return smelt_fail(c->ctx, SMELT_E_FORMAT,
                          "%s: key 'general.alignment' = %u is not a power of two", c->path, a);
    g->alignment = a;
    return SMELT_OK;
}

static int parse(cursor *c, smelt_gguf *g)
{
    uint64_t magic, version, nt, nkv;
    int rc = read_uint(c, 4, &magic, "magic");
    if (rc)
        return rc;
    if (memcmp(c->p, "GGUF", 4))
        return smelt_fail(c->ctx, SMELT_E_FORMAT, "%s: bad magic (not a GGUF file)", c->path);
    if ((rc = read_uint(c, 4, &version, "version")))
        return rc;
    /* Version 1 had 32-bit counts and lengths; 2 and 3 share this layout (3 adds big-endian
     * files, which announce themselves by a byte-swapped version and are refused here). */
    if (version != 2 && version != 3)
        return smelt_fail(c->ctx, SMELT_E_FORMAT,
                          "%s: unsupported GGUF version %llu (smelt reads versions 2 and 3)",
                          c->path, (ull)version);
    g->version = (uint32_t)version;
    if ((rc = read_uint(c, 8, &nt, "tensor count")) || (rc = read_uint(c, 8, &nkv, "key count")))
        return rc;
    /* A key takes at least 13 bytes (length, type, one byte of value), a tensor info 24. */
    if (nkv > left(c) / 13)
        return smelt_fail(c->ctx, SMELT_E_FORMAT,
                          "%s: key count %llu cannot fit in the file's %llu bytes", c->path,
                          (ull)nkv, (ull)c->size);
    if (nt > left(c) / 24)
        return smelt_fail(c->ctx, SMELT_E_FORMAT,
                          "%s: tensor count %llu cannot fit in the file's %llu bytes", c->path,
                          (ull)nt, (ull)c->size);
    g->kvs = calloc(nkv ? nkv : 1, sizeof *g->kvs);
    g->tensors = calloc(nt ? nt : 1, sizeof *g->tensors);
    if (!g->kvs || !g->tensors)
        return smelt_fail(c->ctx, SMELT_E_NOMEM, "out of memory");
    if ((rc = parse_kvs(c, g, nkv)))
        return rc;
    for (uint64_t i = 0; i < nt; i++)
        if ((rc = parse_tensor(c, g, i)))
            return rc;
    if ((rc = check_unique(c, g)) || (rc = check_alignment(c, g)))
        return rc;
    uint64_t pad = (g->alignment - c->pos % g->alignment) % g->alignment;
    if (nt && pad > left(c))
        return smelt_fail(c->ctx, SMELT_E_FORMAT,
                          "%s: the data section (header end padded to %u) starts past the end of "
                          "the file", c->path, g->alignment);
    g->data_start = c->pos + (pad <= left(c) ? pad : left(c));
    return check_layout(c, g);
}

int smelt_gguf_parse(smelt_ctx *ctx, const char *path, const uint8_t *bytes, uint64_t size,
                     smelt_gguf **out)
{
    *out = NULL;
    smelt_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    g->base = bytes;
    g->size = size;
    cursor c = {ctx, path, bytes, size, 0};
    int rc = parse(&c, g);
    if (rc) {
        smelt_gguf_close(g);
        return rc;
    }
    *out = g;
    return SMELT_OK;
}

int smelt_gguf_open(smelt_ctx *ctx, const char *path, smelt_gguf **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return smelt_fail_errno(ctx, errno, "%s: cannot open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return smelt_fail_errno(ctx, e, "%s: cannot stat", path);
    }
    uint64_t size = (uint64_t)st.st_size;
    void *map = NULL;
    if (size) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return smelt_fail_errno(ctx, e, "%s: cannot map", path);
        }
    }
    close(fd); /* the mapping keeps the file */
    static const uint8_t empty[1];
    int rc = smelt_gguf_parse(ctx, path, map ? map : empty, size, out);
    if (rc) {
        if (map)
            munmap(map, size);
        return rc;
    }
    (*out)->map = map;
    return SMELT_OK;
}

void smelt_gguf_close(smelt_gguf *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->nkv; i++)
        free(g->kvs[i].key);
    for (size_t i = 0; i < g->ntensors; i++)
        free(g->tensors[i].name);
    free(g->kvs);
    free(g->tensors);
    free(g->kv_by_key);
    free(g->tensor_by_name);
    if (g->map)
        munmap(g->map, g->size);
    free(g->path);
    free(g);
}

int smelt_gguf_is_path(const char *path)
{
    size_t n = strlen(path);
    return n >= 5 && !strcmp(path + n - 5, ".gguf");
}

const smelt_gguf_kv *smelt_gguf_find(const smelt_gguf *g, const char *key)
{
    size_t lo = 0, hi = g->nkv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->kvs[g->kv_by_key[mid]].key, key);
        if (!c)
            return &g->kvs[g->kv_by_key[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const smelt_gguf_tensor *smelt_gguf_find_tensor(const smelt_gguf *g, const char *name)
{
    size_t lo = 0, hi = g->ntensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->tensors[g->tensor_by_name[mid]].name, name);
        if (!c)
            return &g->tensors[g->tensor_by_name[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* A scalar integer value, sign-extended for the signed types; -1 when kv is no integer. */
static int int_value(const smelt_gguf_kv *kv, int *is_signed, uint64_t *bits)
{
    unsigned n = scalar_size(kv->type);
    int sgn = kv->type == SMELT_GGUF_I8 || kv->type == SMELT_GGUF_I16 ||
              kv->type == SMELT_GGUF_I32 || kv->type == SMELT_GGUF_I64;
    int uns = kv->type == SMELT_GGUF_U8 || kv->type == SMELT_GGUF_U16 ||
              kv->type == SMELT_GGUF_U32 || kv->type == SMELT_GGUF_U64;
    if (kv->count != 1 || (!sgn && !uns))
        return -1;
    uint64_t v = load_le(kv->value, n);
    if (sgn && n < 8 && (v >> (8 * n - 1)) & 1)
        v |= ~0ull << (8 * n);
    *is_signed = sgn;
    *bits = v;
    return 0;
}

int smelt_gguf_kv_uint(const smelt_gguf_kv *kv, uint64_t *out)
{
    int sgn;
    uint64_t v;
    if (int_value(kv, &sgn, &v) || (sgn && (int64_t)v < 0))
        return -1;
    *out = v;
    return 0;
}

int smelt_gguf_kv_int(const smelt_gguf_kv *kv, int64_t *out)
{
    int sgn;
    uint64_t v;
    if (int_value(kv, &sgn, &v) || (!sgn && v > (uint64_t)INT64_MAX))
        return -1;
    *out = (int64_t)v;
    return 0;
}

int smelt_gguf_kv_float(const smelt_gguf_kv *kv, double *out)
{
    if (kv->count != 1)
        return -1;
    if (kv->type == SMELT_GGUF_F32) {
        uint32_t u = (uint32_t)load_le(kv->value, 4);
        float f;
        memcpy(&f, &u, 4);
        *out = f;
    } else if (kv->type == SMELT_GGUF_F64) {
        uint64_t u = load_le(kv->value, 8);
        memcpy(out, &u, 8);
    } else {
        return -1;
    }
    return 0;
}

int smelt_gguf_kv_bool(const smelt_gguf_kv *kv, int *out)
{
    if (kv->type != SMELT_GGUF_BOOL || kv->count != 1)
        return -1;
    *out = kv->value[0] != 0;
    return 0;
}

int smelt_gguf_kv_str(const smelt_gguf_kv *kv, const char **s, uint64_t *len)
{
    if (kv->type != SMELT_GGUF_STRING || kv->count != 1)
        return -1;
    *len = load_le(kv->value, 8); /* checked against the file by the parser */
    *s = (const char *)kv->value + 8;
    return 0;
}

int smelt_gguf_kv_elem(const smelt_gguf_kv *kv, uint64_t i, smelt_gguf_kv *elem)
{
    if (kv->type != SMELT_GGUF_ARRAY || i >= kv->count || kv->elem_type == SMELT_GGUF_ARRAY)
        return -1;
    const uint8_t *p = kv->value;
    uint64_t sz = scalar_size(kv->elem_type);
    if (sz) {
        p += i * sz;
    } else { /* strings: the parser checked every length, so the walk stays inside */
        for (uint64_t k = 0; k < i; k++)
            p += 8 + load_le(p, 8);
        sz = 8 + load_le(p, 8);
    }
    *elem = (smelt_gguf_kv){kv->key, kv->elem_type, kv->elem_type, 1, p, sz};
    return 0;
}

int smelt_gguf_get_uint(smelt_ctx *ctx, const smelt_gguf *g, const char *key, uint64_t *out)
{
    const smelt_gguf_kv *kv = smelt_gguf_find(g, key);
    if (!kv)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: key '%s' is missing", g->path, key);
    if (smelt_gguf_kv_uint(kv, out))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: key '%s' is a %s, not an unsigned integer",
                          g->path, key, smelt_gguf_vtype_name(kv->type));
    return SMELT_OK;
}

int smelt_gguf_get_str(smelt_ctx *ctx, const smelt_gguf *g, const char *key, const char **s,
                       uint64_t *len)
{
    const smelt_gguf_kv *kv = smelt_gguf_find(g, key);
    if (!kv)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: key '%s' is missing", g->path, key);
    if (smelt_gguf_kv_str(kv, s, len))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: key '%s' is a %s, not a string", g->path, key,
                          smelt_gguf_vtype_name(kv->type));
    return SMELT_OK;
}
