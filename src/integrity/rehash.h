/* Hashing byte ranges of files through the bounded read ring: for `smelt verify` and for
 * re-verifying journaled tensors when a merge resumes. Memory is bounded by a budget whatever
 * the range sizes; reads follow the order the ranges are given in (give them in file order). */
#ifndef SMELT_REHASH_H
#define SMELT_REHASH_H

#include "integrity/checksum.h"

#include <stddef.h>
#include <stdint.h>

typedef struct smelt_hash_range {
    int fd;
    uint64_t off, len;
} smelt_hash_range;

/* Hashes range i into out[i] (XXH3-128 of its bytes), reading in chunks through a ring whose
 * buffers together take at most max_memory bytes (at least 64 KiB is used). With errors non-NULL
 * a range whose read fails gets errors[i] = a positive errno (EIO when the file ends early) and
 * the others are still hashed; with errors NULL the first failure is returned. *bytes_read (may
 * be NULL) receives the bytes read. */
int smelt_hash_ranges(smelt_ctx *ctx, const smelt_hash_range *ranges, size_t n,
                      uint64_t max_memory, int force_pread, smelt_hash128 *out, int *errors,
                      uint64_t *bytes_read);

#endif
