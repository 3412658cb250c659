/* smelt_verify(): a model directory against its checksum manifest. */
#include "integrity/manifest.h"
#include "integrity/rehash.h"

#include "common/util.h"
#include "format/safetensors.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void smelt_verify_options_default(smelt_verify_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->max_memory = 64ull << 20;
}

/* A manifest tensor, for lookup by name. */
typedef struct entry {
    const char *name;
    size_t file, tensor;
    int seen;
} entry;

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

static void problem(FILE *report, smelt_verify_result *res, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void problem(FILE *report, smelt_verify_result *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(report, fmt, ap);
    va_end(ap);
    fputc('\n', report);
    res->problems++;
}

/* The file name part of a model file's path (the manifest names files inside the directory). */
static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Sizes of the files the manifest lists. */
static void check_sizes(const char *dir, const smelt_manifest *m, FILE *report,
                        smelt_verify_result *res)
{
    for (size_t f = 0; f < m->nfiles; f++) {
        char *path = smelt_path_join(dir, m->files[f].name);
        struct stat st;
        if (!path)
            continue;
        if (stat(path, &st) != 0)
            problem(report, res, "%s: missing (%s); the manifest lists it", path, strerror(errno));
        else if ((uint64_t)st.st_size != m->files[f].size)
            problem(report, res, "%s: size %llu but the manifest says %llu", path,
                    (unsigned long long)st.st_size, (unsigned long long)m->files[f].size);
        free(path);
    }
}

/* Each file's header (length prefix and JSON: every name, dtype, shape, offset and the
 * __metadata__) against the manifest's hash of it. The per-tensor checks name a relabelled
 * tensor; this one also catches what they cannot see, such as changed metadata. */
static int check_headers(smelt_ctx *ctx, const smelt_manifest *m, const smelt_model *model,
                         FILE *report, smelt_verify_result *res)
{
    for (uint32_t f = 0; f < model->nfiles; f++) {
        const smelt_st_file *sf = &model->files[f];
        const smelt_manifest_file *mf = NULL;
        for (size_t i = 0; i < m->nfiles && !mf; i++)
            if (strcmp(m->files[i].name, base_name(sf->path)) == 0)
                mf = &m->files[i];
        if (!mf)
            continue; /* reported with its tensors */
        smelt_hash128 h;
        if (smelt_hash_file_prefix(ctx, sf->fd, sf->path, sf->data_start, &h) != SMELT_OK) {
            if (ctx->status == SMELT_E_NOMEM)
                return ctx->status;
            problem(report, res, "%s", smelt_errmsg(ctx));
            continue;
        }
        if (!smelt_hash_eq(&h, &mf->header)) {
            char have[SMELT_HASH_HEX_LEN + 1], want[SMELT_HASH_HEX_LEN + 1];
            smelt_hash_hex(&h, have);
            smelt_hash_hex(&mf->header, want);
            problem(report, res, "%s: header hash %s but the manifest says %s (tensor names, "
                    "dtypes, shapes, offsets or __metadata__ changed)", sf->path, have, want);
        }
    }
    return SMELT_OK;
}

/* Every tensor's bytes against the manifest. */
static int check_hashes(smelt_ctx *ctx, const char *dir, const smelt_manifest *m,
                        const smelt_model *model, const smelt_verify_options *opts, FILE *report,
                        smelt_verify_result *res)
{
    size_t nentries = 0;
    for (size_t f = 0; f < m->nfiles; f++)
        nentries += m->files[f].ntensors;
    entry *entries = calloc(nentries + 1, sizeof *entries);
    smelt_hash_range *ranges = calloc(model->ntensors + 1, sizeof *ranges);
    const entry **which = calloc(model->ntensors + 1, sizeof *which);
    smelt_hash128 *got = calloc(model->ntensors + 1, sizeof *got);
    int *errors = calloc(model->ntensors + 1, sizeof *errors);
    int rc = SMELT_OK;
    if (!entries || !ranges || !which || !got || !errors) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    size_t k = 0;
    for (size_t f = 0; f < m->nfiles; f++)
        for (size_t t = 0; t < m->files[f].ntensors; t++)
            entries[k++] = (entry){m->files[f].tensors[t].name, f, t, 0};
    qsort(entries, nentries, sizeof *entries, entry_cmp);
    for (size_t i = 1; i < nentries; i++)
        if (strcmp(entries[i - 1].name, entries[i].name) == 0)
            problem(report, res, "%s/%s: tensor '%s' is listed in two files (%s and %s)", dir,
                    SMELT_MANIFEST_NAME, entries[i].name, m->files[entries[i - 1].file].name,
                    m->files[entries[i].file].name);
    /* Model tensors are in (file, offset) order: the ranges read each file front to back. */
    size_t n = 0;
    for (size_t t = 0; t < model->ntensors; t++) {
        const smelt_tensor_info *ti = &model->tensors[t];
        const smelt_st_file *sf = &model->files[ti->file];
        entry key = {.name = ti->name};
        entry *e = bsearch(&key, entries, nentries, sizeof *entries, entry_cmp);
        if (!e) {
            problem(report, res, "%s: tensor '%s' is not in the manifest", sf->path, ti->name);
            continue;
        }
        e->seen = 1;
        if (strcmp(base_name(sf->path), m->files[e->file].name) != 0) {
            problem(report, res, "%s: tensor '%s' is here but the manifest puts it in %s",
                    sf->path, ti->name, m->files[e->file].name);
            continue;
        }
        const smelt_manifest_tensor *mt = &m->files[e->file].tensors[e->tensor];
        if (m->version >= 2 && mt->dtype != ti->dtype)
            problem(report, res, "%s: tensor '%s': dtype %s but the manifest says %s", sf->path,
                    ti->name, smelt_dtype_name(ti->dtype), smelt_dtype_name(mt->dtype));
        if (m->version >= 2 && (mt->ndim != ti->ndim ||
                                memcmp(mt->shape, ti->shape, ti->ndim * sizeof *ti->shape))) {
            char have[256], want[256];
            smelt_format_shape(have, sizeof have, ti->shape, ti->ndim);
            smelt_format_shape(want, sizeof want, mt->shape, mt->ndim);
            problem(report, res, "%s: tensor '%s': shape %s but the manifest says %s", sf->path,
                    ti->name, have, want);
        }
        ranges[n] = (smelt_hash_range){sf->fd, ti->offset, ti->nbytes};
        which[n++] = e;
    }
    for (size_t i = 0; i < nentries; i++)
        if (!entries[i].seen)
            problem(report, res, "%s/%s: tensor '%s' is in the manifest but not in the model",
                    dir, m->files[entries[i].file].name, entries[i].name);
    uint64_t bytes = 0;
    rc = smelt_hash_ranges(ctx, ranges, n, opts->max_memory, opts->force_pread, got, errors,
                           &bytes);
    if (rc != SMELT_OK)
        goto out;
    res->bytes_read += bytes;
    for (size_t i = 0; i < n; i++) {
        const smelt_manifest_tensor *mt = &m->files[which[i]->file].tensors[which[i]->tensor];
        const char *fname = m->files[which[i]->file].name;
        if (errors[i]) {
            problem(report, res, "%s/%s: tensor '%s': cannot read: %s", dir, fname, mt->name,
                    strerror(errors[i]));
            continue;
        }
        res->tensors_checked++;
        if (!smelt_hash_eq(&got[i], &mt->hash)) {
            char have[SMELT_HASH_HEX_LEN + 1], want[SMELT_HASH_HEX_LEN + 1];
            smelt_hash_hex(&got[i], have);
            smelt_hash_hex(&mt->hash, want);
            problem(report, res, "%s/%s: tensor '%s': hash %s but the manifest says %s", dir,
                    fname, mt->name, have, want);
        }
    }
out:
    free(entries);
    free(ranges);
    free(which);
    free(got);
    free(errors);
    return rc;
}

int smelt_verify(smelt_ctx *ctx, const char *dir, const smelt_verify_options *user_opts,
                 FILE *report, smelt_verify_result *res)
{
    smelt_verify_options opts;
    smelt_verify_options_default(&opts);
    if (user_opts) {
        opts = *user_opts;
        if (!opts.max_memory)
            opts.max_memory = 64ull << 20;
    }
    const char *io = getenv("SMELT_IO");
    if (io && strcmp(io, "pread") == 0)
        opts.force_pread = 1;
    memset(res, 0, sizeof *res);
    double started = smelt_now();
    struct stat st;
    /* stat, not open: a FIFO named as the target must be refused, not waited on */
    if (stat(dir, &st) != 0)
        return smelt_fail_errno(ctx, errno, "%s: cannot access", dir);
    if (!S_ISDIR(st.st_mode))
        return smelt_fail(ctx, SMELT_E_ARG, "%s: not a directory (a %s)", dir,
                          smelt_file_kind(st.st_mode));
    smelt_manifest *m = NULL;
    if (smelt_manifest_load(ctx, dir, &m) != SMELT_OK) {
        if (ctx->status == SMELT_E_NOMEM)
            return ctx->status;
        problem(report, res, "%s", smelt_errmsg(ctx));
    }
    res->has_manifest = m != NULL;
    smelt_model *model = NULL;
    /* Structure and index, whatever the manifest says: the checks every input gets. */
    if (smelt_model_open(ctx, dir, &model) != SMELT_OK) {
        if (ctx->status == SMELT_E_NOMEM) {
            smelt_manifest_free(m);
            return ctx->status;
        }
        problem(report, res, "%s", smelt_errmsg(ctx));
    }
    int rc = SMELT_OK;
    if (m) {
        check_sizes(dir, m, report, res);
        if (model && m->version >= 2)
            rc = check_headers(ctx, m, model, report, res);
        if (model && rc == SMELT_OK)
            rc = check_hashes(ctx, dir, m, model, &opts, report, res);
        /* An old manifest is still checked for what it records; say what it could not. */
        if (m->version < 2)
            fprintf(report, "%s/%s: format_version %d, made by an older smelt (%s): checked sizes "
                    "and tensor bytes only, not dtypes, shapes or metadata (merge again for a "
                    "manifest that binds them)\n", dir, SMELT_MANIFEST_NAME, m->version,
                    m->smelt_version);
    }
    smelt_model_close(model);
    smelt_manifest_free(m);
    res->seconds = smelt_now() - started;
    if (rc == SMELT_OK)
        smelt_ctx_clear(ctx);
    return rc;
}
