/* Partitioned merges (smelt_merge_options.part_count, .finalize in smelt.h): which whole output
 * shards each part writes, the fragment a finished part leaves in the output directory, and
 * finalizing once every part is done. merge.c runs a part like any merge, with the other
 * parts' tensors skipped; this file holds what only partitioned merges need.
 *
 * Fragment OUT_DIR/.smelt-part-K-of-N.json (JSON, keys sorted, 1-space indent):
 *   {"format": "smelt-part", "format_version": 1, "part": K, "parts": N,
 *    "plan": "<the journal header's plan hash: output layout, options, smelt version>",
 *    "input_content": [{"size": N, "sample": "<hex>"}]   (the journal's per-input identity
 *                                                         that holds on any machine),
 *    "manifest": {the smelt-manifest.json of the part's shards alone: config hash, inputs'
 *                 header hashes, smelt version, each shard's size and header hash, each
 *                 tensor's hash, dtype and shape}}
 * Device, inode and mtime are left out: another machine sees the same file under other ones. */
#ifndef SMELT_PARTS_H
#define SMELT_PARTS_H

#include "engine/engine.h"
#include "integrity/journal.h"
#include "out/finalize.h"

#include <stdio.h>

/* One part of a partitioned merge. */
typedef struct smelt_part {
    const smelt_plan *plan;
    unsigned k, n;          /* part k of n, 1-based */
    uint8_t *shards;        /* per plan shard: 1 when this part writes it */
    size_t nshards;         /* how many it writes */
    char journal_name[64];  /* SMELT_JOURNAL_NAME ".part-K-of-N" */
    char fragment_name[64]; /* SMELT_PART_PREFIX "K-of-N.json" */
} smelt_part;

/* The partition smelt.h describes: part_of[s] (0-based, below n) for every plan shard s. */
void smelt_parts_assign(const smelt_plan *plan, unsigned n, unsigned *part_of);

/* Part k of n of plan. SMELT_E_ARG unless 1 <= k <= n <= SMELT_MAX_PARTS. */
int smelt_part_init(smelt_ctx *ctx, const smelt_plan *plan, unsigned k, unsigned n,
                    smelt_part *part);
void smelt_part_free(smelt_part *part);

/* A smelt_out_owned_fn (user: the smelt_part): the part's journal, fragment and its shards'
 * temporary files, each with the temporary file an atomic write of it uses. */
int smelt_part_owns(void *part, const char *name);

/* Writes the part's fragment into out_dir atomically (id: the merge's journal header; hashes:
 * per plan tensor, those of the part's tensors filled in). */
int smelt_part_write_fragment(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir,
                              const smelt_part *part, const smelt_journal_header *id,
                              const smelt_hash128 *hashes);

/* smelt_merge_options.finalize: checks every part's fragment and temporary shards, then
 * smelt_finalize, then removes the fragments. Nothing is written when a check fails. */
int smelt_parts_finalize(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir,
                         const smelt_merge_options *opts);

/* For `smelt plan --part K/N`: every part's shards and bytes, then part k's shards. */
int smelt_parts_describe(smelt_ctx *ctx, const smelt_plan *plan,
                         const smelt_engine_layout *layout, unsigned k, unsigned n, FILE *out);

/* From merge.c: the journal header of a merge (config, inputs, plan hash; free with
 * smelt_journal_header_free), and the manifest checksums made of it and the tensors' hashes
 * (sums->inputs is malloc'd: the caller frees it; its strings are id's). */
int smelt_merge_identity(smelt_ctx *ctx, const smelt_plan *plan, smelt_journal_header *id);
int smelt_merge_checksums(smelt_ctx *ctx, const smelt_journal_header *id,
                          const smelt_hash128 *hashes, smelt_out_checksums *sums);

#endif
