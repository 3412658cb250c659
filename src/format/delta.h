/* The smelt delta container: a lossless, zstd-compressed difference between a safetensors model
 * and the base it was fine-tuned from, and the reader the engine uses to decode it.
 *
 * File: DIR/delta.safetensors (SMELT_DELTA_FILE_NAME), a valid safetensors file that smelt's
 * strict parser (and any other safetensors reader) accepts as it is: an 8-byte little-endian
 * header length, the JSON header, the data buffer. Every stored stream ("entry") is one U8
 * tensor of shape [nbytes] (its "blob"); the header is padded with spaces so the data starts at
 * a multiple of 8. The header's "__metadata__" holds string values only:
 *   "format": "smelt-delta", "smelt_delta_version": "1",
 *   "smelt_delta": a JSON document (as a string):
 *   {"version": 1, "frame_elements": 65536,
 *    "base": [{"file": "model-00001-of-00002.safetensors", "header_xxh3": HEX128,
 *              "sample_xxh3": HEX128}, ...],
 *    "entries": [{"name": BLOB, "dtype": "BF16", "shape": [..], "mode": "xor"|"raw"}, ...],
 *    "files": [{"name": "model-00001-of-00002.safetensors", "size": N, "xxh3": HEX128,
 *               "header": BLOB, "data": [BLOB, ...]},
 *              {"name": "config.json", "size": N, "xxh3": HEX128, "blob": BLOB}, ...]}
 *   base: every safetensors file of the base with the XXH3-128 of its header bytes (length
 *   prefix + JSON, as src/integrity computes them). entries: every blob, with the dtype and
 *   shape of what it decodes to; mode xor: the bit-wise XOR of the model's and the base's
 *   tensor of the same name (same dtype and shape); raw: the bytes themselves. A model tensor's
 *   blob has the tensor's name; a file's header bytes are the blob "header:FILE" and a file
 *   stored verbatim (config.json, tokenizer files, the index, ...) "file:FILE", both U8 raw.
 *   files: the model's files in the order they are rebuilt, each with its size and the
 *   XXH3-128 of its whole content: a safetensors file is its header blob followed by the
 *   tensors listed in "data" (in data order; a valid safetensors file has no gaps), any other
 *   file one blob.
 *
 * Blob layout. An entry of n elements of `unit` bytes (the dtype's size; 1 for sub-byte
 * dtypes, whose "elements" are then bytes) is cut into frames of frame_elements elements
 * (the last one shorter): nframes = ceil(n / frame_elements), 0 for an empty entry. The blob
 * is the frame table, nframes records of 16 bytes, followed by the frames:
 *   u64 end  (little-endian) where frame f's compressed bytes end, counted from the end of the
 *            table: frame f spans [end(f-1), end(f)) (end(-1) = 0); the last end is the blob
 *            size minus the table;
 *   u64 xxh3 (little-endian) XXH3-64 (seed 0) of the frame's decompressed bytes.
 * Each frame is one or more concatenated zstd frames whose decompressed bytes, together, are
 * the frame's elements split into byte planes: plane p (p = 0..unit-1) holds byte unit-1-p of
 * every element (so plane 0 is the most significant byte: sign and exponent for floats), plane
 * after plane. For xor entries the elements are the XOR patterns, for raw entries the bytes
 * themselves. A reader decodes the concatenation whatever its split; smelt's extract writes one
 * zstd frame per plane (delta_extract.c's compress_plane says how each is coded).
 *
 * Frames of a tensor line up with the engine's 64Ki-element tasks, so one task can decode
 * exactly one frame and XOR it into the base's bytes. */
#ifndef SMELT_DELTA_FORMAT_H
#define SMELT_DELTA_FORMAT_H

#include "common/dtype.h"
#include "common/errors.h"
#include "format/safetensors.h"

#include <stddef.h>
#include <stdint.h>

#define SMELT_DELTA_FILE_NAME "delta.safetensors"
#define SMELT_DELTA_FORMAT_NAME "smelt-delta"
#define SMELT_DELTA_VERSION 1
#define SMELT_DELTA_FRAME_ELEMS 65536u
#define SMELT_DELTA_TABLE_RECORD 16u
/* Prefixes of the blobs that are not tensors. */
#define SMELT_DELTA_HEADER_PREFIX "header:"
#define SMELT_DELTA_FILE_PREFIX "file:"

typedef enum smelt_delta_mode { SMELT_DELTA_RAW = 0, SMELT_DELTA_XOR = 1 } smelt_delta_mode;

/* One stored stream. */
typedef struct smelt_delta_entry {
    char *name;
    smelt_dtype dtype;   /* what the entry decodes to */
    uint32_t ndim;
    uint64_t shape[SMELT_MAX_DIMS];
    uint64_t nbytes;     /* decoded bytes */
    unsigned unit;       /* bytes per element and byte planes per frame (1..8) */
    uint64_t nelems;     /* nbytes / unit */
    smelt_delta_mode mode;
    uint64_t nframes;
    uint64_t blob_offset; /* absolute offset of the blob (its frame table) in the delta file */
    uint64_t blob_size;
} smelt_delta_entry;

/* One base file the delta was made against. */
typedef struct smelt_delta_base_file {
    char *name;
    uint8_t header_xxh3[16]; /* canonical XXH3-128 of the header bytes */
    uint8_t sample_xxh3[16]; /* XXH3-128 of 16 sampled 4 KiB blocks of its data, as the resume
                                journal samples an input (integrity/journal.h): a base with the
                                same header but other weights is told apart before reading */
} smelt_delta_base_file;

/* One file of the model, rebuilt by concatenating the decoded entries it lists. */
typedef struct smelt_delta_file {
    char *name;
    uint64_t size;
    uint8_t xxh3[16];    /* canonical XXH3-128 of the whole file */
    size_t *parts;       /* indices into entries, in file order */
    size_t nparts;
    int safetensors;     /* 1: parts[0] is the header blob, the rest tensors */
} smelt_delta_file;

/* An opened, validated delta. Read-only after smelt_delta_open() returns: every function below
 * that takes a const smelt_delta may be called from several threads at once (each with its own
 * smelt_delta_scratch and smelt_ctx). */
typedef struct smelt_delta {
    char *path;
    int fd;
    uint64_t file_size;
    uint64_t frame_elems;
    smelt_delta_entry *entries;
    size_t nentries;
    smelt_delta_base_file *base;
    size_t nbase;
    smelt_delta_file *files;
    size_t nfiles;
    void *name_index; /* private */
} smelt_delta;

/* Parses and validates a delta's header and metadata from its bytes: `bytes` holds the first
 * `avail` bytes of a file of `file_size` bytes (at least the whole header). Everything but the
 * frame tables is checked: the safetensors rules, the metadata document (names, dtypes, shapes,
 * modes, that every blob has one entry and the blob sizes fit the frame count), the file list.
 * On success *out is a delta with fd = -1 (smelt_delta_close frees it). SMELT_E_FORMAT naming
 * `path`, the entry and the rule otherwise. Used by smelt_delta_open and the fuzzer. */
int smelt_delta_parse(smelt_ctx *ctx, const char *path, const uint8_t *bytes, uint64_t avail,
                      uint64_t file_size, smelt_delta **out);

/* Opens a delta: `path` is the delta file or a directory holding SMELT_DELTA_FILE_NAME. Parses
 * the header (smelt_delta_parse) and reads every frame table (in pieces: bounded memory),
 * checking that the end offsets never go back, that each frame's size is possible for its
 * element count (at most ZSTD_compressBound) and that the last one ends where the blob does.
 * Frame checksums are checked as frames are decoded, not here. Returns SMELT_OK and a delta
 * the caller closes with smelt_delta_close(), or an error naming the file, entry and frame. */
int smelt_delta_open(smelt_ctx *ctx, const char *path, smelt_delta **out);

/* Closes the file and frees everything. NULL is allowed. */
void smelt_delta_close(smelt_delta *d);

/* The entry called `name`, or NULL. O(1) average. Thread-safe. */
const smelt_delta_entry *smelt_delta_find(const smelt_delta *d, const char *name);

/* Frames of an entry, and the elements of frame f (frame_elems except for the last). */
uint64_t smelt_delta_frame_elems(const smelt_delta *d, const smelt_delta_entry *e, uint64_t f);

/* Per-thread decoding state: a zstd decompression context and buffers for one frame of at
 * most `max_unit` bytes per element. Create one per thread. */
typedef struct smelt_delta_scratch smelt_delta_scratch;

/* NULL when out of memory. */
smelt_delta_scratch *smelt_delta_scratch_new(const smelt_delta *d, unsigned max_unit);

void smelt_delta_scratch_free(smelt_delta_scratch *s);

/* Bytes one scratch holds (for budgets). */
size_t smelt_delta_scratch_bytes(const smelt_delta *d, unsigned max_unit);

/* Reads the frame table records of frames [f0, f1) of entry e into `records` ((f1 - f0) *
 * SMELT_DELTA_TABLE_RECORD bytes; decode each with smelt_delta_get_record) with one pread.
 * Thread-safe. SMELT_OK, SMELT_E_IO naming the file and entry, SMELT_E_ARG for a bad range. */
int smelt_delta_read_table(smelt_ctx *ctx, const smelt_delta *d, const smelt_delta_entry *e,
                           uint64_t f0, uint64_t f1, uint8_t *records);

/* Decodes frame f of entry e, whose compressed bytes are [start, end) counted from the end of
 * the frame table and whose decoded bytes hash to `sum` (what its table records say: start is
 * the previous record's end, 0 for frame 0): reads them with pread (thread-safe), decompresses
 * with the scratch's own zstd context and checks the size and the XXH3-64. On SMELT_OK *planes
 * points at the frame's byte planes (smelt_delta_frame_elems(d, e, f) * e->unit bytes, plane p
 * at p * the frame's elements; join them with the kernel table's delta_join), inside the
 * scratch and valid until its next use. Otherwise SMELT_E_FORMAT naming the file, entry and
 * frame ("d/delta.safetensors: tensor 'x': frame 3 of 9: checksum mismatch ..."), SMELT_E_IO,
 * or SMELT_E_ARG for a frame that does not exist or a scratch too small. */
int smelt_delta_decode_frame(smelt_ctx *ctx, const smelt_delta *d, const smelt_delta_entry *e,
                             uint64_t f, uint64_t start, uint64_t end, uint64_t sum,
                             smelt_delta_scratch *s, const uint8_t **planes);

/* The bytes of entry e that hold its first nelems elements: the frame table records of the
 * frames that hold them and those frames (the whole blob when they are all of its frames; one
 * record is read to tell otherwise). What a reader of that prefix reads, frame by frame. */
int smelt_delta_prefix_bytes(smelt_ctx *ctx, const smelt_delta *d, const smelt_delta_entry *e,
                             uint64_t nelems, uint64_t *bytes);

/* smelt_delta_decode_frame for frame f, its records (f's and the one before) read here. */
int smelt_delta_decode(smelt_ctx *ctx, const smelt_delta *d, const smelt_delta_entry *e,
                       uint64_t f, smelt_delta_scratch *s, const uint8_t **planes);

/* The unit (bytes per element, planes) of a dtype: its size, or 1 for sub-byte dtypes. */
unsigned smelt_delta_unit(smelt_dtype dt);

/* Frame table records: encode and decode one. */
void smelt_delta_put_record(uint8_t rec[SMELT_DELTA_TABLE_RECORD], uint64_t end, uint64_t xxh3);
void smelt_delta_get_record(const uint8_t rec[SMELT_DELTA_TABLE_RECORD], uint64_t *end,
                            uint64_t *xxh3);

/* Hex of a canonical 16-byte digest, and back (-1 when not 32 hex digits). */
void smelt_delta_hex(const uint8_t h[16], char hex[33]);
int smelt_delta_unhex(const char *text, uint8_t h[16]);

/* Writing (format/delta_write.c). Builds the container header for a delta described by `d`
 * (entries with their blob_size, base, files; path and fd unused): the blobs are laid out in
 * entry order, each entry's blob_offset is set. placeholder: every blob size and offset is
 * written as an 18-digit number, so the result is at least as long as the real header of any
 * blob sizes (below 10^18): extract reserves that much room before the data it streams. pad_to:
 * 0 to round the total length (8-byte prefix + JSON + spaces) up to a multiple of 8, else the
 * exact total length wanted (a multiple of 8, at least the natural length). On success *out
 * (malloc'd) holds the prefix and the JSON, *len its length (= the data start). */
int smelt_delta_header(smelt_ctx *ctx, smelt_delta *d, int placeholder, size_t pad_to,
                       uint8_t **out, size_t *len);

#endif
