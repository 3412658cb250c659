/* Writing GGUF files (version 3), as ggml's own writer (ggml/src/gguf.cpp, gguf_write_out) lays
 * them out, so that ggml's reader and llama.cpp's loader accept the result.
 *
 * Two steps, because tensor data is produced incrementally and written at known offsets (pwrite)
 * rather than streamed after the header:
 *   1. key/value pairs are encoded into a smelt_gguf_kvbuf, new ones or copies of a parsed
 *      file's (the merge output carries its base model's metadata and tokenizer);
 *   2. smelt_gguf_layout() takes the pairs and the tensor infos and returns the whole header
 *      (padded so that the data section starts aligned), every tensor's absolute offset and the
 *      file size. The caller then writes each tensor's bytes at its offset; what lies between
 *      tensors and after the last one is padding that must read as zeros (a file created at its
 *      full size with holes does). */
#ifndef SMELT_GGUF_WRITE_H
#define SMELT_GGUF_WRITE_H

#include "format/gguf.h"

#include <stddef.h>
#include <stdint.h>

/* One encoded key, as the buffer remembers it: duplicate keys are refused when added (ggml and
 * smelt's reader refuse files holding them), and general.alignment is looked up by the layout. */
typedef struct smelt_gguf_kvbuf_key {
    char *key;          /* NUL-terminated copy */
    uint32_t type;      /* smelt_gguf_vtype of the value */
    size_t value_off;   /* offset in the buffer of the value's first byte (after the type) */
} smelt_gguf_kvbuf_key;

/* An append-only buffer of encoded key/value pairs, in the order they were added (the order
 * they will have in the file). Start with smelt_gguf_kvbuf_init (or zero it); free with
 * smelt_gguf_kvbuf_free. A failed add leaves the buffer as it was before that add. */
typedef struct smelt_gguf_kvbuf {
    uint8_t *bytes;             /* the encoded pairs, back to back */
    size_t len, cap;
    smelt_gguf_kvbuf_key *keys; /* one per pair, in order */
    size_t count, keys_cap;
} smelt_gguf_kvbuf;

/* Makes an empty buffer. */
void smelt_gguf_kvbuf_init(smelt_gguf_kvbuf *kb);

/* Frees what the buffer holds and leaves it empty (reusable). NULL is allowed. */
void smelt_gguf_kvbuf_free(smelt_gguf_kvbuf *kb);

/* 1 when the buffer holds `key`. */
int smelt_gguf_kvbuf_has(const smelt_gguf_kvbuf *kb, const char *key);

/* Appends one pair of a scalar type. Each returns SMELT_OK; SMELT_E_ARG naming the key when the
 * key is empty or already in the buffer; SMELT_E_NOMEM. Bool values are written as 0 or 1. */
int smelt_gguf_kvbuf_add_u16(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, uint16_t v);
int smelt_gguf_kvbuf_add_u32(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, uint32_t v);
int smelt_gguf_kvbuf_add_i32(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, int32_t v);
int smelt_gguf_kvbuf_add_f32(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, float v);
int smelt_gguf_kvbuf_add_bool(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, int v);

/* Appends a string pair: `len` bytes at s (GGUF strings carry their length and need no NUL). */
int smelt_gguf_kvbuf_add_str(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key, const char *s,
                          size_t len);

/* Appends an array of n NUL-terminated strings (n may be 0). */
int smelt_gguf_kvbuf_add_str_array(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key,
                                const char *const *s, size_t n);

/* Appends an array of n f32 / i32 values (n may be 0). */
int smelt_gguf_kvbuf_add_f32_array(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key,
                                const float *v, size_t n);
int smelt_gguf_kvbuf_add_i32_array(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const char *key,
                                const int32_t *v, size_t n);

/* Appends a parsed pair (from smelt_gguf_parse / smelt_gguf_open) under its own key, its value
 * bytes copied verbatim from the source mapping and its type header (type; for an array also
 * element type and count) re-encoded. The source must stay mapped during the call only. Errors
 * as for the adds. */
int smelt_gguf_kvbuf_copy(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const smelt_gguf_kv *kv);

/* Appends every pair of g in file order, except those `skip` names: an entry matches a key
 * equal to it, or, when the entry ends in '*', every key starting with what precedes the '*'
 * ("split.*" drops gguf-split's keys). nskip may be 0 (skip may then be NULL). Stops at the first
 * error (a key already in the buffer is one: skip the keys you add yourself). */
int smelt_gguf_kvbuf_copy_all(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const smelt_gguf *g,
                           const char *const *skip, size_t nskip);

/* A tensor to lay out. ne[0] is the innermost (contiguous) axis, as in smelt_gguf_tensor: a
 * torch [out, in] weight has ne = {in, out}. Only the first ndim entries of ne are read. */
typedef struct smelt_gguf_out_tensor {
    const char *name;                 /* at most SMELT_GGUF_MAX_NAME bytes, unique */
    uint32_t type;                    /* ggml type (common/ggml_type.h) */
    uint32_t ndim;                    /* 1..SMELT_GGUF_MAX_DIMS */
    uint64_t ne[SMELT_GGUF_MAX_DIMS]; /* each >= 1; ne[0] a multiple of the type's block */
} smelt_gguf_out_tensor;

/* The data bytes of a tensor of this type and shape (whole blocks), or 0 when the type is
 * unknown, a dimension is 0, ne[0] is not a multiple of the type's block, ndim is out of range
 * or the size overflows (ggml keeps element counts in int64). */
uint64_t smelt_gguf_tensor_bytes(uint32_t type, uint32_t ndim, const uint64_t *ne);

/* Lays out a GGUF v3 file holding the pairs of `kvs` and the n tensors, in the given order.
 * `alignment` is the data alignment (a power of two; 0 means ggml's default, 32). When kvs
 * holds general.alignment it must be a u32 equal to `alignment`; when it does not and the
 * alignment is not 32, a general.alignment pair is appended after kvs's pairs (ggml reads the
 * alignment from that key only). Tensor data follows ggml's writer: each tensor starts where the
 * previous one's data, padded to the alignment, ends (ggml's reader insists on exactly these
 * offsets), and the file ends with the last tensor's padding.
 * On success: *header (malloc'd, caller frees) holds magic, version, counts, pairs, tensor infos
 * (offsets relative to the data section) and the zero padding up to the data section, and
 * *header_len its length (= the data section's absolute offset); offsets[i] (n entries) is the
 * absolute file offset of tensors[i]'s data, nbytes[i] its data size when nbytes is not NULL;
 * *file_size the whole file's size. Returns SMELT_OK; SMELT_E_ARG naming the tensor or key and
 * the rule broken (empty, over-long or duplicate name, ndim, a zero dimension, ne[0] not a whole
 * number of blocks, an unknown type, a size that overflows, a bad or conflicting alignment);
 * SMELT_E_NOMEM. On failure *header is NULL and offsets / nbytes hold nothing of use. */
int smelt_gguf_layout(smelt_ctx *ctx, const smelt_gguf_kvbuf *kvs,
                      const smelt_gguf_out_tensor *tensors, size_t n, uint32_t alignment,
                      uint8_t **header, size_t *header_len, uint64_t *offsets, uint64_t *nbytes,
                      uint64_t *file_size);

#endif
