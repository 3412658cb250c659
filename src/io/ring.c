#include "io/ring.h"

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One read, possibly finished in several pieces after short reads. */
typedef struct ring_request {
    int fd;
    char *buf;
    size_t len, done;
    uint64_t off;
    uint64_t tag;
    int in_use;
    int error; /* pread mode: the reader's result, 0 or a positive errno */
} ring_request;

/* Reader threads of the pread path. Two keep a read in flight while the other's data is being
 * copied out of the page cache, and let a device with parallelism serve both; more add little
 * for the sequential ranges the engine asks for. */
#define PREAD_READERS 2

struct smelt_ring {
    int uring_ok;
    struct io_uring uring;
    unsigned depth;
    ring_request *requests;
    unsigned *free_ids;
    unsigned nfree;
    unsigned pending;   /* queued or in flight */
    uint64_t bytes_read; /* of completed reads */
    /* pread mode: requests wait here in FIFO order; the first fifo_ready of them were
     * submitted and are taken by the reader threads (or, when none could be started, performed
     * by smelt_ring_wait itself). Finished ones wait in `done` until smelt_ring_wait returns
     * them. Everything below is guarded by `lock` once readers run. */
    unsigned *fifo;
    unsigned fifo_head, fifo_len, fifo_ready;
    unsigned *done;
    unsigned done_head, done_len;
    pthread_mutex_t lock;
    pthread_cond_t work, finished;
    int stopping;
    pthread_t readers[PREAD_READERS];
    unsigned nreaders;
};

static int uring_queue_piece(smelt_ring *ring, unsigned id)
{
    ring_request *req = &ring->requests[id];
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->uring);
    if (!sqe) {
        /* The submission queue is as deep as the ring, so this only happens when earlier
         * entries were not submitted yet: submit them to make room. */
        int rc = io_uring_submit(&ring->uring);
        if (rc < 0)
            return -rc;
        sqe = io_uring_get_sqe(&ring->uring);
        if (!sqe)
            return EBUSY;
    }
    io_uring_prep_read(sqe, req->fd, req->buf + req->done, (unsigned)(req->len - req->done),
                       req->off + req->done);
    io_uring_sqe_set_data64(sqe, id);
    return 0;
}

/* Performs one pread request whole; returns 0 or a positive errno (EIO at an early end). */
static int pread_all(ring_request *req)
{
    while (req->done < req->len) {
        ssize_t n = pread(req->fd, req->buf + req->done, req->len - req->done,
                          (off_t)(req->off + req->done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        req->done += (size_t)n;
    }
    return 0;
}

/* Takes the oldest submitted request off the FIFO (lock held, fifo_ready > 0). */
static unsigned take_submitted(smelt_ring *ring)
{
    unsigned id = ring->fifo[ring->fifo_head];
    ring->fifo_head = (ring->fifo_head + 1) % ring->depth;
    ring->fifo_len--;
    ring->fifo_ready--;
    return id;
}

/* A reader: performs submitted requests while the ring's thread computes, so that on the pread
 * path too the disk works while the workers do. */
static void *reader_main(void *arg)
{
    smelt_ring *ring = arg;
    pthread_mutex_lock(&ring->lock);
    for (;;) {
        while (!ring->stopping && ring->fifo_ready == 0)
            pthread_cond_wait(&ring->work, &ring->lock);
        if (ring->stopping)
            break;
        unsigned id = take_submitted(ring);
        pthread_mutex_unlock(&ring->lock);
        ring_request *req = &ring->requests[id];
        req->error = pread_all(req);
        pthread_mutex_lock(&ring->lock);
        ring->done[(ring->done_head + ring->done_len++) % ring->depth] = id;
        pthread_cond_signal(&ring->finished);
    }
    pthread_mutex_unlock(&ring->lock);
    return NULL;
}

/* Starts the pread readers; with none (a thread could not be created), smelt_ring_wait performs
 * the reads itself, as before readers existed. */
static void start_readers(smelt_ring *ring)
{
    if (pthread_mutex_init(&ring->lock, NULL) != 0)
        return;
    if (pthread_cond_init(&ring->work, NULL) != 0) {
        pthread_mutex_destroy(&ring->lock);
        return;
    }
    if (pthread_cond_init(&ring->finished, NULL) != 0) {
        pthread_cond_destroy(&ring->work);
        pthread_mutex_destroy(&ring->lock);
        return;
    }
    while (ring->nreaders < PREAD_READERS &&
           pthread_create(&ring->readers[ring->nreaders], NULL, reader_main, ring) == 0)
        ring->nreaders++;
    if (ring->nreaders == 0) {
        pthread_cond_destroy(&ring->finished);
        pthread_cond_destroy(&ring->work);
        pthread_mutex_destroy(&ring->lock);
    }
}

int smelt_ring_open(smelt_ctx *ctx, unsigned depth, int force_pread, smelt_ring **out)
{
    smelt_ring *ring = calloc(1, sizeof *ring);
    if (!ring)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory for the read ring");
    ring->depth = depth ? depth : 1;
    ring->requests = calloc(ring->depth, sizeof *ring->requests);
    ring->free_ids = calloc(ring->depth, sizeof *ring->free_ids);
    ring->fifo = calloc(ring->depth, sizeof *ring->fifo);
    ring->done = calloc(ring->depth, sizeof *ring->done);
    if (!ring->requests || !ring->free_ids || !ring->fifo || !ring->done) {
        smelt_ring_close(ring);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory for the read ring");
    }
    for (unsigned i = 0; i < ring->depth; i++)
        ring->free_ids[i] = ring->depth - 1 - i;
    ring->nfree = ring->depth;
    if (!force_pread) {
        int rc = io_uring_queue_init(ring->depth, &ring->uring, 0);
        if (rc == 0)
            ring->uring_ok = 1;
        else
            smelt_notice(ctx, SMELT_LOG_NOTICE, "io_uring unavailable (%s); reading with pread",
                         strerror(-rc));
    }
    if (!ring->uring_ok)
        start_readers(ring);
    *out = ring;
    return SMELT_OK;
}

int smelt_ring_is_uring(const smelt_ring *ring) { return ring->uring_ok; }

unsigned smelt_ring_pending(const smelt_ring *ring) { return ring->pending; }

uint64_t smelt_ring_bytes_read(const smelt_ring *ring) { return ring->bytes_read; }

int smelt_ring_queue_read(smelt_ring *ring, int fd, void *buf, size_t len, uint64_t off,
                          uint64_t tag)
{
    if (ring->nfree == 0)
        return -1;
    unsigned id = ring->free_ids[--ring->nfree];
    ring->requests[id] = (ring_request){fd, buf, len, 0, off, tag, 1, 0};
    ring->pending++;
    if (ring->uring_ok) {
        int rc = uring_queue_piece(ring, id);
        if (rc != 0) {
            ring->requests[id].in_use = 0;
            ring->free_ids[ring->nfree++] = id;
            ring->pending--;
            return -1;
        }
    } else {
        if (ring->nreaders)
            pthread_mutex_lock(&ring->lock);
        ring->fifo[(ring->fifo_head + ring->fifo_len++) % ring->depth] = id;
        if (ring->nreaders)
            pthread_mutex_unlock(&ring->lock);
    }
    return 0;
}

/* Hands every queued pread request to the readers (lock held when they run). */
static void submit_preads(smelt_ring *ring)
{
    if (ring->fifo_ready < ring->fifo_len) {
        ring->fifo_ready = ring->fifo_len;
        pthread_cond_broadcast(&ring->work);
    }
}

int smelt_ring_submit(smelt_ring *ring)
{
    if (!ring->uring_ok) {
        if (ring->nreaders) {
            pthread_mutex_lock(&ring->lock);
            submit_preads(ring);
            pthread_mutex_unlock(&ring->lock);
        } else {
            ring->fifo_ready = ring->fifo_len;
        }
        return 0;
    }
    int rc = io_uring_submit(&ring->uring);
    return rc < 0 ? -rc : 0;
}

static void release(smelt_ring *ring, unsigned id, smelt_completion *done, int error)
{
    done->tag = ring->requests[id].tag;
    done->error = error;
    ring->bytes_read += ring->requests[id].done;
    ring->requests[id].in_use = 0;
    ring->free_ids[ring->nfree++] = id;
    ring->pending--;
}

static int pread_wait(smelt_ring *ring, smelt_completion *done)
{
    if (ring->nreaders == 0) {
        /* No readers: perform the oldest request here (submitted or not: waiting implies it). */
        unsigned id = ring->fifo[ring->fifo_head];
        ring->fifo_head = (ring->fifo_head + 1) % ring->depth;
        ring->fifo_len--;
        if (ring->fifo_ready)
            ring->fifo_ready--;
        release(ring, id, done, pread_all(&ring->requests[id]));
        return 1;
    }
    pthread_mutex_lock(&ring->lock);
    /* Waiting for a read that was queued but never submitted would never end: submit it. */
    submit_preads(ring);
    while (ring->done_len == 0)
        pthread_cond_wait(&ring->finished, &ring->lock);
    unsigned id = ring->done[ring->done_head];
    ring->done_head = (ring->done_head + 1) % ring->depth;
    ring->done_len--;
    pthread_mutex_unlock(&ring->lock);
    release(ring, id, done, ring->requests[id].error);
    return 1;
}

int smelt_ring_wait(smelt_ring *ring, smelt_completion *done)
{
    if (ring->pending == 0)
        return 0;
    if (!ring->uring_ok)
        return pread_wait(ring, done);
    /* Waiting for a read that was queued but never submitted would never end: submit it. */
    if (io_uring_sq_ready(&ring->uring) > 0) {
        int rc = io_uring_submit(&ring->uring);
        if (rc < 0)
            return rc;
    }
    for (;;) {
        struct io_uring_cqe *cqe;
        int rc = io_uring_wait_cqe(&ring->uring, &cqe);
        if (rc == -EINTR)
            continue;
        if (rc < 0)
            return rc;
        unsigned id = (unsigned)io_uring_cqe_get_data64(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&ring->uring, cqe);
        ring_request *req = &ring->requests[id];
        int transient = res == -EAGAIN || res == -EINTR;
        if (res < 0 && !transient) {
            release(ring, id, done, -res);
            return 1;
        }
        if (res == 0) {
            release(ring, id, done, EIO); /* the file ended before the range did */
            return 1;
        }
        if (!transient)
            req->done += (size_t)res;
        if (req->done == req->len) {
            release(ring, id, done, 0);
            return 1;
        }
        /* A short or interrupted read: ask again for the rest. */
        int qrc = uring_queue_piece(ring, id);
        if (qrc == 0)
            qrc = smelt_ring_submit(ring);
        if (qrc != 0) {
            release(ring, id, done, qrc);
            return 1;
        }
    }
}

void smelt_ring_close(smelt_ring *ring)
{
    if (!ring)
        return;
    if (ring->uring_ok) {
        smelt_completion ignored;
        smelt_ring_submit(ring);
        while (ring->pending > 0 && smelt_ring_wait(ring, &ignored) > 0)
            ;
        io_uring_queue_exit(&ring->uring);
    }
    if (ring->nreaders) {
        /* Reads already started finish before their buffers can go; queued ones are dropped. */
        pthread_mutex_lock(&ring->lock);
        ring->stopping = 1;
        pthread_cond_broadcast(&ring->work);
        pthread_mutex_unlock(&ring->lock);
        for (unsigned i = 0; i < ring->nreaders; i++)
            pthread_join(ring->readers[i], NULL);
        pthread_cond_destroy(&ring->finished);
        pthread_cond_destroy(&ring->work);
        pthread_mutex_destroy(&ring->lock);
    }
    free(ring->requests);
    free(ring->free_ids);
    free(ring->fifo);
    free(ring->done);
    free(ring);
}

int smelt_ring_env(smelt_ctx *ctx, int *force_pread)
{
    const char *io = getenv("SMELT_IO");
    if (io && strcmp(io, "pread") == 0)
        *force_pread = 1;
    else if (io && *io && strcmp(io, "uring") != 0)
        return smelt_fail(ctx, SMELT_E_ARG, "SMELT_IO=%s: expected 'pread' or 'uring'", io);
    return SMELT_OK;
}
