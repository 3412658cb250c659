/* Delta benchmark: `smelt delta extract` and `smelt delta apply` on realistic fine-tunes, with
 * the compression ratio, the throughput of both and their peak RSS as the kernel measured it;
 * with --merge, a merge of BASE+DELTA inputs against a plain read and the raw fine-tunes' merge.
 *
 * usage: bench_delta [--size SIZE] [--dtype D] [--max-memory SIZE] [--threads N] [--level N]
 *                    [--dir DIR] [--keep] [--merge [--delta X]] [--read-bps SIZE]
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
 * throughput, which is what zstd and the XOR cost.
 * --merge: a base and three fine-tunes of it (seeds 2..4, --delta X, default 0.001) and their
 * deltas (made once, kept in DIR); from a cold cache each time (bench_common.h), times a plain
 * read of the base's and the three fine-tunes' files, a linear merge of the three fine-tunes
 * and the same merge of the three BASE+DELTA inputs (in-process, in a child: peak RSS and the
 * bytes the engine read, ring and delta frames), checks both merges wrote the same bytes, and
 * prints the delta merge's time as a ratio to the plain read (> 1: faster than reading the
 * fine-tunes) and its bytes read per input byte (per byte of the three fine-tunes' files).
 * --read-bps SIZE: every read from the disk holding DIR capped at SIZE per second (a cgroup's
 * block I/O throttle; root), to measure where the disk is the bound (bench_common.h). */
#include "bench_common.h"
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

/* Generates the model at `path` unless it exists: synth of --size/--dtype with extra args. */
static int synth(const char *path, const char *size, const char *dtype, const char *seed,
                 const char *delta)
{
    if (exists(path))
        return 0;
    char *gen[] = {SMELT_CLI_PATH, "synth", (char *)path, "--size", (char *)size, "--dtype",
                   (char *)dtype, "--seed", (char *)seed, "--shard-size", "100M",
                   delta ? "--base-seed" : NULL, "1", "--delta", (char *)delta, NULL};
    return bench_run(gen, NULL, NULL);
}

static int write_linear(const char *cfg, const char *const models[3])
{
    FILE *f = fopen(cfg, "w");
    if (!f)
        return -1;
    fprintf(f, "merge_method: linear\nmodels:\n");
    for (int m = 0; m < 3; m++)
        fprintf(f, "  - model: %s\n    parameters: {weight: 0.333333}\n", models[m]);
    return fclose(f);
}

/* One merge from a cold cache: seconds, bytes the engine read, peak RSS in MiB. */
static int timed_merge(const glob_t *cold, const char *cfg, const char *out,
                       const char *max_memory, const char *threads, double *seconds,
                       unsigned long long *from_files, double *rss_mib)
{
    sh("rm -rf '%s'%s", out, "");
    bench_drop_cache(cold);
    struct rusage ru;
    double t0 = bench_now();
    int rc = bench_run_merge(cfg, NULL, out, max_memory, threads, NULL, &ru, from_files);
    *seconds = bench_now() - t0;
    *rss_mib = (double)ru.ru_maxrss / 1024.0;
    return rc;
}

static int bench_merge_deltas(const char *dir, const char *size, const char *dtype,
                              const char *delta, const char *max_memory, const char *threads)
{
    char base[4096], ft[3][4096], dd[3][4096], refs[3][8300], cfg[4200], out[4200], pat[4200];
    snprintf(base, sizeof base, "%s/base", dir);
    if (synth(base, size, dtype, "1", NULL))
        return 1;
    for (int m = 0; m < 3; m++) {
        char seed[8];
        snprintf(seed, sizeof seed, "%d", m + 2);
        snprintf(ft[m], sizeof ft[m], "%s/ft%d", dir, m + 2);
        snprintf(dd[m], sizeof dd[m], "%s/d%d", dir, m + 2);
        snprintf(refs[m], sizeof refs[m], "%s+%s", base, dd[m]);
        if (synth(ft[m], size, dtype, seed, delta))
            return 1;
        char *x[] = {SMELT_CLI_PATH, "delta", "extract", "--base", base, ft[m], dd[m], "-q",
                     NULL};
        if (!exists(dd[m]) && bench_run(x, NULL, NULL) != 0)
            return 1;
    }
    glob_t raw = {0}, all = {0};
    snprintf(pat, sizeof pat, "%s/base/*.safetensors", dir);
    glob(pat, 0, NULL, &raw);
    snprintf(pat, sizeof pat, "%s/ft*/*.safetensors", dir);
    glob(pat, GLOB_APPEND, NULL, &raw);
    snprintf(pat, sizeof pat, "%s/base/*.safetensors", dir);
    glob(pat, 0, NULL, &all);
    snprintf(pat, sizeof pat, "%s/ft*/*.safetensors", dir);
    glob(pat, GLOB_APPEND, NULL, &all);
    snprintf(pat, sizeof pat, "%s/d*/delta.safetensors", dir);
    glob(pat, GLOB_APPEND, NULL, &all);
    uint64_t ft_bytes = 0, delta_bytes = 0;
    for (int m = 0; m < 3; m++) {
        ft_bytes += dir_bytes(ft[m]);
        delta_bytes += dir_bytes(dd[m]);
    }
    unsigned long long read_bytes;
    bench_drop_cache(&all);
    double read_s = bench_plain_read(&raw, &read_bytes);
    const char *raw_models[3] = {ft[0], ft[1], ft[2]}, *delta_models[3] = {refs[0], refs[1],
                                                                              refs[2]};
    double raw_s, delta_s, raw_rss, delta_rss;
    unsigned long long raw_read, delta_read;
    char raw_out[4200], cmp[9000];
    snprintf(cfg, sizeof cfg, "%s/raw.yml", dir);
    snprintf(raw_out, sizeof raw_out, "%s/out-raw", dir);
    if (write_linear(cfg, raw_models) ||
        timed_merge(&all, cfg, raw_out, max_memory, threads, &raw_s, &raw_read, &raw_rss))
        return 1;
    snprintf(cfg, sizeof cfg, "%s/delta.yml", dir);
    snprintf(out, sizeof out, "%s/out-delta", dir);
    if (write_linear(cfg, delta_models) ||
        timed_merge(&all, cfg, out, max_memory, threads, &delta_s, &delta_read, &delta_rss))
        return 1;
    snprintf(cmp, sizeof cmp, "cd '%s' && for f in *.safetensors; do cmp -s \"$f\" '%s'/\"$f\" "
             "|| exit 1; done", raw_out, out);
    int same = system(cmp) == 0;
    printf("bench_delta --merge: 3 fine-tunes of --size %s --dtype %s, --delta %s, linear, "
           "budget %s, threads %s (%s)\n", size, dtype, delta, max_memory,
           threads ? threads : "all", smelt_version());
    printf("fine-tunes:   3 x %.1f MB; deltas %.1f MB in all (%.2fx smaller)\n",
           (double)ft_bytes / 3e6, (double)delta_bytes / 1e6, (double)ft_bytes / (double)delta_bytes);
    printf("plain read:   %.2f s  base + 3 fine-tunes, %.1f MB, %.2f GB/s\n", read_s,
           (double)read_bytes / 1e6, (double)read_bytes / 1e9 / read_s);
    printf("raw merge:    %.2f s  read %.3f per input byte, peak RSS %.1f MiB\n", raw_s,
           (double)raw_read / (double)ft_bytes, raw_rss);
    printf("delta merge:  %.2f s  read %.3f per input byte (%.1f MB), peak RSS %.1f MiB\n",
           delta_s, (double)delta_read / (double)ft_bytes, (double)delta_read / 1e6, delta_rss);
    printf("ratio:        %.2f (plain read / delta merge; > 1: the delta merge is faster)\n",
           read_s / delta_s);
    printf("outputs:      %s\n", same ? "identical" : "DIFFER");
    sh("rm -rf '%s' '%s'", raw_out, out);
    globfree(&raw);
    globfree(&all);
    return same ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *size = "512M", *dtype = "bfloat16", *max_memory = NULL, *threads = NULL,
               *level = NULL, *dir = NULL, *read_bps = NULL;
    const char *delta_arg = "0.001";
    int keep = 0, merge = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--keep"))
            keep = 1;
        else if (!strcmp(a, "--merge"))
            merge = 1;
        else if (v && !strcmp(a, "--delta"))
            delta_arg = v, i++;
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
        else if (v && !strcmp(a, "--read-bps"))
            read_bps = v, i++;
        else {
            fprintf(stderr, "usage: bench_delta [--size SIZE] [--dtype D] [--max-memory SIZE] "
                    "[--threads N] [--level N] [--dir DIR] [--keep] [--merge [--delta X]] "
                    "[--read-bps SIZE]\n");
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
    if (read_bps && bench_throttle_reads(dir, read_bps))
        return 1;
    if (merge) {
        int rc = bench_merge_deltas(dir, size, dtype, delta_arg,
                                    max_memory ? max_memory : "512Mi", threads);
        if (created && !keep)
            sh("rm -rf '%s'%s", dir, "");
        return rc;
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
        if (bench_run(gen, NULL, NULL) != 0)
            return 1;
    }
    if (!exists(noise)) {
        char *gen[] = {SMELT_CLI_PATH, "synth", noise, "--size", (char *)size, "--dtype",
                       (char *)dtype, "--base-seed", "1", "--seed", "2", "--delta", "0.01",
                       "--shard-size", (char *)shard, NULL};
        if (bench_run(gen, NULL, NULL) != 0)
            return 1;
    }
    if (!exists(small)) {
        char *gen[] = {SMELT_CLI_PATH, "synth", small, "--size", (char *)size, "--dtype",
                       (char *)dtype, "--base-seed", "1", "--seed", "2", "--delta", "0.001",
                       "--shard-size", (char *)shard, NULL};
        if (bench_run(gen, NULL, NULL) != 0)
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
        double t0 = bench_now();
        int xrc = bench_run(xargv, &xru, NULL);
        double t1 = bench_now();
        int arc = xrc == 0 ? bench_run(aargv, &aru, NULL) : -1;
        double t2 = bench_now();
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
