/* A model's side files: config.json, the tokenizer files, generation_config.json and the rest
 * of what sits next to its weights. They are the files of the model's directory, except for a
 * "BASE+DELTA" model, whose side files are the fine-tune's as the delta recorded them
 * (format/delta.h: "file:NAME" entries), never the base's: a fine-tune with another vocabulary
 * or chat template is described by its own config.json and tokenizer, and a merge that took the
 * base's would write a model whose config does not match its weights.
 *
 * Every function takes a file name without a directory ("config.json"). None keeps state; the
 * model is only read (thread-safe as far as the model is not being changed). */
#ifndef SMELT_SIDE_FILE_H
#define SMELT_SIDE_FILE_H

#include "common/errors.h"
#include "format/safetensors.h"

#include <stdint.h>

struct json_t;

/* 1 when the model has the side file `name`, 0 when it has none (a lone file has none). */
int smelt_side_exists(const smelt_model *m, const char *name);

/* Checks, before a merge reads or writes anything, that the side file can be read later: a
 * regular file (or a delta entry) of at most max_size bytes (0: any size). SMELT_OK when the
 * model lacks it; otherwise an error naming the file. */
int smelt_side_check(smelt_ctx *ctx, const smelt_model *m, const char *name, uint64_t max_size);

/* Loads the JSON side file `name` (at most SMELT_JSON_MAX_BYTES) parsed with jansson `flags`:
 * on SMELT_OK *out is a new reference the caller json_decref()s, or NULL when the model has no
 * such file. A file that cannot be read or parsed (or a damaged delta frame) is an error
 * naming it. */
int smelt_side_load_json(smelt_ctx *ctx, const smelt_model *m, const char *name, size_t flags,
                         struct json_t **out);

/* Copies the side file `name` to `dst` durably (dst.smelt-tmp, fsync, rename), in bounded
 * memory whatever its size; nothing is written when the model lacks it. Returns SMELT_OK or an
 * error naming the file; after an error dst is untouched. */
int smelt_side_copy(smelt_ctx *ctx, const smelt_model *m, const char *name, const char *dst);

#endif
