#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/types.h>
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

int smelt_open_regular(smelt_ctx *ctx, const char *path, uint64_t max_size, int *fd_out,
                       struct stat *st_out)
{
    /* O_NONBLOCK: opening a FIFO for reading blocks until a writer appears, so it must not
     * block before fstat can tell what the path is. Regular files ignore the flag, but it is
     * cleared anyway so that later reads behave as plain blocking reads. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
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
        return smelt_fail(ctx, SMELT_E_IO, "%s: not a regular file (a %s); smelt reads only "
                          "regular files", path, smelt_file_kind(st.st_mode));
    }
    if (max_size && (uint64_t)st.st_size > max_size) {
        close(fd);
        return smelt_fail(ctx, SMELT_E_IO, "%s: %lld bytes is larger than the %llu (%llu MiB) "
                          "smelt reads into memory for this kind of file", path,
                          (long long)st.st_size, (unsigned long long)max_size,
                          (unsigned long long)(max_size >> 20));
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        int err = errno;
        close(fd);
        return smelt_fail_errno(ctx, err, "%s: cannot open", path);
    }
    *fd_out = fd;
    if (st_out)
        *st_out = st;
    return SMELT_OK;
}

const char *smelt_file_kind(unsigned mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG: return "regular file";
    case S_IFDIR: return "directory";
    case S_IFIFO: return "FIFO";
    case S_IFCHR: return "character device";
    case S_IFBLK: return "block device";
    case S_IFSOCK: return "socket";
    case S_IFLNK: return "symbolic link";
    default: return "special file";
    }
}

int smelt_check_readable(smelt_ctx *ctx, const char *path, uint64_t max_size)
{
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT)
        return SMELT_OK;
    int fd;
    int rc = smelt_open_regular(ctx, path, max_size, &fd, NULL);
    if (rc == SMELT_OK)
        close(fd);
    return rc;
}

int smelt_read_file(smelt_ctx *ctx, const char *path, size_t max_size, char **out, size_t *len)
{
    int fd;
    struct stat st;
    int rc = smelt_open_regular(ctx, path, max_size, &fd, &st);
    if (rc != SMELT_OK)
        return rc;
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

static int write_atomic(smelt_ctx *ctx, const char *path, const char *tmp, const void *data,
                        size_t len)
{
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

int smelt_write_file_atomic(smelt_ctx *ctx, const char *path, const void *data, size_t len)
{
    /* No fixed-size buffer: a long path gets the kernel's own reason (ENAMETOOLONG). */
    char *tmp = malloc(strlen(path) + sizeof ".smelt-tmp");
    if (!tmp)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    strcpy(tmp, path);
    strcat(tmp, ".smelt-tmp");
    int rc = write_atomic(ctx, path, tmp, data, len);
    free(tmp);
    return rc;
}

/* Copies [off, off + len) of in to the same offsets of out: copy_file_range (in-kernel, a
 * reflink where the filesystem can), or read/write through a small buffer where the kernel
 * refuses (other filesystems, old kernels, seccomp). Returns 0 or an errno; *which says which
 * side failed (0 reading, 1 writing). */
static int copy_range(int in, int out, off_t off, off_t len, int *use_crf, int *which)
{
    while (len > 0 && *use_crf) {
        off_t ioff = off, ooff = off;
        size_t want = len > (off_t)1 << 30 ? (size_t)1 << 30 : (size_t)len;
        ssize_t n = copy_file_range(in, &ioff, out, &ooff, want, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL ||
                      errno == EOPNOTSUPP || errno == EPERM || errno == ETXTBSY)) {
            *use_crf = 0;
            break;
        }
        if (n < 0) {
            *which = 1;
            return errno;
        }
        if (n == 0) { /* the source shrank under us */
            *which = 0;
            return EIO;
        }
        off += n;
        len -= n;
    }
    char buf[1 << 16];
    while (len > 0) {
        ssize_t n = pread(in, buf, len > (off_t)sizeof buf ? sizeof buf : (size_t)len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *which = 0;
            return n < 0 ? errno : EIO;
        }
        for (ssize_t done = 0; done < n;) {
            ssize_t w = pwrite(out, buf + done, (size_t)(n - done), off + done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                *which = 1;
                return w < 0 ? errno : EIO;
            }
            done += w;
        }
        off += n;
        len -= n;
    }
    return 0;
}

int smelt_copy_file(smelt_ctx *ctx, const char *src, const char *dst)
{
    int in;
    struct stat st;
    int rc = smelt_open_regular(ctx, src, 0, &in, &st);
    if (rc != SMELT_OK)
        return rc;
    char *tmp = malloc(strlen(dst) + sizeof ".smelt-tmp");
    if (!tmp) {
        close(in);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    strcpy(tmp, dst);
    strcat(tmp, ".smelt-tmp");
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        rc = smelt_fail_errno(ctx, errno, "%s: cannot create", tmp);
        close(in);
        free(tmp);
        return rc;
    }
    /* Only the data extents are copied and the size set last, so a sparse file stays sparse
     * (SEEK_DATA fails with EINVAL where unsupported: then the whole file is one extent). */
    int err = 0, which = 0, use_crf = 1;
    off_t size = st.st_size, at = 0;
    while (at < size && !err) {
        off_t data = lseek(in, at, SEEK_DATA);
        if (data < 0 && errno == ENXIO)
            break; /* a hole up to the end */
        if (data < 0)
            data = at;
        off_t hole = lseek(in, data, SEEK_HOLE);
        if (hole < 0 || hole > size)
            hole = size;
        err = copy_range(in, out, data, hole - data, &use_crf, &which);
        at = hole;
    }
    if (!err && ftruncate(out, size) != 0) {
        err = errno;
        which = 1;
    }
    if (!err && fsync(out) != 0) {
        err = errno;
        which = 1;
    }
    close(in);
    if (close(out) != 0 && !err) {
        err = errno;
        which = 1;
    }
    if (!err && rename(tmp, dst) != 0) {
        rc = smelt_fail_errno(ctx, errno, "%s: cannot rename to %s", tmp, dst);
        unlink(tmp);
        free(tmp);
        return rc;
    }
    if (err) {
        rc = which ? smelt_fail_errno(ctx, err, "%s: cannot write", tmp)
                   : smelt_fail_errno(ctx, err, "%s: cannot read", src);
        unlink(tmp);
    }
    free(tmp);
    return rc;
}

int smelt_mkdir_p(smelt_ctx *ctx, const char *path)
{
    size_t len = strlen(path);
    if (len == 0)
        return smelt_fail(ctx, SMELT_E_ARG, "an empty output directory path");
    char *buf = strdup(path); /* no fixed size: a long path gets the kernel's reason */
    if (!buf)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            int rc = smelt_fail_errno(ctx, errno, "%s: cannot create directory", buf);
            free(buf);
            return rc;
        }
        buf[i] = saved;
    }
    free(buf);
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

int smelt_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}
