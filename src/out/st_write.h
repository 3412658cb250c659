/* One whole safetensors file written in one go: the layout, a temporary name, the header, each
 * tensor's data through the caller, the rename. For writers that produce every tensor themselves
 * (the synthetic models and adapters); merges write their shards through the engine instead. */
#ifndef SMELT_ST_WRITE_H
#define SMELT_ST_WRITE_H

#include "format/safetensors.h"
#include "io/writer.h"

/* Writes tensor `index` of the file: its descs[index].nbytes bytes at `offset` (through
 * smelt_out_write). Returns SMELT_OK or a status with the message in ctx. */
typedef int (*smelt_st_tensor_writer)(smelt_ctx *ctx, void *user, smelt_out_file *file,
                                      size_t index, uint64_t offset);

/* Lays out descs (smelt_st_layout), creates path under a temporary name, writes the header, calls
 * write(ctx, user, file, i, offset) for i = 0 .. n - 1 in order, then flushes and renames the
 * file into place. On any failure the temporary file is removed and nothing exists at path.
 * *size (when not NULL) gets the file's size. Returns SMELT_OK or the first failure's status. */
int smelt_st_write_file(smelt_ctx *ctx, const char *path, const smelt_st_out_tensor *descs,
                        size_t n, smelt_st_tensor_writer write, void *user, uint64_t *size);

#endif
