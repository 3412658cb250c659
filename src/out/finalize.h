/* The last step of a merge: make the output directory a complete Hugging Face model, in an
 * order that never leaves something that looks complete before it is. */
#ifndef SMELT_FINALIZE_H
#define SMELT_FINALIZE_H

#include "integrity/manifest.h"
#include "io/writer.h"
#include "plan/plan.h"

/* The names a partitioned merge keeps its state under in the output directory start with this:
 * SMELT_PART_PREFIX "K-of-N.json" for a part's fragment (engine/parts.h); its journal is
 * SMELT_JOURNAL_NAME ".part-K-of-N". */
#define SMELT_PART_PREFIX ".smelt-part-"

/* 1 when the leftover-state file `name` in the output directory belongs to the merge preparing
 * it (a part of a partitioned merge owns its own journal, fragment and shards' temporary files,
 * and must leave the other parts' alone: they may be running at the same time). */
typedef int (*smelt_out_owned_fn)(void *user, const char *name);

/* Refuses, whatever the options and before anything is written, an output path that is an input
 * file or holds one (at any depth, or as another name for it in the directory itself; compared
 * by device and inode: the config, every model's safetensors files, index, config.json and
 * tokenizer files). Refuses an output directory that already holds a model unless overwrite.
 * Creates it when missing. The state an interrupted merge left (its
 * journal, temporary shard files) is kept when resume, removed when overwrite, else refused
 * with a message suggesting either. With `owned` set, only the state it says is this merge's
 * counts (NULL: all of it); the rest is left alone. */
int smelt_out_dir_prepare(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir,
                          int overwrite, int resume, smelt_out_owned_fn owned, void *owned_user);

/* What the checksum manifest records besides file sizes. */
typedef struct smelt_out_checksums {
    smelt_hash128 config;               /* the config text */
    const smelt_manifest_input *inputs; /* every input file's header hash */
    size_t ninputs;
    const smelt_hash128 *tensors;       /* per plan tensor, its bytes as written */
} smelt_out_checksums;

/* The manifest of a merged plan (the one finalizing writes), or with shards set, of only the
 * plan shards s with shards[s] != 0 (a part's fragment). Its strings are borrowed from the plan
 * and sums; free with smelt_manifest_of_plan_free (not smelt_manifest_free). */
int smelt_manifest_of_plan(smelt_ctx *ctx, const smelt_plan *plan,
                           const smelt_out_checksums *sums, const uint8_t *shards,
                           smelt_manifest *m);
void smelt_manifest_of_plan_free(smelt_manifest *m);

/* Given the shard files the engine wrote (still under temporary names), writes config.json
 * (torch_dtype and, for frankenmerges, the layer count updated), the tokenizer files of the
 * plan's tokenizer model and the chat template, the model card (when write_card), the config
 * copy and the checksum manifest, renames the shards into place and writes the index last. The
 * manifest comes before the renames so that a directory whose shards have final names always
 * has the manifest that describes them; on its own it does not make the directory look
 * complete. On failure the shards are left under temporary names. */
int smelt_finalize(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir,
                   smelt_out_file *files, int write_card, const smelt_out_checksums *sums);

/* Writes model.safetensors.index.json in dir: {"metadata": {"total_size": N},
 * "weight_map": {tensor: file}} with 2-space indent and sorted keys. names[i] lives in
 * files[i]. */
int smelt_write_index(smelt_ctx *ctx, const char *dir, const char *const *names,
                      const char *const *files, size_t n, uint64_t total_size);

#endif
