/* End-to-end merge benchmark: throughput as a ratio to a plain sequential read of the same
 * input files, and the merge's peak RSS as the kernel measured it.
 *
 * usage: bench_merge [--models N] [--size SIZE] [--dtype D] [--max-memory SIZE] [--threads N]
 *                    [--dir DIR] [--keep] [--io pread|uring] [--method M] [--density X]
 *                    [--params 'k: v, ...']
 * --method picks the merge method (default linear; task-vector methods get weight 1/N and
 * --density, default 0.5; other methods take the fine-tunes as they are, and --params 'k: v, ...'
 * adds top-level parameters, e.g. --method slerp --models 2 --params 't: 0.4').
 * With --io pread it also prints the bytes the merge read per input byte (statistics passes
 * re-read a tensor), from the kernel's rchar of the merge process, which does not count
 * io_uring reads.
 * Generates N models (a base and N-1 fine-tunes) with `smelt synth` unless DIR has them (stamp
 * files mark its own), drops them from the page cache (all of it as root, else each file with
 * POSIX_FADV_DONTNEED), times reading them front to back, drops them again, and times the merge.
 * The merge time includes writing and syncing the output, which the plain read does not do.
 * Afterwards the merge output is removed, and DIR too when this run created it and --keep was
 * not given. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SMELT_CLI_PATH
#define SMELT_CLI_PATH "smelt"
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static unsigned long long last_rchar; /* bytes the last run() child read through syscalls */

static int run(char *const argv[], struct rusage *ru, const char *io)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (io)
            setenv("SMELT_IO", io, 1);
        execv(argv[0], argv);
        perror(argv[0]);
        _exit(127);
    }
    /* Read the finished child's I/O accounting before it is reaped. */
    siginfo_t info;
    last_rchar = 0;
    if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) == 0) {
        char io_path[64], line[128];
        snprintf(io_path, sizeof io_path, "/proc/%d/io", (int)pid);
        FILE *f = fopen(io_path, "r");
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, "rchar: %llu", &last_rchar) == 1)
                break;
        if (f)
            fclose(f);
    }
    int status;
    struct rusage local;
    if (wait4(pid, &status, 0, ru ? ru : &local) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static glob_t input_files(const char *dir, int models)
{
    glob_t g = {0};
    for (int m = 0; m < models; m++) {
        char pattern[4096];
        snprintf(pattern, sizeof pattern, "%s/m%d/*.safetensors", dir, m);
        glob(pattern, m ? GLOB_APPEND : 0, NULL, &g);
    }
    return g;
}

static void drop_cache(const glob_t *files, const char *out_dir)
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
    (void)out_dir;
}

static double plain_read(const glob_t *files, unsigned long long *bytes)
{
    size_t len = 8u << 20;
    char *buf = malloc(len);
    double start = now();
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
    return now() - start;
}

int main(int argc, char **argv)
{
    int models = 3, keep = 0;
    const char *size = "1G", *dtype = "bfloat16", *max_memory = "512Mi", *threads = NULL;
    const char *dir = "/tmp/smelt-bench", *io = NULL, *method = "linear", *density = "0.5", *params = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--keep")) { keep = 1; continue; }
        if (!v) { fprintf(stderr, "bench_merge: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--models")) models = atoi(v);
        else if (!strcmp(a, "--size")) size = v;
        else if (!strcmp(a, "--dtype")) dtype = v;
        else if (!strcmp(a, "--max-memory")) max_memory = v;
        else if (!strcmp(a, "--threads")) threads = v;
        else if (!strcmp(a, "--dir")) dir = v;
        else if (!strcmp(a, "--io")) io = v;
        else if (!strcmp(a, "--method")) method = v;
        else if (!strcmp(a, "--density")) density = v;
        else if (!strcmp(a, "--params")) params = v;
        else { fprintf(stderr, "bench_merge: unknown option %s\n", a); return 2; }
        i++;
    }
    if (models < 1 || models > 64) { fprintf(stderr, "bench_merge: --models 1..64\n"); return 2; }
    char path[4096], cfg[4096], out[4096], seed[32];
    /* Only a directory this run created is removed at the end: never a user's models. */
    int created = mkdir(dir, 0755) == 0;
    snprintf(cfg, sizeof cfg, "%s/%s.yml", dir, method);
    FILE *c = fopen(cfg, "w");
    if (!c) { perror(cfg); return 1; }
    int linear = !strcmp(method, "linear");
    static const char *const task_vector_methods[] = {
        "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties",
        "della", "della_linear", "consensus_ta", "consensus_ties", NULL};
    int weighted = 0;
    for (int i = 0; task_vector_methods[i]; i++)
        weighted |= !strcmp(method, task_vector_methods[i]);
    fprintf(c, "merge_method: %s\nbase_model: %s/m0\n", method, dir);
    if (params)
        fprintf(c, "parameters: {%s}\n", params);
    fprintf(c, "models:\n");
    for (int m = 0; m < models; m++) {
        snprintf(path, sizeof path, "%s/m%d", dir, m);
        if (linear)
            fprintf(c, "  - model: %s\n    parameters: {weight: %g}\n", path, 1.0 / models);
        else if (m && weighted) /* the base is m0; fine-tunes carry the task-vector parameters */
            fprintf(c, "  - model: %s\n    parameters: {weight: %g, density: %s}\n", path,
                    1.0 / (models - 1), density);
        else if (m)
            fprintf(c, "  - model: %s\n", path);
        char stamp[4200];
        snprintf(stamp, sizeof stamp, "%s/.synth-%s-%s", path, size, dtype);
        if (access(stamp, F_OK) == 0)
            continue;
        snprintf(seed, sizeof seed, "%d", m + 1);
        char *synth[] = {SMELT_CLI_PATH, "synth", path, "--size", (char *)size, "--dtype",
                         (char *)dtype, m ? "--base-seed" : "--seed", m ? "1" : seed,
                         m ? "--seed" : NULL, seed, NULL};
        fprintf(stderr, "bench_merge: generating %s (%s %s)\n", path, size, dtype);
        double t0 = now();
        if (run(synth, NULL, NULL) != 0) { fprintf(stderr, "bench_merge: synth failed\n"); return 1; }
        fprintf(stderr, "bench_merge: generated in %.1f s\n", now() - t0);
        FILE *s = fopen(stamp, "w");
        if (s)
            fclose(s);
    }
    fclose(c);
    glob_t files = input_files(dir, models);
    snprintf(out, sizeof out, "%s/out", dir);

    unsigned long long bytes;
    drop_cache(&files, out);
    double read_s = plain_read(&files, &bytes);
    drop_cache(&files, out);
    char rm[4200];
    snprintf(rm, sizeof rm, "rm -rf '%s'", out);
    if (system(rm) != 0)
        return 1;
    char *merge[16] = {SMELT_CLI_PATH, "merge", cfg, out, "-q", "--max-memory", (char *)max_memory};
    int n = 7;
    if (threads) {
        merge[n++] = "--threads";
        merge[n++] = (char *)threads;
    }
    merge[n] = NULL;
    struct rusage ru;
    double t0 = now();
    int rc = run(merge, &ru, io);
    double merge_s = now() - t0;
    if (rc != 0) { fprintf(stderr, "bench_merge: merge failed\n"); return 1; }
    printf("inputs:          %d x %s %s (%zu files, %.2f GB)\n", models, size, dtype,
           files.gl_pathc, (double)bytes / 1e9);
    printf("plain read:      %.2f s  %.2f GB/s\n", read_s, (double)bytes / 1e9 / read_s);
    printf("smelt merge:     %.2f s  %.2f GB/s (input bytes), --max-memory %s%s%s\n", merge_s,
           (double)bytes / 1e9 / merge_s, max_memory, io ? ", SMELT_IO=" : "", io ? io : "");
    printf("ratio:           %.2f of plain-read throughput\n", read_s / merge_s);
    /* /proc's rchar counts read syscalls only: with io_uring it would say 0, so say nothing. */
    if (io && !strcmp(io, "pread"))
        printf("method:          %s: %.2f bytes read per input byte\n", method,
               (double)last_rchar / (double)bytes);
    else
        printf("method:          %s (bytes read per input byte: run with --io pread)\n", method);
    printf("peak RSS:        %.1f MiB\n", (double)ru.ru_maxrss / 1024.0);
    if (!keep && created) {
        snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
        if (system(rm) != 0)
            return 1;
    } else if (system(rm) != 0) {
        return 1;
    }
    globfree(&files);
    return 0;
}
