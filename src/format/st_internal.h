/* Helpers shared by the safetensors reader, the model opener and the layout writer. Private to
 * src/format/. */
#ifndef SMELT_ST_INTERNAL_H
#define SMELT_ST_INTERNAL_H

#include "common/errors.h"

#include <stddef.h>
#include <stdint.h>

/* Returns len when bytes[0, len) is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), else the offset of the first byte that is not. */
size_t smelt_utf8_check(const uint8_t *bytes, size_t len);

/* An open-addressing hash table from names to positions in a caller's array. It stores only
 * positions, so it stays valid as long as the array does not move; lookups never write, so
 * concurrent lookups are safe. */
typedef struct smelt_name_index {
    size_t mask;    /* capacity - 1; capacity a power of two, at least twice the entries */
    size_t *slots;  /* position + 1; 0 marks an empty slot */
} smelt_name_index;

/* Returns the name of item i of the caller's array. */
typedef const char *(*smelt_name_at_fn)(const void *array, size_t i);

/* Indexes items [0, n) of `array`. Returns 0; -1 when out of memory; 1 when two items share a
 * name, with their positions in *dup_first and *dup_second (then nothing is left to free). */
int smelt_name_index_build(smelt_name_index *index, const void *array, size_t n,
                           smelt_name_at_fn name_at, size_t *dup_first, size_t *dup_second);

/* The position of the item called `name`, or (size_t)-1. */
size_t smelt_name_index_find(const smelt_name_index *index, const void *array,
                             smelt_name_at_fn name_at, const char *name);

void smelt_name_index_free(smelt_name_index *index);

struct smelt_model;

/* Fills an empty model from the GGUF file or split set at path (smelt_model_open's GGUF case):
 * m->gguf, one file per split with its descriptor open, the tensors in (file, offset) order. On
 * error the model holds what was opened so far; smelt_model_close frees it. */
int smelt_gguf_model_open(smelt_ctx *ctx, struct smelt_model *m, const char *path);

#endif
