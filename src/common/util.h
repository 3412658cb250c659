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

/* Reads a whole (small) file into a malloc'd NUL-terminated buffer. SMELT_E_IO with a message
 * naming the path on failure; files above max_size are refused. */
int smelt_read_file(smelt_ctx *ctx, const char *path, size_t max_size, char **out, size_t *len);

/* Writes a whole file durably: path.smelt-tmp, fsync, rename. */
int smelt_write_file_atomic(smelt_ctx *ctx, const char *path, const void *data, size_t len);

/* Creates a directory and its parents (mode 0755); an existing directory is fine. */
int smelt_mkdir_p(smelt_ctx *ctx, const char *path);

/* fsyncs a directory so renames in it are durable. */
int smelt_fsync_dir(smelt_ctx *ctx, const char *path);

/* Seconds on a monotonic clock. */
double smelt_now(void);

/* Allocates size bytes aligned to `align` (a power of two >= sizeof(void*)); free with free(). */
void *smelt_aligned_alloc(size_t align, size_t size);

#endif
