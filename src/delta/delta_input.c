/* "BASE+DELTA" references (see delta_input.h). */
#include "delta/delta_input.h"

#include "common/util.h"
#include "delta/delta_internal.h"
#include "integrity/checksum.h"
#include "integrity/journal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int smelt_delta_is_ref(const char *ref)
{
    struct stat st;
    if (stat(ref, &st) != 0)
        return 0;
    if (S_ISDIR(st.st_mode)) {
        char *path = smelt_path_join(ref, SMELT_DELTA_FILE_NAME);
        int yes = path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
        free(path);
        return yes;
    }
    const char *slash = strrchr(ref, '/');
    return strcmp(slash ? slash + 1 : ref, SMELT_DELTA_FILE_NAME) == 0;
}

int smelt_delta_check_base(smelt_ctx *ctx, const smelt_delta *d, const smelt_model *b,
                           const char *base_ref)
{
    for (size_t i = 0; i < d->nbase; i++) {
        uint32_t k = 0;
        while (k < b->nfiles && strcmp(delta_file_name(b, b->files[k].path), d->base[i].name))
            k++;
        if (k == b->nfiles)
            return smelt_fail(ctx, SMELT_E_PLAN, "BASE %s has no file '%s', which the delta "
                              "%s was made against: this is not the delta's base", base_ref,
                              d->base[i].name, d->path);
        smelt_hash128 h;
        int rc = smelt_hash_file_prefix(ctx, b->files[k].fd, b->files[k].path,
                                        b->files[k].data_start, &h);
        if (rc != SMELT_OK)
            return rc;
        if (memcmp(h.b, d->base[i].header_xxh3, 16) != 0) {
            char have[33], want[33];
            smelt_delta_hex(h.b, have);
            smelt_delta_hex(d->base[i].header_xxh3, want);
            return smelt_fail(ctx, SMELT_E_PLAN, "%s: its header hash %s differs from the "
                              "one the delta %s was made against (%s): this is not the delta's "
                              "base", b->files[k].path, have, d->path, want);
        }
        smelt_journal_input id;
        if ((rc = smelt_journal_input_identify(ctx, b->files[k].fd, b->files[k].path,
                                               b->files[k].data_start, &id)) != SMELT_OK)
            return rc;
        if (memcmp(id.sample.b, d->base[i].sample_xxh3, 16) != 0)
            return smelt_fail(ctx, SMELT_E_PLAN, "%s: its tensor data differs from the base the "
                              "delta %s was made against (same header, other weights in the "
                              "sampled blocks): this is not the delta's base", b->files[k].path,
                              d->path);
    }
    if (b->nfiles != d->nbase)
        return smelt_fail(ctx, SMELT_E_PLAN, "BASE %s has %u safetensors files, the delta's "
                          "base had %zu: this is not the delta's base", base_ref, b->nfiles,
                          d->nbase);
    return SMELT_OK;
}

static int is_tensor_entry(const smelt_delta_entry *e)
{
    return strncmp(e->name, SMELT_DELTA_HEADER_PREFIX, strlen(SMELT_DELTA_HEADER_PREFIX)) != 0 &&
           strncmp(e->name, SMELT_DELTA_FILE_PREFIX, strlen(SMELT_DELTA_FILE_PREFIX)) != 0;
}

static int same_tensor(const smelt_delta_entry *e, const smelt_tensor_info *t)
{
    return e->dtype == t->dtype && e->ndim == t->ndim &&
           memcmp(e->shape, t->shape, t->ndim * sizeof *t->shape) == 0;
}

/* The base model now presents the fine-tune's tensors, in the fine-tune's order (its files in
 * order, each file's tensors in data order, as the delta recorded them): the order a merge
 * processes and writes a model's tensors in, so the output is the one the raw fine-tune would
 * give, tensors the base lacks included. For a fine-tune laid out like its base (the usual
 * case) that is also the order that reads the base's files front to back. A XOR entry keeps the
 * base's tensor (the engine reads it and XORs the frames in); an entry stored whole (the
 * fine-tune's dtype or shape differs from the base's, or the base lacks it) becomes a tensor
 * the engine decodes from its frames alone (`file` is the delta's, `offset` its blob: no byte
 * of it is read from a file, engine/source.h); a base tensor the delta has no entry for (the
 * fine-tune lacks it) is gone. */
static int adopt_entries(smelt_ctx *ctx, const smelt_delta *d, smelt_model *base,
                         const char *ref, uint32_t file)
{
    if (d->frame_elems != SMELT_DELTA_FRAME_ELEMS)
        return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%s: frames of %llu elements; a merge reads "
                          "deltas with frames of %u", ref, (unsigned long long)d->frame_elems,
                          SMELT_DELTA_FRAME_ELEMS);
    smelt_tensor_info *all = calloc(d->nentries + 1, sizeof *all);
    unsigned char *placed = calloc(d->nentries + 1, 1);
    if (!all || !placed) {
        free(all);
        free(placed);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    size_t n = 0;
    int rc = SMELT_OK;
    for (size_t k = 0; k < d->nfiles && rc == SMELT_OK; k++) {
        const smelt_delta_file *df = &d->files[k];
        for (size_t j = df->safetensors ? 1 : 0; df->safetensors && j < df->nparts; j++) {
            size_t i = df->parts[j];
            const smelt_delta_entry *e = &d->entries[i];
            if (!is_tensor_entry(e) || placed[i]) {
                rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: file '%s' lists '%s' %s: the delta is "
                                "damaged", ref, df->name, e->name,
                                placed[i] ? "twice" : "among its tensors");
                break;
            }
            placed[i] = 1;
            const smelt_tensor_info *t = smelt_model_find(base, e->name);
            if (e->mode == SMELT_DELTA_XOR && (!t || !same_tensor(e, t))) {
                rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: tensor '%s' is stored as a XOR "
                                "against the base, which %s (dtype or shape): the delta is "
                                "damaged", ref, e->name,
                                t ? "differs from it" : "has no such tensor");
                break;
            }
            smelt_tensor_info *dst = &all[n];
            if (e->mode == SMELT_DELTA_XOR) {
                *dst = *t;
            } else {
                *dst = (smelt_tensor_info){.dtype = e->dtype, .ndim = e->ndim,
                                           .nbytes = e->nbytes, .numel = 1,
                                           .offset = e->blob_offset, .file = file};
                memcpy(dst->shape, e->shape, e->ndim * sizeof *e->shape);
                for (uint32_t q = 0; q < e->ndim; q++)
                    dst->numel *= e->shape[q];
            }
            if (!(dst->name = smelt_strdup(e->name))) {
                rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
                break;
            }
            n++;
        }
    }
    for (size_t i = 0; i < d->nentries && rc == SMELT_OK; i++)
        if (is_tensor_entry(&d->entries[i]) && !placed[i])
            rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: tensor '%s' is in none of the fine-tune's "
                            "files: the delta is damaged", ref, d->entries[i].name);
    free(placed);
    if (rc != SMELT_OK) {
        smelt_tensors_free(all, n);
        return rc;
    }
    smelt_tensors_free(base->tensors, base->ntensors);
    base->tensors = all;
    base->ntensors = n;
    return smelt_model_reindex(ctx, base);
}

/* The delta's file joins base->files: it is an input like the base's shards. */
static int share_file(smelt_ctx *ctx, smelt_model *base, const smelt_delta *d)
{
    smelt_model *container;
    int rc = smelt_model_open(ctx, d->path, &container);
    if (rc != SMELT_OK)
        return rc;
    smelt_st_file *files = realloc(base->files, (base->nfiles + 1) * sizeof *files);
    if (!files) {
        smelt_model_close(container);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    base->files = files;
    smelt_st_file *dst = &base->files[base->nfiles];
    *dst = container->files[0];
    dst->path = smelt_strdup(container->files[0].path);
    dst->fd = dup(container->files[0].fd);
    if (!dst->path || dst->fd < 0) {
        int err = dst->path ? errno : ENOMEM;
        free(dst->path);
        if (dst->fd >= 0)
            close(dst->fd);
        smelt_model_close(container);
        return smelt_fail_errno(ctx, err, "%s: cannot share the delta's file", d->path);
    }
    base->nfiles++;
    smelt_model_close(container);
    return SMELT_OK;
}

int smelt_delta_attach(smelt_ctx *ctx, smelt_model *base, const char *ref)
{
    smelt_delta *d;
    int rc = smelt_delta_open(ctx, ref, &d);
    if (rc != SMELT_OK)
        return rc;
    base->delta = d;
    if ((rc = smelt_delta_check_base(ctx, d, base, base->ref)) == SMELT_OK &&
        (rc = share_file(ctx, base, d)) == SMELT_OK)
        rc = adopt_entries(ctx, d, base, ref, base->nfiles - 1);
    return rc;
}
