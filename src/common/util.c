#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

char *smelt_strdup(const char *s) { return s ? strdup(s) : NULL; }

char *smelt_path_join(const char *dir, const char *name)
{
    if (!dir || !*dir)
        return strdup(name);
    size_t dl = strlen(dir), nl = strlen(name);
    char *p = malloc(dl + nl + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, dl);
    size_t at = dl;
    if (dir[dl - 1] != '/')
        p[at++] = '/';
    memcpy(p + at, name, nl + 1);
    return p;
}

int smelt_read_file(smelt_ctx *ctx, const char *path, size_t max_size, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return smelt_fail_errno(ctx, errno, "%s: cannot open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return smelt_fail_errno(ctx, err, "%s: cannot stat", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return smelt_fail(ctx, SMELT_E_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_size) {
        close(fd);
        return smelt_fail(ctx, SMELT_E_IO, "%s: %lld bytes is larger than the %zu allowed", path,
                          (long long)st.st_size, max_size);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        close(fd);
        return smelt_fail(ctx, SMELT_E_NOMEM, "%s: out of memory", path);
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int err = n < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return smelt_fail_errno(ctx, err, "%s: cannot read", path);
        }
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    *out = buf;
    if (len)
        *len = got;
    return SMELT_OK;
}

int smelt_write_file_atomic(smelt_ctx *ctx, const char *path, const void *data, size_t len)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.smelt-tmp", path) >= (int)sizeof tmp)
        return smelt_fail(ctx, SMELT_E_ARG, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return smelt_fail_errno(ctx, errno, "%s: cannot create", tmp);
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno;
            close(fd);
            unlink(tmp);
            return smelt_fail_errno(ctx, err, "%s: cannot write", tmp);
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int err = errno;
        unlink(tmp);
        return smelt_fail_errno(ctx, err, "%s: cannot flush", tmp);
    }
    if (rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return smelt_fail_errno(ctx, err, "%s: cannot rename to %s", tmp, path);
    }
    return SMELT_OK;
}

int smelt_mkdir_p(smelt_ctx *ctx, const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return smelt_fail(ctx, SMELT_E_ARG, "'%s': bad directory path", path);
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return smelt_fail_errno(ctx, errno, "%s: cannot create directory", buf);
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return smelt_fail(ctx, SMELT_E_IO, "%s: exists and is not a directory", path);
    return SMELT_OK;
}

int smelt_fsync_dir(smelt_ctx *ctx, const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return smelt_fail_errno(ctx, errno, "%s: cannot open directory", path);
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0 && err != EINVAL) /* some filesystems cannot sync directories */
        return smelt_fail_errno(ctx, err, "%s: cannot sync directory", path);
    return SMELT_OK;
}

double smelt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void *smelt_aligned_alloc(size_t align, size_t size)
{
    void *p = NULL;
    if (size == 0)
        size = align;
    return posix_memalign(&p, align, size) == 0 ? p : NULL;
}
