/* Delta benchmark: `smelt delta extract` and `smelt delta apply` on realistic fine-tunes, with
 * the compression ratio, the throughput of both and their peak RSS as the kernel measured it.
 *
 * usage: bench_delta [--size SIZE] [--dtype D] [--max-memory SIZE] [--threads N] [--level N]
 *                    [--dir DIR] [--keep]
 * Generates with `smelt synth` (unless DIR already has them) a base (seed 1) and two
 * fine-tunes of it:
 *   noise    every weight perturbed by small-magnitude noise (--base-seed 1 --seed 2
 *            --delta 0.01), the worst case for a delta of a full fine-tune;
 *   small    the same with --delta 0.001: closer to what a light fine-tune changes;
 *   partial  only some modules changed: the base with its last shard replaced by the noise
 *            fine-tune's (the two share their layout), as a fine-tune of the last layers and
 *            the head would be; the other shards are bit-identical to the base.
 * For each, runs extract and then apply (each in its own process, so that ru_maxrss is its
 * own), checks that apply rebuilt every file byte for byte (cmp), and prints one row. The
 * inputs are read through the page cache as they are (not dropped): the figures are CPU-bound
 * throughput, which is what zstd and the XOR cost. */
#include "smelt.h"

#include <dirent.h>
#include <errno.h>
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

static int run(char *const argv[], struct rusage *ru)
{
    pid_t pid = fork();
    if (pid == 0) {
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

static int sh(const char *fmt, const char *a, const char *b)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    return system(cmd);
}

static uint64_t dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    uint64_t total = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            total += (uint64_t)st.st_size;
    }
    if (d)
        closedir(d);
    return total;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int main(int argc, char **argv)
{
    const char *size = "512M", *dtype = "bfloat16", *max_memory = NULL, *threads = NULL,
               *level = NULL, *dir = NULL;
    int keep = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--keep"))
            keep = 1;
        else if (v && !strcmp(a, "--size"))
            size = v, i++;
        else if (v && !strcmp(a, "--dtype"))
            dtype = v, i++;
        else if (v && !strcmp(a, "--max-memory"))
            max_memory = v, i++;
        else if (v && (!strcmp(a, "--threads") || !strcmp(a, "-j")))
            threads = v, i++;
        else if (v && !strcmp(a, "--level"))
            level = v, i++;
        else if (v && !strcmp(a, "--dir"))
            dir = v, i++;
        else {
            fprintf(stderr, "usage: bench_delta [--size SIZE] [--dtype D] [--max-memory SIZE] "
                    "[--threads N] [--level N] [--dir DIR] [--keep]\n");
            return 2;
        }
    }
    char tmpl[] = "/tmp/smelt-bench-delta.XXXXXX";
    int created = 0;
    if (!dir) {
        if (!(dir = mkdtemp(tmpl))) {
            perror("mkdtemp");
            return 1;
        }
        created = 1;
    }
    char base[4096], noise[4096], small[4096], partial[4096], delta[4096], out[4096];
    snprintf(base, sizeof base, "%s/base", dir);
    snprintf(noise, sizeof noise, "%s/noise", dir);
    snprintf(partial, sizeof partial, "%s/partial", dir);
    snprintf(small, sizeof small, "%s/small", dir);
    snprintf(delta, sizeof delta, "%s/delta", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    const char *shard = "100M";
    if (!exists(base)) {
        char *gen[] = {SMELT_CLI_PATH, "synth", base, "--size", (char *)size, "--dtype",
                       (char *)dtype, "--seed", "1", "--shard-size", (char *)shard, NULL};
        if (run(gen, NULL) != 0)
            return 1;
    }
    if (!exists(noise)) {
        char *gen[] = {SMELT_CLI_PATH, "synth", noise, "--size", (char *)size, "--dtype",
                       (char *)dtype, "--base-seed", "1", "--seed", "2", "--delta", "0.01",
                       "--shard-size", (char *)shard, NULL};
        if (run(gen, NULL) != 0)
            return 1;
    }
    if (!exists(small)) {
        char *gen[] = {SMELT_CLI_PATH, "synth", small, "--size", (char *)size, "--dtype",
                       (char *)dtype, "--base-seed", "1", "--seed", "2", "--delta", "0.001",
                       "--shard-size", (char *)shard, NULL};
        if (run(gen, NULL) != 0)
            return 1;
    }
    if (!exists(partial)) {
        /* the base, with the noise fine-tune's last shard (same layout, same index) */
        if (sh("cp -r '%s' '%s'", base, partial) ||
            sh("cd '%s' && last=$(ls *.safetensors | tail -1) && cp \"$last\" '%s'/", noise,
               partial))
            return 1;
    }
    printf("bench_delta: --size %s --dtype %s, level %s, threads %s, budget %s (%s)\n", size,
           dtype, level ? level : "3", threads ? threads : "all", max_memory ? max_memory
           : "256Mi", smelt_version());
    printf("%-8s %10s %10s %8s %12s %12s %10s %10s\n", "model", "model MB", "delta MB",
           "ratio", "extract MB/s", "apply MB/s", "ext RSS", "app RSS");
    const char *names[] = {"noise", "small", "partial"}, *models[] = {noise, small, partial};
    int bad = 0;
    for (int m = 0; m < 3; m++) {
        sh("rm -rf '%s' '%s'", delta, out);
        char *xargv[32] = {SMELT_CLI_PATH, "delta", "extract", "--base", base, (char *)models[m],
                           delta, "-q"};
        char *aargv[32] = {SMELT_CLI_PATH, "delta", "apply", base, delta, out, "-q"};
        int xn = 8, an = 7;
        if (max_memory) {
            xargv[xn++] = aargv[an++] = "--max-memory";
            xargv[xn++] = aargv[an++] = (char *)max_memory;
        }
        if (threads) {
            xargv[xn++] = aargv[an++] = "-j";
            xargv[xn++] = aargv[an++] = (char *)threads;
        }
        if (level) {
            xargv[xn++] = "--level";
            xargv[xn++] = (char *)level;
        }
        struct rusage xru, aru;
        double t0 = now();
        int xrc = run(xargv, &xru);
        double t1 = now();
        int arc = xrc == 0 ? run(aargv, &aru) : -1;
        double t2 = now();
        if (xrc || arc) {
            fprintf(stderr, "bench_delta: %s: %s failed\n", names[m], xrc ? "extract" : "apply");
            bad = 1;
            continue;
        }
        char cmp[8192];
        snprintf(cmp, sizeof cmp, "cd '%s' && for f in *; do cmp -s \"$f\" '%s'/\"$f\" || "
                 "exit 1; done", models[m], out);
        if (system(cmp) != 0) {
            fprintf(stderr, "bench_delta: %s: the rebuilt files differ\n", names[m]);
            bad = 1;
        }
        uint64_t mb = dir_bytes(models[m]), db = dir_bytes(delta);
        printf("%-8s %10.1f %10.1f %7.2fx %12.1f %12.1f %7.1f MiB %6.1f MiB\n", names[m],
               (double)mb / 1e6, (double)db / 1e6, (double)mb / (double)db,
               (double)mb / 1e6 / (t1 - t0), (double)mb / 1e6 / (t2 - t1),
               (double)xru.ru_maxrss / 1024.0, (double)aru.ru_maxrss / 1024.0);
        fflush(stdout);
    }
    sh("rm -rf '%s' '%s'", delta, out);
    if (created && !keep)
        sh("rm -rf '%s'%s", dir, "");
    return bad;
}
