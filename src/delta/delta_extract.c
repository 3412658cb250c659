/* smelt delta extract: a model's files as a lossless delta against a base (format/delta.h).
 *
 * Every stored stream (a file's header bytes, a tensor, a side file) is cut into frames of
 * 65536 elements. Frames go through the pool in batches that fit the memory budget: each task
 * reads its frame from the model (and the base's bytes for a XOR tensor), splits it into byte
 * planes, hashes and compresses it into its own slot. The calling thread then writes the
 * batch's frames in order, hashing each model file's bytes as they pass, and each frame table
 * once its stream is done. The data is written after a header-sized gap; the header, whose
 * blob sizes are known only at the end, is written last into that gap (padded with spaces). So
 * the file's bytes depend on neither the thread count nor the budget. */
#include "delta/delta_internal.h"

#include "common/util.h"
#include "format/delta.h"
#include "integrity/checksum.h"
#include "integrity/journal.h"
#include "io/writer.h"
#include "kernels/kernels.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#define ZSTD_STATIC_LINKING_ONLY /* the context size estimates, ZSTD_compressSequences */
#include <zstd.h>

typedef unsigned long long ull;

/* Where an entry's bytes come from. */
typedef struct xstream {
    int src_fd;
    uint64_t src_off;
    int base_fd;       /* -1: raw */
    uint64_t base_off;
    size_t file;       /* the model file (desc.files) these bytes belong to */
    const char *src_path, *base_path;
} xstream;

/* One frame in flight: the model's bytes (hashed into its file's XXH3 when written), the
 * base's (free after the split: compress_plane's scratch), the planes and their frames. */
typedef struct xslot {
    uint8_t *in, *base, *planes, *out;
    size_t raw, csize;
    uint64_t sum;
} xslot;

typedef struct extract {
    smelt_ctx *ctx;
    int level;
    smelt_model *model, *base;
    smelt_delta desc;        /* what the header will describe (path, fd unused) */
    xstream *streams;        /* per entry */
    int *side_fds;
    size_t nside;
    delta_workers w;
    ZSTD_CCtx **cctx;        /* per worker */
    ZSTD_CCtx **lit_cctx;    /* per worker: frames of literals only (compress_plane) */
    xslot *slots;
    size_t nslots, slot_raw, slot_out;
    size_t *b_stream;        /* the batch: stream and frame of each task */
    uint64_t *b_frame;
    size_t bn;
} extract;

/* ---- describing the model --------------------------------------------------------------- */

static int reserved_name(const char *name)
{
    return strncmp(name, SMELT_DELTA_HEADER_PREFIX, strlen(SMELT_DELTA_HEADER_PREFIX)) == 0 ||
           strncmp(name, SMELT_DELTA_FILE_PREFIX, strlen(SMELT_DELTA_FILE_PREFIX)) == 0;
}

static char *prefixed(const char *prefix, const char *name)
{
    size_t len = strlen(prefix) + strlen(name) + 1;
    char *s = malloc(len);
    if (s)
        snprintf(s, len, "%s%s", prefix, name);
    return s;
}

/* Appends an entry and its stream; the entry's name is taken over (freed on failure). */
static int add_entry(extract *x, char *name, smelt_dtype dtype, uint32_t ndim,
                     const uint64_t *shape, uint64_t nbytes, const xstream *src, size_t *cap)
{
    if (!name)
        return smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
    if (x->desc.nentries == *cap) {
        size_t ncap = *cap ? 2 * *cap : 64;
        smelt_delta_entry *e = realloc(x->desc.entries, ncap * sizeof *e);
        if (e)
            x->desc.entries = e;
        xstream *s = e ? realloc(x->streams, ncap * sizeof *s) : NULL;
        if (s)
            x->streams = s;
        if (!e || !s) {
            free(name);
            return smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
        }
        *cap = ncap;
    }
    smelt_delta_entry *e = &x->desc.entries[x->desc.nentries];
    memset(e, 0, sizeof *e);
    e->name = name;
    e->dtype = dtype;
    e->ndim = ndim;
    memcpy(e->shape, shape, ndim * sizeof *shape);
    e->nbytes = nbytes;
    e->unit = smelt_delta_unit(dtype);
    e->nelems = nbytes / e->unit;
    e->nframes = e->nelems / SMELT_DELTA_FRAME_ELEMS + (e->nelems % SMELT_DELTA_FRAME_ELEMS != 0);
    e->mode = src->base_fd >= 0 ? SMELT_DELTA_XOR : SMELT_DELTA_RAW;
    x->streams[x->desc.nentries++] = *src;
    return SMELT_OK;
}

static int add_file(extract *x, const char *name, uint64_t size, int safetensors, size_t nparts)
{
    smelt_delta_file *f = &x->desc.files[x->desc.nfiles];
    memset(f, 0, sizeof *f);
    if (!(f->name = strdup(name)) || !(f->parts = calloc(nparts ? nparts : 1, sizeof *f->parts)))
        return smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
    x->desc.nfiles++;
    f->size = size;
    f->safetensors = safetensors;
    f->nparts = nparts;
    for (size_t k = 0; k < nparts; k++)
        f->parts[k] = x->desc.nentries + k;
    return SMELT_OK;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The regular files of the model's directory that are not its safetensors files, by name. */
static int list_side_files(extract *x, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    if (!x->model->dir)
        return SMELT_OK;
    DIR *dir = opendir(x->model->dir);
    if (!dir)
        return smelt_fail_errno(x->ctx, errno, "%s: cannot list the model's directory",
                                x->model->dir);
    size_t cap = 0;
    int rc = SMELT_OK;
    for (struct dirent *ent; rc == SMELT_OK && (ent = readdir(dir));) {
        if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, ".."))
            continue;
        int shard = 0;
        for (uint32_t i = 0; i < x->model->nfiles && !shard; i++)
            shard = strcmp(delta_file_name(x->model, x->model->files[i].path), ent->d_name) == 0;
        struct stat st;
        if (shard || fstatat(dirfd(dir), ent->d_name, &st, 0) != 0)
            continue;
        if (!S_ISREG(st.st_mode)) {
            smelt_notice(x->ctx, SMELT_LOG_NOTICE, "%s/%s: not a regular file; not in the delta",
                         x->model->dir, ent->d_name);
            continue;
        }
        if (*n == cap) {
            char **v = realloc(*names, (cap = cap ? 2 * cap : 16) * sizeof *v);
            if (!v) {
                rc = smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
                break;
            }
            *names = v;
        }
        if (!((*names)[*n] = strdup(ent->d_name)))
            rc = smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
        else
            ++*n;
    }
    closedir(dir);
    if (rc == SMELT_OK)
        qsort(*names, *n, sizeof **names, by_name);
    return rc;
}

static int describe(extract *x)
{
    smelt_model *m = x->model;
    char **side = NULL;
    size_t nside = 0, cap = 0;
    int rc = list_side_files(x, &side, &nside);
    if (rc == SMELT_OK && (!(x->desc.files = calloc(m->nfiles + nside + 1, sizeof *x->desc.files)) ||
                           !(x->side_fds = calloc(nside + 1, sizeof *x->side_fds))))
        rc = smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; x->side_fds && i <= nside; i++)
        x->side_fds[i] = -1;
    size_t t = 0;
    for (uint32_t fi = 0; fi < m->nfiles && rc == SMELT_OK; fi++) {
        const smelt_st_file *sf = &m->files[fi];
        size_t first = t, end = t;
        while (end < m->ntensors && m->tensors[end].file == fi)
            end++;
        t = end;
        const char *fname = delta_file_name(m, sf->path);
        if ((rc = add_file(x, fname, sf->size, 1, 1 + end - first)) != SMELT_OK)
            break;
        x->desc.files[x->desc.nfiles - 1].parts[0] = x->desc.nentries;
        xstream hs = {sf->fd, 0, -1, 0, x->desc.nfiles - 1, sf->path, NULL};
        uint64_t hshape[1] = {sf->data_start};
        rc = add_entry(x, prefixed(SMELT_DELTA_HEADER_PREFIX, fname), SMELT_DT_U8, 1, hshape,
                       sf->data_start, &hs, &cap);
        for (size_t k = first; k < end && rc == SMELT_OK; k++) {
            const smelt_tensor_info *ti = &m->tensors[k];
            if (reserved_name(ti->name)) {
                rc = smelt_fail(x->ctx, SMELT_E_UNSUPPORTED, "%s: tensor '%s': names starting "
                                "with '%s' or '%s' are reserved by the delta format", sf->path,
                                ti->name, SMELT_DELTA_HEADER_PREFIX, SMELT_DELTA_FILE_PREFIX);
                break;
            }
            const smelt_tensor_info *bt = smelt_model_find(x->base, ti->name);
            int same = bt && bt->dtype == ti->dtype && bt->ndim == ti->ndim &&
                       bt->nbytes == ti->nbytes &&
                       !memcmp(bt->shape, ti->shape, ti->ndim * sizeof *ti->shape);
            xstream ts = {sf->fd, ti->offset, same ? x->base->files[bt->file].fd : -1,
                          same ? bt->offset : 0, x->desc.nfiles - 1, sf->path,
                          same ? x->base->files[bt->file].path : NULL};
            x->desc.files[x->desc.nfiles - 1].parts[1 + k - first] = x->desc.nentries;
            rc = add_entry(x, strdup(ti->name), ti->dtype, ti->ndim, ti->shape, ti->nbytes, &ts,
                           &cap);
        }
    }
    for (size_t i = 0; i < nside && rc == SMELT_OK; i++) {
        char *path = smelt_path_join(m->dir, side[i]);
        struct stat st;
        rc = path ? smelt_open_regular(x->ctx, path, 0, &x->side_fds[i], &st)
                  : smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
        if (rc == SMELT_OK)
            x->nside = i + 1;
        if (rc == SMELT_OK && (rc = add_file(x, side[i], (uint64_t)st.st_size, 0, 1)) == SMELT_OK) {
            /* the path stays alive for messages: kept in the entry's stream via side[] */
            xstream fs = {x->side_fds[i], 0, -1, 0, x->desc.nfiles - 1, NULL, NULL};
            uint64_t shape[1] = {(uint64_t)st.st_size};
            rc = add_entry(x, prefixed(SMELT_DELTA_FILE_PREFIX, side[i]), SMELT_DT_U8, 1, shape,
                           (uint64_t)st.st_size, &fs, &cap);
        }
        free(path);
    }
    for (size_t i = 0; i < nside; i++)
        free(side[i]);
    free(side);
    return rc;
}

/* The base's files and their header hashes. */
static int describe_base(extract *x)
{
    smelt_model *b = x->base;
    if (!(x->desc.base = calloc(b->nfiles + 1, sizeof *x->desc.base)))
        return smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
    for (uint32_t i = 0; i < b->nfiles; i++) {
        if (!(x->desc.base[i].name = strdup(delta_file_name(b, b->files[i].path))))
            return smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
        x->desc.nbase = i + 1;
        smelt_hash128 h;
        int rc = smelt_hash_file_prefix(x->ctx, b->files[i].fd, b->files[i].path,
                                        b->files[i].data_start, &h);
        if (rc != SMELT_OK)
            return rc;
        memcpy(x->desc.base[i].header_xxh3, h.b, 16);
        smelt_journal_input id;
        if ((rc = smelt_journal_input_identify(x->ctx, b->files[i].fd, b->files[i].path,
                                               b->files[i].data_start, &id)) != SMELT_OK)
            return rc;
        memcpy(x->desc.base[i].sample_xxh3, id.sample.b, 16);
    }
    return SMELT_OK;
}

/* ---- compressing ------------------------------------------------------------------------ */

/* Compresses one byte plane of a frame into its own zstd frame at dst (the reader decodes a
 * frame's planes, concatenated, in one call) and returns its size or a zstd error. Each plane
 * gets its own entropy tables. The frames that decode fastest win unless a slower one is much
 * smaller, because a merge of deltas is bound by decoding, not by the disk (bench_delta
 * --merge): zstd's match finder takes every zero run of an XOR delta's sign/exponent plane as
 * a short match, and decoding those sequences runs at about 0.6 GB/s, where the same plane as
 * Huffman-coded literals alone is 8 % larger and decodes at 1.3 GB/s. So a plane is stored as
 * literals only (no match search), unless matches make it half that size (long runs and
 * repeats, which also decode fast); and raw where Huffman saves less than an eighth (the low
 * mantissa bytes of a real fine-tune's delta are close to random), which decodes at memory
 * speed. The choice is made per plane of each frame from its bytes alone, so the delta's bytes
 * stay the same for any thread count.
 * `scratch` holds at least `len` bytes. */
static size_t compress_plane(extract *x, unsigned worker, const uint8_t *src, size_t len,
                             uint8_t *dst, size_t cap, uint8_t *scratch)
{
    ZSTD_CCtx *lit = x->lit_cctx[worker];
    size_t literals = ZSTD_compressSequences(lit, dst, cap, NULL, 0, src, len);
    if (ZSTD_isError(literals))
        return literals;
    size_t matched = ZSTD_compress2(x->cctx[worker], scratch, len, src, len);
    if (!ZSTD_isError(matched) && matched <= literals / 2) {
        memcpy(dst, scratch, matched);
        return matched;
    }
    if (literals <= len - len / 8)
        return literals;
    /* Parameters change between frames only. */
    size_t rc = ZSTD_CCtx_reset(lit, ZSTD_reset_session_only);
    if (!ZSTD_isError(rc))
        rc = ZSTD_CCtx_setParameter(lit, ZSTD_c_literalCompressionMode, ZSTD_ps_disable);
    size_t raw = ZSTD_isError(rc) ? rc : ZSTD_compressSequences(lit, dst, cap, NULL, 0, src, len);
    rc = ZSTD_CCtx_reset(lit, ZSTD_reset_session_only);
    if (!ZSTD_isError(rc))
        rc = ZSTD_CCtx_setParameter(lit, ZSTD_c_literalCompressionMode, ZSTD_ps_auto);
    return ZSTD_isError(rc) ? rc : raw;
}

static void frame_task(void *arg, size_t task, unsigned worker)
{
    extract *x = arg;
    smelt_ctx *ctx = x->w.err.scratch[worker];
    const size_t si = x->b_stream[task];
    const uint64_t f = x->b_frame[task];
    const smelt_delta_entry *e = &x->desc.entries[si];
    const xstream *s = &x->streams[si];
    xslot *slot = &x->slots[task];
    uint64_t first = f * SMELT_DELTA_FRAME_ELEMS;
    uint64_t elems = e->nelems - first < SMELT_DELTA_FRAME_ELEMS ? e->nelems - first
                                                                 : SMELT_DELTA_FRAME_ELEMS;
    slot->raw = (size_t)(elems * e->unit);
    uint64_t at = first * e->unit;
    int err = smelt_pread_all(s->src_fd, slot->in, slot->raw, s->src_off + at);
    if (err) {
        smelt_fail_errno(ctx, err, "%s: %s: cannot read bytes [%llu, %llu)",
                         s->src_path ? s->src_path : x->desc.files[s->file].name, e->name,
                         (ull)(s->src_off + at), (ull)(s->src_off + at + slot->raw));
        smelt_task_failed(&x->w.err, worker, task);
        return;
    }
    if (s->base_fd >= 0 &&
        (err = smelt_pread_all(s->base_fd, slot->base, slot->raw, s->base_off + at))) {
        smelt_fail_errno(ctx, err, "%s: tensor '%s': cannot read the base's bytes", s->base_path,
                         e->name);
        smelt_task_failed(&x->w.err, worker, task);
        return;
    }
    smelt_kernels_get()->delta_split(slot->planes, (size_t)elems, slot->in, (size_t)elems,
                                     e->unit, s->base_fd >= 0 ? slot->base : NULL);
    slot->sum = XXH3_64bits(slot->planes, slot->raw);
    size_t n = 0;
    for (unsigned p = 0; p < e->unit; p++) {
        size_t got = compress_plane(x, worker, slot->planes + (size_t)p * (size_t)elems,
                                    (size_t)elems, slot->out + n, x->slot_out - n, slot->base);
        if (ZSTD_isError(got)) {
            smelt_fail(ctx, SMELT_E_INTERNAL, "tensor '%s': frame %llu: zstd: %s", e->name,
                       (ull)f, ZSTD_getErrorName(got));
            smelt_task_failed(&x->w.err, worker, task);
            return;
        }
        n += got;
    }
    slot->csize = n;
}

/* Slots and compression contexts within the budget. */
static int setup(extract *x, uint64_t budget, uint64_t total_frames)
{
    unsigned umax = 1;
    for (size_t i = 0; i < x->desc.nentries; i++)
        if (x->desc.entries[i].unit > umax)
            umax = x->desc.entries[i].unit;
    x->slot_raw = (size_t)SMELT_DELTA_FRAME_ELEMS * umax;
    x->slot_out = ZSTD_compressBound(x->slot_raw);
    size_t per_slot = 3 * x->slot_raw + x->slot_out;
    ZSTD_compressionParameters cp = ZSTD_getCParams(x->level, x->slot_raw, 0);
    /* two contexts per worker: compress_plane's */
    uint64_t cctx_bytes = 2 * (uint64_t)ZSTD_estimateCCtxSize_usingCParams(cp) * x->w.n;
    if (budget < cctx_bytes + per_slot)
        return smelt_fail(x->ctx, SMELT_E_BUDGET, "--max-memory %llu bytes cannot hold one "
                          "frame (%zu bytes) and %u compression contexts (%llu bytes); give at "
                          "least %llu", (ull)budget, per_slot, x->w.n, (ull)cctx_bytes,
                          (ull)(cctx_bytes + per_slot));
    uint64_t n = (budget - cctx_bytes) / per_slot;
    if (n > SMELT_DELTA_MAX_SLOTS)
        n = SMELT_DELTA_MAX_SLOTS;
    if (n > total_frames)
        n = total_frames ? total_frames : 1;
    x->nslots = (size_t)n;
    x->slots = calloc(x->nslots, sizeof *x->slots);
    x->b_stream = calloc(x->nslots, sizeof *x->b_stream);
    x->b_frame = calloc(x->nslots, sizeof *x->b_frame);
    x->cctx = calloc(x->w.n, sizeof *x->cctx);
    x->lit_cctx = calloc(x->w.n, sizeof *x->lit_cctx);
    if (!x->slots || !x->b_stream || !x->b_frame || !x->cctx || !x->lit_cctx)
        return smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < x->nslots; i++) {
        xslot *s = &x->slots[i];
        if (!(s->in = malloc(x->slot_raw)) || !(s->base = malloc(x->slot_raw)) ||
            !(s->planes = malloc(x->slot_raw)) || !(s->out = malloc(x->slot_out)))
            return smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory (%zu frame buffers)",
                              x->nslots);
    }
    for (unsigned i = 0; i < x->w.n; i++) {
        if (!(x->cctx[i] = ZSTD_createCCtx()) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(x->cctx[i], ZSTD_c_compressionLevel, x->level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(x->cctx[i], ZSTD_c_checksumFlag, 0)) ||
            !(x->lit_cctx[i] = ZSTD_createCCtx()) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(x->lit_cctx[i], ZSTD_c_compressionLevel,
                                                x->level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(x->lit_cctx[i], ZSTD_c_checksumFlag, 0)))
            return smelt_fail(x->ctx, SMELT_E_NOMEM, "cannot set up zstd compression");
    }
    return SMELT_OK;
}

static void teardown(extract *x)
{
    for (size_t i = 0; x->slots && i < x->nslots; i++) {
        free(x->slots[i].in);
        free(x->slots[i].base);
        free(x->slots[i].planes);
        free(x->slots[i].out);
    }
    free(x->slots);
    for (unsigned i = 0; x->cctx && i < x->w.n; i++)
        ZSTD_freeCCtx(x->cctx[i]);
    for (unsigned i = 0; x->lit_cctx && i < x->w.n; i++)
        ZSTD_freeCCtx(x->lit_cctx[i]);
    free(x->cctx);
    free(x->lit_cctx);
    free(x->b_stream);
    free(x->b_frame);
    delta_workers_free(&x->w);
    for (size_t i = 0; i < x->nside; i++)
        if (x->side_fds[i] >= 0)
            close(x->side_fds[i]);
    free(x->side_fds);
    free(x->streams);
    /* desc: the same teardown as a parsed delta, minus the fd and path */
    smelt_delta *d = malloc(sizeof *d);
    if (d) {
        *d = x->desc;
        d->fd = -1;
        smelt_delta_close(d);
    }
    smelt_model_close(x->model);
    smelt_model_close(x->base);
}

/* Writes the streams' frames in order, batch by batch. */
typedef struct writer_state {
    smelt_out_file *out;
    uint64_t pos;             /* where the next blob starts */
    size_t stream;            /* the stream being written */
    uint64_t frame;           /* its next frame */
    uint64_t frames_at, cend; /* its frames start here; compressed bytes so far */
    uint8_t table[4096 * SMELT_DELTA_TABLE_RECORD];
    uint64_t table_first;     /* frame of table[0] */
    size_t table_n;
    XXH3_state_t *hash;       /* the current model file's bytes */
    size_t hash_file;
} writer_state;

static int flush_table(extract *x, writer_state *ws)
{
    if (!ws->table_n)
        return SMELT_OK;
    const smelt_delta_entry *e = &x->desc.entries[ws->stream];
    uint64_t off = ws->frames_at - e->nframes * SMELT_DELTA_TABLE_RECORD +
                   ws->table_first * SMELT_DELTA_TABLE_RECORD;
    int rc = smelt_out_write(x->ctx, ws->out, ws->table, ws->table_n * SMELT_DELTA_TABLE_RECORD,
                             off);
    ws->table_first += ws->table_n;
    ws->table_n = 0;
    return rc;
}

/* Moves to stream `si`, finishing the one before (and any empty ones between). */
static int start_stream(extract *x, writer_state *ws, size_t si)
{
    if (ws->stream != SIZE_MAX) {
        smelt_delta_entry *e = &x->desc.entries[ws->stream];
        int rc = flush_table(x, ws);
        if (rc != SMELT_OK)
            return rc;
        e->blob_size = e->nframes * SMELT_DELTA_TABLE_RECORD + ws->cend;
        ws->pos += e->blob_size;
    }
    ws->stream = si;
    ws->frame = 0;
    ws->cend = 0;
    ws->table_first = 0;
    ws->table_n = 0;
    if (si < x->desc.nentries)
        ws->frames_at = ws->pos + x->desc.entries[si].nframes * SMELT_DELTA_TABLE_RECORD;
    return SMELT_OK;
}

/* Finishes the whole-file hash of every model file before `file`. */
static void hash_to_file(extract *x, writer_state *ws, size_t file)
{
    while (ws->hash_file < file) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(ws->hash));
        memcpy(x->desc.files[ws->hash_file].xxh3, c.digest, 16);
        XXH3_128bits_reset(ws->hash);
        ws->hash_file++;
    }
}

static int write_batch(extract *x, writer_state *ws)
{
    for (size_t i = 0; i < x->bn; i++) {
        size_t si = x->b_stream[i];
        while (ws->stream != si) {
            int rc = start_stream(x, ws, ws->stream == SIZE_MAX ? 0 : ws->stream + 1);
            if (rc != SMELT_OK)
                return rc;
        }
        const xslot *s = &x->slots[i];
        hash_to_file(x, ws, x->streams[si].file);
        XXH3_128bits_update(ws->hash, s->in, s->raw);
        int rc = smelt_out_write(x->ctx, ws->out, s->out, s->csize, ws->frames_at + ws->cend);
        if (rc != SMELT_OK)
            return rc;
        ws->cend += s->csize;
        smelt_delta_put_record(ws->table + ws->table_n * SMELT_DELTA_TABLE_RECORD, ws->cend,
                               s->sum);
        ws->frame++;
        if (++ws->table_n == sizeof ws->table / SMELT_DELTA_TABLE_RECORD &&
            (rc = flush_table(x, ws)) != SMELT_OK)
            return rc;
    }
    return SMELT_OK;
}

static int run(extract *x, const smelt_delta_options *o, smelt_out_file *out, uint64_t data_start)
{
    writer_state *ws = calloc(1, sizeof *ws);
    if (!ws || !(ws->hash = XXH3_createState())) {
        free(ws);
        return smelt_fail(x->ctx, SMELT_E_NOMEM, "out of memory");
    }
    XXH3_128bits_reset(ws->hash);
    ws->out = out;
    ws->pos = data_start;
    ws->stream = SIZE_MAX;
    int rc = SMELT_OK;
    size_t si = 0;
    uint64_t f = 0;
    while (rc == SMELT_OK) {
        x->bn = 0;
        for (; si < x->desc.nentries && x->bn < x->nslots; f = 0, si++) {
            for (; f < x->desc.entries[si].nframes && x->bn < x->nslots; f++) {
                x->b_stream[x->bn] = si;
                x->b_frame[x->bn++] = f;
            }
            if (f < x->desc.entries[si].nframes)
                break; /* the batch is full mid-stream */
        }
        if (x->bn == 0)
            break;
        if (o->cancel && *o->cancel) {
            rc = smelt_fail(x->ctx, SMELT_E_INTERRUPTED, "interrupted");
            break;
        }
        smelt_task_errors_reset(&x->w.err);
        smelt_pool_run(x->w.pool, x->bn, frame_task, x);
        if ((rc = smelt_task_errors_result(x->ctx, &x->w.err)) == SMELT_OK)
            rc = write_batch(x, ws);
    }
    while (rc == SMELT_OK && ws->stream != x->desc.nentries) /* the rest (and empty ones) */
        rc = start_stream(x, ws, ws->stream == SIZE_MAX ? 0 : ws->stream + 1);
    if (rc == SMELT_OK)
        hash_to_file(x, ws, x->desc.nfiles);
    XXH3_freeState(ws->hash);
    free(ws);
    return rc;
}

/* ---- the entry point -------------------------------------------------------------------- */

static int check_paths(smelt_ctx *ctx, const char *base, const char *model, const char *out_dir,
                       const smelt_model *m, const smelt_model *b)
{
    if (delta_same_file(base, model) || (m->dir && b->dir && delta_same_file(m->dir, b->dir)))
        return smelt_fail(ctx, SMELT_E_ARG, "MODEL %s and BASE %s are the same model; a delta "
                          "of a model against itself is pointless", model, base);
    for (int k = 0; k < 2; k++) {
        const smelt_model *x = k ? b : m;
        if ((x->dir && delta_same_file(out_dir, x->dir)) ||
            (x->nfiles && delta_dir_holds(out_dir, x->files[0].path)))
            return smelt_fail(ctx, SMELT_E_ARG, "%s: the output directory is the %s's "
                              "directory; choose another one", out_dir, k ? "base" : "model");
    }
    return SMELT_OK;
}

int smelt_delta_extract(smelt_ctx *ctx, const char *base, const char *model,
                        const char *out_dir, const smelt_delta_options *opts,
                        smelt_delta_stats *stats)
{
    smelt_delta_options o;
    smelt_delta_options_default(&o);
    if (opts)
        o = *opts;
    if (!o.level)
        o.level = SMELT_DELTA_DEFAULT_LEVEL;
    if (!o.max_memory)
        o.max_memory = SMELT_DELTA_DEFAULT_MEMORY;
    if (o.level < 1 || o.level > ZSTD_maxCLevel())
        return smelt_fail(ctx, SMELT_E_ARG, "--level %d: zstd levels go from 1 to %d", o.level,
                          ZSTD_maxCLevel());
    if (!base || !model || !out_dir || !*out_dir)
        return smelt_fail(ctx, SMELT_E_ARG, "delta extract needs BASE, MODEL and OUT");
    double t0 = smelt_now();
    extract x = {.ctx = ctx, .level = o.level};
    x.desc.fd = -1;
    smelt_out_file out = {.fd = -1};
    uint8_t *header = NULL;
    size_t bound = 0, hlen = 0;
    char *final = NULL;
    int rc = delta_open_model(ctx, model, "MODEL", &x.model);
    if (rc == SMELT_OK)
        rc = delta_open_model(ctx, base, "BASE", &x.base);
    if (rc == SMELT_OK)
        rc = check_paths(ctx, base, model, out_dir, x.model, x.base);
    if (rc == SMELT_OK && !(final = smelt_path_join(out_dir, SMELT_DELTA_FILE_NAME)))
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK && !o.overwrite && access(final, F_OK) == 0)
        rc = smelt_fail(ctx, SMELT_E_ARG, "%s: already holds a delta (%s); pass --overwrite to "
                        "replace it", out_dir, SMELT_DELTA_FILE_NAME);
    if (rc == SMELT_OK)
        rc = describe(&x);
    if (rc == SMELT_OK)
        rc = describe_base(&x);
    uint64_t frames = 0;
    for (size_t i = 0; i < x.desc.nentries; i++)
        frames += x.desc.entries[i].nframes;
    if (rc == SMELT_OK && (rc = smelt_delta_header(ctx, &x.desc, 1, 0, &header, &bound)) ==
                              SMELT_OK) {
        free(header);
        header = NULL;
    }
    if (rc == SMELT_OK)
        rc = delta_workers_init(ctx, &x.w, o.threads);
    if (rc == SMELT_OK)
        rc = setup(&x, o.max_memory, frames);
    if (rc == SMELT_OK)
        rc = smelt_mkdir_p(ctx, out_dir);
    if (rc == SMELT_OK) /* it grows as frames are written; sized at the end */
        rc = smelt_out_create_unsized(ctx, &out, final);
    if (rc == SMELT_OK)
        rc = run(&x, &o, &out, bound);
    if (rc == SMELT_OK)
        rc = smelt_delta_header(ctx, &x.desc, 0, bound, &header, &hlen);
    uint64_t total = bound;
    for (size_t i = 0; i < x.desc.nentries; i++)
        total += x.desc.entries[i].blob_size;
    if (rc == SMELT_OK)
        rc = smelt_out_write(ctx, &out, header, hlen, 0);
    if (rc == SMELT_OK)
        rc = smelt_out_set_size(ctx, &out, total);
    if (rc == SMELT_OK)
        rc = smelt_out_finish(ctx, &out);
    if (rc == SMELT_OK)
        rc = smelt_out_commit(ctx, &out);
    if (rc == SMELT_OK)
        rc = smelt_fsync_dir(ctx, out_dir);
    if (rc == SMELT_OK) {
        smelt_out_release(&out);
        if (stats) {
            memset(stats, 0, sizeof *stats);
            for (size_t i = 0; i < x.desc.nentries; i++) {
                const smelt_delta_entry *e = &x.desc.entries[i];
                if (!reserved_name(e->name)) {
                    stats->tensors++;
                    stats->tensors_xor += e->mode == SMELT_DELTA_XOR;
                    if (e->mode == SMELT_DELTA_XOR)
                        stats->bytes_base += e->nbytes;
                }
            }
            stats->files = x.desc.nfiles;
            for (size_t i = 0; i < x.desc.nfiles; i++)
                stats->bytes_in += x.desc.files[i].size;
            stats->bytes_out = total;
            stats->seconds = smelt_now() - t0;
        }
    } else {
        smelt_out_discard(&out);
    }
    free(header);
    free(final);
    teardown(&x);
    return rc;
}
