/* `smelt diff`: per-tensor similarity of two models, streamed through the read ring in bounded
 * memory.
 *
 * The work is cut exactly as the engine cuts a merge: chunks of one tensor pair land in a fixed
 * set of aligned buffers, the pool decodes them block by block, and every block's sums are added
 * to the tensor's in block order. Blocks have fixed boundaries (multiples of DIFF_BLOCK from the
 * tensor's start) and chunks are whole blocks, so the figures do not depend on the thread count
 * or the memory budget. */
#include "inspect/report.h"

#include "common/pool.h"
#include "common/util.h"
#include "format/safetensors.h"
#include "io/ring.h"
#include "kernels/kernels.h"

#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long long ull;

/* Elements per reduction block: small enough that two f32 tiles per worker stay in L2. */
#define DIFF_BLOCK 16384u
/* Preferred chunk (elements): large sequential reads; a larger budget buys depth instead. */
#define CHUNK_TARGET (1024u * 1024u)
#define MAX_DEPTH 8u
#define BUFFER_ALIGN 4096u
#define DEFAULT_MAX_MEMORY (512ull << 20)

_Static_assert(DIFF_BLOCK <= SMELT_REDUCE_BLOCK, "one block must fit one reduction call");
_Static_assert(CHUNK_TARGET % DIFF_BLOCK == 0, "chunks are whole blocks");

typedef enum pair_kind {
    PAIR_FLOAT,  /* both decodable to f32, same shape: figures */
    PAIR_BYTES,  /* same non-mergeable dtype, same shape: byte comparison */
    PAIR_ONLY_A,
    PAIR_ONLY_B,
    PAIR_SHAPE,  /* shapes differ */
    PAIR_DTYPE   /* dtypes differ and are not both decodable */
} pair_kind;

typedef struct block_sums {
    double dot, aa, bb, dd; /* a.b, |a|^2, |b|^2, |a-b|^2 */
    float max_abs;          /* NaN once any |a-b| is NaN */
} block_sums;

typedef struct pair {
    const smelt_tensor_info *a, *b; /* NULL on the side that lacks the tensor */
    pair_kind kind;
    uint64_t units, done;           /* elements (FLOAT) or bytes (BYTES) */
    block_sums sums;
    int differ;                     /* BYTES */
} pair;

typedef struct slot {
    int busy;
    size_t pair;
    uint64_t start, count; /* units */
    unsigned pending;
    uint8_t *buf[2];
} slot;

typedef struct stats {
    size_t compared, floats, bytewise, identical, only_a, only_b, shape, dtype;
    double min_cos, max_rel, max_abs;
    const char *min_cos_at, *max_rel_at, *max_abs_at;
} stats;

typedef struct differ {
    smelt_ctx *ctx;
    FILE *out;
    int json;
    const smelt_kernels *k;
    smelt_model *m[2];
    pair *pairs;
    size_t npairs;
    uint64_t esz[2];       /* bytes per unit of each side's buffers */
    uint64_t chunk;        /* elements per chunk */
    unsigned depth;
    smelt_ring *ring;
    smelt_pool *pool;
    slot *slots;
    float *scratch;        /* per worker: two tiles of DIFF_BLOCK */
    block_sums *blocks;    /* one per block of a chunk */
    size_t cursor;         /* the next chunk to read */
    uint64_t cursor_pos;
    size_t reported;       /* pairs reported so far, in order */
    int wname, wdtype, wshape;
    json_t *jtensors;
    stats st;
} differ;

static int streamed(const pair *p) { return p->kind == PAIR_FLOAT || p->kind == PAIR_BYTES; }

/* Buffer bytes per element: a ggml block type's bytes per element rounded up (Q8_0 holds 34
 * bytes per 32 elements: 2). */
static uint64_t unit_size(smelt_dtype dt)
{
    unsigned block = smelt_dtype_block(dt);
    if (block > 1)
        return (smelt_dtype_span(dt, block) + block - 1) / block;
    unsigned s = smelt_dtype_size(dt);
    return s ? s : 1; /* sub-byte dtypes are only compared as bytes */
}

/* Where element (or byte, for a byte-compared pair) `at` of tensor t starts in its data. */
static uint64_t data_bytes(const pair *p, const smelt_tensor_info *t, uint64_t at)
{
    return p->kind == PAIR_FLOAT ? smelt_dtype_span(t->dtype, at) : at;
}

/* NaN wins, so a single NaN difference cannot hide behind later finite ones. */
static float max_nan(float m, float x)
{
    if (isnan(m))
        return m;
    return isnan(x) || x > m ? x : m;
}

static int same_shape(const smelt_tensor_info *a, const smelt_tensor_info *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (uint32_t d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d])
            return 0;
    return 1;
}

static int build_pairs(differ *d)
{
    const smelt_model *a = d->m[0], *b = d->m[1];
    d->pairs = calloc(a->ntensors + b->ntensors + 1, sizeof *d->pairs);
    if (!d->pairs)
        return smelt_fail(d->ctx, SMELT_E_NOMEM, "out of memory");
    /* A's file order, so A is read front to back; B's extras at the end. */
    for (size_t i = 0; i < a->ntensors; i++) {
        pair *p = &d->pairs[d->npairs++];
        p->a = &a->tensors[i];
        p->b = smelt_model_find(b, p->a->name);
        if (!p->b) {
            p->kind = PAIR_ONLY_A;
        } else if (!same_shape(p->a, p->b)) {
            p->kind = PAIR_SHAPE;
        } else if (smelt_dtype_mergeable(p->a->dtype) && smelt_dtype_mergeable(p->b->dtype)) {
            p->kind = PAIR_FLOAT;
            p->units = p->a->numel;
        } else if (p->a->dtype == p->b->dtype) {
            p->kind = PAIR_BYTES;
            p->units = p->a->nbytes;
        } else {
            p->kind = PAIR_DTYPE;
        }
        for (int s = 0; s < 2 && streamed(p); s++) {
            uint64_t u = p->kind == PAIR_FLOAT ? unit_size((s ? p->b : p->a)->dtype) : 1;
            if (u > d->esz[s])
                d->esz[s] = u;
        }
    }
    for (size_t i = 0; i < b->ntensors; i++)
        if (!smelt_model_find(a, b->tensors[i].name))
            d->pairs[d->npairs++] = (pair){.b = &b->tensors[i], .kind = PAIR_ONLY_B};
    for (int s = 0; s < 2; s++)
        if (!d->esz[s])
            d->esz[s] = 1;
    return SMELT_OK;
}

/* Chunk size and depth under the budget, counting every buffer diff allocates. */
static int layout(differ *d, uint64_t max_memory, unsigned threads)
{
    uint64_t per_elem = d->esz[0] + d->esz[1];
    uint64_t fixed = (uint64_t)threads * 2 * DIFF_BLOCK * sizeof(float) +
                     (CHUNK_TARGET / DIFF_BLOCK) * sizeof(block_sums) +
                     MAX_DEPTH * (sizeof(slot) + 2 * BUFFER_ALIGN);
    uint64_t avail = max_memory > fixed ? max_memory - fixed : 0;
    uint64_t chunk = CHUNK_TARGET, depth = avail / (per_elem * chunk);
    if (depth > MAX_DEPTH)
        depth = MAX_DEPTH;
    if (depth < 2) {
        /* Keep two chunks so reading overlaps comparing; shrink them instead. */
        depth = 2;
        chunk = avail / (per_elem * depth) / DIFF_BLOCK * DIFF_BLOCK;
        if (chunk < DIFF_BLOCK)
            return smelt_fail(d->ctx, SMELT_E_BUDGET,
                              "a memory budget of %llu bytes cannot hold two chunks of %u "
                              "elements of both models (%llu bytes are needed at %u threads); "
                              "raise --max-memory", (ull)max_memory, DIFF_BLOCK,
                              (ull)(fixed + 2 * per_elem * DIFF_BLOCK), threads);
    }
    d->chunk = chunk;
    d->depth = (unsigned)depth;
    return SMELT_OK;
}

static int alloc_buffers(differ *d, unsigned threads)
{
    d->slots = calloc(d->depth, sizeof *d->slots);
    d->scratch = smelt_aligned_alloc(64, (size_t)threads * 2 * DIFF_BLOCK * sizeof(float));
    d->blocks = calloc(d->chunk / DIFF_BLOCK, sizeof *d->blocks);
    if (!d->slots || !d->scratch || !d->blocks)
        return smelt_fail(d->ctx, SMELT_E_NOMEM, "out of memory");
    for (unsigned i = 0; i < d->depth; i++)
        for (int s = 0; s < 2; s++)
            if (!(d->slots[i].buf[s] = smelt_aligned_alloc(BUFFER_ALIGN, d->chunk * d->esz[s])))
                return smelt_fail(d->ctx, SMELT_E_NOMEM, "out of memory for the chunk buffers");
    return SMELT_OK;
}

static void free_buffers(differ *d)
{
    for (unsigned i = 0; d->slots && i < d->depth; i++)
        for (int s = 0; s < 2; s++)
            free(d->slots[i].buf[s]);
    free(d->slots);
    free(d->scratch);
    free(d->blocks);
}

typedef struct block_job {
    const differ *d;
    const pair *p;
    const slot *s;
} block_job;

static void block_task(void *arg, size_t task, unsigned worker)
{
    const block_job *job = arg;
    const differ *d = job->d;
    const smelt_kernels *k = d->k;
    const pair *p = job->p;
    uint64_t begin = (uint64_t)task * DIFF_BLOCK;
    size_t n = job->s->count - begin < DIFF_BLOCK ? (size_t)(job->s->count - begin) : DIFF_BLOCK;
    float *ta = d->scratch + (size_t)worker * 2 * DIFF_BLOCK, *tb = ta + DIFF_BLOCK;
    /* Blocks and chunks start at multiples of DIFF_BLOCK: whole ggml blocks of any type. */
    smelt_decode(k, ta, job->s->buf[0] + smelt_dtype_span(p->a->dtype, begin), p->a->dtype, n);
    smelt_decode(k, tb, job->s->buf[1] + smelt_dtype_span(p->b->dtype, begin), p->b->dtype, n);
    block_sums *b = &d->blocks[task];
    b->dot = k->dot_f64(ta, tb, n);
    b->aa = k->sumsq_f64(ta, n);
    b->bb = k->sumsq_f64(tb, n);
    k->sub(tb, ta, tb, n); /* the difference replaces b: it is not needed any more */
    b->dd = k->sumsq_f64(tb, n);
    float m = 0.0f;
    for (size_t i = 0; i < n; i++)
        m = max_nan(m, fabsf(tb[i]));
    b->max_abs = m;
}

/* ---- the report ---- */

static void figures(const pair *p, double *cos, double *rel, double *max_abs)
{
    const block_sums *s = &p->sums;
    if (s->aa == 0 && s->bb == 0)
        *cos = 1.0;
    else if (s->aa == 0 || s->bb == 0)
        *cos = 0.0;
    else {
        /* sqrt(aa * bb) rather than sqrt(aa) * sqrt(bb): identical tensors give exactly 1. */
        *cos = s->dot / sqrt(s->aa * s->bb);
        if (*cos > 1.0)
            *cos = 1.0;
        else if (*cos < -1.0)
            *cos = -1.0;
    }
    if (s->aa == 0)
        *rel = s->dd == 0 ? 0.0 : INFINITY;
    else
        *rel = sqrt(s->dd) / sqrt(s->aa);
    *max_abs = s->max_abs;
}

/* For "the worst tensor": NaN is worse than any number. */
static int worse_low(double v, double cur) { return (isnan(v) && !isnan(cur)) || v < cur; }
static int worse_high(double v, double cur) { return (isnan(v) && !isnan(cur)) || v > cur; }

static const char *status_of(const pair *p, double max_abs)
{
    switch (p->kind) {
    case PAIR_FLOAT: return max_abs == 0 ? "identical" : "differ";
    case PAIR_BYTES: return p->differ ? "differ" : "identical";
    case PAIR_ONLY_A: return "only_in_a";
    case PAIR_ONLY_B: return "only_in_b";
    case PAIR_SHAPE: return "shape_mismatch";
    default: return "dtype_mismatch";
    }
}

static void dtype_text(char *buf, size_t len, const pair *p)
{
    if (!p->a || !p->b || p->a->dtype == p->b->dtype)
        snprintf(buf, len, "%s", smelt_dtype_name((p->a ? p->a : p->b)->dtype));
    else
        snprintf(buf, len, "%s/%s", smelt_dtype_name(p->a->dtype), smelt_dtype_name(p->b->dtype));
}

static void shape_text(char *buf, size_t len, const pair *p)
{
    const smelt_tensor_info *t = p->a ? p->a : p->b;
    smelt_format_shape(buf, len, t->shape, t->ndim);
    if (p->kind == PAIR_SHAPE) {
        size_t at = strlen(buf);
        if (at + 4 < len) {
            memcpy(buf + at, " vs ", 5);
            smelt_format_shape(buf + at + 4, len - at - 4, p->b->shape, p->b->ndim);
        }
    }
}

static void count(differ *d, const pair *p, double cos, double rel, double max_abs)
{
    stats *st = &d->st;
    const char *name = (p->a ? p->a : p->b)->name;
    switch (p->kind) {
    case PAIR_FLOAT:
        st->compared++, st->floats++;
        st->identical += max_abs == 0;
        if (!st->min_cos_at || worse_low(cos, st->min_cos))
            st->min_cos = cos, st->min_cos_at = name;
        if (!st->max_rel_at || worse_high(rel, st->max_rel))
            st->max_rel = rel, st->max_rel_at = name;
        if (!st->max_abs_at || worse_high(max_abs, st->max_abs))
            st->max_abs = max_abs, st->max_abs_at = name;
        break;
    case PAIR_BYTES: st->compared++, st->bytewise++, st->identical += !p->differ; break;
    case PAIR_ONLY_A: st->only_a++; break;
    case PAIR_ONLY_B: st->only_b++; break;
    case PAIR_SHAPE: st->shape++; break;
    case PAIR_DTYPE: st->dtype++; break;
    }
}

static json_t *shape_json(const smelt_tensor_info *t)
{
    json_t *a = json_array();
    for (uint32_t i = 0; a && t && i < t->ndim; i++)
        json_array_append_new(a, json_integer((json_int_t)t->shape[i]));
    return t ? a : (json_decref(a), json_null());
}

static int report_pair(differ *d, const pair *p)
{
    double cos = 0, rel = 0, max_abs = 0;
    if (p->kind == PAIR_FLOAT)
        figures(p, &cos, &rel, &max_abs);
    count(d, p, cos, rel, max_abs);
    const char *name = (p->a ? p->a : p->b)->name;
    if (d->json) {
        json_t *e = json_pack("{s:s, s:s, s:o, s:o, s:o, s:o}", "name", name, "status",
                              status_of(p, max_abs), "dtype_a",
                              p->a ? json_string(smelt_dtype_name(p->a->dtype)) : json_null(),
                              "dtype_b",
                              p->b ? json_string(smelt_dtype_name(p->b->dtype)) : json_null(),
                              "shape_a", shape_json(p->a), "shape_b", shape_json(p->b));
        if (e && p->kind == PAIR_FLOAT) {
            json_object_set_new(e, "cosine", smelt_report_json_real(cos));
            json_object_set_new(e, "rel_l2", smelt_report_json_real(rel));
            json_object_set_new(e, "max_abs", smelt_report_json_real(max_abs));
        }
        if (!e || json_array_append_new(d->jtensors, e) != 0)
            return smelt_fail(d->ctx, SMELT_E_NOMEM, "out of memory building the report");
        return SMELT_OK;
    }
    char dt[64], sh[512];
    dtype_text(dt, sizeof dt, p);
    shape_text(sh, sizeof sh, p);
    fprintf(d->out, "%-*s  %-*s  %-*s  ", d->wname, name, d->wdtype, dt, d->wshape, sh);
    switch (p->kind) {
    case PAIR_FLOAT: fprintf(d->out, "%12.9f  %10.3e  %10.3e\n", cos, rel, max_abs); break;
    case PAIR_BYTES: fprintf(d->out, "%s (bytewise)\n", p->differ ? "differ" : "equal"); break;
    case PAIR_ONLY_A: fprintf(d->out, "only in A\n"); break;
    case PAIR_ONLY_B: fprintf(d->out, "only in B\n"); break;
    case PAIR_SHAPE: fprintf(d->out, "shapes differ\n"); break;
    case PAIR_DTYPE: fprintf(d->out, "dtypes cannot be compared\n"); break;
    }
    return ferror(d->out) ? smelt_fail(d->ctx, SMELT_E_IO, "cannot write the report") : SMELT_OK;
}

/* Reports, in order, every pair whose chunks are all done. */
static int report_ready(differ *d)
{
    while (d->reported < d->npairs) {
        const pair *p = &d->pairs[d->reported];
        if (streamed(p) && p->done < p->units)
            return SMELT_OK;
        int rc = report_pair(d, p);
        if (rc != SMELT_OK)
            return rc;
        d->reported++;
    }
    return SMELT_OK;
}

static void text_header(differ *d)
{
    size_t wname = strlen("TENSOR"), wdtype = strlen("DTYPE"), wshape = strlen("SHAPE");
    char buf[512];
    for (size_t i = 0; i < d->npairs; i++) {
        const pair *p = &d->pairs[i];
        size_t n = strlen((p->a ? p->a : p->b)->name);
        wname = n > wname ? n : wname;
        dtype_text(buf, sizeof buf, p);
        wdtype = strlen(buf) > wdtype ? strlen(buf) : wdtype;
        shape_text(buf, sizeof buf, p);
        wshape = strlen(buf) > wshape ? strlen(buf) : wshape;
    }
    d->wname = (int)wname, d->wdtype = (int)wdtype, d->wshape = (int)wshape;
    fprintf(d->out, "A: %s\nB: %s\n\n", d->m[0]->ref, d->m[1]->ref);
    fprintf(d->out, "%-*s  %-*s  %-*s  %12s  %10s  %10s\n", d->wname, "TENSOR", d->wdtype,
            "DTYPE", d->wshape, "SHAPE", "COSINE", "REL_L2", "MAX_ABS");
}

static void text_summary(differ *d)
{
    const stats *st = &d->st;
    fprintf(d->out, "\ncompared: %zu tensors (%zu float, %zu bytewise): %zu identical, %zu differ\n",
            st->compared, st->floats, st->bytewise, st->identical, st->compared - st->identical);
    if (st->min_cos_at) {
        fprintf(d->out, "lowest cosine: %.9f (%s)\n", st->min_cos, st->min_cos_at);
        fprintf(d->out, "largest relative L2: %.3e (%s)\n", st->max_rel, st->max_rel_at);
        fprintf(d->out, "largest max |a-b|: %.3e (%s)\n", st->max_abs, st->max_abs_at);
    }
    fprintf(d->out, "only in A: %zu  only in B: %zu  shapes differ: %zu  dtypes not comparable: %zu\n",
            st->only_a, st->only_b, st->shape, st->dtype);
}

static json_t *worst_json(const char *at, double v)
{
    return at ? json_pack("{s:o, s:s}", "value", smelt_report_json_real(v), "tensor", at)
              : json_null();
}

static int json_document(differ *d)
{
    const stats *st = &d->st;
    json_t *summary = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:b}", "compared",
        (json_int_t)st->compared, "float", (json_int_t)st->floats, "bytewise",
        (json_int_t)st->bytewise, "identical", (json_int_t)st->identical, "differ",
        (json_int_t)(st->compared - st->identical), "only_in_a", (json_int_t)st->only_a,
        "only_in_b", (json_int_t)st->only_b, "shape_mismatch", (json_int_t)st->shape,
        "dtype_mismatch", (json_int_t)st->dtype, "min_cosine", worst_json(st->min_cos_at, st->min_cos),
        "max_rel_l2", worst_json(st->max_rel_at, st->max_rel), "max_abs",
        worst_json(st->max_abs_at, st->max_abs), "match",
        !(st->only_a || st->only_b || st->shape || st->dtype));
    json_t *root = summary ? json_pack("{s:s, s:s, s:O, s:o}", "a", d->m[0]->ref, "b",
                                       d->m[1]->ref, "tensors", d->jtensors, "summary", summary)
                           : NULL;
    int bad = !root || smelt_report_dump_json(root, d->out) != 0;
    json_decref(root);
    if (bad)
        return ferror(d->out) ? smelt_fail(d->ctx, SMELT_E_IO, "cannot write the report")
                              : smelt_fail(d->ctx, SMELT_E_NOMEM, "out of memory");
    return SMELT_OK;
}

/* ---- reading ---- */

/* Assigns the next chunk to slot si and queues its two reads. 0 = queued, 1 = nothing left. */
static int start_chunk(differ *d, slot *s, size_t si)
{
    while (d->cursor < d->npairs &&
           (!streamed(&d->pairs[d->cursor]) || d->cursor_pos >= d->pairs[d->cursor].units)) {
        d->cursor++;
        d->cursor_pos = 0;
    }
    if (d->cursor >= d->npairs)
        return 1;
    const pair *p = &d->pairs[d->cursor];
    uint64_t cap = p->kind == PAIR_FLOAT
                       ? d->chunk
                       : d->chunk * (d->esz[0] < d->esz[1] ? d->esz[0] : d->esz[1]);
    s->busy = 1;
    s->pair = d->cursor;
    s->start = d->cursor_pos;
    s->count = p->units - s->start < cap ? p->units - s->start : cap;
    s->pending = 0;
    d->cursor_pos += s->count;
    for (int side = 0; side < 2; side++) {
        const smelt_tensor_info *t = side ? p->b : p->a;
        int fd = d->m[side]->files[t->file].fd;
        uint64_t from = data_bytes(p, t, s->start);
        if (smelt_ring_queue_read(d->ring, fd, s->buf[side], data_bytes(p, t, s->start + s->count) - from,
                                  t->offset + from, (uint64_t)si << 1 | side) != 0)
            return smelt_fail(d->ctx, SMELT_E_INTERNAL, "read ring full");
        s->pending++;
    }
    return 0;
}

static int finish_chunk(differ *d, slot *s)
{
    pair *p = &d->pairs[s->pair];
    if (p->kind == PAIR_FLOAT) {
        size_t nblocks = (size_t)((s->count + DIFF_BLOCK - 1) / DIFF_BLOCK);
        block_job job = {d, p, s};
        smelt_pool_run(d->pool, nblocks, block_task, &job);
        for (size_t b = 0; b < nblocks; b++) {
            p->sums.dot += d->blocks[b].dot;
            p->sums.aa += d->blocks[b].aa;
            p->sums.bb += d->blocks[b].bb;
            p->sums.dd += d->blocks[b].dd;
            p->sums.max_abs = max_nan(p->sums.max_abs, d->blocks[b].max_abs);
        }
    } else if (memcmp(s->buf[0], s->buf[1], s->count) != 0) {
        p->differ = 1;
    }
    /* Compared data is not read again: do not let it push other pages out of the cache. */
    for (int side = 0; side < 2; side++) {
        const smelt_tensor_info *t = side ? p->b : p->a;
        uint64_t from = data_bytes(p, t, s->start);
        posix_fadvise(d->m[side]->files[t->file].fd, (off_t)(t->offset + from),
                      (off_t)(data_bytes(p, t, s->start + s->count) - from), POSIX_FADV_DONTNEED);
    }
    p->done += s->count;
    s->busy = 0;
    return report_ready(d);
}

static int read_failed(differ *d, const smelt_completion *c)
{
    const pair *p = &d->pairs[d->slots[c->tag >> 1].pair];
    int side = (int)(c->tag & 1);
    const smelt_tensor_info *t = side ? p->b : p->a;
    return smelt_fail_errno(d->ctx, c->error, "%s: tensor '%s': read failed",
                            d->m[side]->files[t->file].path, t->name);
}

static int pipeline(differ *d)
{
    unsigned oldest = 0, next_free = 0;
    for (;;) {
        while (!d->slots[next_free].busy) {
            int rc = start_chunk(d, &d->slots[next_free], next_free);
            if (rc < 0)
                return rc;
            if (rc == 1)
                break;
            next_free = (next_free + 1) % d->depth;
        }
        int err = smelt_ring_submit(d->ring);
        if (err)
            return smelt_fail_errno(d->ctx, err, "cannot submit reads");
        slot *s = &d->slots[oldest];
        if (!s->busy)
            return report_ready(d); /* nothing in flight and nothing left */
        while (s->pending > 0) {
            smelt_completion c;
            int got = smelt_ring_wait(d->ring, &c);
            if (got < 0)
                return smelt_fail_errno(d->ctx, -got, "waiting for reads failed");
            if (got == 0)
                return smelt_fail(d->ctx, SMELT_E_INTERNAL, "read ring lost a request");
            if (c.error)
                return read_failed(d, &c);
            d->slots[c.tag >> 1].pending--;
        }
        int rc = finish_chunk(d, s);
        if (rc != SMELT_OK)
            return rc;
        oldest = (oldest + 1) % d->depth;
    }
}

void smelt_diff_options_default(smelt_diff_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->max_memory = DEFAULT_MAX_MEMORY;
}

int smelt_diff(smelt_ctx *ctx, const char *ref_a, const char *ref_b,
               const smelt_diff_options *user_opts, FILE *out)
{
    if (!ref_a || !ref_b || !out)
        return smelt_fail(ctx, SMELT_E_ARG, "smelt_diff: ref_a, ref_b and out are required");
    smelt_diff_options opts;
    smelt_diff_options_default(&opts);
    if (user_opts) {
        opts = *user_opts;
        if (!opts.max_memory)
            opts.max_memory = DEFAULT_MAX_MEMORY;
    }
    int rc = smelt_ring_env(ctx, &opts.force_pread);
    if (rc != SMELT_OK)
        return rc;
    differ d = {.ctx = ctx, .out = out, .json = opts.json, .k = smelt_kernels_get()};
    if ((rc = smelt_model_open(ctx, ref_a, &d.m[0])) != SMELT_OK)
        goto out;
    if ((rc = smelt_model_open(ctx, ref_b, &d.m[1])) != SMELT_OK)
        goto out;
    if ((rc = build_pairs(&d)) != SMELT_OK)
        goto out;
    if (!(d.pool = smelt_pool_new(opts.threads))) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "cannot start worker threads");
        goto out;
    }
    unsigned threads = smelt_pool_threads(d.pool);
    if ((rc = layout(&d, opts.max_memory, threads)) != SMELT_OK ||
        (rc = alloc_buffers(&d, threads)) != SMELT_OK ||
        (rc = smelt_ring_open(ctx, 2 * d.depth, opts.force_pread, &d.ring)) != SMELT_OK)
        goto out;
    if (d.json && !(d.jtensors = json_array())) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    if (!d.json)
        text_header(&d);
    if ((rc = pipeline(&d)) != SMELT_OK)
        goto out;
    if (d.json) {
        rc = json_document(&d);
    } else {
        text_summary(&d);
        rc = fflush(out) != 0 || ferror(out)
                 ? smelt_fail(ctx, SMELT_E_IO, "cannot write the report") : SMELT_OK;
    }
    const stats *st = &d.st;
    if (rc == SMELT_OK && (st->only_a || st->only_b || st->shape || st->dtype))
        rc = smelt_fail(ctx, SMELT_E_PLAN,
                        "%s and %s do not hold the same tensors: %zu only in A, %zu only in B, "
                        "%zu with different shapes, %zu with dtypes that cannot be compared",
                        d.m[0]->ref, d.m[1]->ref, st->only_a, st->only_b, st->shape, st->dtype);
out:
    if (d.ring)
        smelt_ring_close(d.ring);
    free_buffers(&d);
    smelt_pool_free(d.pool);
    json_decref(d.jtensors);
    free(d.pairs);
    smelt_model_close(d.m[1]);
    smelt_model_close(d.m[0]);
    return rc;
}
