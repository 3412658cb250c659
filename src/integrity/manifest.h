/* The checksum manifest a merge writes beside its output (SMELT_MANIFEST_NAME), and reads back
 * for `smelt verify`.
 *
 * JSON, keys sorted, 1-space indent (so the same merge always gives the same bytes):
 *   {
 *    "algorithm": "xxh3-128",
 *    "config": "<hex of the config text's hash>",
 *    "files": {"model-00001-of-00002.safetensors": {
 *        "header": "<hex of the 8-byte prefix + JSON header>", "size": N,
 *        "tensors": {"name": {"data": "<hex>", "dtype": "BF16", "shape": [4096, 4096]}}}},
 *    "format": "smelt-manifest",
 *    "format_version": 2,
 *    "inputs": [{"header": "<hex of the 8-byte prefix + JSON header>", "path": "..."}],
 *    "smelt_version": "0.1.0"
 *   }
 * Hashes are canonical XXH3-128 in lowercase hex (what `xxhsum -H2` prints). A tensor's "data"
 * hash covers exactly its data bytes in the file. Bytes alone do not say what they mean: the same
 * bytes relabelled BF16 -> F16, or a shape transposed, are another tensor. So version 2 also
 * binds each tensor's dtype and shape (for messages that name the tensor) and each file's whole
 * header (names, dtypes, shapes, offsets and __metadata__ at once).
 *
 * Version 1 manifests (smelt before 0.2: a bare data hash per tensor, no file header) are still
 * read and checked as before — sizes and data hashes — and verify says that the dtypes, shapes
 * and metadata went unchecked because an older smelt made the manifest. */
#ifndef SMELT_MANIFEST_H
#define SMELT_MANIFEST_H

#include "format/safetensors.h"
#include "integrity/checksum.h"

#include <stddef.h>
#include <stdint.h>

#define SMELT_MANIFEST_NAME "smelt-manifest.json"

typedef struct smelt_manifest_tensor {
    char *name;
    smelt_hash128 hash;  /* of the data bytes */
    smelt_dtype dtype;   /* SMELT_DT_INVALID in a version 1 manifest */
    uint32_t ndim;
    uint64_t shape[SMELT_MAX_DIMS];
} smelt_manifest_tensor;

/* The format_version this smelt writes, and the oldest it still checks. */
#define SMELT_MANIFEST_VERSION 2
#define SMELT_MANIFEST_VERSION_OLDEST 1

typedef struct smelt_manifest_file {
    char *name; /* inside the model directory */
    smelt_hash128 header; /* of the 8-byte length prefix and JSON header (version 2) */
    uint64_t size;
    smelt_manifest_tensor *tensors;
    size_t ntensors;
} smelt_manifest_file;

typedef struct smelt_manifest_input {
    char *path;
    smelt_hash128 header;
} smelt_manifest_input;

/* Every string and array is malloc'd and owned by the manifest. */
typedef struct smelt_manifest {
    int version;            /* format_version: as read; ignored when writing (always the newest) */
    char *smelt_version;
    smelt_hash128 config;
    smelt_manifest_input *inputs;
    size_t ninputs;
    smelt_manifest_file *files;
    size_t nfiles;
} smelt_manifest;

/* The manifest as JSON text (malloc'd, newline-terminated; caller frees). */
int smelt_manifest_to_json(smelt_ctx *ctx, const smelt_manifest *m, char **text, size_t *len);

/* Parses manifest text. Anything malformed (not JSON, a missing or mistyped field, a hash that is
 * not 32 hex digits, a repeated tensor) is SMELT_E_FORMAT naming `path` and the field. On success
 * *out is a manifest to free with smelt_manifest_free(). */
int smelt_manifest_parse(smelt_ctx *ctx, const char *path, const char *text, size_t len,
                         smelt_manifest **out);

/* Writes dir/SMELT_MANIFEST_NAME atomically (temporary file, fsync, rename). */
int smelt_manifest_write(smelt_ctx *ctx, const char *dir, const smelt_manifest *m);

/* Reads dir/SMELT_MANIFEST_NAME. Returns SMELT_OK with *out set, SMELT_OK with *out NULL when the
 * directory has no manifest, or an error. */
int smelt_manifest_load(smelt_ctx *ctx, const char *dir, smelt_manifest **out);

/* Frees a manifest and everything in it. NULL is allowed. */
void smelt_manifest_free(smelt_manifest *m);

#endif
