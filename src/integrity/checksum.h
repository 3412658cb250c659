/* XXH3-128 digests as smelt stores and prints them.
 *
 * A digest is kept in xxHash's canonical (big-endian) byte order, so the hex form is the one
 * `xxhsum -H2` prints and a digest compares with memcmp. */
#ifndef SMELT_CHECKSUM_H
#define SMELT_CHECKSUM_H

#include "common/errors.h"

#include <stddef.h>
#include <stdint.h>

#define SMELT_HASH_HEX_LEN 32

typedef struct smelt_hash128 {
    uint8_t b[16]; /* canonical (big-endian) XXH3-128 */
} smelt_hash128;

/* XXH3-128 of a buffer. */
smelt_hash128 smelt_hash_bytes(const void *data, size_t len);

/* 1 when two digests are equal. */
int smelt_hash_eq(const smelt_hash128 *a, const smelt_hash128 *b);

/* Writes the 32 lowercase hex digits and a NUL into hex (at least 33 bytes). */
void smelt_hash_hex(const smelt_hash128 *h, char *hex);

/* Parses exactly 32 hex digits (either case). Returns 0, or -1 when text is not that. */
int smelt_hash_parse(const char *text, smelt_hash128 *h);

/* XXH3-128 of the first `len` bytes of fd (read with pread, in pieces: bounded memory). Used for
 * the header of a safetensors file (8-byte length prefix + JSON). `path` is for messages. */
int smelt_hash_file_prefix(smelt_ctx *ctx, int fd, const char *path, uint64_t len,
                           smelt_hash128 *out);

#endif
