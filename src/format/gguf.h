/* Reading GGUF files (llama.cpp's format), versions 2 and 3.
 *
 * Spec: ggml's docs/gguf.md and its reader (ggml/src/gguf.cpp). The whole file is mapped; the
 * header (key/value pairs, tensor infos) is validated strictly before anything is returned, each
 * rule with its own message naming the file, the key or tensor, and the rule. Values and tensor
 * data are then read in place from the mapping. */
#ifndef SMELT_GGUF_H
#define SMELT_GGUF_H

#include "common/errors.h"
#include "common/ggml_type.h"

#include <stddef.h>
#include <stdint.h>

/* GGUF value types (the u32 after a key). */
typedef enum smelt_gguf_vtype {
    SMELT_GGUF_U8 = 0, SMELT_GGUF_I8 = 1, SMELT_GGUF_U16 = 2, SMELT_GGUF_I16 = 3,
    SMELT_GGUF_U32 = 4, SMELT_GGUF_I32 = 5, SMELT_GGUF_F32 = 6, SMELT_GGUF_BOOL = 7,
    SMELT_GGUF_STRING = 8, SMELT_GGUF_ARRAY = 9, SMELT_GGUF_U64 = 10, SMELT_GGUF_I64 = 11,
    SMELT_GGUF_F64 = 12, SMELT_GGUF_VTYPE_COUNT
} smelt_gguf_vtype;

#define SMELT_GGUF_MAX_DIMS 4        /* ggml's GGML_MAX_DIMS */
#define SMELT_GGUF_MAX_NAME 63       /* ggml's GGML_MAX_NAME - 1 (the NUL) */
#define SMELT_GGUF_MAX_DEPTH 4       /* arrays nested deeper than this are refused */
#define SMELT_GGUF_DEFAULT_ALIGNMENT 32

/* One key/value pair. `value` points into the mapping at the value's first byte (for an array,
 * the first element, after its element type and count); `size` is the value's byte length. */
typedef struct smelt_gguf_kv {
    char *key;             /* NUL-terminated copy */
    uint32_t type;         /* smelt_gguf_vtype */
    uint32_t elem_type;    /* arrays: the element type (SMELT_GGUF_ARRAY when nested); else = type */
    uint64_t count;        /* arrays: the element count; 1 otherwise */
    const uint8_t *value;
    uint64_t size;
} smelt_gguf_kv;

/* One tensor info. ne[0] is the innermost (contiguous) axis: a torch [out, in] weight has
 * ne = {in, out}. Unused ne[] entries are 1. */
typedef struct smelt_gguf_tensor {
    char *name;            /* NUL-terminated copy, at most SMELT_GGUF_MAX_NAME bytes */
    uint32_t type;         /* ggml type (common/ggml_type.h) */
    uint32_t ndim;         /* 0..SMELT_GGUF_MAX_DIMS */
    uint64_t ne[SMELT_GGUF_MAX_DIMS];
    uint64_t numel;
    uint64_t offset;       /* from the start of the data section, as stored */
    uint64_t file_offset;  /* absolute: data_start + offset */
    uint64_t nbytes;
} smelt_gguf_tensor;

/* An opened GGUF file. Read-only after it is returned, so it may be shared between threads. */
typedef struct smelt_gguf {
    char *path;
    uint32_t version;
    uint64_t size;              /* file size */
    const uint8_t *base;        /* the file's bytes (the mapping, or the caller's buffer) */
    uint32_t alignment;         /* general.alignment, or 32 */
    uint64_t data_start;        /* the data section's absolute offset */
    smelt_gguf_kv *kvs;         /* in file order */
    size_t nkv;
    smelt_gguf_tensor *tensors; /* in file order */
    size_t ntensors;
    size_t *kv_by_key;          /* private: kvs indices sorted by key */
    size_t *tensor_by_name;     /* private: tensors indices sorted by name */
    void *map;                  /* private: the mapping when smelt_gguf_open made it */
} smelt_gguf;

/* Parses and validates a whole GGUF file held in `bytes` (size bytes; the caller keeps it alive
 * and unchanged while the result is used). `path` is used in messages only. Returns SMELT_OK and
 * *out (free with smelt_gguf_close), or SMELT_E_FORMAT / SMELT_E_NOMEM with a message. */
int smelt_gguf_parse(smelt_ctx *ctx, const char *path, const uint8_t *bytes, uint64_t size,
                     smelt_gguf **out);

/* Maps `path` read-only and parses it as smelt_gguf_parse does. Returns SMELT_OK, SMELT_E_IO
 * (cannot open or map), SMELT_E_FORMAT or SMELT_E_NOMEM. */
int smelt_gguf_open(smelt_ctx *ctx, const char *path, smelt_gguf **out);

/* Unmaps (when smelt_gguf_open mapped) and frees. NULL is allowed. */
void smelt_gguf_close(smelt_gguf *g);

/* 1 when path ends in ".gguf". */
int smelt_gguf_is_path(const char *path);

/* The key, or NULL. O(log n). */
const smelt_gguf_kv *smelt_gguf_find(const smelt_gguf *g, const char *key);

/* The tensor, or NULL. O(log n). */
const smelt_gguf_tensor *smelt_gguf_find_tensor(const smelt_gguf *g, const char *name);

/* The value type's GGUF spelling ("u32", "string", "array"), "?" when unknown. */
const char *smelt_gguf_vtype_name(uint32_t type);

/* Typed getters over one scalar value. Each returns 0, or -1 when the value is not of a fitting
 * type: _uint takes any integer type holding a non-negative value, _int any integer type that
 * fits an int64, _float f32 and f64, _bool bool, _str a string (not NUL-terminated: *len bytes at
 * *s, inside the mapping). */
int smelt_gguf_kv_uint(const smelt_gguf_kv *kv, uint64_t *out);
int smelt_gguf_kv_int(const smelt_gguf_kv *kv, int64_t *out);
int smelt_gguf_kv_float(const smelt_gguf_kv *kv, double *out);
int smelt_gguf_kv_bool(const smelt_gguf_kv *kv, int *out);
int smelt_gguf_kv_str(const smelt_gguf_kv *kv, const char **s, uint64_t *len);

/* Element i of an array of scalars or strings, as a value of its own (type = the element type,
 * count 1), so the scalar getters apply. Strings are found by walking: O(i). Returns 0, or -1
 * when kv is not an array, i is out of range or the elements are arrays. */
int smelt_gguf_kv_elem(const smelt_gguf_kv *kv, uint64_t i, smelt_gguf_kv *elem);

/* Key lookups with messages: SMELT_OK, or SMELT_E_FORMAT naming the file and key when the key is
 * missing or holds another type ("a.gguf: key 'llama.block_count' is a string, not an unsigned
 * integer"). */
int smelt_gguf_get_uint(smelt_ctx *ctx, const smelt_gguf *g, const char *key, uint64_t *out);
int smelt_gguf_get_str(smelt_ctx *ctx, const smelt_gguf *g, const char *key, const char **s,
                       uint64_t *len);

/* ---- split sets (gguf-split): NAME-00001-of-0000N.gguf ... NAME-0000N-of-0000N.gguf ---- */

/* One tensor of a set: the split it lives in and its info there. */
typedef struct smelt_gguf_set_tensor {
    uint32_t file;                /* index into smelt_gguf_set.files */
    const smelt_gguf_tensor *t;   /* owned by files[file] */
} smelt_gguf_set_tensor;

/* An opened GGUF model: one file, or every split of a set. The model's metadata is in files[0]
 * (gguf-split writes it to the first split only). Read-only once returned. */
typedef struct smelt_gguf_set {
    smelt_gguf **files;
    uint32_t nfiles;
    smelt_gguf_set_tensor *tensors; /* split by split, each in file order */
    size_t ntensors;
} smelt_gguf_set;

/* Parses a split name: "dir/NAME-00002-of-00005.gguf" gives *no = 2, *count = 5 and
 * *prefix_len = the length of "dir/NAME". Returns 1 when path has that form (1 <= no <= count),
 * else 0. */
int smelt_gguf_split_name(const char *path, size_t *prefix_len, unsigned *no, unsigned *count);

/* The most splits a set can have: split.count is a u16. */
#define SMELT_GGUF_MAX_SPLITS 65535u

/* Writes the name of split `no` (1-based) of `count` into buf: the first prefix_len bytes of
 * prefix followed by "-%05u-of-%05u.gguf", as gguf-split names them. Returns what snprintf
 * returns. */
int smelt_gguf_split_path(char *buf, size_t len, const char *prefix, size_t prefix_len,
                          unsigned no, unsigned count);

/* Opens a GGUF model. A path named like a split opens every split of its set (any split's path
 * may be given) and checks them: each exists, each has split.no = its index - 1 (gguf-split
 * counts from 0), split.count = the count in the names, split.tensors.count = the tensors of
 * the whole set, and no tensor name appears in two splits. Any other path is one file, which
 * must not claim split.count > 1. Returns SMELT_OK and *out (close with smelt_gguf_set_close), or
 * the error of the file that failed, naming it and the rule. */
int smelt_gguf_open_set(smelt_ctx *ctx, const char *path, smelt_gguf_set **out);

/* Closes every split and frees the set. NULL is allowed. */
void smelt_gguf_set_close(smelt_gguf_set *set);

#endif
