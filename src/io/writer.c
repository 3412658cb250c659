#include "io/writer.h"

#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Opens the temporary file with `flags` (O_TRUNC for a new merge, none to keep what a resumed
 * merge wrote before) and reserves its size. */
static int out_open(smelt_ctx *ctx, smelt_out_file *file, const char *final_path, uint64_t size,
                    int flags)
{
    memset(file, 0, sizeof *file);
    file->fd = -1;
    file->final_path = strdup(final_path);
    size_t len = strlen(final_path) + sizeof ".smelt-tmp";
    file->tmp_path = malloc(len);
    if (!file->final_path || !file->tmp_path) {
        smelt_out_discard(file);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    snprintf(file->tmp_path, len, "%s.smelt-tmp", final_path);
    file->fd = open(file->tmp_path, O_RDWR | O_CREAT | O_CLOEXEC | flags, 0644);
    if (file->fd < 0) {
        int err = errno;
        free(file->tmp_path);
        file->tmp_path = NULL; /* nothing was created: nothing to remove */
        smelt_out_discard(file);
        return smelt_fail_errno(ctx, err, "%s: cannot create", final_path);
    }
    file->size = size;
    struct stat st;
    /* A temporary file of another size is not what the journal describes: its tensors fail
     * their re-hash and are redone, but the file itself must have the planned size. */
    if (!(flags & O_TRUNC) && fstat(file->fd, &st) == 0 && (uint64_t)st.st_size != size &&
        ftruncate(file->fd, (off_t)size) != 0) {
        smelt_fail_errno(ctx, errno, "%s: cannot resize", file->tmp_path);
        smelt_out_abandon(file);
        return ctx ? ctx->status : SMELT_E_IO;
    }
    if (size > 0) {
        int rc = posix_fallocate(file->fd, 0, (off_t)size);
        if (rc == EOPNOTSUPP || rc == EINVAL)
            rc = ftruncate(file->fd, (off_t)size) == 0 ? 0 : errno;
        if (rc != 0) {
            smelt_fail_errno(ctx, rc, "%s: cannot reserve %llu bytes", file->tmp_path,
                             (unsigned long long)size);
            /* A new file goes; a resumed one keeps the bytes already vouched for. */
            if (flags & O_TRUNC)
                smelt_out_discard(file);
            else
                smelt_out_abandon(file);
            return ctx ? ctx->status : SMELT_E_IO;
        }
    }
    return SMELT_OK;
}

int smelt_out_create(smelt_ctx *ctx, smelt_out_file *file, const char *final_path, uint64_t size)
{
    return out_open(ctx, file, final_path, size, O_TRUNC);
}

int smelt_out_reopen(smelt_ctx *ctx, smelt_out_file *file, const char *final_path, uint64_t size)
{
    return out_open(ctx, file, final_path, size, 0);
}

/* Waits for the oldest range's writeback and drops its pages: they will not be read again. */
static void retire_oldest(smelt_out_file *file)
{
    unsigned i = file->flush_head;
    sync_file_range(file->fd, (off_t)file->flush_off[i], (off_t)file->flush_len[i],
                    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                        SYNC_FILE_RANGE_WAIT_AFTER);
    posix_fadvise(file->fd, (off_t)file->flush_off[i], (off_t)file->flush_len[i],
                  POSIX_FADV_DONTNEED);
    file->flush_head = (file->flush_head + 1) % SMELT_WRITER_WINDOW;
    file->flush_count--;
}

int smelt_out_create_unsized(smelt_ctx *ctx, smelt_out_file *file, const char *final_path)
{
    int rc = smelt_out_create(ctx, file, final_path, 0);
    if (rc == SMELT_OK)
        file->size = UINT64_MAX;
    return rc;
}

int smelt_out_set_size(smelt_ctx *ctx, smelt_out_file *file, uint64_t size)
{
    if (ftruncate(file->fd, (off_t)size) != 0)
        return smelt_fail_errno(ctx, errno, "%s: cannot set its size", file->tmp_path);
    file->size = size;
    return SMELT_OK;
}

int smelt_out_write(smelt_ctx *ctx, smelt_out_file *file, const void *buf, size_t len,
                    uint64_t off)
{
    if (off > file->size || len > file->size - off)
        return smelt_fail(ctx, SMELT_E_INTERNAL, "%s: write of %zu bytes at %llu past the end",
                          file->tmp_path, len, (unsigned long long)off);
    const char *p = buf;
    size_t left = len;
    uint64_t at = off;
    while (left > 0) {
        ssize_t n = pwrite(file->fd, p, left, (off_t)at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return smelt_fail_errno(ctx, n < 0 ? errno : EIO, "%s: cannot write", file->tmp_path);
        p += n;
        at += (uint64_t)n;
        left -= (size_t)n;
    }
    if (len == 0)
        return SMELT_OK;
    if (file->flush_count == SMELT_WRITER_WINDOW)
        retire_oldest(file);
    sync_file_range(file->fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE);
    unsigned slot = (file->flush_head + file->flush_count) % SMELT_WRITER_WINDOW;
    file->flush_off[slot] = off;
    file->flush_len[slot] = len;
    file->flush_count++;
    return SMELT_OK;
}

int smelt_out_finish(smelt_ctx *ctx, smelt_out_file *file)
{
    while (file->flush_count > 0)
        retire_oldest(file);
    if (fsync(file->fd) != 0)
        return smelt_fail_errno(ctx, errno, "%s: cannot flush to disk", file->tmp_path);
    int rc = close(file->fd);
    file->fd = -1;
    if (rc != 0)
        return smelt_fail_errno(ctx, errno, "%s: cannot close", file->tmp_path);
    return SMELT_OK;
}

int smelt_out_commit(smelt_ctx *ctx, smelt_out_file *file)
{
    if (rename(file->tmp_path, file->final_path) != 0)
        return smelt_fail_errno(ctx, errno, "%s: cannot rename to %s", file->tmp_path,
                                file->final_path);
    return SMELT_OK;
}

void smelt_out_discard(smelt_out_file *file)
{
    if (file->fd >= 0)
        close(file->fd);
    file->fd = -1;
    if (file->tmp_path)
        unlink(file->tmp_path);
    smelt_out_release(file);
}

void smelt_out_abandon(smelt_out_file *file)
{
    if (file->fd >= 0)
        close(file->fd);
    file->fd = -1;
    smelt_out_release(file);
}

void smelt_out_release(smelt_out_file *file)
{
    free(file->final_path);
    free(file->tmp_path);
    file->final_path = file->tmp_path = NULL;
}
