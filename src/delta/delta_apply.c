/* smelt delta apply: rebuilds a model's files from its base and a delta (format/delta.h).
 *
 * The delta and the base are checked first (frame tables, base header hashes, XOR tensors'
 * dtypes and shapes), then every output file is created under its temporary name. Frames go
 * through the pool in batches that fit the budget: each task decodes one frame (checksum
 * verified) and XORs the base's bytes into it; the calling thread writes the batch in order,
 * hashing each file as it passes. Only when every file is written, hashed as the delta says and
 * fsynced are they renamed, the index last. */
#include "delta/delta_input.h"
#include "delta/delta_internal.h"

#include "common/util.h"
#include "format/delta.h"
#include "integrity/checksum.h"
#include "kernels/kernels.h"
#include "io/writer.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

typedef unsigned long long ull;

#define INDEX_NAME "model.safetensors.index.json"

typedef struct astream {
    const smelt_delta_entry *e;
    int base_fd;        /* xor entries: the base tensor's file */
    uint64_t base_off;
    const char *base_path;
    size_t file;        /* index into d->files and the output files */
    uint64_t out_off;   /* where the entry's bytes start in that file */
} astream;

typedef struct aslot {
    uint8_t *out, *base;
    size_t raw;
} aslot;

typedef struct apply {
    smelt_ctx *ctx;
    smelt_delta *d;
    smelt_model *base;
    astream *streams;
    size_t nstreams;
    smelt_out_file *outs;
    delta_workers w;
    smelt_delta_scratch **scratch; /* per worker */
    aslot *slots;
    size_t nslots, slot_raw;
    size_t *b_stream;
    uint64_t *b_frame;
    size_t bn;
} apply;

/* ---- checks before anything is written ---------------------------------------------------- */

static int check_base(apply *a, const char *base_ref)
{
    return smelt_delta_check_base(a->ctx, a->d, a->base, base_ref);
}

/* Streams in output order, with the base tensor of every xor entry. */
static int make_streams(apply *a)
{
    const smelt_delta *d = a->d;
    size_t n = 0;
    for (size_t i = 0; i < d->nfiles; i++)
        n += d->files[i].nparts;
    if (!(a->streams = calloc(n + 1, sizeof *a->streams)))
        return smelt_fail(a->ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < d->nfiles; i++) {
        uint64_t off = 0;
        for (size_t k = 0; k < d->files[i].nparts; k++) {
            const smelt_delta_entry *e = &d->entries[d->files[i].parts[k]];
            astream *s = &a->streams[a->nstreams++];
            s->e = e;
            s->file = i;
            s->out_off = off;
            s->base_fd = -1;
            off += e->nbytes;
            if (e->mode != SMELT_DELTA_XOR)
                continue;
            const smelt_tensor_info *t = smelt_model_find(a->base, e->name);
            char want[64], have[64];
            smelt_format_shape(want, sizeof want, e->shape, e->ndim);
            if (!t)
                return smelt_fail(a->ctx, SMELT_E_PLAN, "tensor '%s': the base has no such "
                                  "tensor, but the delta stores it as a XOR against the base",
                                  e->name);
            smelt_format_shape(have, sizeof have, t->shape, t->ndim);
            if (t->dtype != e->dtype || t->ndim != e->ndim ||
                memcmp(t->shape, e->shape, e->ndim * sizeof *e->shape) || t->nbytes != e->nbytes)
                return smelt_fail(a->ctx, SMELT_E_PLAN, "tensor '%s': the base's is %s %s, the "
                                  "delta was made against %s %s", e->name,
                                  smelt_dtype_name(t->dtype), have, smelt_dtype_name(e->dtype),
                                  want);
            s->base_fd = a->base->files[t->file].fd;
            s->base_off = t->offset;
            s->base_path = a->base->files[t->file].path;
        }
    }
    return SMELT_OK;
}

static int is_model_name(const char *name)
{
    size_t n = strlen(name);
    return (n > 12 && strcmp(name + n - 12, ".safetensors") == 0) || strcmp(name, INDEX_NAME) == 0;
}

static int prepare_out_dir(apply *a, const char *base_ref, const char *out_dir, int overwrite)
{
    const smelt_model *b = a->base;
    if ((b->dir && delta_same_file(out_dir, b->dir)) ||
        (b->nfiles && delta_dir_holds(out_dir, b->files[0].path)) ||
        delta_same_file(out_dir, base_ref))
        return smelt_fail(a->ctx, SMELT_E_ARG, "%s: the output directory is the base's "
                          "directory; choose another one", out_dir);
    if (delta_dir_holds(out_dir, a->d->path))
        return smelt_fail(a->ctx, SMELT_E_ARG, "%s: the output directory holds the delta %s; "
                          "choose another one", out_dir, a->d->path);
    DIR *dir = opendir(out_dir);
    if (!dir)
        return errno == ENOENT ? smelt_mkdir_p(a->ctx, out_dir)
                               : smelt_fail_errno(a->ctx, errno, "%s: cannot open", out_dir);
    char found[256] = "";
    for (struct dirent *ent; !found[0] && (ent = readdir(dir));) {
        int ours = is_model_name(ent->d_name);
        for (size_t i = 0; i < a->d->nfiles && !ours; i++)
            ours = strcmp(a->d->files[i].name, ent->d_name) == 0;
        if (ours)
            snprintf(found, sizeof found, "%s", ent->d_name);
    }
    closedir(dir);
    if (found[0] && !overwrite)
        return smelt_fail(a->ctx, SMELT_E_ARG, "%s: already holds a model (%s); pass "
                          "--overwrite to replace it", out_dir, found);
    return SMELT_OK;
}

/* ---- decoding --------------------------------------------------------------------------- */

static void frame_task(void *arg, size_t task, unsigned worker)
{
    apply *a = arg;
    smelt_ctx *ctx = a->w.err.scratch[worker];
    const astream *s = &a->streams[a->b_stream[task]];
    const uint64_t f = a->b_frame[task];
    aslot *slot = &a->slots[task];
    const uint64_t elems = smelt_delta_frame_elems(a->d, s->e, f);
    slot->raw = (size_t)(elems * s->e->unit);
    const uint8_t *planes;
    int rc = smelt_delta_decode(ctx, a->d, s->e, f, a->scratch[worker], &planes);
    if (rc == SMELT_OK && s->base_fd >= 0) {
        uint64_t at = s->base_off + f * a->d->frame_elems * s->e->unit;
        int err = smelt_pread_all(s->base_fd, slot->base, slot->raw, at);
        if (err)
            rc = smelt_fail_errno(ctx, err, "%s: tensor '%s': cannot read bytes [%llu, %llu)",
                                  s->base_path, s->e->name, (ull)at, (ull)(at + slot->raw));
    }
    if (rc == SMELT_OK) /* the planes joined and XORed into the base's bytes in one pass */
        smelt_kernels_get()->delta_join(slot->out, planes, (size_t)elems, (size_t)elems,
                                        s->e->unit, s->base_fd >= 0 ? slot->base : NULL);
    if (rc != SMELT_OK)
        smelt_task_failed(&a->w.err, worker, task);
}

static int setup(apply *a, uint64_t budget, uint64_t total_frames)
{
    unsigned umax = 1;
    for (size_t i = 0; i < a->d->nentries; i++)
        if (a->d->entries[i].unit > umax)
            umax = a->d->entries[i].unit;
    a->slot_raw = (size_t)a->d->frame_elems * umax;
    size_t per_slot = 2 * a->slot_raw;
    uint64_t ctx_bytes = (uint64_t)smelt_delta_scratch_bytes(a->d, umax) * a->w.n;
    if (budget < ctx_bytes + per_slot)
        return smelt_fail(a->ctx, SMELT_E_BUDGET, "--max-memory %llu bytes cannot hold one "
                          "frame (%zu bytes) and %u decompression buffers (%llu bytes); give at "
                          "least %llu", (ull)budget, per_slot, a->w.n, (ull)ctx_bytes,
                          (ull)(ctx_bytes + per_slot));
    uint64_t n = (budget - ctx_bytes) / per_slot;
    if (n > SMELT_DELTA_MAX_SLOTS)
        n = SMELT_DELTA_MAX_SLOTS;
    if (n > total_frames)
        n = total_frames ? total_frames : 1;
    a->nslots = (size_t)n;
    a->slots = calloc(a->nslots, sizeof *a->slots);
    a->b_stream = calloc(a->nslots, sizeof *a->b_stream);
    a->b_frame = calloc(a->nslots, sizeof *a->b_frame);
    a->scratch = calloc(a->w.n, sizeof *a->scratch);
    if (!a->slots || !a->b_stream || !a->b_frame || !a->scratch)
        return smelt_fail(a->ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < a->nslots; i++)
        if (!(a->slots[i].out = malloc(a->slot_raw)) || !(a->slots[i].base = malloc(a->slot_raw)))
            return smelt_fail(a->ctx, SMELT_E_NOMEM, "out of memory (%zu frame buffers)",
                              a->nslots);
    for (unsigned i = 0; i < a->w.n; i++)
        if (!(a->scratch[i] = smelt_delta_scratch_new(a->d, umax)))
            return smelt_fail(a->ctx, SMELT_E_NOMEM, "out of memory");
    return SMELT_OK;
}

typedef struct write_state {
    size_t stream;
    XXH3_state_t *hash;
    size_t hash_file;
} write_state;

/* Checks the whole-file hash of every file before `file`. */
static int hash_to_file(apply *a, write_state *ws, size_t file)
{
    while (ws->hash_file < file) {
        const smelt_delta_file *f = &a->d->files[ws->hash_file];
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(ws->hash));
        if (memcmp(c.digest, f->xxh3, 16) != 0) {
            char have[33], want[33];
            smelt_delta_hex(c.digest, have);
            smelt_delta_hex(f->xxh3, want);
            return smelt_fail(a->ctx, SMELT_E_FORMAT, "%s: the rebuilt '%s' hashes to %s, the "
                              "delta recorded %s: the base's weights are not the ones the delta was "
                              "made against (its headers are), or the delta is damaged", a->d->path,
                              f->name, have, want);
        }
        XXH3_128bits_reset(ws->hash);
        ws->hash_file++;
    }
    return SMELT_OK;
}

static int write_batch(apply *a, write_state *ws)
{
    for (size_t i = 0; i < a->bn; i++) {
        const astream *s = &a->streams[a->b_stream[i]];
        int rc = hash_to_file(a, ws, s->file);
        if (rc != SMELT_OK)
            return rc;
        const aslot *slot = &a->slots[i];
        XXH3_128bits_update(ws->hash, slot->out, slot->raw);
        uint64_t off = s->out_off + a->b_frame[i] * a->d->frame_elems * s->e->unit;
        if ((rc = smelt_out_write(a->ctx, &a->outs[s->file], slot->out, slot->raw, off)))
            return rc;
    }
    return SMELT_OK;
}

static int run(apply *a, const smelt_delta_options *o)
{
    write_state ws = {0, XXH3_createState(), 0};
    if (!ws.hash)
        return smelt_fail(a->ctx, SMELT_E_NOMEM, "out of memory");
    XXH3_128bits_reset(ws.hash);
    int rc = SMELT_OK;
    size_t si = 0;
    uint64_t f = 0;
    while (rc == SMELT_OK) {
        a->bn = 0;
        for (; si < a->nstreams && a->bn < a->nslots; f = 0, si++) {
            for (; f < a->streams[si].e->nframes && a->bn < a->nslots; f++) {
                a->b_stream[a->bn] = si;
                a->b_frame[a->bn++] = f;
            }
            if (f < a->streams[si].e->nframes)
                break;
        }
        if (a->bn == 0)
            break;
        if (o->cancel && *o->cancel) {
            rc = smelt_fail(a->ctx, SMELT_E_INTERRUPTED, "interrupted");
            break;
        }
        smelt_task_errors_reset(&a->w.err);
        smelt_pool_run(a->w.pool, a->bn, frame_task, a);
        if ((rc = smelt_task_errors_result(a->ctx, &a->w.err)) == SMELT_OK)
            rc = write_batch(a, &ws);
    }
    if (rc == SMELT_OK)
        rc = hash_to_file(a, &ws, a->d->nfiles);
    XXH3_freeState(ws.hash);
    return rc;
}

/* ---- the entry point -------------------------------------------------------------------- */

static int finish_all(apply *a, const char *out_dir)
{
    int rc = SMELT_OK;
    for (size_t i = 0; i < a->d->nfiles && rc == SMELT_OK; i++)
        rc = smelt_out_finish(a->ctx, &a->outs[i]);
    /* every file but the index, then the index: a directory with an index is complete */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < a->d->nfiles && rc == SMELT_OK; i++)
            if ((strcmp(a->d->files[i].name, INDEX_NAME) == 0) == pass) {
                rc = smelt_out_commit(a->ctx, &a->outs[i]);
                if (rc == SMELT_OK)
                    smelt_out_release(&a->outs[i]);
            }
    return rc == SMELT_OK ? smelt_fsync_dir(a->ctx, out_dir) : rc;
}

int smelt_delta_apply(smelt_ctx *ctx, const char *base, const char *delta, const char *out_dir,
                      const smelt_delta_options *opts, smelt_delta_stats *stats)
{
    smelt_delta_options o;
    smelt_delta_options_default(&o);
    if (opts)
        o = *opts;
    if (!o.max_memory)
        o.max_memory = SMELT_DELTA_DEFAULT_MEMORY;
    if (!base || !delta || !out_dir || !*out_dir)
        return smelt_fail(ctx, SMELT_E_ARG, "delta apply needs BASE, DELTA and OUT_DIR");
    double t0 = smelt_now();
    apply a = {.ctx = ctx};
    int rc = smelt_delta_open(ctx, delta, &a.d);
    if (rc == SMELT_OK)
        rc = delta_open_model(ctx, base, "BASE", &a.base);
    if (rc == SMELT_OK)
        rc = check_base(&a, base);
    if (rc == SMELT_OK)
        rc = make_streams(&a);
    if (rc == SMELT_OK)
        rc = prepare_out_dir(&a, base, out_dir, o.overwrite);
    uint64_t frames = 0;
    for (size_t i = 0; a.d && i < a.d->nentries; i++)
        frames += a.d->entries[i].nframes;
    if (rc == SMELT_OK)
        rc = delta_workers_init(ctx, &a.w, o.threads);
    if (rc == SMELT_OK)
        rc = setup(&a, o.max_memory, frames);
    if (rc == SMELT_OK && !(a.outs = calloc(a.d->nfiles + 1, sizeof *a.outs)))
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; a.outs && i <= a.d->nfiles; i++)
        a.outs[i].fd = -1;
    for (size_t i = 0; rc == SMELT_OK && i < a.d->nfiles; i++) {
        char *path = smelt_path_join(out_dir, a.d->files[i].name);
        rc = path ? smelt_out_create(ctx, &a.outs[i], path, a.d->files[i].size)
                  : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        free(path);
    }
    if (rc == SMELT_OK)
        rc = run(&a, &o);
    if (rc == SMELT_OK)
        rc = finish_all(&a, out_dir);
    if (rc == SMELT_OK && stats) {
        memset(stats, 0, sizeof *stats);
        for (size_t i = 0; i < a.d->nentries; i++) {
            const smelt_delta_entry *e = &a.d->entries[i];
            if (strncmp(e->name, SMELT_DELTA_HEADER_PREFIX, strlen(SMELT_DELTA_HEADER_PREFIX)) &&
                strncmp(e->name, SMELT_DELTA_FILE_PREFIX, strlen(SMELT_DELTA_FILE_PREFIX))) {
                stats->tensors++;
                stats->tensors_xor += e->mode == SMELT_DELTA_XOR;
                if (e->mode == SMELT_DELTA_XOR)
                    stats->bytes_base += e->nbytes;
            }
        }
        stats->files = a.d->nfiles;
        for (size_t i = 0; i < a.d->nfiles; i++)
            stats->bytes_out += a.d->files[i].size;
        stats->bytes_in = a.d->file_size;
        stats->seconds = smelt_now() - t0;
    }
    for (size_t i = 0; a.outs && i < a.d->nfiles; i++)
        if (a.outs[i].tmp_path)
            smelt_out_discard(&a.outs[i]); /* a failure: nothing stays */
    free(a.outs);
    for (size_t i = 0; a.slots && i < a.nslots; i++) {
        free(a.slots[i].out);
        free(a.slots[i].base);
    }
    free(a.slots);
    for (unsigned i = 0; a.scratch && i < a.w.n; i++)
        smelt_delta_scratch_free(a.scratch[i]);
    free(a.scratch);
    free(a.b_stream);
    free(a.b_frame);
    free(a.streams);
    delta_workers_free(&a.w);
    smelt_model_close(a.base);
    smelt_delta_close(a.d);
    return rc;
}
