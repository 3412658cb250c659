/* The GGUF side of the planner (private to plan/): which type each output tensor is written in,
 * and the output file's header, built from the reference model's metadata. */
#ifndef SMELT_PLAN_GGUF_H
#define SMELT_PLAN_GGUF_H

#include "plan/plan.h"

/* Parses an --outtype value: "same" (or NULL) gives SMELT_DT_INVALID, meaning each tensor keeps
 * its reference type; f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k (any case)
 * give that type. SMELT_E_ARG naming the choices otherwise. */
int smelt_plan_gguf_outtype(smelt_ctx *ctx, const char *name, smelt_dtype *out);

/* The type output tensor `pattern` (the slice's reference input) is written in: 1-D tensors and
 * those of fewer than 2 dimensions stay F32 as llama.cpp requires of norms; otherwise the
 * requested type, or for "same" the pattern's own, requantized. A block type smelt has no
 * quantizer for, or whose block does not divide the rows, falls back as llama.cpp's quantizer
 * does (one notice per pair of types). Never fails. */
smelt_dtype smelt_plan_gguf_dtype(smelt_ctx *ctx, smelt_plan *plan, const smelt_tensor_info *pattern);

/* Lays out the GGUF output: one file, "model.gguf", when split_size is 0 (or everything fits
 * in one split), else a gguf-split set "model-00001-of-0000N.gguf" ... as llama.cpp's
 * gguf-split writes it (greedy in plan order: a split ends when the next tensor's padded data
 * would take it past split_size; a larger tensor gets a split of its own). The first (or only)
 * file carries the reference model's metadata and tokenizer (split.* dropped), general.name
 * and the provenance keys (general.base_model.*, smelt.merge_method, smelt.version) replaced,
 * the block count updated when the merge changes the number of layers; every file of a set
 * carries split.no (u16, from 0), split.count (u16) and split.tensors.count (i32, the set's
 * tensors), the others nothing else (but general.alignment when it is not 32). Tensor infos in
 * plan order. Sets every tensor's shard and out_offset. More than 65535 splits is SMELT_E_ARG,
 * before anything is written. */
int smelt_plan_gguf_layout(smelt_ctx *ctx, smelt_plan *plan, uint64_t split_size);

#endif
