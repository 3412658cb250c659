/* smelt lora extract: a PEFT LoRA adapter that approximates model - base, as
 * mergekit-extract-lora makes one (arcee-ai/mergekit, mergekit/scripts/extract_lora.py), without
 * its full fp32 SVD of every matrix held in memory (mergekit issues #393, #525): each delta is
 * streamed through a randomized truncated SVD (lora/rsvd.h).
 *
 * mergekit's choices, followed here (extract_lora.py, commit 854e51b):
 *  - nn.Linear weights are decomposed; embeddings and the output head go whole into
 *    modules_to_save unless --embed-lora (here --embeddings), and an embedding is decomposed
 *    transposed (lora_embedding_A [r, vocab], lora_embedding_B [dim, r]); a vocabulary that
 *    differs between the models forces modules_to_save. smelt has no module types, so a 2-D
 *    ".weight" is a linear layer unless its leaf name is an embedding's or head's.
 *  - Modules that cannot be decomposed (norms: every other tensor) are stored whole, their leaf
 *    in modules_to_save, unless --skip-undecomposable.
 *  - rank = min(max_rank, len(s)), then min(#(s > sv_epsilon), rank): sv_epsilon is an
 *    absolute threshold on the singular values.
 *  - distribute_scale (mergekit's default): lora_A = sqrt(S) V^T, lora_B = U sqrt(S).
 *  - r = the largest rank extracted, lora_alpha = r, and every module of another rank in both
 *    rank_pattern and alpha_pattern with alpha = rank: the scale is 1 everywhere.
 * Deviations: the factors are f32 by default (mergekit writes the models' dtype; f32 keeps the
 * SVD's accuracy, --dtype bf16/f16 gives mergekit's sizes); --rank R is exact and refuses a
 * module smaller than R, --max-rank R is mergekit's clamp; a linear layer's bias goes whole
 * into the adapter (PEFT's bias "lora_only") where mergekit writes its delta as lora_B.bias,
 * which needs PEFT's lora_bias and which smelt's reader refuses; no README model card. */
#include "smelt.h"

#include "common/pool.h"
#include "common/util.h"
#include "format/safetensors.h"
#include "io/writer.h"
#include "kernels/kernels.h"
#include "lora/rsvd.h"
#include "out/st_write.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_PREFIX "base_model.model."
#define DECODE_CHUNK 65536u    /* elements decoded per task */
#define COPY_CHUNK (1u << 20)  /* bytes copied at a time into the adapter */
#define ENCODE_CHUNK 65536u    /* factor elements encoded at a time */

void smelt_lora_extract_options_default(smelt_lora_extract_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->oversample = 10;
    opts->power_iters = 3;
    opts->max_memory = 512ull << 20;
}

typedef enum item_kind { ITEM_LINEAR, ITEM_EMBEDDING, ITEM_WHOLE } item_kind;

typedef struct item {
    item_kind kind;
    const smelt_tensor_info *m, *b; /* model's tensor; base's (decomposed items) */
    char module[256];               /* the name without ".weight" */
    uint32_t want;                  /* the rank asked for: min(R, rows, cols) */
    size_t k;                       /* sketch width */
    size_t round_rows;
    /* results */
    uint32_t rank;
    uint64_t scratch_a, scratch_b;  /* offsets of the factors in the scratch file */
    uint64_t a_shape[2], b_shape[2];
    double rel_error;
    int dropped;                    /* no singular value above sv_epsilon */
} item;

typedef struct extract {
    smelt_ctx *ctx;
    const smelt_lora_extract_options *o;
    smelt_model *base, *model;
    smelt_pool *pool;
    unsigned threads;
    smelt_dtype out_dt;
    item *items;
    size_t nitems;
    char **saved_keys;              /* modules_to_save leaves, sorted unique */
    size_t nsaved;
    int bias_saved;
    int scratch_fd;
    uint64_t scratch_size;
    uint64_t bytes_read;
} extract;

/* ---- classifying the model's tensors ---- */

static const char *const embedding_leaves[] = {"embed_tokens", "wte", "word_embeddings",
                                               "embed_in", "tok_embeddings", NULL};
static const char *const head_leaves[] = {"lm_head", "embed_out", NULL};

static int leaf_in(const char *leaf, size_t len, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (strlen(list[i]) == len && !strncmp(list[i], leaf, len))
            return 1;
    return 0;
}

/* The module's last name component: [*leaf, *leaf + *len). */
static void module_leaf(const char *module, const char **leaf, size_t *len)
{
    const char *dot = strrchr(module, '.');
    *leaf = dot ? dot + 1 : module;
    *len = strlen(*leaf);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), e = strlen(suffix);
    return n >= e && !strcmp(s + n - e, suffix);
}

static int plain_float(smelt_dtype dt)
{
    return dt == SMELT_DT_F32 || dt == SMELT_DT_F16 || dt == SMELT_DT_BF16;
}

static int add_saved_key(extract *x, const char *leaf, size_t len)
{
    for (size_t i = 0; i < x->nsaved; i++)
        if (strlen(x->saved_keys[i]) == len && !strncmp(x->saved_keys[i], leaf, len))
            return SMELT_OK;
    char **keys = realloc(x->saved_keys, (x->nsaved + 1) * sizeof *keys);
    if (!keys)
        return smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
    x->saved_keys = keys;
    if (!(keys[x->nsaved] = strndup(leaf, len)))
        return smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
    x->nsaved++;
    return SMELT_OK;
}

static int is_decomposed(const extract *x, const char *module, size_t len)
{
    for (size_t i = 0; i < x->nitems; i++)
        if (x->items[i].kind != ITEM_WHOLE && strlen(x->items[i].module) == len &&
            !strncmp(x->items[i].module, module, len))
            return 1;
    return 0;
}

static item *new_item(extract *x, item_kind kind, const smelt_tensor_info *m, size_t module_len)
{
    item *it = &x->items[x->nitems++];
    memset(it, 0, sizeof *it);
    it->kind = kind;
    it->m = m;
    snprintf(it->module, sizeof it->module, "%.*s", (int)module_len, m->name);
    return it;
}

/* Every tensor of the model is decomposed, stored whole, or skipped with a notice. Weights come
 * first so that a bias can tell whether its module is decomposed. */
static int plan(extract *x)
{
    smelt_ctx *ctx = x->ctx;
    const smelt_lora_extract_options *o = x->o;
    if (!(x->items = calloc(x->model->ntensors + 1, sizeof *x->items)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    int rc;
    for (int round = 0; round < 2; round++)
        for (size_t i = 0; i < x->model->ntensors; i++) {
            const smelt_tensor_info *t = &x->model->tensors[i];
            int weight = ends_with(t->name, ".weight"), bias = ends_with(t->name, ".bias");
            int two_d = t->ndim == 2 && weight;
            if (two_d != (round == 0))
                continue;
            size_t mlen = strlen(t->name) - (weight ? 7 : bias ? 5 : 0);
            char module[256];
            snprintf(module, sizeof module, "%.*s", (int)mlen, t->name);
            const char *leaf;
            size_t leaf_len;
            module_leaf(module, &leaf, &leaf_len);
            if (!plain_float(t->dtype)) {
                smelt_notice(ctx, SMELT_LOG_NOTICE, "lora extract: skipping '%s' (%s): "
                             "block-quantized and integer tensors are not extracted", t->name,
                             smelt_dtype_name(t->dtype));
                continue;
            }
            if (!two_d) {
                if (bias && is_decomposed(x, module, mlen)) {
                    new_item(x, ITEM_WHOLE, t, mlen);
                    x->bias_saved = 1;
                } else if (!(weight || bias) || t->ndim > 2) {
                    char shape[64];
                    smelt_format_shape(shape, sizeof shape, t->shape, t->ndim);
                    smelt_notice(ctx, SMELT_LOG_NOTICE, "lora extract: skipping '%s' %s: "
                                 "not a module's weight or bias", t->name, shape);
                } else if (!o->skip_undecomposable) {
                    new_item(x, ITEM_WHOLE, t, mlen);
                    if ((rc = add_saved_key(x, leaf, leaf_len)))
                        return rc;
                }
                continue;
            }
            int emb = leaf_in(leaf, leaf_len, embedding_leaves);
            int head = leaf_in(leaf, leaf_len, head_leaves);
            const smelt_tensor_info *b = smelt_model_find(x->base, t->name);
            char ms[64], bs[64];
            smelt_format_shape(ms, sizeof ms, t->shape, t->ndim);
            if ((emb || head) && (!o->embeddings || !b || b->ndim != 2 ||
                                  b->shape[0] != t->shape[0] || b->shape[1] != t->shape[1])) {
                /* mergekit: embeddings go to modules_to_save unless --embed-lora, and so do they
                 * when the vocabularies differ. */
                if (o->embeddings)
                    smelt_notice(ctx, SMELT_LOG_NOTICE, "lora extract: '%s' %s differs from the "
                                 "base's: stored whole (modules_to_save)", t->name, ms);
                new_item(x, ITEM_WHOLE, t, mlen);
                if ((rc = add_saved_key(x, leaf, leaf_len)))
                    return rc;
                continue;
            }
            if (!b)
                return smelt_fail(ctx, SMELT_E_PLAN, "lora extract: tensor '%s' of %s is not in "
                                  "the base %s", t->name, x->model->ref, x->base->ref);
            smelt_format_shape(bs, sizeof bs, b->shape, b->ndim);
            if (b->ndim != 2 || b->shape[0] != t->shape[0] || b->shape[1] != t->shape[1])
                return smelt_fail(ctx, SMELT_E_PLAN, "lora extract: tensor '%s' has shape %s in "
                                  "%s but %s in the base %s", t->name, ms, x->model->ref, bs,
                                  x->base->ref);
            if (!plain_float(b->dtype)) {
                smelt_notice(ctx, SMELT_LOG_NOTICE, "lora extract: skipping '%s': the base "
                             "stores it as %s (block-quantized and integer tensors are not "
                             "extracted)", t->name, smelt_dtype_name(b->dtype));
                continue;
            }
            uint64_t mn = t->shape[0] < t->shape[1] ? t->shape[0] : t->shape[1];
            if (!o->rank_is_max && o->rank > mn)
                return smelt_fail(ctx, SMELT_E_ARG, "lora extract: --rank %u is larger than "
                                  "module '%s' %s allows (at most %llu; --max-rank clamps)",
                                  o->rank, module, ms, (unsigned long long)mn);
            item *it = new_item(x, emb ? ITEM_EMBEDDING : ITEM_LINEAR, t, mlen);
            it->b = b;
            it->want = (uint32_t)(o->rank < mn ? o->rank : mn);
            uint64_t k = (uint64_t)it->want + o->oversample;
            it->k = (size_t)(k < mn ? k : mn);
        }
    return SMELT_OK;
}

/* Round sizes under the budget; SMELT_E_BUDGET naming the first module that does not fit. */
static int size_rounds(extract *x)
{
    uint64_t budget = x->o->max_memory;
    uint64_t common = (uint64_t)x->threads * DECODE_CHUNK * 4 + COPY_CHUNK +
                      ENCODE_CHUNK * (4 + 4);
    for (size_t i = 0; i < x->nitems; i++) {
        item *it = &x->items[i];
        if (it->kind == ITEM_WHOLE)
            continue;
        uint64_t rows = it->m->shape[0], cols = it->m->shape[1];
        uint64_t fixed = common + rsvd_fixed_bytes(rows, cols, it->k);
        /* raw model and base bytes, the f32 delta, and rsvd's per-row sum of squares */
        uint64_t per_row = cols * (4 + smelt_dtype_size(it->m->dtype) +
                                   smelt_dtype_size(it->b->dtype)) + 8;
        if (budget < fixed + per_row)
            return smelt_fail(x->ctx, SMELT_E_BUDGET, "lora extract: --max-memory %llu bytes "
                              "cannot hold module '%s': its sketch of %zu columns and one row "
                              "need %llu bytes", (unsigned long long)budget, it->module, it->k,
                              (unsigned long long)(fixed + per_row));
        uint64_t r = (budget - fixed) / per_row;
        it->round_rows = (size_t)(r < rows ? r : rows);
    }
    return SMELT_OK;
}

/* ---- reading a delta's rows ---- */

typedef struct reader {
    extract *x;
    const item *it;
    uint8_t *raw_m, *raw_b;
    float *tmp;        /* per worker: DECODE_CHUNK floats */
    float *dst;
    size_t n;          /* elements this round */
} reader;

static void decode_task(void *arg, size_t task, unsigned worker)
{
    reader *r = arg;
    const smelt_kernels *k = smelt_kernels_get();
    size_t at = task * DECODE_CHUNK, n = r->n - at < DECODE_CHUNK ? r->n - at : DECODE_CHUNK;
    float *tmp = r->tmp + (size_t)worker * DECODE_CHUNK;
    smelt_dtype dm = r->it->m->dtype, db = r->it->b->dtype;
    smelt_decode(k, r->dst + at, r->raw_m + at * smelt_dtype_size(dm), dm, n);
    smelt_decode(k, tmp, r->raw_b + at * smelt_dtype_size(db), db, n);
    float *d = r->dst + at;
    for (size_t i = 0; i < n; i++)
        d[i] -= tmp[i];
}

static int read_rows(void *user, uint64_t row0, size_t nrows, float *dst)
{
    reader *r = user;
    extract *x = r->x;
    const smelt_tensor_info *tm = r->it->m, *tb = r->it->b;
    uint64_t cols = tm->shape[1];
    size_t n = (size_t)(nrows * cols);
    size_t sm = smelt_dtype_size(tm->dtype), sb = smelt_dtype_size(tb->dtype);
    int err = smelt_pread_all(x->model->files[tm->file].fd, r->raw_m, n * sm,
                              tm->offset + row0 * cols * sm);
    if (err)
        return smelt_fail_errno(x->ctx, err, "%s: reading tensor '%s'",
                                x->model->files[tm->file].path, tm->name);
    err = smelt_pread_all(x->base->files[tb->file].fd, r->raw_b, n * sb,
                          tb->offset + row0 * cols * sb);
    if (err)
        return smelt_fail_errno(x->ctx, err, "%s: reading tensor '%s'",
                                x->base->files[tb->file].path, tb->name);
    x->bytes_read += n * (sm + sb);
    r->dst = dst;
    r->n = n;
    smelt_pool_run(x->pool, (n + DECODE_CHUNK - 1) / DECODE_CHUNK, decode_task, r);
    return SMELT_OK;
}

/* ---- one module ---- */

static uint64_t name_key(uint64_t seed, const char *name)
{
    uint64_t h = 0xCBF29CE484222325ull; /* FNV-1a, then splitmix64's finalizer with the seed */
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        h = (h ^ *c) * 0x100000001B3ull;
    h ^= seed + 0x9E3779B97F4A7C15ull;
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    return h ^ (h >> 31);
}

/* Appends a [rows, cols] factor to the scratch file: element (i, j) = f(i, j) in f64, rounded
 * to f32 once and then to the output dtype. `rowmajor`: src is [rows, k] and element (i, j) =
 * src[i][j] * w[j]; else src is [cols, k] and element (i, j) = src[j][i] * w[i]. */
static int write_factor(extract *x, const double *src, size_t k, const double *w, uint64_t rows,
                        uint64_t cols, int rowmajor, float *vals, uint8_t *enc)
{
    size_t es = smelt_dtype_size(x->out_dt);
    uint64_t total = rows * cols;
    for (uint64_t at = 0; at < total;) {
        size_t n = (size_t)(total - at < ENCODE_CHUNK ? total - at : ENCODE_CHUNK);
        for (size_t e = 0; e < n; e++) {
            uint64_t i = (at + e) / cols, j = (at + e) % cols;
            vals[e] = rowmajor ? (float)(src[i * k + j] * w[j]) : (float)(src[j * k + i] * w[i]);
        }
        smelt_encode(smelt_kernels_get(), enc, vals, x->out_dt, n);
        ssize_t wr = pwrite(x->scratch_fd, enc, n * es, (off_t)x->scratch_size);
        if (wr != (ssize_t)(n * es))
            return smelt_fail_errno(x->ctx, wr < 0 ? errno : EIO, "lora extract: writing the "
                                    "scratch file");
        x->scratch_size += n * es;
        at += n;
    }
    return SMELT_OK;
}

static int decompose(extract *x, item *it, FILE *report)
{
    smelt_ctx *ctx = x->ctx;
    uint64_t rows = it->m->shape[0], cols = it->m->shape[1];
    size_t sm = smelt_dtype_size(it->m->dtype), sb = smelt_dtype_size(it->b->dtype);
    reader r = {.x = x, .it = it};
    r.raw_m = malloc(it->round_rows * cols * sm);
    r.raw_b = malloc(it->round_rows * cols * sb);
    r.tmp = malloc((size_t)x->threads * DECODE_CHUNK * sizeof *r.tmp);
    float *vals = malloc(ENCODE_CHUNK * sizeof *vals);
    uint8_t *enc = malloc(ENCODE_CHUNK * 4);
    double *w = malloc(it->k * sizeof *w);
    rsvd_result res = {0};
    int rc = SMELT_OK;
    if (!r.raw_m || !r.raw_b || !r.tmp || !vals || !enc || !w) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    rsvd_job job = {.rows = rows, .cols = cols, .k = it->k, .power_iters = x->o->power_iters,
                    .key = name_key(x->o->seed, it->m->name), .round_rows = it->round_rows,
                    .pool = x->pool, .read = read_rows, .read_user = &r, .cancel = x->o->cancel};
    if ((rc = rsvd_run(ctx, &job, &res)) != SMELT_OK) {
        smelt_error_prefix(ctx, "lora extract: module '%s': ", it->module);
        goto out;
    }
    /* mergekit: rank = min(max_rank, len(s)), then min(#(s > sv_epsilon), rank). */
    uint32_t rank = it->want;
    if (x->o->sv_epsilon > 0) {
        uint32_t above = 0;
        while (above < rank && res.s[above] > x->o->sv_epsilon)
            above++;
        rank = above;
    }
    double kept = 0;
    for (uint32_t c = 0; c < rank; c++)
        kept += res.s[c] * res.s[c];
    double err2 = res.frob2 - kept;
    it->rel_error = res.frob2 > 0 ? sqrt(err2 > 0 ? err2 / res.frob2 : 0) : 0;
    it->rank = rank;
    if (rank == 0) {
        it->dropped = 1;
        smelt_notice(ctx, SMELT_LOG_NOTICE, "lora extract: module '%s': no singular value is "
                     "above --sv-epsilon %g (the largest is %g): left out", it->module,
                     x->o->sv_epsilon, res.s[0]);
        goto out;
    }
    for (uint32_t c = 0; c < rank; c++)
        w[c] = sqrt(res.s[c]);
    /* Linear: delta = U S V^T, lora_A = sqrt(S) V^T [r, cols], lora_B = U sqrt(S) [rows, r].
     * Embedding: PEFT's delta is (B A)^T, so lora_embedding_A = sqrt(S) U^T [r, rows] and
     * lora_embedding_B = V sqrt(S) [cols, r]. */
    const double *a_src = it->kind == ITEM_LINEAR ? res.v : res.u;
    const double *b_src = it->kind == ITEM_LINEAR ? res.u : res.v;
    uint64_t a_len = it->kind == ITEM_LINEAR ? cols : rows;
    uint64_t b_len = it->kind == ITEM_LINEAR ? rows : cols;
    it->a_shape[0] = rank;
    it->a_shape[1] = a_len;
    it->b_shape[0] = b_len;
    it->b_shape[1] = rank;
    it->scratch_a = x->scratch_size;
    if ((rc = write_factor(x, a_src, it->k, w, rank, a_len, 0, vals, enc)))
        goto out;
    it->scratch_b = x->scratch_size;
    if ((rc = write_factor(x, b_src, it->k, w, b_len, rank, 1, vals, enc)))
        goto out;
    if (report)
        fprintf(report, "%-52s [%llu, %llu]  rank %3u  rel. error %.6f  (%u passes, read %ux)\n",
                it->module, (unsigned long long)rows, (unsigned long long)cols, rank,
                it->rel_error, res.passes, res.reads);
out:
    rsvd_result_free(&res);
    free(r.raw_m);
    free(r.raw_b);
    free(r.tmp);
    free(vals);
    free(enc);
    free(w);
    return rc;
}

/* ---- the output ---- */

static int copy_range(extract *x, smelt_out_file *f, int fd, const char *what, uint64_t src_off,
                      uint64_t len, uint64_t dst_off, uint8_t *buf)
{
    for (uint64_t at = 0; at < len;) {
        size_t n = (size_t)(len - at < COPY_CHUNK ? len - at : COPY_CHUNK);
        int err = smelt_pread_all(fd, buf, n, src_off + at);
        if (err)
            return smelt_fail_errno(x->ctx, err, "lora extract: reading %s", what);
        int rc = smelt_out_write(x->ctx, f, buf, n, dst_off + at);
        if (rc != SMELT_OK)
            return rc;
        at += n;
    }
    return SMELT_OK;
}

/* The adapter's tensors for smelt_st_write_file: whole tensors copied from the model, factors
 * from the scratch file. */
typedef struct weights_job {
    extract *x;
    const smelt_st_out_tensor *descs;
    const size_t *source; /* item index * 2 + (0: A or whole, 1: B) */
    uint8_t *buf;
} weights_job;

static int write_weight(smelt_ctx *ctx, void *user, smelt_out_file *file, size_t t,
                        uint64_t offset)
{
    (void)ctx;
    weights_job *job = user;
    extract *x = job->x;
    const item *it = &x->items[job->source[t] / 2];
    if (it->kind == ITEM_WHOLE) {
        const smelt_st_file *f = &x->model->files[it->m->file];
        x->bytes_read += it->m->nbytes;
        return copy_range(x, file, f->fd, f->path, it->m->offset, it->m->nbytes, offset,
                          job->buf);
    }
    uint64_t off = job->source[t] % 2 ? it->scratch_b : it->scratch_a;
    return copy_range(x, file, x->scratch_fd, "the scratch file", off, job->descs[t].nbytes,
                      offset, job->buf);
}

static int write_weights(extract *x, const char *path, uint64_t *written)
{
    smelt_ctx *ctx = x->ctx;
    size_t cap = 2 * x->nitems + 1, n = 0;
    smelt_st_out_tensor *descs = calloc(cap, sizeof *descs);
    char **names = calloc(cap, sizeof *names);
    size_t *source = calloc(cap, sizeof *source); /* item index * 2 + (0: A or whole, 1: B) */
    uint8_t *buf = malloc(COPY_CHUNK);
    int rc = SMELT_OK;
    if (!descs || !names || !source || !buf) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    size_t es = smelt_dtype_size(x->out_dt);
    for (size_t i = 0; i < x->nitems; i++) {
        const item *it = &x->items[i];
        if (it->dropped)
            continue;
        if (it->kind == ITEM_WHOLE) {
            if (asprintf(&names[n], KEY_PREFIX "%s", it->m->name) < 0) {
                names[n] = NULL;
                rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
                goto out;
            }
            descs[n] = (smelt_st_out_tensor){names[n], it->m->dtype, it->m->ndim, it->m->shape,
                                             it->m->nbytes};
            source[n++] = i * 2;
            continue;
        }
        const char *kind = it->kind == ITEM_EMBEDDING ? "lora_embedding_" : "lora_";
        const char *suffix = it->kind == ITEM_EMBEDDING ? "" : ".weight";
        for (int ab = 0; ab < 2; ab++) {
            if (asprintf(&names[n], KEY_PREFIX "%s.%s%c%s", it->module, kind, ab ? 'B' : 'A',
                         suffix) < 0) {
                names[n] = NULL;
                rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
                goto out;
            }
            const uint64_t *shape = ab ? it->b_shape : it->a_shape;
            descs[n] = (smelt_st_out_tensor){names[n], x->out_dt, 2, shape,
                                             shape[0] * shape[1] * es};
            source[n++] = i * 2 + (size_t)ab;
        }
    }
    weights_job job = {x, descs, source, buf};
    rc = smelt_st_write_file(ctx, path, descs, n, write_weight, &job, written);
out:
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    free(descs);
    free(source);
    free(buf);
    return rc;
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* adapter_config.json with the keys mergekit's make_config_dict writes. */
static int write_config(extract *x, const char *dir, const char *base_ref, uint32_t r)
{
    json_t *cfg = json_object(), *targets = json_array(), *saved = json_array();
    json_t *ranks = json_object(), *alphas = json_object();
    char **leaves = calloc(x->nitems + 1, sizeof *leaves);
    size_t nleaves = 0;
    int rc = SMELT_OK;
    if (!cfg || !targets || !saved || !ranks || !alphas || !leaves) {
        rc = smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < x->nitems; i++) {
        const item *it = &x->items[i];
        if (it->kind == ITEM_WHOLE || it->dropped)
            continue;
        const char *leaf;
        size_t len;
        module_leaf(it->module, &leaf, &len);
        int seen = 0;
        for (size_t j = 0; j < nleaves; j++)
            seen |= !strcmp(leaves[j], leaf);
        if (!seen)
            leaves[nleaves++] = (char *)leaf;
        if (it->rank != r) {
            json_object_set_new(ranks, it->module, json_integer(it->rank));
            json_object_set_new(alphas, it->module, json_integer(it->rank));
        }
    }
    qsort(leaves, nleaves, sizeof *leaves, by_string);
    for (size_t j = 0; j < nleaves; j++)
        json_array_append_new(targets, json_string(leaves[j]));
    qsort(x->saved_keys, x->nsaved, sizeof *x->saved_keys, by_string);
    for (size_t j = 0; j < x->nsaved; j++)
        json_array_append_new(saved, json_string(x->saved_keys[j]));
    json_object_set_new(cfg, "base_model_name_or_path", json_string(base_ref));
    json_object_set_new(cfg, "peft_type", json_string("LORA"));
    json_object_set_new(cfg, "use_rslora", json_false());
    json_object_set_new(cfg, "target_modules", targets);
    json_object_set_new(cfg, "modules_to_save", saved);
    json_object_set_new(cfg, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(cfg, "r", json_integer(r));
    json_object_set_new(cfg, "lora_alpha", json_integer(r));
    json_object_set_new(cfg, "rank_pattern", ranks);
    json_object_set_new(cfg, "alpha_pattern", alphas);
    json_object_set_new(cfg, "lora_dropout", json_real(0.0));
    json_object_set_new(cfg, "bias", json_string(x->bias_saved ? "lora_only" : "none"));
    json_object_set_new(cfg, "fan_in_fan_out", json_false());
    json_object_set_new(cfg, "inference_mode", json_true());
    targets = saved = ranks = alphas = NULL;
    char *text = json_dumps(cfg, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
    char *path = smelt_path_join(dir, "adapter_config.json");
    rc = text && path ? smelt_write_file_atomic(x->ctx, path, text, strlen(text))
                      : smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
    free(text);
    free(path);
out:
    json_decref(cfg);
    json_decref(targets);
    json_decref(saved);
    json_decref(ranks);
    json_decref(alphas);
    free(leaves);
    return rc;
}

/* out_dir must be missing or empty, or hold only what overwrite may replace. */
static int check_out_dir(smelt_ctx *ctx, const char *dir, int overwrite)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return SMELT_OK;
        return smelt_fail_errno(ctx, errno, "lora extract: %s", dir);
    }
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));)
        entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    if (entries && !overwrite)
        return smelt_fail(ctx, SMELT_E_ARG, "lora extract: %s is not empty (--overwrite replaces "
                          "the adapter in it)", dir);
    return SMELT_OK;
}

int smelt_lora_extract(smelt_ctx *ctx, const char *base, const char *model, const char *out_dir,
                       const smelt_lora_extract_options *opts, FILE *report,
                       smelt_lora_extract_result *result)
{
    double t0 = smelt_now();
    smelt_lora_extract_options o;
    smelt_lora_extract_options_default(&o);
    if (opts)
        o = *opts;
    if (!o.max_memory)
        o.max_memory = 512ull << 20;
    if (result)
        memset(result, 0, sizeof *result);
    if (o.rank == 0)
        return smelt_fail(ctx, SMELT_E_ARG, "lora extract: the rank must be at least 1");
    if (!(o.sv_epsilon >= 0) || !isfinite(o.sv_epsilon))
        return smelt_fail(ctx, SMELT_E_ARG, "lora extract: --sv-epsilon must be a finite number "
                          ">= 0");
    if (o.power_iters > 64 || o.oversample > 1000000)
        return smelt_fail(ctx, SMELT_E_ARG, "lora extract: --power-iters must be at most 64 and "
                          "--oversample at most 1000000");
    extract x = {.ctx = ctx, .o = &o, .scratch_fd = -1};
    x.out_dt = smelt_dtype_from_torch_name(o.dtype ? o.dtype : "float32");
    if (!plain_float(x.out_dt))
        return smelt_fail(ctx, SMELT_E_ARG, "lora extract: --dtype '%s' is not float32, bfloat16 "
                          "or float16", o.dtype);
    int rc = check_out_dir(ctx, out_dir, o.overwrite);
    char *weights = NULL, *scratch = NULL;
    if (rc == SMELT_OK)
        rc = smelt_model_open(ctx, base, &x.base);
    if (rc == SMELT_OK)
        rc = smelt_model_open(ctx, model, &x.model);
    if (rc == SMELT_OK && (x.base->gguf || x.model->gguf))
        rc = smelt_fail(ctx, SMELT_E_UNSUPPORTED, "lora extract: %s is a GGUF model: PEFT "
                        "adapters pair with safetensors models", x.base->gguf ? base : model);
    if (rc == SMELT_OK && !(x.pool = smelt_pool_new(o.threads)))
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "lora extract: cannot start worker threads");
    if (rc == SMELT_OK) {
        x.threads = smelt_pool_threads(x.pool);
        rc = plan(&x);
    }
    size_t decomposed = 0;
    for (size_t i = 0; rc == SMELT_OK && i < x.nitems; i++)
        decomposed += x.items[i].kind != ITEM_WHOLE;
    if (rc == SMELT_OK && !decomposed)
        rc = smelt_fail(ctx, SMELT_E_PLAN, "lora extract: %s and %s share no 2-D float weight to "
                        "decompose", base, model);
    if (rc == SMELT_OK)
        rc = size_rounds(&x);
    if (rc == SMELT_OK)
        rc = smelt_mkdir_p(ctx, out_dir);
    if (rc == SMELT_OK) {
        weights = smelt_path_join(out_dir, "adapter_model.safetensors");
        scratch = smelt_path_join(out_dir, ".adapter_model.smelt-scratch");
        if (!weights || !scratch)
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    if (rc == SMELT_OK) {
        /* Unlinked at once: it disappears with the process, whatever happens. */
        x.scratch_fd = open(scratch, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (x.scratch_fd < 0)
            rc = smelt_fail_errno(ctx, errno, "lora extract: %s", scratch);
        else
            unlink(scratch);
    }
    uint32_t rmin = UINT32_MAX, rmax = 0;
    double worst = 0;
    uint64_t written = 0, nmod = 0, nsaved = 0;
    for (size_t i = 0; rc == SMELT_OK && i < x.nitems; i++) {
        item *it = &x.items[i];
        if (it->kind == ITEM_WHOLE) {
            nsaved++;
            continue;
        }
        if ((rc = decompose(&x, it, report)) || it->dropped)
            continue;
        nmod++;
        rmin = it->rank < rmin ? it->rank : rmin;
        rmax = it->rank > rmax ? it->rank : rmax;
        worst = it->rel_error > worst ? it->rel_error : worst;
    }
    if (rc == SMELT_OK && !nmod)
        rc = smelt_fail(ctx, SMELT_E_PLAN, "lora extract: every module was left out by "
                        "--sv-epsilon %g", o.sv_epsilon);
    if (rc == SMELT_OK && o.overwrite) {
        /* The old config goes first: old weights with no config, never new weights with an old
         * config. */
        char *old = smelt_path_join(out_dir, "adapter_config.json");
        if (!old)
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        else if (unlink(old) != 0 && errno != ENOENT)
            rc = smelt_fail_errno(ctx, errno, "lora extract: removing %s", old);
        free(old);
    }
    if (rc == SMELT_OK)
        rc = write_weights(&x, weights, &written);
    if (rc == SMELT_OK)
        rc = write_config(&x, out_dir, base, rmax);
    if (rc == SMELT_OK)
        rc = smelt_fsync_dir(ctx, out_dir);
    double seconds = smelt_now() - t0;
    if (rc == SMELT_OK && report)
        fprintf(report, "smelt: lora extract: %llu modules (rank %u..%u), %llu tensors stored "
                "whole; worst rel. error %.6f; %.2f GB read, adapter %.2f MB, %.1f s\n",
                (unsigned long long)nmod, rmin, rmax, (unsigned long long)nsaved, worst,
                (double)x.bytes_read / 1e9, (double)written / 1e6, seconds);
    if (rc == SMELT_OK && result) {
        result->modules = nmod;
        result->saved = nsaved;
        result->skipped = x.model->ntensors - x.nitems;
        result->min_rank = rmin;
        result->max_rank = rmax;
        result->worst_rel_error = worst;
        result->bytes_read = x.bytes_read;
        result->bytes_written = written;
        result->seconds = seconds;
    }
    if (x.scratch_fd >= 0)
        close(x.scratch_fd);
    free(weights);
    free(scratch);
    free(x.items);
    for (size_t i = 0; i < x.nsaved; i++)
        free(x.saved_keys[i]);
    free(x.saved_keys);
    smelt_pool_free(x.pool);
    smelt_model_close(x.model);
    smelt_model_close(x.base);
    return rc;
}
