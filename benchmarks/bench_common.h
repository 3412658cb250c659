/* What the end-to-end benchmarks share (header-only: each bench_*.c is one program): a clock,
 * running the CLI or an in-process merge in a child (so that ru_maxrss is its own), dropping
 * input files from the page cache, and a plain sequential read to time merges against. */
#ifndef SMELT_BENCH_COMMON_H
#define SMELT_BENCH_COMMON_H

#include "smelt.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Runs argv (argv[0] a path) in a child, with SMELT_IO=io when io is not NULL; *ru (may be
 * NULL) gets its resource usage. Returns its exit status, -1 when it did not exit. */
static inline int bench_run(char *const argv[], struct rusage *ru, const char *io)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (io)
            setenv("SMELT_IO", io, 1);
        execv(argv[0], argv);
        perror(argv[0]);
        _exit(127);
    }
    int status;
    struct rusage local;
    if (wait4(pid, &status, 0, ru ? ru : &local) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Writes text to a cgroup file; returns 0 or an errno. */
static inline int bench_cgroup_write(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    ssize_t n = write(fd, text, strlen(text));
    int err = n < 0 ? errno : 0;
    close(fd);
    return err;
}

/* Creates cgroup directory `group` (it may exist), writes `limit` to its file `control` and
 * moves this process into it; returns 0 or an errno. */
static inline int bench_cgroup_join(const char *group, const char *control, const char *limit)
{
    if (mkdir(group, 0755) != 0 && errno != EEXIST)
        return errno;
    char path[512], pid[32];
    snprintf(path, sizeof path, "%s/%s", group, control);
    int err = bench_cgroup_write(path, limit);
    snprintf(path, sizeof path, "%s/cgroup.procs", group);
    snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    return err ? err : bench_cgroup_write(path, pid);
}

/* --read-bps: caps this process's reads (the plain read and every merge, which run in it or in
 * its children) from the block device holding `dir` at bps bytes per second, as a slower disk
 * would: the kernel's block I/O throttle, in a cgroup of its own (v2 io.max where the io
 * controller is on, v1 blkio.throttle.read_bps_device otherwise). Needs root. A merge's figures
 * then say what it does where the disk, not the CPU, is the bound (a SATA SSD reads about
 * 500 MB/s, a disk 200 MB/s). Returns 0, or 1 with a message. */
static inline int bench_throttle_reads(const char *dir, const char *bps_text)
{
    uint64_t bps;
    smelt_ctx *ctx = smelt_ctx_new();
    int bad = !ctx || smelt_parse_size(ctx, bps_text, &bps) != SMELT_OK;
    if (bad)
        fprintf(stderr, "--read-bps %s: %s\n", bps_text, ctx ? smelt_errmsg(ctx) : "out of memory");
    smelt_ctx_free(ctx);
    if (bad)
        return 1;
    struct stat st;
    if (stat(dir, &st) != 0) {
        perror(dir);
        return 1;
    }
    unsigned maj = major(st.st_dev), min = minor(st.st_dev);
    char path[256];
    /* a partition is throttled through its disk */
    snprintf(path, sizeof path, "/sys/dev/block/%u:%u/partition", maj, min);
    if (access(path, F_OK) == 0) {
        char link[256], target[512];
        snprintf(link, sizeof link, "/sys/dev/block/%u:%u/..", maj, min);
        snprintf(target, sizeof target, "%s/dev", link);
        FILE *f = fopen(target, "r");
        if (!f || fscanf(f, "%u:%u", &maj, &min) != 2) {
            fprintf(stderr, "--read-bps: cannot find the disk of device %u:%u\n", maj, min);
            if (f)
                fclose(f);
            return 1;
        }
        fclose(f);
    }
    char limit[128];
    int err;
    if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0) {
        (void)bench_cgroup_write("/sys/fs/cgroup/cgroup.subtree_control", "+io");
        snprintf(limit, sizeof limit, "%u:%u rbps=%llu\n", maj, min, (unsigned long long)bps);
        err = bench_cgroup_join("/sys/fs/cgroup/smelt-bench", "io.max", limit);
    } else {
        snprintf(limit, sizeof limit, "%u:%u %llu\n", maj, min, (unsigned long long)bps);
        err = bench_cgroup_join("/sys/fs/cgroup/blkio/smelt-bench",
                                "blkio.throttle.read_bps_device", limit);
    }
    if (err) {
        fprintf(stderr, "--read-bps: cannot throttle reads of device %u:%u with a cgroup (%s; "
                "needs root and the io or blkio controller)\n", maj, min, strerror(err));
        return 1;
    }
    printf("reads from device %u:%u throttled to %.0f MB/s (cgroup)\n", maj, min, bps / 1e6);
    return 0;
}

/* The last progress report of the in-process merge: its bytes_from_files is the ring's count. */
static smelt_progress bench_last_progress;

static inline void bench_keep_progress(void *user, const smelt_progress *p)
{
    (void)user;
    bench_last_progress = *p;
}

/* Runs smelt_merge(cfg, out) in a forked child, or with `adapter` smelt_lora_apply(cfg as the
 * base, adapter, out); *from_files gets the bytes its read ring read and *ru the child's
 * resource usage (peak RSS). Returns the child's exit status. */
static inline int bench_run_merge(const char *cfg, const char *adapter, const char *out,
                     const char *max_memory, const char *threads, const char *io,
                     struct rusage *ru, unsigned long long *from_files)
{
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        if (io)
            setenv("SMELT_IO", io, 1);
        smelt_ctx *ctx = smelt_ctx_new();
        smelt_merge_options opts;
        smelt_merge_options_default(&opts);
        if (smelt_parse_size(ctx, max_memory, &opts.max_memory) != SMELT_OK) {
            fprintf(stderr, "bench: %s\n", smelt_errmsg(ctx));
            _exit(2);
        }
        if (threads)
            opts.threads = atoi(threads);
        opts.progress = bench_keep_progress;
        int rc = adapter ? smelt_lora_apply(ctx, cfg, adapter, out, &opts)
                         : smelt_merge(ctx, cfg, out, &opts);
        if (rc != SMELT_OK)
            fprintf(stderr, "bench: %s\n", smelt_errmsg(ctx));
        unsigned long long got = bench_last_progress.bytes_from_files;
        if (write(pipefd[1], &got, sizeof got) != (ssize_t)sizeof got)
            _exit(3);
        _exit(rc == SMELT_OK ? 0 : 1);
    }
    close(pipefd[1]);
    *from_files = 0;
    if (read(pipefd[0], from_files, sizeof *from_files) != (ssize_t)sizeof *from_files)
        *from_files = 0;
    close(pipefd[0]);
    int status;
    if (pid < 0 || wait4(pid, &status, 0, ru) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Drops the files from the page cache: all of it as root, else each file with
 * POSIX_FADV_DONTNEED (which drops its clean pages). */
static inline void bench_drop_cache(const glob_t *files)
{
    sync();
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    if (f) {
        fputs("3\n", f);
        if (fclose(f) == 0)
            return;
    }
    for (size_t i = 0; i < files->gl_pathc; i++) {
        int fd = open(files->gl_pathv[i], O_RDONLY);
        if (fd >= 0) {
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
}

/* Reads the files front to back in 8 MiB reads; *bytes gets how many. Returns the seconds. */
static inline double bench_plain_read(const glob_t *files, unsigned long long *bytes)
{
    size_t len = 8u << 20;
    char *buf = malloc(len);
    double start = bench_now();
    *bytes = 0;
    for (size_t i = 0; i < files->gl_pathc; i++) {
        int fd = open(files->gl_pathv[i], O_RDONLY);
        ssize_t n;
        while (fd >= 0 && (n = read(fd, buf, len)) > 0)
            *bytes += (unsigned long long)n;
        if (fd >= 0)
            close(fd);
    }
    free(buf);
    return bench_now() - start;
}

#endif
