/* A small pthread pool for splitting one piece of work across cores.
 *
 * Determinism: the pool never decides how work is divided. Callers cut work into tasks at fixed
 * boundaries that do not depend on the thread count, and each task writes only its own output,
 * so results are bit-identical for any number of threads. */
#ifndef SMELT_POOL_H
#define SMELT_POOL_H

#include <stddef.h>

typedef struct smelt_pool smelt_pool;

/* Task body: runs task number `task` (0..ntasks-1) on worker `worker` (0..threads-1; the calling
 * thread is worker 0). */
typedef void (*smelt_task_fn)(void *arg, size_t task, unsigned worker);

/* The worker count the pool uses for `threads` (threads <= 0: the online CPUs, at least 1):
 * the engine sizes its budget with the same number. */
unsigned smelt_pool_default_threads(int threads);

/* Starts threads-1 workers (threads <= 0: online CPUs). Returns NULL when threads cannot be
 * created or memory is exhausted. */
smelt_pool *smelt_pool_new(int threads);

/* Number of workers including the caller. */
unsigned smelt_pool_threads(const smelt_pool *pool);

/* Runs fn for every task and returns when all are done. The caller takes part. Tasks are handed
 * out dynamically, so their order of execution varies; see the determinism note above. Only one
 * thread may call this at a time. */
void smelt_pool_run(smelt_pool *pool, size_t ntasks, smelt_task_fn fn, void *arg);

/* smelt_pool_run in two halves, so the calling thread can do other work (I/O) while the
 * workers start on the tasks: start hands them out to the workers other than the caller and
 * returns at once; finish runs what is left as worker 0 and returns when all are done. Between
 * the two the caller must not use the pool (nor what worker 0's tasks use). With one thread,
 * finish runs every task. Every start is followed by one finish. */
void smelt_pool_start(smelt_pool *pool, size_t ntasks, smelt_task_fn fn, void *arg);
void smelt_pool_finish(smelt_pool *pool);

/* Stops and joins the workers. NULL is allowed. */
void smelt_pool_free(smelt_pool *pool);

#endif
