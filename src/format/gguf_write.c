/* The GGUF writer (see gguf_write.h). Every add computes the pair's encoded size first and
 * reserves it, so that the appends after the reservation cannot fail and a failed add never
 * leaves half a pair in the buffer. */
#include "format/gguf_write.h"

#include <stdlib.h>
#include <string.h>

typedef unsigned long long ull;

#define GGUF_VERSION_WRITTEN 3
#define ALIGNMENT_KEY "general.alignment"

void smelt_gguf_kvbuf_init(smelt_gguf_kvbuf *kb)
{
    memset(kb, 0, sizeof *kb);
}

void smelt_gguf_kvbuf_free(smelt_gguf_kvbuf *kb)
{
    if (!kb)
        return;
    for (size_t i = 0; i < kb->count; i++)
        free(kb->keys[i].key);
    free(kb->keys);
    free(kb->bytes);
    smelt_gguf_kvbuf_init(kb);
}

static const smelt_gguf_kvbuf_key *find_key(const smelt_gguf_kvbuf *kb, const char *key)
{
    /* Linear: a model has tens of keys (the tokenizer's big arrays are one key each), and the
     * order of the file is the order of this list. */
    for (size_t i = 0; i < kb->count; i++)
        if (!strcmp(kb->keys[i].key, key))
            return &kb->keys[i];
    return NULL;
}

int smelt_gguf_kvbuf_has(const smelt_gguf_kvbuf *kb, const char *key)
{
    return find_key(kb, key) != NULL;
}

/* Appends n bytes that start_pair reserved. */
static void put(smelt_gguf_kvbuf *kb, const void *p, size_t n)
{
    if (n)
        memcpy(kb->bytes + kb->len, p, n);
    kb->len += n;
}

/* GGUF is little-endian whatever the host. */
static void put_le(smelt_gguf_kvbuf *kb, uint64_t v, unsigned n)
{
    uint8_t b[8];
    for (unsigned i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    put(kb, b, n);
}

static void put_str(smelt_gguf_kvbuf *kb, const char *s, size_t len)
{
    put_le(kb, len, 8);
    put(kb, s, len);
}

/* Checks the key, reserves room for the key, the type and `value_bytes` more (everything the
 * caller will put, array headers included), and writes the key and the type. After SMELT_OK the
 * caller's puts cannot fail. */
static int start_pair(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, uint32_t type,
                      uint64_t value_bytes)
{
    size_t klen = strlen(key);
    if (!klen)
        return smelt_fail(ctx, SMELT_E_ARG, "gguf: a key may not be empty");
    if (find_key(kb, key))
        return smelt_fail(ctx, SMELT_E_ARG, "gguf: key '%s' is added twice", key);
    if (value_bytes > SIZE_MAX / 2 || klen > SIZE_MAX / 4)
        return smelt_fail(ctx, SMELT_E_ARG, "gguf: key '%s': value too large", key);
    size_t need = kb->len + 12 + klen + (size_t)value_bytes;
    if (need > kb->cap) {
        size_t cap = need > kb->cap * 2 ? need : kb->cap * 2;
        uint8_t *p = realloc(kb->bytes, cap);
        if (!p)
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        kb->bytes = p;
        kb->cap = cap;
    }
    if (kb->count == kb->keys_cap) {
        size_t cap = kb->keys_cap ? kb->keys_cap * 2 : 32;
        smelt_gguf_kvbuf_key *k = realloc(kb->keys, cap * sizeof *k);
        if (!k)
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        kb->keys = k;
        kb->keys_cap = cap;
    }
    char *copy = strdup(key);
    if (!copy)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    put_str(kb, key, klen);
    put_le(kb, type, 4);
    kb->keys[kb->count++] = (smelt_gguf_kvbuf_key){copy, type, kb->len};
    return SMELT_OK;
}

static int add_scalar(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, uint32_t type,
                      uint64_t bits, unsigned size)
{
    int rc = start_pair(ctx, kb, key, type, size);
    if (rc == SMELT_OK)
        put_le(kb, bits, size);
    return rc;
}

int smelt_gguf_kvbuf_add_u16(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, uint16_t v)
{
    return add_scalar(ctx, kb, key, SMELT_GGUF_U16, v, 2);
}

int smelt_gguf_kvbuf_add_u32(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, uint32_t v)
{
    return add_scalar(ctx, kb, key, SMELT_GGUF_U32, v, 4);
}

int smelt_gguf_kvbuf_add_i32(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, int32_t v)
{
    return add_scalar(ctx, kb, key, SMELT_GGUF_I32, (uint32_t)v, 4);
}

int smelt_gguf_kvbuf_add_f32(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, 4);
    return add_scalar(ctx, kb, key, SMELT_GGUF_F32, bits, 4);
}

int smelt_gguf_kvbuf_add_bool(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, int v)
{
    return add_scalar(ctx, kb, key, SMELT_GGUF_BOOL, v != 0, 1);
}

int smelt_gguf_kvbuf_add_str(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, const char *s,
                             size_t len)
{
    int rc = start_pair(ctx, kb, key, SMELT_GGUF_STRING, 8 + (uint64_t)len);
    if (rc == SMELT_OK)
        put_str(kb, s, len);
    return rc;
}

/* Starts an array pair: its header (element type, count) plus `elems_bytes` of elements. */
static int start_array(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, uint32_t elem_type,
                       uint64_t count, uint64_t elems_bytes)
{
    int rc = start_pair(ctx, kb, key, SMELT_GGUF_ARRAY, 12 + elems_bytes);
    if (rc == SMELT_OK) {
        put_le(kb, elem_type, 4);
        put_le(kb, count, 8);
    }
    return rc;
}

int smelt_gguf_kvbuf_add_str_array(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key,
                                   const char *const *s, size_t n)
{
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += 8 + strlen(s[i]);
    int rc = start_array(ctx, kb, key, SMELT_GGUF_STRING, n, bytes);
    for (size_t i = 0; rc == SMELT_OK && i < n; i++)
        put_str(kb, s[i], strlen(s[i]));
    return rc;
}

/* Arrays of 4-byte scalars: each element little-endian. */
static int add_array32(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, uint32_t elem_type,
                       const void *v, size_t n)
{
    if (n > SIZE_MAX / 8)
        return smelt_fail(ctx, SMELT_E_ARG, "gguf: key '%s': array too large", key);
    int rc = start_array(ctx, kb, key, elem_type, n, 4 * (uint64_t)n);
    for (size_t i = 0; rc == SMELT_OK && i < n; i++) {
        uint32_t bits;
        memcpy(&bits, (const uint8_t *)v + 4 * i, 4);
        put_le(kb, bits, 4);
    }
    return rc;
}

int smelt_gguf_kvbuf_add_f32_array(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key,
                                   const float *v, size_t n)
{
    return add_array32(ctx, kb, key, SMELT_GGUF_F32, v, n);
}

int smelt_gguf_kvbuf_add_i32_array(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key,
                                   const int32_t *v, size_t n)
{
    return add_array32(ctx, kb, key, SMELT_GGUF_I32, v, n);
}

int smelt_gguf_kvbuf_copy(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const smelt_gguf_kv *kv)
{
    /* The reader's value of an array starts after its element type and count, which are
     * written again here; any other value (a string with its length) is whole. */
    int is_array = kv->type == SMELT_GGUF_ARRAY;
    int rc = is_array ? start_array(ctx, kb, kv->key, kv->elem_type, kv->count, kv->size)
                      : start_pair(ctx, kb, kv->key, kv->type, kv->size);
    if (rc == SMELT_OK)
        put(kb, kv->value, (size_t)kv->size);
    return rc;
}

static int skipped(const char *key, const char *const *skip, size_t nskip)
{
    for (size_t i = 0; i < nskip; i++) {
        size_t n = strlen(skip[i]);
        if (n && skip[i][n - 1] == '*' ? !strncmp(key, skip[i], n - 1) : !strcmp(key, skip[i]))
            return 1;
    }
    return 0;
}

int smelt_gguf_kvbuf_copy_all(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const smelt_gguf *g,
                              const char *const *skip, size_t nskip)
{
    for (size_t i = 0; i < g->nkv; i++) {
        if (skipped(g->kvs[i].key, skip, nskip))
            continue;
        int rc = smelt_gguf_kvbuf_copy(ctx, kb, &g->kvs[i]);
        if (rc)
            return rc;
    }
    return SMELT_OK;
}

uint64_t smelt_gguf_tensor_bytes(uint32_t type, uint32_t ndim, const uint64_t *ne)
{
    const smelt_ggml_type *t = smelt_ggml_type_get(type);
    if (!t || ndim < 1 || ndim > SMELT_GGUF_MAX_DIMS || ne[0] % t->block)
        return 0;
    uint64_t numel = 1;
    for (uint32_t d = 0; d < ndim; d++) {
        if (ne[d] == 0 || ne[d] > (uint64_t)INT64_MAX / numel)
            return 0;
        numel *= ne[d];
    }
    if (numel / t->block > UINT64_MAX / t->bytes)
        return 0;
    return numel / t->block * t->bytes;
}

/* Why smelt_gguf_tensor_bytes refused a tensor, for the message. */
static int tensor_error(smelt_ctx *ctx, const smelt_gguf_out_tensor *t)
{
    const smelt_ggml_type *ty = smelt_ggml_type_get(t->type);
    if (!ty)
        return smelt_fail(ctx, SMELT_E_ARG, "gguf: tensor '%s': unknown ggml type %u", t->name,
                          t->type);
    if (t->ndim < 1 || t->ndim > SMELT_GGUF_MAX_DIMS)
        return smelt_fail(ctx, SMELT_E_ARG, "gguf: tensor '%s': %u dimensions (1 to %d allowed)",
                          t->name, t->ndim, SMELT_GGUF_MAX_DIMS);
    for (uint32_t d = 0; d < t->ndim; d++)
        if (t->ne[d] == 0)
            return smelt_fail(ctx, SMELT_E_ARG, "gguf: tensor '%s': dimension %u is 0", t->name, d);
    if (t->ne[0] % ty->block)
        return smelt_fail(ctx, SMELT_E_ARG,
                          "gguf: tensor '%s': ne[0] = %llu is not a multiple of %s's block size %u",
                          t->name, (ull)t->ne[0], ty->name, ty->block);
    return smelt_fail(ctx, SMELT_E_ARG, "gguf: tensor '%s': element count or size overflows",
                      t->name);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(**(const char *const *const *)a, **(const char *const *const *)b);
}

/* Refuses two tensors of one name (sorted pointers to the names: thousands of tensors). */
static int check_unique(smelt_ctx *ctx, const smelt_gguf_out_tensor *tensors, size_t n)
{
    const char *const **by_name = malloc((n ? n : 1) * sizeof *by_name);
    if (!by_name)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        by_name[i] = &tensors[i].name;
    qsort(by_name, n, sizeof *by_name, name_cmp);
    int rc = SMELT_OK;
    for (size_t i = 1; i < n && !rc; i++)
        if (!strcmp(*by_name[i - 1], *by_name[i]))
            rc = smelt_fail(ctx, SMELT_E_ARG, "gguf: tensor '%s' appears more than once",
                            *by_name[i]);
    free(by_name);
    return rc;
}

/* The alignment to use, checked against a general.alignment the pairs hold; *append is set when
 * the layout must add that key itself. */
static int check_alignment(smelt_ctx *ctx, const smelt_gguf_kvbuf *kvs, uint32_t *alignment,
                           int *append)
{
    uint32_t a = *alignment ? *alignment : SMELT_GGUF_DEFAULT_ALIGNMENT;
    if (a & (a - 1))
        return smelt_fail(ctx, SMELT_E_ARG, "gguf: alignment %u is not a power of two", a);
    const smelt_gguf_kvbuf_key *k = find_key(kvs, ALIGNMENT_KEY);
    *append = !k && a != SMELT_GGUF_DEFAULT_ALIGNMENT;
    if (k) {
        if (k->type != SMELT_GGUF_U32) /* ggml reads it as u32 only */
            return smelt_fail(ctx, SMELT_E_ARG, "gguf: key '%s' is a %s, not a u32", ALIGNMENT_KEY,
                              smelt_gguf_vtype_name(k->type));
        const uint8_t *p = kvs->bytes + k->value_off;
        uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
        if (v != a)
            return smelt_fail(ctx, SMELT_E_ARG,
                              "gguf: key '%s' = %u disagrees with the layout's alignment %u",
                              ALIGNMENT_KEY, v, a);
    }
    *alignment = a;
    return SMELT_OK;
}

static uint64_t pad_to(uint64_t x, uint64_t a)
{
    return (x + a - 1) / a * a;
}

int smelt_gguf_layout(smelt_ctx *ctx, const smelt_gguf_kvbuf *kvs,
                      const smelt_gguf_out_tensor *tensors, size_t n, uint32_t alignment,
                      uint8_t **header, size_t *header_len, uint64_t *offsets, uint64_t *nbytes,
                      uint64_t *file_size)
{
    *header = NULL;
    int append = 0;
    int rc = check_alignment(ctx, kvs, &alignment, &append);
    if (rc)
        return rc;
    /* Tensor infos: name, ndim, ne[], type, offset. Offsets are relative to the data section
     * and, as ggml's reader requires, each is where the previous padded tensor ends. Every sum
     * is checked: a few huge tensors could pass 64 bits together. */
    uint64_t info_bytes = 0, data = 0;
    for (size_t i = 0; i < n; i++) {
        const smelt_gguf_out_tensor *t = &tensors[i];
        size_t len = t->name ? strlen(t->name) : 0;
        if (!len || len > SMELT_GGUF_MAX_NAME)
            return smelt_fail(ctx, SMELT_E_ARG,
                              "gguf: tensor #%zu: a name of %zu bytes (1 to %d allowed: ggml's "
                              "GGML_MAX_NAME)%s%s", i, len, SMELT_GGUF_MAX_NAME,
                              len ? ": " : "", len ? t->name : "");
        uint64_t size = smelt_gguf_tensor_bytes(t->type, t->ndim, t->ne);
        if (!size)
            return tensor_error(ctx, t);
        uint64_t padded = pad_to(size, alignment);
        if (padded < size || data > UINT64_MAX / 2 - padded)
            return smelt_fail(ctx, SMELT_E_ARG, "gguf: tensor '%s': the data section's size "
                                                "overflows", t->name);
        offsets[i] = data; /* relative for now */
        if (nbytes)
            nbytes[i] = size;
        data += padded;
        info_bytes += 8 + len + 4 + 8 * (uint64_t)t->ndim + 4 + 8;
    }
    if ((rc = check_unique(ctx, tensors, n)))
        return rc;
    uint64_t align_kv = append ? 8 + strlen(ALIGNMENT_KEY) + 4 + 4 : 0;
    uint64_t meta = 4 + 4 + 8 + 8 + (uint64_t)kvs->len + align_kv + info_bytes;
    uint64_t start = pad_to(meta, alignment);
    if (start > SIZE_MAX / 2 || data > UINT64_MAX / 2 - start)
        return smelt_fail(ctx, SMELT_E_ARG, "gguf: the header is too large");
    /* The header is built in a key buffer of its own: the same little-endian puts, with the
     * room reserved up front. */
    smelt_gguf_kvbuf h = {.bytes = calloc(1, (size_t)start), .cap = (size_t)start};
    if (!h.bytes)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    put(&h, "GGUF", 4);
    put_le(&h, GGUF_VERSION_WRITTEN, 4);
    put_le(&h, n, 8);
    put_le(&h, kvs->count + (size_t)append, 8);
    put(&h, kvs->bytes, kvs->len);
    if (append) {
        put_str(&h, ALIGNMENT_KEY, strlen(ALIGNMENT_KEY));
        put_le(&h, SMELT_GGUF_U32, 4);
        put_le(&h, alignment, 4);
    }
    for (size_t i = 0; i < n; i++) {
        const smelt_gguf_out_tensor *t = &tensors[i];
        put_str(&h, t->name, strlen(t->name));
        put_le(&h, t->ndim, 4);
        for (uint32_t d = 0; d < t->ndim; d++)
            put_le(&h, t->ne[d], 8);
        put_le(&h, t->type, 4);
        put_le(&h, offsets[i], 8);
        offsets[i] += start;
    }
    /* calloc's zeros are the padding up to the data section. */
    *header = h.bytes;
    *header_len = (size_t)start;
    *file_size = start + data;
    return SMELT_OK;
}
