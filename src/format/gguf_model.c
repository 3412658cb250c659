/* A GGUF file or split set as a smelt_model: the same tensor table the planner and the engine
 * use for safetensors, so a GGUF model is a model reference anywhere one may appear. */
#include "format/gguf.h"
#include "format/safetensors.h"
#include "format/st_internal.h"

#include "common/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef unsigned long long ull;

/* One GGUF tensor info as a smelt_tensor_info: the shape in row-major order (ggml's ne[0], the
 * contiguous axis, last), as safetensors and torch write it. */
static int info_from_gguf(smelt_ctx *ctx, const char *path, const smelt_gguf_tensor *g,
                          uint32_t file, smelt_tensor_info *t)
{
    smelt_dtype dt = smelt_dtype_from_ggml(g->type);
    if (dt == SMELT_DT_INVALID) {
        const smelt_ggml_type *gt = smelt_ggml_type_get(g->type);
        return smelt_fail(ctx, SMELT_E_UNSUPPORTED,
                          "%s: tensor '%s' has ggml type %s, which smelt cannot read (supported: "
                          "f32, f16, bf16, f64, i8-i64, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, "
                          "q4_K, q5_K, q6_K, iq4_nl, iq4_xs)",
                          path, g->name, gt ? gt->name : "?");
    }
    *t = (smelt_tensor_info){.dtype = dt, .ndim = g->ndim, .numel = g->numel,
                             .nbytes = g->nbytes, .offset = g->file_offset, .file = file};
    for (uint32_t d = 0; d < g->ndim; d++)
        t->shape[d] = g->ne[g->ndim - 1 - d];
    if (!(t->name = strdup(g->name)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    return SMELT_OK;
}

static int by_file_offset(const void *a, const void *b)
{
    const smelt_tensor_info *x = a, *y = b;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int smelt_gguf_model_open(smelt_ctx *ctx, smelt_model *m, const char *path)
{
    smelt_gguf_set *set;
    int rc = smelt_gguf_open_set(ctx, path, &set);
    if (rc != SMELT_OK)
        return rc;
    m->gguf = set;
    if (!(m->files = calloc(set->nfiles, sizeof *m->files)) ||
        !(m->tensors = calloc(set->ntensors + 1, sizeof *m->tensors)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (uint32_t f = 0; f < set->nfiles; f++) {
        const smelt_gguf *g = set->files[f];
        smelt_st_file *file = &m->files[m->nfiles++];
        *file = (smelt_st_file){.fd = -1, .size = g->size, .data_start = g->data_start};
        if (!(file->path = strdup(g->path)))
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        if ((rc = smelt_open_regular(ctx, g->path, 0, &file->fd, NULL)) != SMELT_OK)
            return rc;
        struct stat st;
        if (fstat(file->fd, &st) != 0)
            return smelt_fail_errno(ctx, errno, "%s: cannot stat", g->path);
        file->dev = (uint64_t)st.st_dev;
        file->ino = (uint64_t)st.st_ino;
    }
    for (size_t i = 0; i < set->ntensors; i++) {
        rc = info_from_gguf(ctx, m->files[set->tensors[i].file].path, set->tensors[i].t,
                            set->tensors[i].file, &m->tensors[i]);
        if (rc != SMELT_OK)
            return rc;
        m->ntensors++;
    }
    /* The order that reads the disk sequentially, as for safetensors. */
    qsort(m->tensors, m->ntensors, sizeof *m->tensors, by_file_offset);
    return SMELT_OK;
}
