/* A bounded ring of file reads: io_uring when the kernel allows it, pread otherwise, behind one
 * interface so the engine does not know which serves it.
 *
 * A ring is used by one thread. Reads complete in any order; each completion returns the tag
 * given when it was queued. Short reads are finished inside the ring, so a completion always
 * means "the whole range" or an error. */
#ifndef SMELT_RING_H
#define SMELT_RING_H

#include "common/errors.h"

#include <stddef.h>
#include <stdint.h>

typedef struct smelt_ring smelt_ring;

typedef struct smelt_completion {
    uint64_t tag;
    int error; /* 0, or a positive errno (EIO when the file ended early) */
} smelt_completion;

/* Opens a ring that holds up to `depth` reads in flight. With force_pread, or when io_uring
 * cannot be set up (old kernel, seccomp, io_uring_disabled), pread serves the same interface and
 * one notice goes to the context's log: two reader threads of the ring perform the submitted
 * reads while the caller computes (completions then come in any order, as with io_uring), or
 * smelt_ring_wait performs them itself when no thread can be started. Returns SMELT_OK or
 * SMELT_E_NOMEM. */
int smelt_ring_open(smelt_ctx *ctx, unsigned depth, int force_pread, smelt_ring **out);

/* Applies the environment variable SMELT_IO: "pread" sets *force_pread to 1, "uring" or unset
 * leaves it as it is. Returns SMELT_OK, or SMELT_E_ARG naming any other value. */
int smelt_ring_env(smelt_ctx *ctx, int *force_pread);

/* 1 when io_uring serves this ring, 0 for pread. */
int smelt_ring_is_uring(const smelt_ring *ring);

/* Queues a read of len bytes at offset off of fd into buf. Returns 0, or -1 when `depth` reads
 * are already in flight (wait for one first). The read starts at the next smelt_ring_submit(). */
int smelt_ring_queue_read(smelt_ring *ring, int fd, void *buf, size_t len, uint64_t off,
                          uint64_t tag);

/* Hands the queued reads to the kernel. Returns 0 or a positive errno. */
int smelt_ring_submit(smelt_ring *ring);

/* Waits for one read to finish and describes it in *done; reads still queued are submitted
 * first. Returns 1 when a completion was
 * returned, 0 when nothing is in flight, or a negative errno when waiting itself failed. */
int smelt_ring_wait(smelt_ring *ring, smelt_completion *done);

/* Bytes that completed reads brought in from files since the ring was opened, counted the same
 * way on both paths: what the merge really cost the disk (or the page cache). */
uint64_t smelt_ring_bytes_read(const smelt_ring *ring);

/* Reads queued or in flight. */
unsigned smelt_ring_pending(const smelt_ring *ring);

/* Waits for everything in flight (discarding results) and frees the ring. NULL is allowed. */
void smelt_ring_close(smelt_ring *ring);

#endif
