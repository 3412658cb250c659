/* smelt_merge(): config → plan → out dir → journal + temporary files (or, resuming, the
 * journal's re-verified tensors) → engine → finalize (manifest) → journal removed. A part of a
 * partitioned merge runs the same way over its own shards and ends with its fragment instead of
 * finalizing; finalizing the parts is parts.c's. */
#include "engine/engine.h"
#include "engine/group.h"
#include "engine/parts.h"
#include "io/ring.h"
#include "out/finalize.h"

#include "common/util.h"
#include "integrity/journal.h"
#include "integrity/rehash.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

void smelt_merge_options_default(smelt_merge_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->max_memory = 512ull << 20; /* out_shard_size 0: the output format's default */
}

/* The caller's options with defaults filled in and the environment applied. */
static int effective_options(smelt_ctx *ctx, const smelt_merge_options *user_opts,
                             smelt_merge_options *opts)
{
    smelt_merge_options_default(opts);
    if (user_opts) {
        *opts = *user_opts;
        if (!opts->max_memory)
            opts->max_memory = 512ull << 20;
    }
    if (opts->finalize && opts->part_count)
        return smelt_fail(ctx, SMELT_E_ARG, "--finalize finishes all the parts at once: it takes "
                          "no --part");
    if (opts->part_count && (opts->part_count > SMELT_MAX_PARTS || opts->part_index < 1 ||
                             opts->part_index > opts->part_count))
        return smelt_fail(ctx, SMELT_E_ARG, "--part %u/%u: K/N needs 1 <= K <= N <= %u",
                          opts->part_index, opts->part_count, SMELT_MAX_PARTS);
    return smelt_ring_env(ctx, &opts->force_pread);
}

/* What the planner takes from the merge options. */
static smelt_plan_options plan_options(const smelt_merge_options *opts)
{
    return (smelt_plan_options){
        .out_shard_size = opts->out_shard_size,
        .random_seed = opts->random_seed,
        .copy_tokenizer = !opts->no_copy_tokenizer,
        .allow_crimes = opts->allow_crimes,
        .format = opts->format == SMELT_FORMAT_GGUF          ? SMELT_OUT_GGUF
                  : opts->format == SMELT_FORMAT_SAFETENSORS ? SMELT_OUT_SAFETENSORS
                                                             : SMELT_OUT_AUTO,
        .outtype = opts->outtype,
    };
}

/* Spec → validated plan (the plan owns the spec, also on failure). */
static int plan_spec(smelt_ctx *ctx, smelt_merge_spec *spec, const smelt_merge_options *opts,
                     smelt_plan **plan)
{
    smelt_plan_options popts = plan_options(opts);
    return smelt_plan_build(ctx, spec, &popts, plan);
}

/* Config file (or opts->config_text), a sweep over it, or a batch file → the validated plans
 * of every output. A group of several outputs neither resumes nor runs as parts: refused here,
 * before anything is written. */
static int load_group(smelt_ctx *ctx, const char *config_path, const char *out_dir,
                      const smelt_merge_options *opts, smelt_merge_group *group)
{
    if ((opts->sweep || opts->batch) && (opts->resume || opts->part_count || opts->finalize))
        return smelt_fail(ctx, SMELT_E_ARG, "%s writes several outputs in one read; it does "
                          "not take %s (run an interrupted or partitioned merge as separate "
                          "merges)", opts->sweep ? "--sweep" : "--batch",
                          opts->resume ? "--resume" : opts->finalize ? "--finalize" : "--part");
    if (opts->batch && (config_path || out_dir || opts->config_text))
        return smelt_fail(ctx, SMELT_E_ARG, "--batch FILE lists the configs and output "
                          "directories; it takes no CONFIG or OUT_DIR of its own");
    smelt_plan_options popts = plan_options(opts);
    smelt_group_source src = {config_path, opts->config_text, out_dir, opts->sweep,
                              opts->batch};
    int rc = smelt_group_build(ctx, &src, &popts, group);
    if (rc == SMELT_OK && group->n > 1 && (opts->resume || opts->part_count || opts->finalize)) {
        rc = smelt_fail(ctx, SMELT_E_ARG, "%s: this merge writes %zu outputs in one read; it "
                        "does not take --resume, --part or --finalize", group->labels[0],
                        group->n);
        smelt_group_free(group);
    }
    return rc;
}

int smelt_plan_print(smelt_ctx *ctx, const char *config_path, const smelt_merge_options *user_opts,
                     FILE *out)
{
    smelt_merge_options opts;
    smelt_merge_group group;
    int rc = effective_options(ctx, user_opts, &opts);
    if (rc != SMELT_OK || (rc = load_group(ctx, config_path, NULL, &opts, &group)))
        return rc;
    const smelt_plan *const *plans = (const smelt_plan *const *)group.plans;
    smelt_engine_layout layout;
    rc = smelt_engine_layout_group(ctx, plans, group.n, opts.max_memory, opts.threads, &layout);
    if (rc == SMELT_OK && group.n == 1)
        rc = smelt_plan_describe(ctx, plans[0], &layout, opts.max_memory, out);
    else if (rc == SMELT_OK)
        rc = smelt_group_describe(ctx, plans, (const char *const *)group.labels, group.n,
                                  &layout, opts.max_memory, out);
    if (rc == SMELT_OK && opts.part_count)
        rc = smelt_parts_describe(ctx, plans[0], &layout, opts.part_index, opts.part_count, out);
    smelt_group_free(&group);
    return rc;
}

int smelt_merge_resumable(const smelt_ctx *ctx) { return ctx ? ctx->resumable : 0; }

/* Everything a merge tracks for integrity: the identity its journal header records, every
 * output tensor's hash, which tensors a resume skips, and the journal itself. */
typedef struct merge_state {
    smelt_ctx *ctx;
    const smelt_plan *plan;
    smelt_out_file *files;
    smelt_journal_header id;
    smelt_hash128 *hashes; /* per plan tensor */
    uint8_t *skip;         /* per plan tensor */
    const uint8_t *own;    /* per plan shard, 1 = this merge writes it; NULL: all (no parts) */
    smelt_journal *journal;
} merge_state;

/* The plan's identity: the output layout and everything else that decides output bytes but is
 * not in the config text or the inputs (the options, the smelt version). */
static smelt_hash128 plan_hash(const smelt_plan *plan)
{
    XXH3_state_t *st = XXH3_createState();
    smelt_hash128 h = {{0}};
    if (!st)
        return h;
    XXH3_128bits_reset(st);
    const char *version = smelt_version();
    XXH3_128bits_update(st, version, strlen(version) + 1);
    XXH3_128bits_update(st, plan->method->name, strlen(plan->method->name) + 1);
    XXH3_128bits_update(st, &plan->random_seed, sizeof plan->random_seed);
    for (size_t s = 0; s < plan->nshards; s++) {
        const smelt_plan_shard *sh = &plan->shards[s];
        XXH3_128bits_update(st, sh->name, strlen(sh->name) + 1);
        XXH3_128bits_update(st, &sh->size, sizeof sh->size);
        XXH3_128bits_update(st, sh->header, sh->header_len); /* names, dtypes, shapes, offsets */
    }
    for (size_t t = 0; t < plan->ntensors; t++) {
        const smelt_plan_tensor *pt = &plan->tensors[t];
        uint64_t fields[4] = {pt->kind, pt->shard, pt->out_offset, pt->out_nbytes};
        XXH3_128bits_update(st, fields, sizeof fields);
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
    memcpy(h.b, c.digest, sizeof h.b);
    XXH3_freeState(st);
    return h;
}

/* The journal header of this merge: config, what identifies every input file's content, the
 * plan. */
int smelt_merge_identity(smelt_ctx *ctx, const smelt_plan *plan, smelt_journal_header *id)
{
    memset(id, 0, sizeof *id);
    id->config = smelt_hash_bytes(plan->spec->text, strlen(plan->spec->text));
    id->plan = plan_hash(plan);
    size_t n = 0;
    for (size_t m = 0; m < plan->nmodels; m++)
        n += plan->models[m]->nfiles;
    id->inputs = calloc(n + 1, sizeof *id->inputs);
    if (!id->inputs)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t m = 0; m < plan->nmodels; m++)
        for (uint32_t f = 0; f < plan->models[m]->nfiles; f++) {
            const smelt_st_file *sf = &plan->models[m]->files[f];
            smelt_journal_input *in = &id->inputs[id->ninputs];
            if (!(in->path = strdup(sf->path)))
                return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
            id->ninputs++;
            int rc = smelt_journal_input_identify(ctx, sf->fd, sf->path, sf->data_start, in);
            if (rc != SMELT_OK)
                return rc;
        }
    return SMELT_OK;
}

int smelt_merge_checksums(smelt_ctx *ctx, const smelt_journal_header *id,
                          const smelt_hash128 *hashes, smelt_out_checksums *sums)
{
    smelt_manifest_input *inputs = calloc(id->ninputs + 1, sizeof *inputs);
    *sums = (smelt_out_checksums){id->config, inputs, id->ninputs, hashes};
    if (!inputs)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < id->ninputs; i++)
        inputs[i] = (smelt_manifest_input){id->inputs[i].path, id->inputs[i].header};
    return SMELT_OK;
}

static int on_tensor_done(void *user, size_t tensor, const smelt_hash128 *hash)
{
    merge_state *st = user;
    const smelt_plan_tensor *pt = &st->plan->tensors[tensor];
    st->hashes[tensor] = *hash;
    return smelt_journal_add(st->ctx, st->journal, st->files[pt->shard].fd, pt->name, hash);
}

/* Resuming: checks the journal belongs to this merge, reopens the temporary files, re-hashes
 * every journaled tensor's bytes (a record may be intact while its bytes are not, and a torn
 * tail means the tensor is simply redone), and starts a compacted journal of the survivors. */
static int resume_from(merge_state *st, const char *journal_path, const char *out_dir,
                       const smelt_merge_options *opts)
{
    smelt_ctx *ctx = st->ctx;
    const smelt_plan *plan = st->plan;
    smelt_journal_contents jc;
    int rc = smelt_journal_read(ctx, journal_path, &jc);
    if (rc != SMELT_OK) {
        smelt_error_prefix(ctx, "cannot resume: ");
        smelt_journal_contents_free(&jc);
        return rc;
    }
    char what[1024];
    if (smelt_journal_header_diff(&jc.header, &st->id, what, sizeof what)) {
        smelt_journal_contents_free(&jc);
        return smelt_fail(ctx, SMELT_E_ARG, "%s: cannot resume: %s since the interrupted merge; "
                          "run without --resume and with --overwrite to start over", out_dir,
                          what);
    }
    for (size_t s = 0; s < plan->nshards && rc == SMELT_OK; s++) {
        if (st->own && !st->own[s])
            continue;
        char *path = smelt_path_join(out_dir, plan->shards[s].name);
        rc = path ? smelt_out_reopen(ctx, &st->files[s], path, plan->shards[s].size)
                  : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        free(path);
    }
    size_t *order = rc == SMELT_OK ? smelt_plan_name_order(plan) : NULL;
    smelt_hash_range *ranges = calloc(jc.nrecords + 1, sizeof *ranges);
    size_t *tensor_of = calloc(jc.nrecords + 1, sizeof *tensor_of);
    smelt_hash128 *got = calloc(jc.nrecords + 1, sizeof *got);
    int *errors = calloc(jc.nrecords + 1, sizeof *errors);
    smelt_journal_record *keep = calloc(jc.nrecords + 1, sizeof *keep);
    if (rc == SMELT_OK && (!order || !ranges || !tensor_of || !got || !errors || !keep))
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    size_t n = 0, nkeep = 0;
    for (size_t r = 0; r < jc.nrecords && rc == SMELT_OK; r++) {
        size_t t = smelt_plan_find_name(plan, order, jc.records[r].name);
        if (t == (size_t)-1 || st->skip[t])
            continue; /* not ours (the layout hash makes this unlikely), another part's, or a
                       * repeat */
        const smelt_plan_tensor *pt = &plan->tensors[t];
        st->skip[t] = 1; /* provisional: cleared below when the bytes disagree */
        ranges[n] = (smelt_hash_range){st->files[pt->shard].fd, pt->out_offset, pt->out_nbytes};
        tensor_of[n] = t;
        got[n] = jc.records[r].hash; /* expected; replaced by what is read */
        keep[n] = jc.records[r];
        n++;
    }
    smelt_hash128 *read_hashes = calloc(n + 1, sizeof *read_hashes);
    if (rc == SMELT_OK && !read_hashes)
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK)
        rc = smelt_hash_ranges(ctx, ranges, n, opts->max_memory, opts->force_pread, read_hashes,
                               errors, NULL);
    size_t redo = 0;
    for (size_t i = 0; i < n && rc == SMELT_OK; i++) {
        size_t t = tensor_of[i];
        if (errors[i] || !smelt_hash_eq(&read_hashes[i], &got[i])) {
            st->skip[t] = 0;
            redo++;
            continue;
        }
        st->hashes[t] = got[i];
        keep[nkeep++] = (smelt_journal_record){plan->tensors[t].name, got[i]};
    }
    if (rc == SMELT_OK)
        rc = smelt_journal_create(ctx, journal_path, &st->id, keep, nkeep, &st->journal);
    size_t total = 0; /* the tensors this merge (or part) writes */
    for (size_t t = 0; t < plan->ntensors; t++)
        total += !st->own || st->own[plan->tensors[t].shard];
    if (rc == SMELT_OK && redo)
        smelt_notice(ctx, SMELT_LOG_NOTICE, "resuming: %zu of %zu tensors already written and "
                     "verified; %zu journaled tensor%s on disk and will be redone", nkeep,
                     total, redo, redo == 1 ? " differs" : "s differ");
    else if (rc == SMELT_OK)
        smelt_notice(ctx, SMELT_LOG_NOTICE, "resuming: %zu of %zu tensors already written and "
                     "verified", nkeep, total);
    free(order);
    free(ranges);
    free(tensor_of);
    free(got);
    free(errors);
    free(keep);
    free(read_hashes);
    smelt_journal_contents_free(&jc);
    return rc;
}

/* A fresh start: the journal first, so any temporary file on disk has one to resume from. */
static int start_fresh(merge_state *st, const char *journal_path, const char *out_dir)
{
    const smelt_plan *plan = st->plan;
    int rc = smelt_journal_create(st->ctx, journal_path, &st->id, NULL, 0, &st->journal);
    for (size_t s = 0; s < plan->nshards && rc == SMELT_OK; s++) {
        if (st->own && !st->own[s])
            continue;
        char *path = smelt_path_join(out_dir, plan->shards[s].name);
        rc = path ? smelt_out_create(st->ctx, &st->files[s], path, plan->shards[s].size)
                  : smelt_fail(st->ctx, SMELT_E_NOMEM, "out of memory");
        free(path);
    }
    return rc;
}

static int merge_outputs(smelt_ctx *ctx, smelt_plan **plans, const char *const *out_dirs,
                         size_t n, const smelt_merge_options *opts_in);
static int merge_plan(smelt_ctx *ctx, smelt_plan *plan, const char *out_dir,
                      const smelt_merge_options *opts);

/* Keeps the engine's last progress report for smelt_merge_result, passing each one on. */
typedef struct progress_tap {
    smelt_progress_fn fn;
    void *user;
    smelt_progress last;
} progress_tap;

static int fill_result(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir,
                       const char *name, const uint8_t *own, const progress_tap *tap,
                       smelt_merge_result *result);

int smelt_merge(smelt_ctx *ctx, const char *config_path, const char *out_dir,
                const smelt_merge_options *user_opts)
{
    smelt_merge_options opts;
    smelt_merge_group group;
    if (ctx)
        ctx->resumable = 0;
    int rc = effective_options(ctx, user_opts, &opts);
    if (rc != SMELT_OK || (rc = load_group(ctx, config_path, out_dir, &opts, &group)))
        return rc;
    if (!opts.finalize) {
        rc = merge_outputs(ctx, group.plans, (const char *const *)group.out_dirs, group.n,
                           &opts);
        for (size_t o = 0; o < group.n; o++)
            group.plans[o] = NULL; /* merge_outputs freed them */
        smelt_group_free(&group);
        return rc;
    }
    rc = smelt_parts_finalize(ctx, group.plans[0], out_dir, &opts);
    if (rc == SMELT_OK && opts.result)
        rc = fill_result(ctx, group.plans[0], out_dir, SMELT_MANIFEST_NAME, NULL,
                         &(progress_tap){0}, opts.result);
    smelt_group_free(&group);
    return rc;
}

/* Appends ref to buf as a YAML double-quoted scalar. -1 for a control character. */
static int yaml_quote(char *buf, size_t cap, size_t *len, const char *ref)
{
    if (*len + 1 >= cap)
        return -1;
    buf[(*len)++] = '"';
    for (const char *p = ref; *p; p++) {
        if ((unsigned char)*p < 0x20 || *len + 3 >= cap)
            return -1;
        if (*p == '"' || *p == '\\')
            buf[(*len)++] = '\\';
        buf[(*len)++] = *p;
    }
    buf[(*len)++] = '"';
    buf[*len] = '\0';
    return 0;
}

int smelt_lora_apply(smelt_ctx *ctx, const char *base, const char *adapter, const char *out_dir,
                     const smelt_merge_options *user_opts)
{
    if (ctx)
        ctx->resumable = 0;
    if (!base || !adapter || !*base || !*adapter || !out_dir)
        return smelt_fail(ctx, SMELT_E_ARG, "lora apply needs a base, an adapter and an output "
                          "directory");
    if (strchr(base, '+'))
        return smelt_fail(ctx, SMELT_E_ARG, "lora apply: the base '%s' holds a '+' (it would "
                          "read as base+adapter)", base);
    /* The one-model passthrough merge of BASE+ADAPTER: its config is what the output's
     * mergekit_config.yml records, and it runs as mergekit would run it. */
    size_t cap = strlen(base) * 2 + strlen(adapter) * 2 + 128, len = 0;
    char *text = malloc(cap);
    if (!text)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    len = (size_t)snprintf(text, cap, "merge_method: passthrough\nmodels:\n  - model: ");
    char *ref = malloc(strlen(base) + strlen(adapter) + 2);
    if (!ref) {
        free(text);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    sprintf(ref, "%s+%s", base, adapter);
    int bad = yaml_quote(text, cap, &len, ref);
    free(ref);
    if (bad) {
        free(text);
        return smelt_fail(ctx, SMELT_E_ARG, "lora apply: the base or adapter path holds a "
                          "control character");
    }
    len += (size_t)snprintf(text + len, cap - len, "\n");
    smelt_merge_options opts;
    smelt_merge_spec *spec;
    smelt_plan *plan;
    int rc = effective_options(ctx, user_opts, &opts);
    if (rc == SMELT_OK)
        rc = smelt_config_parse(ctx, "lora apply", text, len, &spec);
    free(text);
    if (rc != SMELT_OK || (rc = plan_spec(ctx, spec, &opts, &plan)) != SMELT_OK)
        return rc;
    if (!plan->models[0]->lora) {
        smelt_plan_free(plan);
        return smelt_fail(ctx, SMELT_E_INTERNAL, "lora apply: the adapter was not attached");
    }
    return merge_plan(ctx, plan, out_dir, &opts);
}

static void tap_progress(void *user, const smelt_progress *p)
{
    progress_tap *tap = user;
    tap->last = *p;
    if (tap->fn)
        tap->fn(tap->user, p);
}

/* The result of a finished merge into out_dir; manifest_xxh3 hashes out_dir/name (the manifest,
 * or a part's fragment); own: the shards counted (NULL: all). */
static int fill_result(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir,
                       const char *name, const uint8_t *own, const progress_tap *tap,
                       smelt_merge_result *result)
{
    char *path = smelt_path_join(out_dir, name), *text = NULL;
    size_t len;
    int rc = path ? smelt_read_file(ctx, path, (size_t)1 << 30, &text, &len)
                  : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK) {
        smelt_hash128 h = smelt_hash_bytes(text, len);
        uint64_t tensors = 0, files = 0;
        for (size_t t = 0; t < plan->ntensors; t++)
            tensors += !own || own[plan->tensors[t].shard];
        for (size_t s = 0; s < plan->nshards; s++)
            files += !own || own[s];
        *result = (smelt_merge_result){.tensors = tensors, .files = files,
                                       .bytes_read = tap->last.bytes_from_files,
                                       .bytes_written = tap->last.bytes_written,
                                       .seconds = tap->last.seconds};
        smelt_hash_hex(&h, result->manifest_xxh3);
    }
    free(text);
    free(path);
    return rc;
}

/* A part whose fragment is there had finished. Resuming it: *done = 1 (a journal left by a
 * stop between writing the fragment and removing the journal goes). Without --resume or
 * --overwrite: refused. */
static int part_done(smelt_ctx *ctx, const char *out_dir, const smelt_part *part,
                     const smelt_merge_options *opts, int *done)
{
    char *fragment = smelt_path_join(out_dir, part->fragment_name);
    char *journal = smelt_path_join(out_dir, part->journal_name);
    int rc = fragment && journal ? SMELT_OK : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    *done = rc == SMELT_OK && access(fragment, F_OK) == 0;
    if (*done && !opts->resume) {
        *done = 0;
        if (!opts->overwrite)
            rc = smelt_fail(ctx, SMELT_E_ARG, "part %u of %u has already finished (%s); "
                            "--overwrite redoes it, --finalize finishes the merge once every "
                            "part has", part->k, part->n, fragment);
    }
    if (*done && unlink(journal) != 0 && errno != ENOENT)
        rc = smelt_fail_errno(ctx, errno, "%s: cannot remove", journal);
    if (*done && rc == SMELT_OK)
        smelt_notice(ctx, SMELT_LOG_NOTICE, "part %u of %u had already finished (%s); run "
                     "--finalize once every part has", part->k, part->n, fragment);
    free(fragment);
    free(journal);
    return rc;
}

/* Everything merge_outputs keeps per output, beside its merge_state. */
typedef struct merge_output {
    merge_state st;
    const char *out_dir;
    char *journal_path;
    int resuming;
} merge_output;

/* Sets up output o for the engine: its directory checked, its journal and temporary files (or,
 * resuming, the journal's survivors). */
static int open_output(smelt_ctx *ctx, merge_output *mo, const smelt_part *part, int parted,
                       const smelt_merge_options *opts)
{
    merge_state *st = &mo->st;
    const smelt_plan *plan = st->plan;
    int rc = smelt_out_dir_prepare(ctx, plan, mo->out_dir, opts->overwrite, opts->resume,
                                   parted ? smelt_part_owns : NULL, (void *)part);
    if (rc != SMELT_OK)
        return rc;
    st->files = calloc(plan->nshards + 1, sizeof *st->files);
    st->hashes = calloc(plan->ntensors + 1, sizeof *st->hashes);
    st->skip = calloc(plan->ntensors + 1, 1);
    mo->journal_path = smelt_path_join(mo->out_dir, parted ? part->journal_name
                                                           : SMELT_JOURNAL_NAME);
    if (!st->files || !st->hashes || !st->skip || !mo->journal_path)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t s = 0; s < plan->nshards; s++)
        st->files[s].fd = -1;
    for (size_t t = 0; parted && t < plan->ntensors; t++)
        st->skip[t] = !part->shards[plan->tensors[t].shard]; /* another part's */
    rc = smelt_merge_identity(ctx, plan, &st->id);
    if (rc != SMELT_OK)
        return rc;
    mo->resuming = opts->resume && access(mo->journal_path, F_OK) == 0;
    if (opts->resume && !mo->resuming)
        smelt_notice(ctx, SMELT_LOG_NOTICE, "%s: no journal of an interrupted merge; "
                     "starting from the beginning", mo->out_dir);
    return mo->resuming ? resume_from(st, mo->journal_path, mo->out_dir, opts)
                        : start_fresh(st, mo->journal_path, mo->out_dir);
}

/* After the engine: output o's journal flushed, its part's fragment or its finalized
 * directory, the journal removed. */
static int close_output(smelt_ctx *ctx, merge_output *mo, const smelt_part *part, int parted,
                        const smelt_merge_options *opts)
{
    merge_state *st = &mo->st;
    const smelt_plan *plan = st->plan;
    /* Everything journaled before finalizing: a failure there (a full disk writing config.json)
     * then resumes straight to finalizing. */
    int rc = smelt_journal_flush(ctx, st->journal);
    if (rc == SMELT_OK && parted) {
        /* A part: its shards made durable under their temporary names, then its fragment;
         * finalizing renames them once every part is done. */
        for (size_t s = 0; s < plan->nshards && rc == SMELT_OK; s++)
            if (part->shards[s])
                rc = smelt_out_finish(ctx, &st->files[s]);
        if (rc == SMELT_OK)
            rc = smelt_part_write_fragment(ctx, plan, mo->out_dir, part, &st->id, st->hashes);
    } else if (rc == SMELT_OK) {
        smelt_out_checksums sums;
        rc = smelt_merge_checksums(ctx, &st->id, st->hashes, &sums);
        if (rc == SMELT_OK)
            rc = smelt_finalize(ctx, plan, mo->out_dir, st->files, !opts->no_model_card, &sums);
        free((void *)sums.inputs);
    }
    if (rc == SMELT_OK) {
        smelt_journal_close(st->journal);
        st->journal = NULL;
        if (unlink(mo->journal_path) != 0)
            rc = smelt_fail_errno(ctx, errno, "%s: cannot remove", mo->journal_path);
        else
            rc = smelt_fsync_dir(ctx, mo->out_dir);
    }
    return rc;
}

/* Output o after the merge ended with rc: committed, kept resumable, or discarded. Only
 * failures that running again can get past keep a resumable state: an interruption, a full
 * disk or another I/O error. A deterministic one (a method's math refusing the inputs) would
 * fail the same way on resume, so it cleans up as before. A failed resume keeps what it found
 * too: the next attempt may still use it. */
static void release_output(smelt_ctx *ctx, merge_output *mo, int rc)
{
    merge_state *st = &mo->st;
    int retryable = rc == SMELT_E_INTERRUPTED || rc == SMELT_E_IO;
    int keep_state = rc != SMELT_OK && ((st->journal && retryable) || mo->resuming);
    if (keep_state && st->journal) {
        /* Save what is done (best effort: the error already in ctx is the one to report). */
        smelt_journal_flush(NULL, st->journal);
        if (ctx)
            ctx->resumable = 1;
    }
    smelt_journal_close(st->journal);
    if (rc != SMELT_OK && !keep_state && st->journal)
        unlink(mo->journal_path); /* nothing to resume: the temporary files go too */
    for (size_t s = 0; st->files && s < st->plan->nshards; s++) {
        if (rc == SMELT_OK)
            smelt_out_release(&st->files[s]); /* committed, or a part's kept for finalizing */
        else if (keep_state)
            smelt_out_abandon(&st->files[s]); /* temporary names: nothing looks complete */
        else
            smelt_out_discard(&st->files[s]);
    }
    smelt_journal_header_free(&st->id);
    free(mo->journal_path);
    free(st->files);
    free(st->hashes);
    free(st->skip);
}

/* Opens every output, runs the engine over all of them, closes them (outs[o] gets each one's
 * state, released by the caller whatever the outcome; *opened counts those to release). */
static int run_outputs(smelt_ctx *ctx, smelt_plan **plans, const char *const *out_dirs,
                       size_t n, smelt_merge_options *opts, const smelt_part *part, int parted,
                       merge_output *outs, smelt_engine_output *eouts, size_t *opened)
{
    int rc = SMELT_OK;
    for (*opened = 0; rc == SMELT_OK && *opened < n; (*opened)++) {
        merge_output *mo = &outs[*opened];
        mo->st = (merge_state){.ctx = ctx, .plan = plans[*opened], .own = part->shards};
        mo->out_dir = out_dirs[*opened];
        rc = open_output(ctx, mo, part, parted, opts);
        eouts[*opened] = (smelt_engine_output){plans[*opened], mo->st.files, on_tensor_done,
                                               &mo->st};
    }
    progress_tap tap = {.fn = opts->progress, .user = opts->progress_user};
    smelt_engine_options eopts = {
        .max_memory = opts->max_memory,
        .threads = opts->threads,
        .force_pread = opts->force_pread,
        .progress = tap_progress,
        .progress_user = &tap,
        .cancel = opts->cancel,
        .skip = n == 1 ? outs[0].st.skip : NULL,
    };
    if (rc == SMELT_OK)
        rc = smelt_engine_run_group(ctx, eouts, n, &eopts);
    for (size_t o = 0; rc == SMELT_OK && o < n; o++)
        rc = close_output(ctx, &outs[o], part, parted, opts);
    if (rc == SMELT_OK && opts->result) {
        rc = fill_result(ctx, plans[0], out_dirs[0],
                         parted ? part->fragment_name : SMELT_MANIFEST_NAME, part->shards, &tap,
                         opts->result);
        for (size_t o = 1; o < n; o++) { /* a group: every output's tensors and files */
            opts->result->tensors += plans[o]->ntensors;
            opts->result->files += plans[o]->nshards;
        }
    }
    return rc;
}

/* Runs built plans, a group sharing its inputs (smelt_group_check), into their out_dirs in one
 * pass over the inputs; frees the plans. One plan is the ordinary merge; only it may be a
 * part or resume (the caller refuses those for a group). */
static int merge_outputs(smelt_ctx *ctx, smelt_plan **plans, const char *const *out_dirs,
                         size_t n, const smelt_merge_options *opts_in)
{
    smelt_merge_options opts = *opts_in;
    int rc, parted = opts.part_count > 0, done = 0;
    smelt_engine_layout layout;
    smelt_part part = {0};
    size_t opened = 0;
    merge_output *outs = calloc(n, sizeof *outs);
    smelt_engine_output *eouts = calloc(n, sizeof *eouts);
    if (!outs || !eouts)
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    else if ((rc = smelt_engine_layout_group(ctx, (const smelt_plan *const *)plans, n,
                                             opts.max_memory, opts.threads, &layout)) ||
             (parted && (rc = smelt_part_init(ctx, plans[0], opts.part_index, opts.part_count,
                                              &part))) ||
             (parted && (rc = part_done(ctx, out_dirs[0], &part, &opts, &done))))
        ;
    else if (done) { /* resuming a part that had finished: nothing to do */
        if (opts.result)
            rc = fill_result(ctx, plans[0], out_dirs[0], part.fragment_name, part.shards,
                             &(progress_tap){0}, opts.result);
    } else {
        if (parted && !part.nshards)
            smelt_notice(ctx, SMELT_LOG_NOTICE, "part %u of %u has no shards to write (the "
                         "plan has %zu for %u parts); it only records that it is done", part.k,
                         part.n, plans[0]->nshards, part.n);
        rc = run_outputs(ctx, plans, out_dirs, n, &opts, &part, parted, outs, eouts, &opened);
    }
    for (size_t o = 0; o < opened; o++)
        release_output(ctx, &outs[o], rc);
    smelt_part_free(&part);
    for (size_t o = 0; o < n; o++)
        smelt_plan_free(plans[o]);
    free(outs);
    free(eouts);
    return rc;
}

static int merge_plan(smelt_ctx *ctx, smelt_plan *plan, const char *out_dir,
                      const smelt_merge_options *opts)
{
    return merge_outputs(ctx, &plan, &out_dir, 1, opts);
}
