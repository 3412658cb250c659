#include "common/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

struct smelt_pool {
    unsigned threads;
    pthread_t *workers;
    pthread_mutex_t lock;
    pthread_cond_t work_ready, work_done;
    /* The current job. `generation` changes for each job so sleeping workers know a new one came. */
    uint64_t generation;
    smelt_task_fn fn;
    void *arg;
    size_t ntasks;
    atomic_size_t next_task;
    unsigned busy_workers;
    int stopping;
};

typedef struct worker_start {
    smelt_pool *pool;
    unsigned id;
} worker_start;

static void run_tasks(smelt_pool *pool, unsigned worker)
{
    for (;;) {
        size_t task = atomic_fetch_add_explicit(&pool->next_task, 1, memory_order_relaxed);
        if (task >= pool->ntasks)
            return;
        pool->fn(pool->arg, task, worker);
    }
}

static void *worker_main(void *p)
{
    worker_start start = *(worker_start *)p;
    free(p);
    smelt_pool *pool = start.pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->stopping && pool->generation == seen)
            pthread_cond_wait(&pool->work_ready, &pool->lock);
        if (pool->stopping)
            break;
        seen = pool->generation;
        pthread_mutex_unlock(&pool->lock);
        run_tasks(pool, start.id);
        pthread_mutex_lock(&pool->lock);
        if (--pool->busy_workers == 0)
            pthread_cond_signal(&pool->work_done);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

unsigned smelt_pool_default_threads(int threads)
{
    if (threads > 0)
        return (unsigned)threads;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (unsigned)online : 1;
}

smelt_pool *smelt_pool_new(int threads)
{
    threads = (int)smelt_pool_default_threads(threads);
    smelt_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pool->threads = (unsigned)threads;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->work_ready, NULL);
    pthread_cond_init(&pool->work_done, NULL);
    pool->workers = calloc((size_t)threads, sizeof *pool->workers);
    if (!pool->workers) {
        free(pool);
        return NULL;
    }
    for (unsigned i = 1; i < pool->threads; i++) {
        worker_start *start = malloc(sizeof *start);
        if (!start || (start->pool = pool, start->id = i,
                       pthread_create(&pool->workers[i], NULL, worker_main, start) != 0)) {
            free(start);
            pool->threads = i; /* join the ones already started */
            smelt_pool_free(pool);
            return NULL;
        }
    }
    return pool;
}

unsigned smelt_pool_threads(const smelt_pool *pool) { return pool->threads; }

void smelt_pool_start(smelt_pool *pool, size_t ntasks, smelt_task_fn fn, void *arg)
{
    pthread_mutex_lock(&pool->lock);
    pool->fn = fn;
    pool->arg = arg;
    pool->ntasks = ntasks;
    atomic_store(&pool->next_task, 0);
    if (pool->threads > 1 && ntasks > 1) { /* else finish runs them all on the caller */
        pool->busy_workers = pool->threads - 1;
        pool->generation++;
        pthread_cond_broadcast(&pool->work_ready);
    }
    pthread_mutex_unlock(&pool->lock);
}

void smelt_pool_finish(smelt_pool *pool)
{
    run_tasks(pool, 0);
    pthread_mutex_lock(&pool->lock);
    while (pool->busy_workers > 0)
        pthread_cond_wait(&pool->work_done, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
}

void smelt_pool_run(smelt_pool *pool, size_t ntasks, smelt_task_fn fn, void *arg)
{
    if (ntasks == 0)
        return;
    if (pool->threads == 1 || ntasks == 1) {
        for (size_t t = 0; t < ntasks; t++)
            fn(arg, t, 0);
        return;
    }
    smelt_pool_start(pool, ntasks, fn, arg);
    smelt_pool_finish(pool);
}

void smelt_pool_free(smelt_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = 1;
    pthread_cond_broadcast(&pool->work_ready);
    pthread_mutex_unlock(&pool->lock);
    for (unsigned i = 1; i < pool->threads; i++)
        pthread_join(pool->workers[i], NULL);
    pthread_cond_destroy(&pool->work_ready);
    pthread_cond_destroy(&pool->work_done);
    pthread_mutex_destroy(&pool->lock);
    free(pool->workers);
    free(pool);
}
