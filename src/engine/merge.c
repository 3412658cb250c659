/* smelt_merge(): config → plan → engine → finalize. */
#include "engine/engine.h"
#include "io/ring.h"
#include "out/finalize.h"

#include "common/util.h"

#include <stdlib.h>
#include <string.h>

void smelt_merge_options_default(smelt_merge_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->max_memory = 512ull << 20;
    opts->out_shard_size = 5000000000ull;
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
        if (!opts->out_shard_size)
            opts->out_shard_size = 5000000000ull;
    }
    return smelt_ring_env(ctx, &opts->force_pread);
}

/* Config file → validated plan. */
static int load_plan(smelt_ctx *ctx, const char *config_path, const smelt_merge_options *opts,
                     smelt_plan **plan)
{
    smelt_merge_spec *spec;
    int rc = smelt_config_load(ctx, config_path, &spec);
    if (rc != SMELT_OK)
        return rc;
    smelt_plan_options popts = {
        .out_shard_size = opts->out_shard_size,
        .random_seed = opts->random_seed,
        .copy_tokenizer = !opts->no_copy_tokenizer,
        .allow_crimes = opts->allow_crimes,
    };
    return smelt_plan_build(ctx, spec, &popts, plan);
}

int smelt_plan_print(smelt_ctx *ctx, const char *config_path, const smelt_merge_options *user_opts,
                     FILE *out)
{
    smelt_merge_options opts;
    smelt_plan *plan;
    int rc = effective_options(ctx, user_opts, &opts);
    if (rc != SMELT_OK || (rc = load_plan(ctx, config_path, &opts, &plan)) != SMELT_OK)
        return rc;
    smelt_engine_layout layout;
    rc = smelt_engine_layout_for(ctx, plan, opts.max_memory, opts.threads, &layout);
    if (rc == SMELT_OK)
        rc = smelt_plan_describe(ctx, plan, &layout, opts.max_memory, out);
    smelt_plan_free(plan);
    return rc;
}

int smelt_merge(smelt_ctx *ctx, const char *config_path, const char *out_dir,
                const smelt_merge_options *user_opts)
{
    smelt_merge_options opts;
    smelt_plan *plan;
    int rc = effective_options(ctx, user_opts, &opts);
    if (rc != SMELT_OK || (rc = load_plan(ctx, config_path, &opts, &plan)) != SMELT_OK)
        return rc;
    smelt_engine_layout layout;
    if ((rc = smelt_engine_layout_for(ctx, plan, opts.max_memory, opts.threads, &layout)) ||
        (rc = smelt_out_dir_prepare(ctx, plan, out_dir, opts.overwrite))) {
        smelt_plan_free(plan);
        return rc;
    }
    smelt_out_file *files = calloc(plan->nshards, sizeof *files);
    if (!files) {
        smelt_plan_free(plan);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    for (size_t s = 0; s < plan->nshards; s++)
        files[s].fd = -1;
    for (size_t s = 0; s < plan->nshards && rc == SMELT_OK; s++) {
        char *path = smelt_path_join(out_dir, plan->shards[s].name);
        rc = path ? smelt_out_create(ctx, &files[s], path, plan->shards[s].size)
                  : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        free(path);
    }
    smelt_engine_options eopts = {
        .max_memory = opts.max_memory,
        .threads = opts.threads,
        .force_pread = opts.force_pread,
        .progress = opts.progress,
        .progress_user = opts.progress_user,
        .cancel = opts.cancel,
    };
    if (rc == SMELT_OK)
        rc = smelt_engine_run(ctx, plan, files, &eopts);
    if (rc == SMELT_OK)
        rc = smelt_finalize(ctx, plan, out_dir, files, !opts.no_model_card);
    for (size_t s = 0; s < plan->nshards; s++) {
        if (rc == SMELT_OK)
            smelt_out_release(&files[s]);
        else
            smelt_out_discard(&files[s]); /* nothing that looks complete stays behind */
    }
    free(files);
    smelt_plan_free(plan);
    return rc;
}
