/* Output files written at precomputed offsets under a temporary name, renamed into place only
 * when the whole merge succeeded.
 *
 * Page-cache policy: each write starts background writeback of its range (sync_file_range), and
 * ranges older than a small window are waited for and dropped from the cache, so dirty pages do
 * not pile up on machines with little memory. */
#ifndef SMELT_WRITER_H
#define SMELT_WRITER_H

#include "common/errors.h"

#include <stddef.h>
#include <stdint.h>

#define SMELT_WRITER_WINDOW 8

typedef struct smelt_out_file {
    char *final_path;
    char *tmp_path;
    int fd;
    uint64_t size;
    /* Ranges whose writeback was started but not yet waited for (a FIFO). */
    uint64_t flush_off[SMELT_WRITER_WINDOW], flush_len[SMELT_WRITER_WINDOW];
    unsigned flush_head, flush_count;
} smelt_out_file;

/* Creates final_path's temporary sibling ("<final>.smelt-tmp") and reserves `size` bytes, so a
 * full disk is found before data is written where the filesystem supports it. */
int smelt_out_create(smelt_ctx *ctx, smelt_out_file *file, const char *final_path, uint64_t size);

/* Like smelt_out_create, for a resumed merge: opens the existing temporary file without
 * truncating it (creating it when missing), gives it exactly `size` bytes and reserves them. On
 * failure the temporary file is kept. */
int smelt_out_reopen(smelt_ctx *ctx, smelt_out_file *file, const char *final_path, uint64_t size);

/* For a file whose size is known only at the end (a compressed stream): creates it empty and
 * lets writes land anywhere until smelt_out_set_size() fixes the size. */
int smelt_out_create_unsized(smelt_ctx *ctx, smelt_out_file *file, const char *final_path);

/* Gives the temporary file exactly `size` bytes (cutting or zero-extending) and bounds later
 * writes by it. */
int smelt_out_set_size(smelt_ctx *ctx, smelt_out_file *file, uint64_t size);

/* Writes len bytes at offset off (all of them, retrying short writes). */
int smelt_out_write(smelt_ctx *ctx, smelt_out_file *file, const void *buf, size_t len,
                    uint64_t off);

/* fsyncs and closes the temporary file (it keeps its temporary name). */
int smelt_out_finish(smelt_ctx *ctx, smelt_out_file *file);

/* Renames the finished temporary file to its final name. */
int smelt_out_commit(smelt_ctx *ctx, smelt_out_file *file);

/* Closes (if open) and removes the temporary file; frees the names. Safe on a zeroed file. */
void smelt_out_discard(smelt_out_file *file);

/* Closes (if open) and keeps the temporary file, for a later resume; frees the names. Safe on a
 * zeroed file. */
void smelt_out_abandon(smelt_out_file *file);

/* Frees the names after a commit. */
void smelt_out_release(smelt_out_file *file);

#endif
