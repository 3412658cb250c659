/* Shared by smelt delta extract and apply (delta_internal.h). */
#include "delta/delta_internal.h"

#include "common/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void smelt_delta_options_default(smelt_delta_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->level = SMELT_DELTA_DEFAULT_LEVEL;
    opts->max_memory = SMELT_DELTA_DEFAULT_MEMORY;
}

int delta_workers_init(smelt_ctx *ctx, delta_workers *w, int threads)
{
    memset(w, 0, sizeof *w);
    if (!(w->pool = smelt_pool_new(threads)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "cannot start the worker threads");
    w->n = smelt_pool_threads(w->pool);
    return smelt_task_errors_init(ctx, &w->err, w->n);
}

void delta_workers_free(delta_workers *w)
{
    smelt_pool_free(w->pool);
    smelt_task_errors_free(&w->err);
    memset(w, 0, sizeof *w);
}

const char *delta_file_name(const smelt_model *m, const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    if (m->dir) {
        size_t n = strlen(m->dir);
        while (n > 1 && m->dir[n - 1] == '/')
            n--;
        if (strncmp(path, m->dir, n) != 0 || path[n] != '/' || strchr(path + n + 1, '/'))
            return NULL;
        name = path + n + 1;
    }
    return *name ? name : NULL;
}

int delta_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

int delta_dir_holds(const char *dir, const char *path)
{
    char *copy = smelt_strdup(path);
    if (!copy)
        return 0;
    char *slash = strrchr(copy, '/');
    int yes;
    if (!slash)
        yes = delta_same_file(dir, ".");
    else {
        *slash = '\0';
        yes = delta_same_file(dir, copy[0] ? copy : "/");
    }
    free(copy);
    return yes;
}

int delta_open_model(smelt_ctx *ctx, const char *ref, const char *role, smelt_model **out)
{
    *out = NULL;
    smelt_model *m;
    int rc = smelt_model_open(ctx, ref, &m);
    if (rc != SMELT_OK) {
        smelt_error_prefix(ctx, "%s: ", role);
        return rc;
    }
    if (m->gguf || m->lora) {
        rc = smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%s %s: deltas are made of safetensors "
                        "models, not %s", role, ref, m->gguf ? "GGUF files" : "adapters");
        smelt_model_close(m);
        return rc;
    }
    for (uint32_t i = 0; i < m->nfiles; i++)
        if (!delta_file_name(m, m->files[i].path)) {
            rc = smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%s %s: the file '%s' is not directly in "
                            "the model's directory", role, ref, m->files[i].path);
            smelt_model_close(m);
            return rc;
        }
    *out = m;
    return SMELT_OK;
}
