/* What smelt delta extract (delta_extract.c) and apply (delta_apply.c) share: options, worker
 * pool and error contexts, and output-directory checks. Private to
 * src/delta/. */
#ifndef SMELT_DELTA_INTERNAL_H
#define SMELT_DELTA_INTERNAL_H

#include "common/errors.h"
#include "common/pool.h"
#include "common/task_errors.h"
#include "format/safetensors.h"

#include <stddef.h>
#include <stdint.h>

#define SMELT_DELTA_DEFAULT_MEMORY ((uint64_t)256 << 20)
#define SMELT_DELTA_DEFAULT_LEVEL 3
#define SMELT_DELTA_MAX_SLOTS 4096

/* The pool and its workers' error contexts. A batch of frames runs as pool tasks; a task that
 * fails writes its message into err.scratch[worker] and calls smelt_task_failed; after the
 * batch smelt_task_errors_result reports the lowest failed task, so the message never depends
 * on the thread count. */
typedef struct delta_workers {
    smelt_pool *pool;
    unsigned n;
    smelt_task_errors err;
} delta_workers;

int delta_workers_init(smelt_ctx *ctx, delta_workers *w, int threads);
void delta_workers_free(delta_workers *w);

/* The file name of a model file's path relative to the model's directory, or NULL when it is
 * not a single component there (a shard in a subdirectory: not supported). */
const char *delta_file_name(const smelt_model *m, const char *path);

/* 1 when two paths name the same file or directory (device and inode). */
int delta_same_file(const char *a, const char *b);

/* 1 when the directory `dir` holds the file at `path` directly (compared by inode). */
int delta_dir_holds(const char *dir, const char *path);

/* Opens a safetensors model for a delta: GGUF and adapters are refused (SMELT_E_UNSUPPORTED),
 * and every file must sit directly in the model's directory. `role` ("MODEL", "BASE") is for
 * messages. */
int delta_open_model(smelt_ctx *ctx, const char *ref, const char *role, smelt_model **out);

#endif
