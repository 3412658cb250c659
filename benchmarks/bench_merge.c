/* End-to-end merge benchmark: throughput as a ratio to a plain sequential read of the same
 * input files, and the merge's peak RSS as the kernel measured it.
 *
 * usage: bench_merge [--models N] [--size SIZE] [--dtype D] [--max-memory SIZE] [--threads N]
 *                    [--dir DIR] [--keep] [--io pread|uring] [--method M] [--density X]
 *                    [--params 'k: v, ...'] [--shape llama3-70b] [--format gguf]
 *                    [--lora R] [--read-bps SIZE]
 * --method picks the merge method (default linear), or `all`: every method in turn, one table
 * row each. Task-vector methods get weight 1/N and --density (default 0.5); the others get the
 * parameters their row of `methods` below gives them, and --params 'k: v, ...' adds top-level
 * ones. Methods that take two models (slerp, nearswap) merge m0 and m1 only.
 * Bytes read per input byte come from the engine's read ring itself (io_uring and pread count
 * the same way), through the progress callback of an in-process smelt_merge(): the merge runs in
 * a forked child so that its peak RSS is the kernel's figure for the merge alone.
 * --shape llama3-70b generates Llama-3-70B-shaped models with two decoder layers (see
 * llama3_70b below; --size is then ignored).
 * --format gguf generates llama.cpp GGUF models instead (--dtype is then a GGUF type, e.g. f16
 * or q4_k_m) and merges them into a GGUF output.
 * --lora R benchmarks `smelt lora apply` instead of a merge: the base m0 and a rank-R PEFT
 * adapter for it (smelt synth --lora R), timed against a plain read of the base's files.
 * --read-bps SIZE caps every read from the disk holding DIR at SIZE per second (a cgroup's block
 * I/O throttle, root; bench_common.h): the figures of a disk-bound machine.
 * Generates N models (a base and N-1 fine-tunes) with `smelt synth` unless DIR has them (stamp
 * files mark its own), drops them from the page cache (all of it as root, else each file with
 * POSIX_FADV_DONTNEED), times reading them front to back, drops them again, and times the merge.
 * The merge time includes writing and syncing the output, which the plain read does not do.
 * Afterwards the merge output is removed, and DIR too when this run created it and --keep was
 * not given. */
#include "bench_common.h"
#include "smelt.h"

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

static int gguf; /* --format gguf */

static glob_t input_files(const char *dir, int models)
{
    glob_t g = {0};
    for (int m = 0; m < models; m++) {
        char pattern[4096];
        snprintf(pattern, sizeof pattern, "%s/m%d/*.%s", dir, m, gguf ? "gguf" : "safetensors");
        glob(pattern, m ? GLOB_APPEND : 0, NULL, &g);
    }
    return g;
}

/* How the benchmark configures each method: the models it merges and its parameters. */
typedef enum model_role { ROLE_WEIGHTED, ROLE_TASKVEC, ROLE_PLAIN } model_role;
typedef struct method_row {
    const char *name;
    model_role role;   /* WEIGHTED: weight 1/N on every model; TASKVEC: weight and density on
                          the fine-tunes; PLAIN: the models as they are */
    int models;        /* models read (m0..), 0 = all of --models */
    int base;          /* 1: m0 is the base_model */
    int list_base;     /* 1: m0 is also listed under models: */
    const char *params; /* top-level parameters, or NULL */
} method_row;

static const method_row methods[] = {
    {"linear", ROLE_WEIGHTED, 0, 1, 1, NULL},
    {"task_arithmetic", ROLE_TASKVEC, 0, 1, 0, NULL},
    {"ties", ROLE_TASKVEC, 0, 1, 0, NULL},
    {"dare_ties", ROLE_TASKVEC, 0, 1, 0, NULL},
    {"dare_linear", ROLE_TASKVEC, 0, 1, 0, NULL},
    {"breadcrumbs", ROLE_TASKVEC, 0, 1, 0, NULL},
    {"breadcrumbs_ties", ROLE_TASKVEC, 0, 1, 0, NULL},
    {"della", ROLE_TASKVEC, 0, 1, 0, NULL},
    {"della_linear", ROLE_TASKVEC, 0, 1, 0, NULL},
    {"consensus_ta", ROLE_TASKVEC, 0, 1, 0, NULL},
    {"consensus_ties", ROLE_TASKVEC, 0, 1, 0, NULL},
    {"sce", ROLE_PLAIN, 0, 1, 0, "select_topk: 0.5"},
    {"metagpt", ROLE_PLAIN, 0, 1, 0, NULL},
    {"ram", ROLE_PLAIN, 0, 1, 0, NULL},
    {"ramplus_tl", ROLE_PLAIN, 0, 1, 0, NULL},
    {"arcee_fusion", ROLE_PLAIN, 2, 1, 0, NULL},
    {"slerp", ROLE_PLAIN, 2, 1, 1, "t: 0.4"},
    {"nuslerp", ROLE_WEIGHTED, 3, 1, 0, NULL}, /* with a base: exactly two fine-tunes */
    {"multislerp", ROLE_WEIGHTED, 0, 1, 0, NULL},
    {"karcher", ROLE_PLAIN, 0, 0, 1, NULL},
    {"model_stock", ROLE_PLAIN, 0, 1, 0, NULL},
    {"nearswap", ROLE_PLAIN, 2, 1, 0, "t: 0.002"},
};
#define NMETHODS (sizeof methods / sizeof methods[0])

/* Writes the config for one method; returns the number of models it reads (m0..), or -1. */
static int write_config(const char *cfg, const char *dir, const method_row *row, int models,
                        const char *density, const char *params)
{
    FILE *c = fopen(cfg, "w");
    if (!c) { perror(cfg); return -1; }
    int used = row->models ? row->models : models;
    if (used > models)
        used = models;
    fprintf(c, "merge_method: %s\n", row->name);
    if (row->base)
        fprintf(c, "base_model: %s/m0\n", dir);
    if (row->params || params)
        fprintf(c, "parameters: {%s%s%s}\n", row->params ? row->params : "",
                row->params && params ? ", " : "", params ? params : "");
    fprintf(c, "models:\n");
    int listed0 = row->base && !row->list_base; /* m0 only as the base */
    int weighted = used - listed0;
    for (int m = listed0; m < used; m++) {
        fprintf(c, "  - model: %s/m%d\n", dir, m);
        if (row->role == ROLE_WEIGHTED)
            fprintf(c, "    parameters: {weight: %g}\n", 1.0 / weighted);
        else if (row->role == ROLE_TASKVEC)
            fprintf(c, "    parameters: {weight: %g, density: %s}\n", 1.0 / weighted, density);
    }
    return fclose(c) == 0 ? used : -1;
}

/* Llama-3-70B's shapes with two decoder layers: embeddings and lm_head of 128256 x 8192, the
 * attention with 8 key/value heads, the MLP 28672 wide (7.6 GB per model in bf16). */
static const char *const llama3_70b[] = {"--hidden", "8192", "--intermediate", "28672",
                                         "--heads", "64", "--kv-heads", "8", "--vocab", "128256",
                                         "--layers", "2", NULL};

/* Generates m0..m{models-1} and, with lora_rank, the adapter `ad` for m0. */
static int generate(const char *dir, int models, const char *size, const char *dtype,
                    int shape_70b, const char *lora_rank)
{
    char path[4200], seed[32], stamp[4300], dirm[4096];
    for (int m = 0; m < models + (lora_rank != NULL); m++) {
        int adapter = m == models;
        snprintf(dirm, sizeof dirm, adapter ? "%s/ad" : "%s/m%d", dir, m);
        snprintf(path, sizeof path, gguf && !adapter ? "%s/model.gguf" : "%s", dirm);
        snprintf(stamp, sizeof stamp, "%s/.synth-%s-%s%s%s%s", dirm, size, dtype,
                 shape_70b ? "-llama3-70b" : "", gguf ? "-gguf" : "", adapter ? "-lora" : "");
        if (access(stamp, F_OK) == 0)
            continue;
        if (gguf || adapter)
            mkdir(dirm, 0755);
        snprintf(seed, sizeof seed, "%d", m + 1);
        char *synth[40] = {SMELT_CLI_PATH, "synth", path, "--size", (char *)size, "--dtype",
                           (char *)dtype, m ? "--base-seed" : "--seed", m ? "1" : seed};
        int at = 9;
        if (adapter) { /* the adapter fits m0: same size, dtype and shape options, its seed */
            synth[7] = "--seed";
            synth[8] = seed;
            synth[at++] = "--lora";
            synth[at++] = (char *)lora_rank;
        } else if (m) {
            synth[at++] = "--seed";
            synth[at++] = seed;
        }
        for (int k = 0; shape_70b && llama3_70b[k]; k++)
            synth[at++] = (char *)llama3_70b[k];
        synth[at] = NULL;
        fprintf(stderr, "bench_merge: generating %s (%s %s%s%s)\n", path, size, dtype,
                shape_70b ? ", Llama-3-70B shapes" : "", adapter ? ", LoRA adapter" : "");
        double t0 = bench_now();
        if (bench_run(synth, NULL, NULL) != 0) { fprintf(stderr, "bench_merge: synth failed\n"); return 1; }
        fprintf(stderr, "bench_merge: generated in %.1f s\n", bench_now() - t0);
        FILE *s = fopen(stamp, "w"); /* stamp, in the model's directory */
        if (s)
            fclose(s);
    }
    return 0;
}

/* One method: plain read of the files it reads, then the merge, both from a cold cache. */
static int bench_one(const char *dir, const method_row *row, int models, const char *density,
                     const char *params, const char *max_memory, const char *threads,
                     const char *io, int table, int lora)
{
    char cfg[4200], out[4200], rm[4300], adapter[4200];
    snprintf(cfg, sizeof cfg, "%s/%s.yml", dir, row->name);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(adapter, sizeof adapter, "%s/ad", dir);
    int used = 1;
    if (lora)
        snprintf(cfg, sizeof cfg, "%s/m0", dir); /* lora apply: the base in cfg's place */
    else
        used = write_config(cfg, dir, row, models, density, params);
    if (used < 0)
        return 1;
    glob_t files = input_files(dir, used);
    unsigned long long bytes, from_files;
    bench_drop_cache(&files);
    double read_s = bench_plain_read(&files, &bytes);
    bench_drop_cache(&files);
    snprintf(rm, sizeof rm, "rm -rf '%s'", out);
    if (system(rm) != 0)
        return 1;
    struct rusage ru;
    double t0 = bench_now();
    int rc = bench_run_merge(cfg, lora ? adapter : NULL, out, max_memory, threads, io, &ru,
                       &from_files);
    double merge_s = bench_now() - t0;
    if (rc != 0) { fprintf(stderr, "bench_merge: %s: merge failed\n", row->name); return 1; }
    double per_byte = (double)from_files / (double)bytes;
    if (table) {
        printf("%-17s %2d %8.2f %8.2f %6.2f %9.3f %9.1f\n", row->name, used,
               (double)bytes / 1e9 / read_s, (double)bytes / 1e9 / merge_s, read_s / merge_s,
               per_byte, (double)ru.ru_maxrss / 1024.0);
    } else {
        printf("inputs:          %d models (%zu files, %.2f GB)\n", used, files.gl_pathc,
               (double)bytes / 1e9);
        printf("plain read:      %.2f s  %.2f GB/s\n", read_s, (double)bytes / 1e9 / read_s);
        printf("smelt merge:     %.2f s  %.2f GB/s (input bytes), --max-memory %s%s%s\n",
               merge_s, (double)bytes / 1e9 / merge_s, max_memory, io ? ", SMELT_IO=" : "",
               io ? io : "");
        printf("ratio:           %.2f of plain-read throughput\n", read_s / merge_s);
        printf("method:          %s: %.3f bytes read per input byte (the read ring's count)\n",
               row->name, per_byte);
        printf("peak RSS:        %.1f MiB\n", (double)ru.ru_maxrss / 1024.0);
    }
    fflush(stdout);
    globfree(&files);
    return system(rm) != 0;
}

int main(int argc, char **argv)
{
    int models = 3, keep = 0, shape_70b = 0;
    const char *size = "1G", *dtype = "bfloat16", *max_memory = "512Mi", *threads = NULL;
    const char *dir = "/tmp/smelt-bench", *io = NULL, *method = "linear", *density = "0.5", *params = NULL;
    const char *lora_rank = NULL, *read_bps = NULL;
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
        else if (!strcmp(a, "--lora")) lora_rank = v;
        else if (!strcmp(a, "--read-bps")) read_bps = v;
        else if (!strcmp(a, "--format")) {
            if (strcmp(v, "gguf") != 0 && strcmp(v, "safetensors") != 0) {
                fprintf(stderr, "bench_merge: --format takes safetensors or gguf\n");
                return 2;
            }
            gguf = !strcmp(v, "gguf");
        }
        else if (!strcmp(a, "--shape")) {
            if (strcmp(v, "llama3-70b") != 0) {
                fprintf(stderr, "bench_merge: --shape takes llama3-70b\n");
                return 2;
            }
            shape_70b = 1;
        }
        else { fprintf(stderr, "bench_merge: unknown option %s\n", a); return 2; }
        i++;
    }
    if (models < 1 || models > 64) { fprintf(stderr, "bench_merge: --models 1..64\n"); return 2; }
    int all = !strcmp(method, "all");
    const method_row *only = NULL;
    static method_row custom;
    for (size_t m = 0; m < NMETHODS && !all; m++)
        if (!strcmp(methods[m].name, method))
            only = &methods[m];
    if (!all && !only) { /* a method without a row: its models as they are */
        custom = (method_row){method, ROLE_PLAIN, 0, 1, 0, NULL};
        only = &custom;
    }
    /* Only a directory this run created is removed at the end: never a user's models. */
    int created = mkdir(dir, 0755) == 0;
    if (lora_rank && (all || gguf)) {
        fprintf(stderr, "bench_merge: --lora benchmarks lora apply alone, of safetensors\n");
        return 2;
    }
    if (lora_rank)
        models = 1;
    if (generate(dir, models, size, dtype, shape_70b, lora_rank) != 0)
        return 1;
    if (read_bps && bench_throttle_reads(dir, read_bps))
        return 1;
    int rc = 0;
    if (all) {
        printf("%d x %s %s, --max-memory %s%s%s; GB/s of input bytes, caches dropped before each\n",
               models, size, dtype, max_memory, io ? ", SMELT_IO=" : "", io ? io : "");
        printf("%-17s %2s %8s %8s %6s %9s %9s\n", "method", "in", "read", "merge", "ratio",
               "B/in-B", "RSS MiB");
        for (size_t m = 0; m < NMETHODS && rc == 0; m++)
            rc = bench_one(dir, &methods[m], models, density, params, max_memory, threads, io, 1,
                           0);
    } else {
        if (lora_rank) {
            static method_row apply = {"lora apply", ROLE_PLAIN, 1, 0, 0, NULL};
            only = &apply;
        }
        rc = bench_one(dir, only, models, density, params, max_memory, threads, io, 0,
                       lora_rank != NULL);
    }
    if (!keep && created) {
        char rm[4200];
        snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
        if (system(rm) != 0)
            return 1;
    }
    return rc;
}
