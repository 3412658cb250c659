/* The errors of a batch of pool tasks (common/pool.h), reported the same whatever the thread
 * count: each worker has a context its tasks write a failure into, and keeps the failure of
 * its lowest-numbered failing task; after the batch the lowest of those is the one reported. */
#ifndef SMELT_TASK_ERRORS_H
#define SMELT_TASK_ERRORS_H

#include "common/errors.h"

#include <stddef.h>

typedef struct smelt_task_errors {
    unsigned n;           /* workers */
    smelt_ctx **scratch;  /* per worker: where a task writes its failure (owned) */
    smelt_ctx **kept;     /* per worker: the failure of its lowest failing task (owned) */
    size_t *fail_task;    /* per worker: that task, or SIZE_MAX */
} smelt_task_errors;

/* Contexts for n workers, reset. SMELT_OK or SMELT_E_NOMEM (then free what it holds with
 * smelt_task_errors_free). */
int smelt_task_errors_init(smelt_ctx *ctx, smelt_task_errors *t, unsigned n);
/* Frees everything; a zeroed struct is allowed. */
void smelt_task_errors_free(smelt_task_errors *t);
/* Before a batch: no failures. */
void smelt_task_errors_reset(smelt_task_errors *t);
/* From task `task` on `worker`, which failed with its message in t->scratch[worker]. Touches
 * only that worker's entries: safe from concurrent tasks on other workers. */
void smelt_task_failed(smelt_task_errors *t, unsigned worker, size_t task);
/* After a batch, from the thread that ran it: SMELT_OK, or the lowest failed task's status with
 * its message copied into ctx. */
int smelt_task_errors_result(smelt_ctx *ctx, const smelt_task_errors *t);

#endif
