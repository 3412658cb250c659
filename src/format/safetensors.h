/* Reading and laying out safetensors files, and opening Hugging Face model references.
 *
 * Spec: https://github.com/huggingface/safetensors (format description and the Rust reader's
 * checks). Every rule the reference reader enforces is enforced here, each with its own message
 * naming the file, the tensor and the rule. */
#ifndef SMELT_SAFETENSORS_H
#define SMELT_SAFETENSORS_H

#include "common/dtype.h"
#include "common/errors.h"

#include <stddef.h>
#include <stdint.h>

#define SMELT_MAX_DIMS 8
/* The reference reader refuses headers larger than this. */
#define SMELT_ST_MAX_HEADER 100000000ull

/* One tensor of a model. */
typedef struct smelt_tensor_info {
    char *name;
    smelt_dtype dtype;
    uint32_t ndim;
    uint64_t shape[SMELT_MAX_DIMS];
    uint64_t numel;
    uint64_t nbytes;
    uint64_t offset;   /* absolute byte offset of the tensor's data in its file */
    uint32_t file;     /* index into smelt_model.files */
    uint32_t order;    /* its index in the model's catalog (set when the model is indexed):
                          a merge processes and writes tensors in input 0's catalog order */
} smelt_tensor_info;

/* One safetensors file of a model. The descriptor stays open while the model is open. */
typedef struct smelt_st_file {
    char *path;          /* as opened (directory + file name) */
    int fd;              /* O_RDONLY | O_CLOEXEC */
    uint64_t size;       /* file size in bytes */
    uint64_t data_start; /* 8 + header length */
    uint64_t dev, ino;   /* the file's identity (st_dev, st_ino): one file opened twice, as a
                            base named alone and in BASE+DELTA, is read once (engine/source.h) */
} smelt_st_file;

/* An opened model: one or more safetensors files and their tensors. Read-only after
 * smelt_model_open() returns, so it may be shared between threads. */
typedef struct smelt_model {
    char *ref;                  /* the reference as the user wrote it */
    char *dir;                  /* the directory holding config.json etc.; NULL for a lone file */
    smelt_st_file *files;
    uint32_t nfiles;
    smelt_tensor_info *tensors; /* sorted by (file, offset): the order that reads the disk
                                   sequentially */
    size_t ntensors;
    char *metadata_json;        /* the first file's "__metadata__" as compact JSON, or NULL */
    struct smelt_gguf_set *gguf; /* a GGUF model (files[] are its splits, tensors[] its tensor
                                    infos with the shape in row-major order): its metadata;
                                    NULL for safetensors */
    struct smelt_lora *lora;    /* a "BASE+ADAPTER" reference: the LoRA adapter applied on
                                   the fly (format/lora.h), owned; NULL otherwise */
    struct smelt_delta *delta;  /* a "BASE+DELTA" reference: the lossless delta XORed into the
                                   base's bytes on the fly (format/delta.h), owned; NULL
                                   otherwise */
    void *name_index;           /* private: name -> tensor lookup */
} smelt_model;

/* Parses and validates one safetensors header. `bytes` holds at least the first
 * min(file_size, 8 + header length) bytes of the file (callers pass an mmap of the header);
 * `avail` says how many. `path` is used in messages only. On success fills *tensors (sorted by
 * offset; offsets are absolute in the file, file index 0), *ntensors, *data_start and, when
 * the header has one, *metadata_json (compact JSON; caller frees). Caller frees the tensors with
 * smelt_tensors_free(). Returns SMELT_OK or SMELT_E_FORMAT / SMELT_E_NOMEM with a message. */
int smelt_st_parse(smelt_ctx *ctx, const char *path, const uint8_t *bytes, uint64_t avail,
                   uint64_t file_size, smelt_tensor_info **tensors, size_t *ntensors,
                   uint64_t *data_start, char **metadata_json);

/* Frees an array of tensors returned by smelt_st_parse (names included). */
void smelt_tensors_free(smelt_tensor_info *tensors, size_t n);

/* Opens a model reference:
 *  - a GGUF file ("*.gguf"), or any split of a gguf-split set (every split is opened and
 *    checked, see smelt_gguf_open_set); its tensors are listed like safetensors tensors, block
 *    types included (a type smelt cannot decode is SMELT_E_UNSUPPORTED naming tensor and type);
 *  - a directory with model.safetensors.index.json (sharded) or model.safetensors (single), or
 *    model.gguf or model-00001-of-0000N.gguf ... (what a GGUF merge writes);
 *  - a path to a single .safetensors file;
 *  - a hub id "org/name" (or "org/name@revision") found offline in the Hugging Face cache:
 *    $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
 *    ~/.cache/huggingface/hub; models--org--name/snapshots/<rev>/, <rev> read from refs/main
 *    (or refs/<revision>, or the revision itself). smelt never downloads: an id that is not
 *    cached is an error saying where it looked.
 * Headers are read through mmap of the header bytes only. With an index, every shard must exist
 * and hold exactly the tensors the index assigns to it. Returns SMELT_OK and a model the caller
 * closes with smelt_model_close(), or an error naming the reference, file, tensor and rule. */
int smelt_model_open(smelt_ctx *ctx, const char *ref, smelt_model **out);

/* 1 when ref has the form of a hub id: "org/name" or "org/name@revision", spelled as the hub
 * allows (letters, digits, - _ .). */
int smelt_hub_id_form(const char *ref);

/* Finds a hub id's snapshot directory in the Hugging Face cache (see smelt_model_open for where
 * it looks): SMELT_OK and *snapshot_dir (malloc'd), or SMELT_E_IO saying where it looked. */
int smelt_hub_resolve(smelt_ctx *ctx, const char *ref, char **snapshot_dir);

/* Closes the files and frees the model. NULL is allowed. */
void smelt_model_close(smelt_model *model);

/* Finds a tensor by name; NULL when absent. O(1) average. Thread-safe. */
const smelt_tensor_info *smelt_model_find(const smelt_model *model, const char *name);

/* Rebuilds the name lookup after model->tensors changed (a BASE+DELTA model presenting the
 * fine-tune's tensors). SMELT_OK, SMELT_E_NOMEM, or SMELT_E_FORMAT for a name twice. */
int smelt_model_reindex(smelt_ctx *ctx, smelt_model *model);

/* A tensor to lay out in an output file. */
typedef struct smelt_st_out_tensor {
    const char *name;
    smelt_dtype dtype;
    uint32_t ndim;
    const uint64_t *shape;
    uint64_t nbytes;
} smelt_st_out_tensor;

/* Lays out one output safetensors file: orders the tensors by dtype alignment (descending, then
 * by their position in `tensors`) so that every tensor is naturally aligned with no holes,
 * builds the JSON header with metadata {"format": "pt"}, padded with spaces so that the data
 * buffer starts at a multiple of 8. On success *header (malloc'd, caller frees) holds the 8-byte
 * little-endian length prefix followed by the header, *header_len its total length (= the data
 * start), and offsets[i] the absolute file offset of tensors[i]'s data; *file_size the total. */
int smelt_st_layout(smelt_ctx *ctx, const smelt_st_out_tensor *tensors, size_t n,
                    uint8_t **header, size_t *header_len, uint64_t *offsets, uint64_t *file_size);

/* Formats a shape as "[2, 3]" into buf (truncated to fit). */
void smelt_format_shape(char *buf, size_t len, const uint64_t *shape, uint32_t ndim);

struct json_t;

/* Loads a JSON side file (an index, config.json, tokenizer_config.json) of at most
 * SMELT_JSON_MAX_BYTES through smelt_read_file (regular files only, never blocking) and parses
 * it with jansson `flags`. On success *out is a new reference the caller json_decref()s. A file
 * that cannot be read, is too large or is not valid JSON is an error naming it (SMELT_E_IO or
 * SMELT_E_FORMAT "path: not valid JSON (line L, column C): why"). */
int smelt_json_load(smelt_ctx *ctx, const char *path, size_t flags, struct json_t **out);

/* The same for a file a model may lack: SMELT_OK with *out NULL when path does not exist. */
int smelt_json_load_if_exists(smelt_ctx *ctx, const char *path, size_t flags,
                              struct json_t **out);

/* Shard file name of HF convention: "model-00001-of-00003.safetensors" (index 0-based), or
 * "model.safetensors" when total == 1. Writes into buf (at least 40 bytes). */
void smelt_shard_name(char *buf, size_t len, unsigned index, unsigned total);

#endif
