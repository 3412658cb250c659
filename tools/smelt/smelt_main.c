/* The smelt command-line tool. It sees only the public API in smelt.h. */
#include "smelt.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: smelt <command> [options]\n"
    "\n"
    "commands:\n"
    "  merge CONFIG.yml OUT_DIR   merge the models a mergekit-style config describes\n"
    "  merge --batch FILE         several merges over the same inputs in one read (below)\n"
    "  plan CONFIG.yml            print what merge would do (tensors, sources, parameters,\n"
    "                             layout, bytes, memory) without reading tensor data\n"
    "  lora apply BASE ADAPTER OUT_DIR\n"
    "                             merge a PEFT LoRA adapter into its base in one streaming pass\n"
    "                             (PEFT's merge_and_unload; takes the merge options)\n"
    "  verify DIR                 check a model directory against its smelt-manifest.json\n"
    "                             (sizes, every tensor's hash) and its safetensors structure\n"
    "  inspect MODEL              the tensors of a model: names, dtypes, shapes, bytes, files\n"
    "  diff A B                   per-tensor cosine, relative L2 and max |a-b| of two models\n"
    "  delta extract --base BASE MODEL OUT\n"
    "                             write OUT/delta.safetensors: MODEL's files as a lossless,\n"
    "                             zstd-compressed XOR delta against BASE\n"
    "  delta apply BASE DELTA OUT_DIR\n"
    "                             rebuild the model's files byte for byte from BASE and DELTA\n"
    "  synth OUT --size SIZE      write a synthetic Llama-shaped model (for tests and demos):\n"
    "                             a safetensors directory, or a llama.cpp file OUT.gguf\n"
    "  version                    print the version and the SIMD level in use\n"
    "  help                       print this help\n"
    "\n"
    "merge and plan options:\n"
    "  --max-memory SIZE      the engine's whole buffer budget (default 512Mi)\n"
    "  --out-shard-size SIZE  the largest output shard (default 5G; 5B also means 5e9, as in\n"
    "                         mergekit); GGUF output: a gguf-split set, only when given\n"
    "  -j, --threads N        worker threads (default or 0: all online CPUs)\n"
    "  --overwrite            replace a model already in OUT_DIR (and discard the state of an\n"
    "                         interrupted merge there)\n"
    "  --resume               continue the interrupted merge whose journal is in OUT_DIR\n"
    "  --random-seed N        seed for random methods (default 0)\n"
    "  --part K/N             compute only part K of N of the output (whole shards, balanced\n"
    "                         by bytes to read; parts may run at once, on machines sharing\n"
    "                         OUT_DIR); then `merge CONFIG OUT_DIR --finalize`. --part auto:\n"
    "                         K and N from a Slurm job array (SLURM_ARRAY_TASK_*) or a\n"
    "                         Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with --parts N)\n"
    "  --parts N              the part count for --part auto in a Kubernetes Indexed Job\n"
    "  --finalize             finish a merge whose parts all ran: check them, rename the\n"
    "                         shards, write index, manifest, config, tokenizer, model card\n"
    "  --sweep NAME=V1,V2,... one read, one output per value of the method's top-level\n"
    "                         parameter NAME: OUT_DIR/NAME=V1/, ... (no --resume or --part)\n"
    "  --batch FILE           one read for the merges FILE lists (a YAML list of {config:\n"
    "                         CONFIG.yml, out: OUT_DIR}) over the same inputs; merge and plan\n"
    "                         then take no CONFIG.yml or OUT_DIR (no --resume or --part)\n"
    "  --[no-]copy-tokenizer  copy the tokenizer files (default: copy)\n"
    "  --[no-]write-model-card  write README.md with the merge details (default: write)\n"
    "  --allow-crimes         merge models of different architectures\n"
    "  --format FORMAT        the output format: safetensors or gguf (default: the inputs';\n"
    "                         the models of one merge share a format)\n"
    "  --outtype TYPE         GGUF output: the type of every tensor of 2 or more dimensions:\n"
    "                         same (default: the base's, requantized), f32, f16, bf16, q8_0,\n"
    "                         q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k; 1-D tensors stay f32\n"
    "  -q, --quiet            no progress line\n"
    "  mergekit's --cuda, --low-cpu-memory, --lazy-unpickle, --trust-remote-code,\n"
    "  --clone-tensors, --safe-serialization, --read-to-gpu, --multi-gpu, --verbose,\n"
    "  --transformers-cache DIR and --lora-merge-cache DIR are accepted and ignored.\n"
    "\n"
    "verify options:\n"
    "  --max-memory SIZE      read buffers (default 64Mi)\n"
    "  -q, --quiet            no summary line unless there are problems\n"
    "\n"
    "lora extract options:\n"
    "  --base BASE            the base model (required)\n"
    "  --rank R               the rank of every module (a module smaller than R is an error)\n"
    "  --max-rank R           mergekit's spelling: at most R (clamped to each module's size)\n"
    "  --sv-epsilon X         keep only singular values above X (absolute, as mergekit)\n"
    "  --embeddings           decompose embed_tokens and lm_head too (mergekit --embed-lora);\n"
    "                         default: store them whole (modules_to_save)\n"
    "  --skip-undecomposable  leave out norms and other 1-D tensors instead of storing them\n"
    "  --dtype D              the factors: float32 (default), bfloat16 or float16\n"
    "  --oversample P         extra sketch columns (default 10)\n"
    "  --power-iters Q        subspace iterations (default 3; 2Q + 2 passes per module)\n"
    "  --seed S               the Gaussian sketch's seed (default 0)\n"
    "  --max-memory SIZE      every buffer together (default 512Mi)\n"
    "  -j, --threads N        worker threads (default: all online CPUs)\n"
    "  --overwrite            replace the adapter in a non-empty OUT_DIR\n"
    "  -q, --quiet            no per-module lines or summary\n"
    "  (threads and --max-memory never change the adapter's bytes)\n"
    "\n"
    "synth options:\n"
    "  --size SIZE            total tensor bytes, approximately (required)\n"
    "  --format F             safetensors or gguf (default: gguf when OUT ends in .gguf)\n"
    "  --dtype D              safetensors: bfloat16 (default), float16 or float32;\n"
    "                         gguf: f32, f16 (default), bf16, q8_0, q4_k or q4_k_m (Q4_K with\n"
    "                         Q6_K where llama.cpp's Q4_K_M has it); norms stay F32\n"
    "  --seed N               weights seed (default 0)\n"
    "  --base-seed N          make a fine-tune of the model with this seed\n"
    "  --layers N             decoder layers (default: as many as the size gives)\n"
    "  --vocab N              vocabulary rows (default: from the size)\n"
    "  --tied                 no lm_head.weight (tied embeddings)\n"
    "  --hidden N             hidden size (default: from the size); with it --intermediate N,\n"
    "                         --heads N and --kv-heads N (Llama-3-70B: 8192 28672 64 8)\n"
    "  --lora R               write a rank-R PEFT LoRA adapter (a directory OUT with\n"
    "                         adapter_config.json and adapter_model.safetensors) for the model\n"
    "                         of the same --size, --dtype and shape options; --seed seeds it\n"
    "  --lora-alpha A         lora_alpha (default 2R)\n"
    "  --rslora, --dora       use_rslora (scale A / sqrt(R)); use_dora (magnitude vectors)\n"
    "  --lora-targets LIST    modules to adapt, comma-separated, of q_proj k_proj v_proj o_proj\n"
    "                         gate_proj up_proj down_proj embed_tokens lm_head (default: the\n"
    "                         seven projections)\n"
    "  --lora-rank-pattern 'REGEX=R,...', --lora-alpha-pattern 'REGEX=A,...'\n"
    "                         PEFT's rank_pattern and alpha_pattern (per-module overrides)\n"
    "  --modules-to-save LIST modules the adapter stores whole (e.g. lm_head,model.norm)\n"
    "  --lora-dtype D         the adapter's dtype: float32 (default), bfloat16 or float16\n"
    "  --lora-base NAME       base_model_name_or_path in adapter_config.json\n"
    "  --delta X              the fine-tune's perturbation scale (default 0.01)\n"
    "  --shard-size SIZE      the largest shard (default 1G; safetensors only)\n"
    "  -j, --threads N        generator threads\n"
    "\n"
    "inspect options:\n"
    "  --json                 one JSON document instead of text\n"
    "\n"
    "diff options:\n"
    "  --json                 one JSON document instead of text\n"
    "  --max-memory SIZE      all read buffers together (default 512Mi)\n"
    "  -j, --threads N        worker threads (default: all online CPUs)\n"
    "\n"
    "delta options:\n"
    "  --base BASE            extract: the model the delta is taken against (required)\n"
    "  --level N              extract: zstd level, 1 to 22 (default 3)\n"
    "  --max-memory SIZE      frame buffers and zstd contexts together (default 256Mi)\n"
    "  -j, --threads N        worker threads (default: all online CPUs); never changes the bytes\n"
    "  --overwrite            replace a delta (extract) or model (apply) already in the output\n"
    "  -q, --quiet            no summary line\n"
    "\n"
    "SIZE takes K, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti (powers of 1024).\n"
    "See smelt(1) for details.\n";

static volatile int cancel_requested;

static void on_signal(int sig)
{
    (void)sig;
    cancel_requested = 1;
}

static int fail_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "smelt: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nRun 'smelt help' for usage.\n");
    return 2;
}

/* After getopt's own complaint about an unknown option or a missing value. */
static int usage_hint(void)
{
    fprintf(stderr, "Run 'smelt help' for usage.\n");
    return 2;
}

static int report_error(smelt_ctx *ctx, int status)
{
    fprintf(stderr, "smelt: error: %s\n", smelt_errmsg(ctx));
    if (smelt_merge_resumable(ctx))
        fprintf(stderr, "smelt: interrupted; run the same command with --resume to continue\n");
    return status == SMELT_E_INTERRUPTED ? 130 : 1;
}

static int parse_count(const char *text, const char *flag, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || end == text || v < 0 || v > max) {
        fprintf(stderr, "smelt: %s: '%s' is not a whole number from 0 to %ld\n", flag, text, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_u64(const char *text, const char *flag, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end || end == text || text[0] == '-') {
        fprintf(stderr, "smelt: %s: '%s' is not a non-negative whole number\n", flag, text);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_size_flag(smelt_ctx *ctx, const char *text, const char *flag, uint64_t *out)
{
    if (smelt_parse_size(ctx, text, out) != SMELT_OK) {
        fprintf(stderr, "smelt: %s: %s\n", flag, smelt_errmsg(ctx));
        return -1;
    }
    return 0;
}

/* --max-memory: a size larger than 0. */
static int parse_budget(smelt_ctx *ctx, const char *text, uint64_t *out)
{
    if (parse_size_flag(ctx, text, "--max-memory", out))
        return -1;
    if (*out == 0) {
        fail_usage("--max-memory: '%s' must be larger than 0", text);
        return -1;
    }
    return 0;
}

static void format_duration(char *buf, size_t len, double seconds)
{
    if (seconds < 0 || seconds > 359999)
        snprintf(buf, len, "--:--");
    else if (seconds >= 3600)
        snprintf(buf, len, "%d:%02d:%02d", (int)seconds / 3600, (int)seconds / 60 % 60,
                 (int)seconds % 60);
    else
        snprintf(buf, len, "%d:%02d", (int)seconds / 60, (int)seconds % 60);
}

/* One line, redrawn in place: tensors done, bytes read, speed, time left. */
static void draw_progress(void *user, const smelt_progress *p)
{
    (void)user;
    double rate = p->seconds > 0 ? (double)p->bytes_read / p->seconds : 0;
    double left = rate > 0 ? (double)(p->bytes_to_read - p->bytes_read) / rate : -1;
    char eta[32];
    format_duration(eta, sizeof eta, left);
    fprintf(stderr, "\r\033[K%" PRIu64 "/%" PRIu64 " tensors  %.2f/%.2f GB  %.2f GB/s  ETA %s",
            p->tensors_done, p->tensors_total, (double)p->bytes_read / 1e9,
            (double)p->bytes_to_read / 1e9, rate / 1e9, eta);
    if (p->tensors_done == p->tensors_total)
        fprintf(stderr, "\n");
    fflush(stderr);
}

/* mergekit's --out-shard-size counts with K, M and B (billions); "5B" must not read as 5
 * bytes, so a number with a lone B suffix is taken the mergekit way. */
static int parse_shard_size(smelt_ctx *ctx, const char *text, uint64_t *out)
{
    size_t len = strlen(text);
    if (len >= 2 && (text[len - 1] == 'B' || text[len - 1] == 'b')) {
        char *end;
        double v = strtod(text, &end);
        if (end == text + len - 1 && v > 0 && v < 1e10) {
            *out = (uint64_t)(v * 1e9);
            return 0;
        }
    }
    return parse_size_flag(ctx, text, "--out-shard-size", out);
}

/* Flags mergekit has for GPUs or Python that mean nothing here: accepted so that scripts keep
 * working, with one notice each. The ones listed with a value take an argument. */
static const char *const ignored_flags[] = {"cuda", "low-cpu-memory", "lazy-unpickle",
                                            "trust-remote-code", "clone-tensors",
                                            "safe-serialization", "read-to-gpu", "multi-gpu",
                                            "verbose", NULL};
static const char *const ignored_value_flags[] = {"transformers-cache", "lora-merge-cache", NULL};

/* An environment variable as a whole number in [0, max]: 0 when set and valid, 1 when unset,
 * -1 (after a message) when malformed. */
static int env_count(const char *name, long max, long *out)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 1;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || n < 0 || n > max) {
        fprintf(stderr, "smelt: --part auto: %s='%s' is not a whole number from 0 to %ld\n",
                name, v, max);
        return -1;
    }
    *out = n;
    return 0;
}

/* --part auto: K and N from a Slurm job array (task IDs MIN..MAX, any numbering, one task
 * each: --array=0-7 or 1-8, not a step) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX,
 * 0-based; N is the Job's completions, which the pod cannot see: --parts). 0 or exit status 2. */
static int part_from_env(long parts, unsigned *k, unsigned *n)
{
    const long max = SMELT_MAX_PARTS;
    long id, count, min, top, index;
    int has_id = env_count("SLURM_ARRAY_TASK_ID", 1L << 30, &id);
    int has_index = env_count("JOB_COMPLETION_INDEX", max, &index);
    if (has_id < 0 || has_index < 0)
        return 2;
    if (has_id == 0) {
        int c = env_count("SLURM_ARRAY_TASK_COUNT", max, &count);
        int m = env_count("SLURM_ARRAY_TASK_MIN", 1L << 30, &min);
        int x = env_count("SLURM_ARRAY_TASK_MAX", 1L << 30, &top);
        if (c < 0 || m < 0 || x < 0)
            return 2;
        if (c || m) {
            fprintf(stderr, "smelt: --part auto: SLURM_ARRAY_TASK_ID is set but not %s; is this "
                    "a job array task (sbatch --array=0-<N-1>)?\n",
                    c ? "SLURM_ARRAY_TASK_COUNT" : "SLURM_ARRAY_TASK_MIN");
            return 2;
        }
        if (count < 1 || id < min || id - min >= count || (x == 0 && top - min + 1 != count)) {
            fprintf(stderr, "smelt: --part auto: the Slurm array's task IDs (%ld..%ld, %ld "
                    "tasks, this one %ld) are not one contiguous range; submit it as "
                    "--array=0-%ld (no step, no list)\n", min, x == 0 ? top : min + count - 1,
                    count, id, count - 1);
            return 2;
        }
        if (parts && parts != count) {
            fprintf(stderr, "smelt: --part auto: --parts %ld, but the Slurm array has %ld "
                    "tasks\n", parts, count);
            return 2;
        }
        *k = (unsigned)(id - min + 1);
        *n = (unsigned)count;
        return 0;
    }
    if (has_index == 0) {
        if (!parts) {
            fprintf(stderr, "smelt: --part auto: JOB_COMPLETION_INDEX is set (a Kubernetes "
                    "Indexed Job) but not the part count: add --parts N (the Job's "
                    "completions)\n");
            return 2;
        }
        if (index >= parts) {
            fprintf(stderr, "smelt: --part auto: JOB_COMPLETION_INDEX=%ld is not below --parts "
                    "%ld\n", index, parts);
            return 2;
        }
        *k = (unsigned)index + 1;
        *n = (unsigned)parts;
        return 0;
    }
    fprintf(stderr, "smelt: --part auto: neither a Slurm job array (SLURM_ARRAY_TASK_ID, "
            "SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_MIN) nor a Kubernetes Indexed Job "
            "(JOB_COMPLETION_INDEX) in the environment; give --part K/N\n");
    return 2;
}

/* --part K/N (or auto, resolved with --parts) into opts. 0 or the exit status. */
static int parse_part(const char *arg, long parts, smelt_merge_options *opts)
{
    if (!strcmp(arg, "auto"))
        return part_from_env(parts, &opts->part_index, &opts->part_count);
    unsigned long k, n;
    char *end;
    errno = 0;
    k = strtoul(arg, &end, 10);
    int ok = !errno && end != arg && *end == '/' && arg[0] >= '0' && arg[0] <= '9';
    const char *ns = ok ? end + 1 : "";
    n = ok ? strtoul(ns, &end, 10) : 0;
    ok = ok && !errno && end != ns && !*end && ns[0] >= '0' && ns[0] <= '9';
    if (!ok || n < 1 || n > SMELT_MAX_PARTS || k < 1 || k > n) {
        fprintf(stderr, "smelt: --part: '%s' is not K/N with 1 <= K <= N <= %u (or auto)\n", arg,
                SMELT_MAX_PARTS);
        return 2;
    }
    if (parts && (unsigned long)parts != n) {
        fprintf(stderr, "smelt: --part %s: --parts says %ld parts\n", arg, parts);
        return 2;
    }
    opts->part_index = (unsigned)k;
    opts->part_count = (unsigned)n;
    return 0;
}

/* The options merge and plan share. Returns -1 to go on, or the exit status. */
static int parse_merge_options(smelt_ctx *ctx, int argc, char **argv, smelt_merge_options *opts,
                               int *quiet, int *json)
{
    enum { OPT_MAX_MEMORY = 256, OPT_SHARD, OPT_OVERWRITE, OPT_SEED, OPT_COPY_TOK, OPT_NO_COPY_TOK,
           OPT_CARD, OPT_NO_CARD, OPT_CRIMES, OPT_NO_CRIMES, OPT_RESUME, OPT_FORMAT, OPT_OUTTYPE,
           OPT_JSON, OPT_PART, OPT_PARTS, OPT_FINALIZE, OPT_SWEEP, OPT_BATCH,
           OPT_IGNORED = 512,
           OPT_IGNORED_VALUE = 768 };
    struct option options[64] = {
        {"max-memory", required_argument, NULL, OPT_MAX_MEMORY},
        {"out-shard-size", required_argument, NULL, OPT_SHARD},
        {"threads", required_argument, NULL, 'j'},
        {"overwrite", no_argument, NULL, OPT_OVERWRITE},
        {"random-seed", required_argument, NULL, OPT_SEED},
        {"copy-tokenizer", no_argument, NULL, OPT_COPY_TOK},
        {"no-copy-tokenizer", no_argument, NULL, OPT_NO_COPY_TOK},
        {"write-model-card", no_argument, NULL, OPT_CARD},
        {"no-write-model-card", no_argument, NULL, OPT_NO_CARD},
        {"allow-crimes", no_argument, NULL, OPT_CRIMES},
        {"no-allow-crimes", no_argument, NULL, OPT_NO_CRIMES},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"resume", no_argument, NULL, OPT_RESUME},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"outtype", required_argument, NULL, OPT_OUTTYPE},
        {"json", no_argument, NULL, OPT_JSON},
        {"part", required_argument, NULL, OPT_PART},
        {"parts", required_argument, NULL, OPT_PARTS},
        {"finalize", no_argument, NULL, OPT_FINALIZE},
        {"sweep", required_argument, NULL, OPT_SWEEP},
        {"batch", required_argument, NULL, OPT_BATCH},
    };
    /* --x and --no-x for each ignored switch; the table has room for all of them. */
    static char names[32][40];
    size_t n = 0, k = 0;
    while (options[n].name) /* the fixed options above; the rest of the table is zeroed */
        n++;
    for (size_t i = 0; ignored_flags[i]; i++) {
        snprintf(names[k], sizeof names[k], "no-%s", ignored_flags[i]);
        options[n++] = (struct option){ignored_flags[i], no_argument, NULL, OPT_IGNORED + (int)i};
        options[n++] = (struct option){names[k++], no_argument, NULL, OPT_IGNORED + (int)i};
    }
    for (size_t i = 0; ignored_value_flags[i]; i++)
        options[n++] = (struct option){ignored_value_flags[i], required_argument, NULL,
                                       OPT_IGNORED_VALUE + (int)i};
    options[n] = (struct option){NULL, 0, NULL, 0};
    long threads, parts = 0;
    const char *part = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "j:qvh", options, NULL)) != -1) {
        switch (c) {
        case OPT_MAX_MEMORY:
            if (parse_budget(ctx, optarg, &opts->max_memory))
                return 2;
            break;
        case OPT_SHARD:
            if (parse_shard_size(ctx, optarg, &opts->out_shard_size))
                return 2;
            if (opts->out_shard_size == 0)
                return fail_usage("--out-shard-size: '%s' must be larger than 0", optarg);
            break;
        case 'j':
            if (parse_count(optarg, "--threads", 1024, &threads))
                return 2;
            opts->threads = (int)threads;
            break;
        case OPT_OVERWRITE: opts->overwrite = 1; break;
        case OPT_RESUME: opts->resume = 1; break;
        case OPT_FORMAT:
            if (!strcmp(optarg, "gguf"))
                opts->format = SMELT_FORMAT_GGUF;
            else if (!strcmp(optarg, "safetensors"))
                opts->format = SMELT_FORMAT_SAFETENSORS;
            else
                return fail_usage("--format: '%s' is not safetensors or gguf", optarg);
            break;
        case OPT_OUTTYPE: opts->outtype = optarg; break;
        case OPT_SEED:
            if (parse_u64(optarg, "--random-seed", &opts->random_seed))
                return 2;
            break;
        case OPT_COPY_TOK: opts->no_copy_tokenizer = 0; break;
        case OPT_NO_COPY_TOK: opts->no_copy_tokenizer = 1; break;
        case OPT_CARD: opts->no_model_card = 0; break;
        case OPT_NO_CARD: opts->no_model_card = 1; break;
        case OPT_CRIMES: opts->allow_crimes = 1; break;
        case OPT_NO_CRIMES: opts->allow_crimes = 0; break;
        case 'q': *quiet = 1; break;
        case OPT_JSON: *json = 1; break;
        case OPT_PART: part = optarg; break;
        case OPT_PARTS:
            if (parse_count(optarg, "--parts", SMELT_MAX_PARTS, &parts))
                return 2;
            if (parts < 1)
                return fail_usage("--parts: '%s' must be at least 1", optarg);
            break;
        case OPT_FINALIZE: opts->finalize = 1; break;
        case OPT_SWEEP: opts->sweep = optarg; break;
        case OPT_BATCH: opts->batch = optarg; break;
        case 'v': fprintf(stderr, "smelt: notice: -v has no effect in smelt (ignored)\n"); break;
        case 'h': fputs(usage_text, stdout); return 0;
        default:
            if (c >= OPT_IGNORED_VALUE) {
                fprintf(stderr, "smelt: notice: --%s is a mergekit option that has no effect in "
                        "smelt (ignored)\n", ignored_value_flags[c - OPT_IGNORED_VALUE]);
                break;
            }
            if (c >= OPT_IGNORED) {
                fprintf(stderr, "smelt: notice: --%s is a mergekit option for GPUs or Python "
                        "that has no effect in smelt (ignored)\n", ignored_flags[c - OPT_IGNORED]);
                break;
            }
            return usage_hint();
        }
    }
    if (part && opts->finalize)
        return fail_usage("--finalize finishes all the parts at once: it takes no --part "
                          "(got --part %s)", part);
    if (parts && !part)
        return fail_usage("--parts: only with --part auto (a Kubernetes Indexed Job)%s", "");
    if (part && parse_part(part, parts, opts))
        return 2;
    return -1;
}

/* s as a JSON string. */
static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(out, "\\u%04x", ch);
        else
            fputc(ch, out);
    }
    fputc('"', out);
}

/* merge --json: the result as one JSON document on stdout (progress stays on stderr). */
static void print_result_json(const char *out_dir, const smelt_merge_result *r)
{
    printf("{\"out_dir\": ");
    json_string(stdout, out_dir);
    printf(", \"tensors\": %" PRIu64 ", \"files\": %" PRIu64 ", \"bytes_read\": %" PRIu64
           ", \"bytes_written\": %" PRIu64 ", \"seconds\": %.6f, \"manifest_xxh3\": \"%s\", "
           "\"smelt_version\": ",
           r->tensors, r->files, r->bytes_read, r->bytes_written, r->seconds, r->manifest_xxh3);
    json_string(stdout, smelt_version());
    printf("}\n");
}

/* `merge CONFIG OUT_DIR`, or with lora set `lora apply BASE ADAPTER OUT_DIR`: the same options,
 * progress and interruption. */
static int cmd_merge(smelt_ctx *ctx, int argc, char **argv, int lora)
{
    smelt_merge_options opts;
    smelt_merge_options_default(&opts);
    smelt_merge_result result;
    int quiet = 0, json = 0;
    int status = parse_merge_options(ctx, argc, argv, &opts, &quiet, &json);
    if (status >= 0)
        return status;
    if (!lora && opts.batch && argc - optind != 0)
        return fail_usage("merge --batch FILE takes no CONFIG.yml or OUT_DIR (the file lists "
                          "them)%s", "");
    if (!lora && !opts.batch && argc - optind != 2)
        return fail_usage("merge takes CONFIG.yml and OUT_DIR%s", "");
    if (lora && (opts.sweep || opts.batch))
        return fail_usage("lora apply takes no --sweep or --batch%s", "");
    if (lora && argc - optind != 3)
        return fail_usage("lora apply takes BASE, ADAPTER and OUT_DIR%s", "");
    if (!quiet && isatty(STDERR_FILENO)) {
        opts.progress = draw_progress;
        opts.progress_user = NULL;
    }
    opts.cancel = &cancel_requested;
    opts.result = &result;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = lora        ? smelt_lora_apply(ctx, argv[optind], argv[optind + 1], argv[optind + 2],
                                            &opts)
             : opts.batch ? smelt_merge(ctx, NULL, NULL, &opts)
                          : smelt_merge(ctx, argv[optind], argv[optind + 1], &opts);
    if (rc != SMELT_OK) {
        if (opts.progress)
            fprintf(stderr, "\n");
        return report_error(ctx, rc);
    }
    if (opts.progress)
        fprintf(stderr, "\n");
    if (json)
        print_result_json(opts.batch ? opts.batch : argv[argc - 1], &result);
    return 0;
}

static int cmd_plan(smelt_ctx *ctx, int argc, char **argv)
{
    smelt_merge_options opts;
    smelt_merge_options_default(&opts);
    int quiet = 0, json = 0;
    int status = parse_merge_options(ctx, argc, argv, &opts, &quiet, &json);
    if (status >= 0)
        return status;
    if (json)
        return fail_usage("--json: plan prints text (inspect --json describes a model)%s", "");
    if (argc - optind != (opts.batch ? 0 : 1))
        return fail_usage(opts.batch ? "plan --batch FILE takes no CONFIG.yml (the file lists "
                                       "them)%s"
                                     : "plan takes CONFIG.yml%s", "");
    int rc = smelt_plan_print(ctx, opts.batch ? NULL : argv[optind], &opts, stdout);
    return rc == SMELT_OK ? 0 : report_error(ctx, rc);
}

static int cmd_verify(smelt_ctx *ctx, int argc, char **argv)
{
    enum { OPT_MAX_MEMORY = 256 };
    static const struct option options[] = {
        {"max-memory", required_argument, NULL, OPT_MAX_MEMORY},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    smelt_verify_options opts;
    smelt_verify_options_default(&opts);
    int c, quiet = 0;
    while ((c = getopt_long(argc, argv, "qh", options, NULL)) != -1) {
        switch (c) {
        case OPT_MAX_MEMORY:
            if (parse_budget(ctx, optarg, &opts.max_memory))
                return 2;
            break;
        case 'q': quiet = 1; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return usage_hint();
        }
    }
    if (argc - optind != 1)
        return fail_usage("verify takes one model DIR%s", "");
    const char *dir = argv[optind];
    smelt_verify_result res;
    int rc = smelt_verify(ctx, dir, &opts, stdout, &res);
    if (rc != SMELT_OK)
        return report_error(ctx, rc);
    char manifest[4096];
    snprintf(manifest, sizeof manifest, "%s/smelt-manifest.json", dir);
    if (!res.has_manifest && access(manifest, F_OK) != 0)
        printf("%s: no smelt-manifest.json; %s\n", dir,
               res.problems ? "the problems above are in the safetensors structure or index"
                            : "checked the safetensors structure and index only");
    if (!quiet || res.problems)
        fprintf(stderr, "smelt: verify %s: %" PRIu64 " tensors, %.2f GB in %.2f s (%.2f GB/s): "
                "%" PRIu64 " problem%s\n", dir, res.tensors_checked, (double)res.bytes_read / 1e9,
                res.seconds, res.seconds > 0 ? (double)res.bytes_read / 1e9 / res.seconds : 0.0,
                res.problems, res.problems == 1 ? "" : "s");
    return res.problems ? 1 : 0;
}

static int cmd_synth(smelt_ctx *ctx, int argc, char **argv)
{
    enum { OPT_SIZE = 256, OPT_DTYPE, OPT_SEED, OPT_BASE_SEED, OPT_DELTA, OPT_SHARD, OPT_LAYERS,
           OPT_VOCAB, OPT_TIED, OPT_HIDDEN, OPT_INTERMEDIATE, OPT_HEADS, OPT_KV_HEADS, OPT_FORMAT,
           OPT_LORA, OPT_LORA_ALPHA, OPT_RSLORA, OPT_DORA, OPT_LORA_TARGETS, OPT_RANK_PATTERN,
           OPT_ALPHA_PATTERN, OPT_MODULES_TO_SAVE, OPT_LORA_DTYPE, OPT_LORA_BASE };
    static const struct option options[] = {
        {"size", required_argument, NULL, OPT_SIZE},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"seed", required_argument, NULL, OPT_SEED},
        {"base-seed", required_argument, NULL, OPT_BASE_SEED},
        {"layers", required_argument, NULL, OPT_LAYERS},
        {"vocab", required_argument, NULL, OPT_VOCAB},
        {"tied", no_argument, NULL, OPT_TIED},
        {"hidden", required_argument, NULL, OPT_HIDDEN},
        {"intermediate", required_argument, NULL, OPT_INTERMEDIATE},
        {"heads", required_argument, NULL, OPT_HEADS},
        {"kv-heads", required_argument, NULL, OPT_KV_HEADS},
        {"delta", required_argument, NULL, OPT_DELTA},
        {"shard-size", required_argument, NULL, OPT_SHARD},
        {"lora", required_argument, NULL, OPT_LORA},
        {"lora-alpha", required_argument, NULL, OPT_LORA_ALPHA},
        {"rslora", no_argument, NULL, OPT_RSLORA},
        {"dora", no_argument, NULL, OPT_DORA},
        {"lora-targets", required_argument, NULL, OPT_LORA_TARGETS},
        {"lora-rank-pattern", required_argument, NULL, OPT_RANK_PATTERN},
        {"lora-alpha-pattern", required_argument, NULL, OPT_ALPHA_PATTERN},
        {"modules-to-save", required_argument, NULL, OPT_MODULES_TO_SAVE},
        {"lora-dtype", required_argument, NULL, OPT_LORA_DTYPE},
        {"lora-base", required_argument, NULL, OPT_LORA_BASE},
        {"threads", required_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    smelt_synth_options opts;
    smelt_synth_options_default(&opts);
    int c;
    long threads;
    char *end;
    const char *lora_only = NULL; /* the last flag given that only an adapter takes */
    while ((c = getopt_long(argc, argv, "j:h", options, NULL)) != -1) {
        switch (c) {
        case OPT_SIZE:
            if (parse_size_flag(ctx, optarg, "--size", &opts.size))
                return 2;
            break;
        case OPT_DTYPE: opts.dtype = optarg; break;
        case OPT_FORMAT: opts.format = optarg; break;
        case OPT_SEED:
            if (parse_u64(optarg, "--seed", &opts.seed))
                return 2;
            break;
        case OPT_VOCAB: {
            long vocab;
            if (parse_count(optarg, "--vocab", 1 << 24, &vocab))
                return 2;
            opts.vocab = (unsigned)vocab;
            break;
        }
        case OPT_TIED: opts.tied = 1; break;
        case OPT_HIDDEN:
        case OPT_INTERMEDIATE:
        case OPT_HEADS:
        case OPT_KV_HEADS: {
            static const char *const names[] = {"--hidden", "--intermediate", "--heads",
                                                "--kv-heads"};
            unsigned *fields[] = {&opts.hidden, &opts.intermediate, &opts.heads, &opts.kv_heads};
            long v;
            if (parse_count(optarg, names[c - OPT_HIDDEN], 1 << 20, &v))
                return 2;
            *fields[c - OPT_HIDDEN] = (unsigned)v;
            break;
        }
        case OPT_LAYERS: {
            long layers;
            if (parse_count(optarg, "--layers", 4096, &layers))
                return 2;
            opts.layers = (unsigned)layers;
            break;
        }
        case OPT_BASE_SEED:
            if (parse_u64(optarg, "--base-seed", &opts.base_seed))
                return 2;
            opts.has_base = 1;
            break;
        case OPT_DELTA:
            errno = 0;
            opts.delta = strtod(optarg, &end);
            if (errno || *end || end == optarg)
                return fail_usage("--delta: '%s' is not a number", optarg);
            break;
        case OPT_SHARD:
            if (parse_size_flag(ctx, optarg, "--shard-size", &opts.shard_size))
                return 2;
            break;
        case 'j':
            if (parse_count(optarg, "--threads", 1024, &threads))
                return 2;
            opts.threads = (int)threads;
            break;
        case OPT_LORA: {
            long rank;
            if (parse_count(optarg, "--lora", 1000000, &rank))
                return 2;
            opts.lora_rank = (unsigned)rank;
            break;
        }
        case OPT_LORA_ALPHA:
            errno = 0;
            opts.lora_alpha = strtod(optarg, &end);
            if (errno || *end || end == optarg || !isfinite(opts.lora_alpha) ||
                opts.lora_alpha == 0)
                return fail_usage("--lora-alpha: '%s' is not a finite, non-zero number", optarg);
            lora_only = "--lora-alpha";
            break;
        case OPT_RSLORA: opts.lora_rslora = 1; lora_only = "--rslora"; break;
        case OPT_DORA: opts.lora_dora = 1; lora_only = "--dora"; break;
        case OPT_LORA_TARGETS: opts.lora_targets = optarg; lora_only = "--lora-targets"; break;
        case OPT_RANK_PATTERN: opts.lora_rank_pattern = optarg; lora_only = "--lora-rank-pattern"; break;
        case OPT_ALPHA_PATTERN: opts.lora_alpha_pattern = optarg; lora_only = "--lora-alpha-pattern"; break;
        case OPT_MODULES_TO_SAVE: opts.lora_modules_to_save = optarg; lora_only = "--modules-to-save"; break;
        case OPT_LORA_DTYPE: opts.lora_dtype = optarg; lora_only = "--lora-dtype"; break;
        case OPT_LORA_BASE: opts.lora_base = optarg; lora_only = "--lora-base"; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return usage_hint();
        }
    }
    if (lora_only && !opts.lora_rank)
        return fail_usage("%s describes a LoRA adapter: it needs --lora R", lora_only);
    if (argc - optind != 1)
        return fail_usage("synth takes one OUT (a directory, or a file ending in .gguf)%s", "");
    if (!opts.size)
        return fail_usage("synth needs --size%s", "");
    int rc = smelt_synth(ctx, argv[optind], &opts);
    return rc == SMELT_OK ? 0 : report_error(ctx, rc);
}

static int cmd_inspect(smelt_ctx *ctx, int argc, char **argv)
{
    enum { OPT_JSON = 256 };
    static const struct option options[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int json = 0, c;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (c) {
        case OPT_JSON: json = 1; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return usage_hint();
        }
    }
    if (argc - optind != 1)
        return fail_usage("inspect takes one MODEL%s", "");
    int rc = smelt_inspect(ctx, argv[optind], json, stdout);
    return rc == SMELT_OK ? 0 : report_error(ctx, rc);
}

static int cmd_diff(smelt_ctx *ctx, int argc, char **argv)
{
    enum { OPT_JSON = 256, OPT_MAX_MEMORY };
    static const struct option options[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"max-memory", required_argument, NULL, OPT_MAX_MEMORY},
        {"threads", required_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    smelt_diff_options opts;
    smelt_diff_options_default(&opts);
    int c;
    long threads;
    while ((c = getopt_long(argc, argv, "j:h", options, NULL)) != -1) {
        switch (c) {
        case OPT_JSON: opts.json = 1; break;
        case OPT_MAX_MEMORY:
            if (parse_budget(ctx, optarg, &opts.max_memory))
                return 2;
            break;
        case 'j':
            if (parse_count(optarg, "--threads", 1024, &threads))
                return 2;
            opts.threads = (int)threads;
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return usage_hint();
        }
    }
    if (argc - optind != 2)
        return fail_usage("diff takes two models, A and B%s", "");
    int rc = smelt_diff(ctx, argv[optind], argv[optind + 1], &opts, stdout);
    return rc == SMELT_OK ? 0 : report_error(ctx, rc);
}

static int cmd_lora_extract(smelt_ctx *ctx, int argc, char **argv)
{
    enum { OPT_BASE = 256, OPT_RANK, OPT_MAX_RANK, OPT_EPS, OPT_EMB, OPT_SKIP, OPT_DTYPE,
           OPT_OVERSAMPLE, OPT_POWER, OPT_SEED, OPT_MAX_MEMORY, OPT_OVERWRITE };
    static const struct option options[] = {
        {"base", required_argument, NULL, OPT_BASE},
        {"rank", required_argument, NULL, OPT_RANK},
        {"max-rank", required_argument, NULL, OPT_MAX_RANK},
        {"sv-epsilon", required_argument, NULL, OPT_EPS},
        {"embeddings", no_argument, NULL, OPT_EMB},
        {"embed-lora", no_argument, NULL, OPT_EMB},
        {"skip-undecomposable", no_argument, NULL, OPT_SKIP},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"oversample", required_argument, NULL, OPT_OVERSAMPLE},
        {"power-iters", required_argument, NULL, OPT_POWER},
        {"seed", required_argument, NULL, OPT_SEED},
        {"max-memory", required_argument, NULL, OPT_MAX_MEMORY},
        {"threads", required_argument, NULL, 'j'},
        {"overwrite", no_argument, NULL, OPT_OVERWRITE},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    smelt_lora_extract_options opts;
    smelt_lora_extract_options_default(&opts);
    const char *base = NULL;
    int c, quiet = 0, have_rank = 0;
    long v;
    char *end;
    while ((c = getopt_long(argc, argv, "j:qh", options, NULL)) != -1) {
        switch (c) {
        case OPT_BASE: base = optarg; break;
        case OPT_RANK:
        case OPT_MAX_RANK:
            if (parse_count(optarg, c == OPT_RANK ? "--rank" : "--max-rank", 1000000, &v))
                return 2;
            if (v == 0)
                return fail_usage("the rank must be at least 1, not '%s'", optarg);
            opts.rank = (uint32_t)v;
            opts.rank_is_max = c == OPT_MAX_RANK;
            have_rank = 1;
            break;
        case OPT_EPS:
            errno = 0;
            opts.sv_epsilon = strtod(optarg, &end);
            if (errno || *end || end == optarg || !isfinite(opts.sv_epsilon) ||
                opts.sv_epsilon < 0)
                return fail_usage("--sv-epsilon: '%s' is not a finite number >= 0", optarg);
            break;
        case OPT_EMB: opts.embeddings = 1; break;
        case OPT_SKIP: opts.skip_undecomposable = 1; break;
        case OPT_DTYPE: opts.dtype = optarg; break;
        case OPT_OVERSAMPLE:
            if (parse_count(optarg, "--oversample", 100000, &v))
                return 2;
            opts.oversample = (uint32_t)v;
            break;
        case OPT_POWER:
            if (parse_count(optarg, "--power-iters", 64, &v))
                return 2;
            opts.power_iters = (uint32_t)v;
            break;
        case OPT_SEED:
            if (parse_u64(optarg, "--seed", &opts.seed))
                return 2;
            break;
        case OPT_MAX_MEMORY:
            if (parse_budget(ctx, optarg, &opts.max_memory))
                return 2;
            break;
        case 'j':
            if (parse_count(optarg, "--threads", 1024, &v))
                return 2;
            opts.threads = (int)v;
            break;
        case OPT_OVERWRITE: opts.overwrite = 1; break;
        case 'q': quiet = 1; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return usage_hint();
        }
    }
    if (argc - optind != 2)
        return fail_usage("lora extract takes MODEL and OUT_DIR (and --base BASE)%s", "");
    if (!base)
        return fail_usage("lora extract needs --base BASE%s", "");
    if (!have_rank)
        return fail_usage("lora extract needs --rank R (or --max-rank R)%s", "");
    opts.cancel = &cancel_requested;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = smelt_lora_extract(ctx, base, argv[optind], argv[optind + 1], &opts,
                                quiet ? NULL : stderr, NULL);
    return rc == SMELT_OK ? 0 : report_error(ctx, rc);
}

/* `delta extract --base BASE MODEL OUT` and `delta apply BASE DELTA OUT_DIR`. */
static int cmd_delta(smelt_ctx *ctx, int argc, char **argv, int extract)
{
    enum { OPT_BASE = 256, OPT_LEVEL, OPT_MAX_MEMORY, OPT_OVERWRITE };
    static const struct option options[] = {
        {"base", required_argument, NULL, OPT_BASE},
        {"level", required_argument, NULL, OPT_LEVEL},
        {"max-memory", required_argument, NULL, OPT_MAX_MEMORY},
        {"threads", required_argument, NULL, 'j'},
        {"overwrite", no_argument, NULL, OPT_OVERWRITE},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    smelt_delta_options opts;
    smelt_delta_options_default(&opts);
    const char *base = NULL;
    int c, quiet = 0;
    long v;
    while ((c = getopt_long(argc, argv, "j:qh", options, NULL)) != -1) {
        switch (c) {
        case OPT_BASE:
            if (!extract)
                return fail_usage("delta apply takes BASE as its first argument, not --base%s",
                                  "");
            base = optarg;
            break;
        case OPT_LEVEL:
            if (!extract)
                return fail_usage("--level is for delta extract%s", "");
            if (parse_count(optarg, "--level", 22, &v))
                return 2;
            if (v < 1)
                return fail_usage("--level: '%s' must be from 1 to 22", optarg);
            opts.level = (int)v;
            break;
        case OPT_MAX_MEMORY:
            if (parse_budget(ctx, optarg, &opts.max_memory))
                return 2;
            break;
        case 'j':
            if (parse_count(optarg, "--threads", 1024, &v))
                return 2;
            opts.threads = (int)v;
            break;
        case OPT_OVERWRITE: opts.overwrite = 1; break;
        case 'q': quiet = 1; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return usage_hint();
        }
    }
    if (extract && (!base || argc - optind != 2))
        return fail_usage("delta extract takes --base BASE, MODEL and OUT%s", "");
    if (!extract && argc - optind != 3)
        return fail_usage("delta apply takes BASE, DELTA and OUT_DIR%s", "");
    opts.cancel = &cancel_requested;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    smelt_delta_stats st;
    int rc = extract ? smelt_delta_extract(ctx, base, argv[optind], argv[optind + 1], &opts, &st)
                     : smelt_delta_apply(ctx, argv[optind], argv[optind + 1], argv[optind + 2],
                                         &opts, &st);
    if (rc != SMELT_OK)
        return report_error(ctx, rc);
    if (!quiet) {
        double secs = st.seconds > 0 ? st.seconds : 1e-9;
        uint64_t model_bytes = extract ? st.bytes_in : st.bytes_out;
        uint64_t delta_bytes = extract ? st.bytes_out : st.bytes_in;
        fprintf(stderr, "smelt: delta %s: %" PRIu64 " tensors (%" PRIu64 " as XOR against the "
                "base), %" PRIu64 " files; in %.2f MB, out %.2f MB; ratio %.2fx; %.2f s, "
                "%.1f MB/s in, %.1f MB/s out\n", extract ? "extract" : "apply", st.tensors,
                st.tensors_xor, st.files, (double)st.bytes_in / 1e6, (double)st.bytes_out / 1e6,
                delta_bytes ? (double)model_bytes / (double)delta_bytes : 0.0, st.seconds,
                (double)st.bytes_in / 1e6 / secs, (double)st.bytes_out / 1e6 / secs);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return fputs(usage_text, stderr), 2;
    const char *cmd = argv[1];
    /* getopt names the program in its complaints: make that "smelt merge", not "merge". */
    char prog[64];
    snprintf(prog, sizeof prog, "smelt %s", cmd);
    argv[1] = prog;
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(usage_text, stdout);
        return 0;
    }
    smelt_ctx *ctx = smelt_ctx_new();
    if (!ctx) {
        fprintf(stderr, "smelt: out of memory\n");
        return 1;
    }
    int rc;
    if (smelt_isa_select(ctx, NULL) != SMELT_OK) {
        rc = report_error(ctx, SMELT_E_ARG);
    } else if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("smelt %s (kernels: %s)\n", smelt_version(), smelt_isa_name());
        rc = 0;
    } else if (!strcmp(cmd, "merge")) {
        rc = cmd_merge(ctx, argc - 1, argv + 1, 0);
    } else if (!strcmp(cmd, "lora")) {
        if (argc >= 3 && !strcmp(argv[2], "apply"))
            rc = cmd_merge(ctx, argc - 2, argv + 2, 1);
        else if (argc >= 3 && !strcmp(argv[2], "extract"))
            rc = cmd_lora_extract(ctx, argc - 2, argv + 2);
        else
            rc = fail_usage("lora takes a subcommand: lora apply BASE ADAPTER OUT_DIR, or lora "
                            "extract --base BASE MODEL --rank R OUT_DIR%s", "");
    } else if (!strcmp(cmd, "delta")) {
        if (argc < 3 || (strcmp(argv[2], "extract") != 0 && strcmp(argv[2], "apply") != 0))
            rc = fail_usage("delta takes a subcommand: delta extract --base BASE MODEL OUT, or "
                            "delta apply BASE DELTA OUT_DIR%s", "");
        else
            rc = cmd_delta(ctx, argc - 2, argv + 2, strcmp(argv[2], "extract") == 0);
    } else if (!strcmp(cmd, "verify")) {
        rc = cmd_verify(ctx, argc - 1, argv + 1);
    } else if (!strcmp(cmd, "plan")) {
        rc = cmd_plan(ctx, argc - 1, argv + 1);
    } else if (!strcmp(cmd, "synth")) {
        rc = cmd_synth(ctx, argc - 1, argv + 1);
    } else if (!strcmp(cmd, "inspect")) {
        rc = cmd_inspect(ctx, argc - 1, argv + 1);
    } else if (!strcmp(cmd, "diff")) {
        rc = cmd_diff(ctx, argc - 1, argv + 1);
    } else {
        rc = fail_usage("unknown command '%s'", cmd);
    }
    smelt_ctx_free(ctx);
    return rc;
}
