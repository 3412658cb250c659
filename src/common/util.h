/* Small helpers used across modules: checked arithmetic, paths, files. */
#ifndef SMELT_UTIL_H
#define SMELT_UTIL_H

#include "common/errors.h"

#include <stddef.h>
#include <stdint.h>

/* a * b into *out; returns 0, or -1 on overflow. */
static inline int smelt_mul_overflow(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}

/* malloc'd "dir/name" (just name when dir is NULL or empty). NULL when out of memory. */
char *smelt_path_join(const char *dir, const char *name);

/* malloc'd copy; NULL for NULL. */
char *smelt_strdup(const char *s);

struct stat;

/* Reads exactly len bytes at offset off, retrying short reads and EINTR. Returns 0, or an errno
 * value (EIO when the file ends first). */
int smelt_pread_all(int fd, void *buf, size_t len, uint64_t off);

/* Opens path for reading, refusing anything that is not a regular file (a FIFO, a device, a
 * socket, a directory) with SMELT_E_IO and a message naming the path and what it is — without
 * blocking, which a plain open() of a FIFO would — and, when max_size is not 0, a file larger
 * than max_size (the message names the bound). On success *fd is a blocking O_RDONLY |
 * O_CLOEXEC descriptor the caller closes, and *st (when not NULL) its fstat. Every file smelt
 * reads goes through here. */
int smelt_open_regular(smelt_ctx *ctx, const char *path, uint64_t max_size, int *fd,
                       struct stat *st);

/* The same check without keeping the file open, for files read later: SMELT_OK when path
 * does not exist, or opens as smelt_open_regular would. */
int smelt_check_readable(smelt_ctx *ctx, const char *path, uint64_t max_size);

/* "FIFO", "directory", ... for an st_mode: for messages. */
const char *smelt_file_kind(unsigned mode);

/* Side files parsed as JSON (config.json, tokenizer_config.json, an index) are read whole;
 * anything larger is refused rather than risk memory far beyond --max-memory. */
#define SMELT_JSON_MAX_BYTES ((size_t)64 << 20)

/* Reads a whole (small) file into a malloc'd NUL-terminated buffer. SMELT_E_IO with a message
 * naming the path on failure; files that are not regular or are above max_size (the message
 * names the bound) are refused. */
int smelt_read_file(smelt_ctx *ctx, const char *path, size_t max_size, char **out, size_t *len);

/* Writes a whole file durably: path.smelt-tmp, fsync, rename. */
int smelt_write_file_atomic(smelt_ctx *ctx, const char *path, const void *data, size_t len);

/* Copies src to dst durably without holding it in memory (dst.smelt-tmp, fsync, rename):
 * copy_file_range where the kernel can, read/write otherwise; holes stay holes. src must be a
 * regular file (smelt_open_regular). */
int smelt_copy_file(smelt_ctx *ctx, const char *src, const char *dst);

/* Creates a directory and its parents (mode 0755); an existing directory is fine. */
int smelt_mkdir_p(smelt_ctx *ctx, const char *path);

/* fsyncs a directory so renames in it are durable. */
int smelt_fsync_dir(smelt_ctx *ctx, const char *path);

/* Seconds on a monotonic clock. */
double smelt_now(void);

/* Allocates size bytes aligned to `align` (a power of two >= sizeof(void*)); free with free(). */
void *smelt_aligned_alloc(size_t align, size_t size);

#endif
