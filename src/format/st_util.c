#include "format/safetensors.h"
#include "format/st_internal.h"

#include "common/util.h"

#include <errno.h>
#include <jansson.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

size_t smelt_utf8_check(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* UTF-16 surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else {
            return i; /* a continuation byte, an overlong lead (C0, C1) or F5..FF */
        }
        if (len - i <= need)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
        i += need + 1;
    }
    return len;
}

static size_t hash_name(const char *name) { return (size_t)XXH3_64bits(name, strlen(name)); }

int smelt_name_index_build(smelt_name_index *index, const void *array, size_t n,
                           smelt_name_at_fn name_at, size_t *dup_first, size_t *dup_second)
{
    size_t cap = 16;
    while (cap < 2 * n) {
        if (cap > SIZE_MAX / 4)
            return -1;
        cap *= 2;
    }
    index->mask = cap - 1;
    index->slots = calloc(cap, sizeof *index->slots);
    if (!index->slots)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *name = name_at(array, i);
        size_t at = hash_name(name) & index->mask;
        while (index->slots[at]) {
            size_t other = index->slots[at] - 1;
            if (strcmp(name_at(array, other), name) == 0) {
                *dup_first = other;
                *dup_second = i;
                smelt_name_index_free(index);
                return 1;
            }
            at = (at + 1) & index->mask;
        }
        index->slots[at] = i + 1;
    }
    return 0;
}

size_t smelt_name_index_find(const smelt_name_index *index, const void *array,
                             smelt_name_at_fn name_at, const char *name)
{
    if (!index->slots)
        return (size_t)-1;
    /* The table is never more than half full, so the probe ends at an empty slot. */
    for (size_t at = hash_name(name) & index->mask; index->slots[at]; at = (at + 1) & index->mask)
        if (strcmp(name_at(array, index->slots[at] - 1), name) == 0)
            return index->slots[at] - 1;
    return (size_t)-1;
}

void smelt_name_index_free(smelt_name_index *index)
{
    free(index->slots);
    index->slots = NULL;
    index->mask = 0;
}

void smelt_format_shape(char *buf, size_t len, const uint64_t *shape, uint32_t ndim)
{
    size_t at = (size_t)snprintf(buf, len, "[");
    for (uint32_t d = 0; d < ndim && at < len; d++)
        at += (size_t)snprintf(buf + at, len - at, "%s%llu", d ? ", " : "",
                               (unsigned long long)shape[d]);
    if (at < len)
        snprintf(buf + at, len - at, "]");
}

int smelt_json_load(smelt_ctx *ctx, const char *path, size_t flags, json_t **out)
{
    char *text;
    size_t len;
    *out = NULL;
    int rc = smelt_read_file(ctx, path, SMELT_JSON_MAX_BYTES, &text, &len);
    if (rc != SMELT_OK)
        return rc;
    json_error_t jerr;
    *out = json_loadb(text, len, flags, &jerr);
    free(text);
    if (!*out)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: not valid JSON (line %d, column %d): %s",
                          path, jerr.line, jerr.column, jerr.text);
    return SMELT_OK;
}

int smelt_json_load_if_exists(smelt_ctx *ctx, const char *path, size_t flags, json_t **out)
{
    struct stat st;
    *out = NULL;
    if (stat(path, &st) != 0 && errno == ENOENT)
        return SMELT_OK;
    return smelt_json_load(ctx, path, flags, out);
}
