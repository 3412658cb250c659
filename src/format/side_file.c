/* A model's side files, from its directory or its delta (see side_file.h). */
#include "format/side_file.h"

#include "common/util.h"
#include "format/delta.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef unsigned long long ull;

/* The delta's entry for side file `name`, or NULL. */
static const smelt_delta_entry *delta_entry(const smelt_delta *d, const char *name)
{
    size_t n = strlen(SMELT_DELTA_FILE_PREFIX) + strlen(name) + 1;
    char *full = malloc(n);
    if (!full)
        return NULL;
    snprintf(full, n, "%s%s", SMELT_DELTA_FILE_PREFIX, name);
    const smelt_delta_entry *e = smelt_delta_find(d, full);
    free(full);
    return e;
}

/* Calls sink for the decoded bytes of the delta entry e, frame by frame, in order. */
typedef int (*bytes_sink)(smelt_ctx *ctx, void *user, const uint8_t *bytes, size_t len);

static int decode_entry(smelt_ctx *ctx, const smelt_delta *d, const smelt_delta_entry *e,
                        bytes_sink sink, void *user)
{
    if (e->unit != 1 || e->mode != SMELT_DELTA_RAW)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: '%s' is not stored as a file's bytes: the "
                          "delta is damaged", d->path, e->name);
    smelt_delta_scratch *s = smelt_delta_scratch_new(d, 1);
    if (!s)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory decoding '%s'", e->name);
    int rc = SMELT_OK;
    for (uint64_t f = 0; f < e->nframes && rc == SMELT_OK; f++) {
        const uint8_t *bytes;
        rc = smelt_delta_decode(ctx, d, e, f, s, &bytes);
        if (rc == SMELT_OK)
            rc = sink(ctx, user, bytes, (size_t)smelt_delta_frame_elems(d, e, f));
    }
    smelt_delta_scratch_free(s);
    return rc;
}

/* The side file's path in the model's directory (m->dir is set), or NULL after a failure. */
static char *dir_path(smelt_ctx *ctx, const smelt_model *m, const char *name)
{
    char *path = smelt_path_join(m->dir, name);
    if (!path)
        smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    return path;
}

int smelt_side_exists(const smelt_model *m, const char *name)
{
    if (m->delta)
        return delta_entry(m->delta, name) != NULL;
    if (!m->dir)
        return 0;
    char *path = smelt_path_join(m->dir, name);
    int yes = path && access(path, F_OK) == 0;
    free(path);
    return yes;
}

int smelt_side_check(smelt_ctx *ctx, const smelt_model *m, const char *name, uint64_t max_size)
{
    if (m->delta) {
        const smelt_delta_entry *e = delta_entry(m->delta, name);
        if (e && max_size && e->nbytes > max_size)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: the fine-tune's %s is %llu bytes, more "
                              "than the %llu a side file may have", m->delta->path, name,
                              (ull)e->nbytes, (ull)max_size);
        return SMELT_OK;
    }
    if (!m->dir)
        return SMELT_OK;
    char *path = dir_path(ctx, m, name);
    int rc = path ? smelt_check_readable(ctx, path, max_size) : SMELT_E_NOMEM;
    free(path);
    return rc;
}

typedef struct buffer {
    char *data;
    size_t len;
} buffer;

static int append(smelt_ctx *ctx, void *user, const uint8_t *bytes, size_t len)
{
    (void)ctx;
    buffer *b = user;
    memcpy(b->data + b->len, bytes, len);
    b->len += len;
    return SMELT_OK;
}

int smelt_side_load_json(smelt_ctx *ctx, const smelt_model *m, const char *name, size_t flags,
                         json_t **out)
{
    *out = NULL;
    if (!m->delta) {
        if (!m->dir)
            return SMELT_OK;
        char *path = dir_path(ctx, m, name);
        int rc = path ? smelt_json_load_if_exists(ctx, path, flags, out) : SMELT_E_NOMEM;
        free(path);
        return rc;
    }
    const smelt_delta *d = m->delta;
    const smelt_delta_entry *e = delta_entry(d, name);
    if (!e)
        return SMELT_OK;
    int rc = smelt_side_check(ctx, m, name, SMELT_JSON_MAX_BYTES);
    if (rc != SMELT_OK)
        return rc;
    buffer b = {malloc((size_t)e->nbytes + 1), 0};
    if (!b.data)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if ((rc = decode_entry(ctx, d, e, append, &b)) == SMELT_OK) {
        json_error_t err;
        if (!(*out = json_loadb(b.data, b.len, flags, &err)))
            rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: the fine-tune's %s: not valid JSON (line "
                            "%d, column %d): %s", d->path, name, err.line, err.column, err.text);
    }
    free(b.data);
    return rc;
}

typedef struct file_sink {
    int fd;
    const char *tmp;
} file_sink;

static int write_out(smelt_ctx *ctx, void *user, const uint8_t *bytes, size_t len)
{
    const file_sink *f = user;
    while (len > 0) {
        ssize_t n = write(f->fd, bytes, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return smelt_fail_errno(ctx, n < 0 ? errno : EIO, "%s: cannot write", f->tmp);
        bytes += n;
        len -= (size_t)n;
    }
    return SMELT_OK;
}

int smelt_side_copy(smelt_ctx *ctx, const smelt_model *m, const char *name, const char *dst)
{
    if (!m->delta) {
        if (!smelt_side_exists(m, name))
            return SMELT_OK;
        char *src = dir_path(ctx, m, name);
        int rc = src ? smelt_copy_file(ctx, src, dst) : SMELT_E_NOMEM;
        free(src);
        return rc;
    }
    const smelt_delta_entry *e = delta_entry(m->delta, name);
    if (!e)
        return SMELT_OK;
    char *tmp = malloc(strlen(dst) + sizeof ".smelt-tmp");
    if (!tmp)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    strcpy(tmp, dst);
    strcat(tmp, ".smelt-tmp");
    file_sink f = {open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), tmp};
    int rc = f.fd < 0 ? smelt_fail_errno(ctx, errno, "%s: cannot create", tmp)
                      : decode_entry(ctx, m->delta, e, write_out, &f);
    if (rc == SMELT_OK && fsync(f.fd) != 0)
        rc = smelt_fail_errno(ctx, errno, "%s: cannot write", tmp);
    if (f.fd >= 0 && close(f.fd) != 0 && rc == SMELT_OK)
        rc = smelt_fail_errno(ctx, errno, "%s: cannot write", tmp);
    if (rc == SMELT_OK && rename(tmp, dst) != 0)
        rc = smelt_fail_errno(ctx, errno, "%s: cannot rename to %s", tmp, dst);
    if (rc != SMELT_OK && f.fd >= 0)
        unlink(tmp);
    free(tmp);
    return rc;
}
