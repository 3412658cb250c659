/* GGUF split sets (see gguf.h): gguf-split's naming and keys, validated across the set. */
#include "format/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long long ull;

/* Five decimal digits, as gguf-split writes them ("%05d"). */
static int digits5(const char *p, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 5; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        *v = *v * 10 + (unsigned)(p[i] - '0');
    }
    return 1;
}

int smelt_gguf_split_name(const char *path, size_t *prefix_len, unsigned *no, unsigned *count)
{
    static const char tail[] = "-00000-of-00000.gguf";
    size_t n = strlen(path), t = sizeof tail - 1;
    if (n <= t)
        return 0;
    const char *p = path + n - t;
    if (p[0] != '-' || memcmp(p + 6, "-of-", 4) || strcmp(p + 15, ".gguf") ||
        !digits5(p + 1, no) || !digits5(p + 10, count) || *no < 1 || *no > *count)
        return 0;
    *prefix_len = n - t;
    return 1;
}

int smelt_gguf_split_path(char *buf, size_t len, const char *prefix, size_t prefix_len,
                          unsigned no, unsigned count)
{
    return snprintf(buf, len, "%.*s-%05u-of-%05u.gguf", (int)prefix_len, prefix, no, count);
}

/* Checks split k (0-based) of count against its keys. */
static int check_split(smelt_ctx *ctx, const smelt_gguf *g, unsigned k, unsigned count)
{
    uint64_t no, cnt;
    int rc = smelt_gguf_get_uint(ctx, g, "split.no", &no);
    if (!rc)
        rc = smelt_gguf_get_uint(ctx, g, "split.count", &cnt);
    if (rc)
        return rc;
    if (no != k)
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: split.no is %llu but the name makes it split %u of the set (split.no "
                          "%u)", g->path, (ull)no, k + 1, k);
    if (cnt != count)
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: split.count is %llu but the name says the set has %u files",
                          g->path, (ull)cnt, count);
    return SMELT_OK;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(((const smelt_gguf_set_tensor *)a)->t->name,
                  ((const smelt_gguf_set_tensor *)b)->t->name);
}

/* Fills the catalog and refuses a tensor that two splits hold. */
static int build_catalog(smelt_ctx *ctx, smelt_gguf_set *s)
{
    size_t n = 0;
    for (uint32_t f = 0; f < s->nfiles; f++)
        n += s->files[f]->ntensors;
    s->tensors = malloc((n ? n : 1) * sizeof *s->tensors);
    smelt_gguf_set_tensor *sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (!s->tensors || !sorted) {
        free(sorted);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    for (uint32_t f = 0; f < s->nfiles; f++)
        for (size_t i = 0; i < s->files[f]->ntensors; i++)
            s->tensors[s->ntensors++] = (smelt_gguf_set_tensor){f, &s->files[f]->tensors[i]};
    memcpy(sorted, s->tensors, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, name_cmp);
    int rc = SMELT_OK;
    for (size_t i = 1; i < n && !rc; i++)
        if (!strcmp(sorted[i - 1].t->name, sorted[i].t->name))
            rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: tensor '%s' is also in %s",
                            s->files[sorted[i].file > sorted[i - 1].file ? sorted[i].file
                                                                         : sorted[i - 1].file]->path,
                            sorted[i].t->name,
                            s->files[sorted[i].file > sorted[i - 1].file ? sorted[i - 1].file
                                                                         : sorted[i].file]->path);
    free(sorted);
    return rc;
}

int smelt_gguf_open_set(smelt_ctx *ctx, const char *path, smelt_gguf_set **out)
{
    *out = NULL;
    smelt_gguf_set *s = calloc(1, sizeof *s);
    if (!s)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    size_t plen;
    unsigned no, count;
    int split = smelt_gguf_split_name(path, &plen, &no, &count);
    unsigned n = split ? count : 1;
    s->files = calloc(n, sizeof *s->files);
    int rc = s->files ? SMELT_OK : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (unsigned k = 0; !rc && k < n; k++) {
        if (split) {
            char *p = malloc(plen + 32);
            if (!p) {
                rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
                break;
            }
            smelt_gguf_split_path(p, plen + 32, path, plen, k + 1, count);
            rc = smelt_gguf_open(ctx, p, &s->files[k]);
            free(p);
            if (!rc)
                s->nfiles = k + 1;
            if (!rc)
                rc = check_split(ctx, s->files[k], k, count);
        } else {
            rc = smelt_gguf_open(ctx, path, &s->files[0]);
            if (!rc)
                s->nfiles = 1;
            const smelt_gguf_kv *kv = rc ? NULL : smelt_gguf_find(s->files[0], "split.count");
            uint64_t c;
            if (kv && !smelt_gguf_kv_uint(kv, &c) && c > 1)
                rc = smelt_fail(ctx, SMELT_E_FORMAT,
                                "%s: split.count is %llu but the name is not that of a split "
                                "(NAME-00001-of-%05llu.gguf)", path, (ull)c, (ull)c);
        }
    }
    if (!rc)
        rc = build_catalog(ctx, s);
    if (!rc && split) {
        uint64_t total;
        rc = smelt_gguf_get_uint(ctx, s->files[0], "split.tensors.count", &total);
        if (!rc && total != s->ntensors)
            rc = smelt_fail(ctx, SMELT_E_FORMAT,
                            "%s: split.tensors.count is %llu but the %u splits hold %zu tensors",
                            s->files[0]->path, (ull)total, count, s->ntensors);
    }
    if (rc) {
        smelt_gguf_set_close(s);
        return rc;
    }
    *out = s;
    return SMELT_OK;
}

void smelt_gguf_set_close(smelt_gguf_set *set)
{
    if (!set)
        return;
    for (uint32_t f = 0; f < set->nfiles; f++)
        smelt_gguf_close(set->files[f]);
    free(set->files);
    free(set->tensors);
    free(set);
}
