/* The resume journal: an append-only file in the output directory that records which output
 * tensors are durably written, so an interrupted merge can continue where it stopped.
 *
 * Format (little-endian), file name SMELT_JOURNAL_NAME:
 *   header  "SMELTJNL" | u32 version (2) | u32 ninputs | config XXH3-128 | plan XXH3-128 |
 *           ninputs x (u32 path length | path bytes | header XXH3-128 | u64 size |
 *           u64 mtime in ns | u64 inode | u64 device | sample XXH3-128) | u64 XXH3-64 of all
 *           the header bytes before it
 *   record  u32 name length (1..65536) | name bytes | tensor XXH3-128 | u64 XXH3-64 of the
 *           record bytes before it
 * Records follow the header back to back. A record is appended only after the shard bytes it
 * vouches for were fdatasync'd, and records are fsync'd in batches, so a crash can at worst tear
 * the last record: a reader keeps every record up to the first short or mis-checksummed one and
 * drops the rest. Hashes are canonical XXH3-128 (see checksum.h).
 *
 * A journal handle is used by one thread. */
#ifndef SMELT_JOURNAL_H
#define SMELT_JOURNAL_H

#include "integrity/checksum.h"

#include <stddef.h>
#include <stdint.h>

#define SMELT_JOURNAL_NAME ".smelt-journal"
#define SMELT_JOURNAL_MAX_NAME 65536u

/* One input file of the merge: its path as opened and what identifies its content (see
 * smelt_journal_input_identify). */
typedef struct smelt_journal_input {
    char *path;
    smelt_hash128 header;   /* the 8-byte prefix and JSON header */
    uint64_t size;
    uint64_t mtime_ns;      /* st_mtim in nanoseconds since the epoch */
    uint64_t ino, dev;
    smelt_hash128 sample;   /* SMELT_JOURNAL_SAMPLES blocks of the data (see below) */
} smelt_journal_input;

/* Sampled data blocks: how many, and how large. */
#define SMELT_JOURNAL_SAMPLES 16u
#define SMELT_JOURNAL_SAMPLE_BYTES 4096u

/* Fills in->header .. in->sample for the input file open as fd (path for messages; data_start
 * = 8 + header length), leaving in->path alone. Resuming needs to know, before reading any
 * data, that each input holds what it held: hashing whole inputs would read them all again.
 * Size, mtime (ns), inode and device change with any write through the filesystem, or when
 * the file is replaced; the header hash covers names, dtypes, shapes and offsets; and 16
 * blocks of 4 KiB at fixed offsets spread evenly over the data (first and last block included;
 * all of the data when it is smaller than that) catch rewrites whose mtime was then set back
 * (touch -d, cp -p, rsync -t) at the cost of 64 KiB of reads per file. (ctime would be surer
 * still but changes on chmod or a new hard link, which do not change the bytes.) A changed
 * byte outside every sampled block with its mtime restored stays undetected: the price of
 * cheap. SMELT_E_IO when the file cannot be read. */
int smelt_journal_input_identify(smelt_ctx *ctx, int fd, const char *path, uint64_t data_start,
                                 smelt_journal_input *in);

/* What identifies a merge: resuming is allowed only when all of it is unchanged. */
typedef struct smelt_journal_header {
    smelt_hash128 config; /* the config text */
    smelt_hash128 plan;   /* the output layout and the options that change output bytes */
    size_t ninputs;
    smelt_journal_input *inputs;
} smelt_journal_header;

/* A finished output tensor. */
typedef struct smelt_journal_record {
    char *name;
    smelt_hash128 hash;
} smelt_journal_record;

/* A parsed journal. */
typedef struct smelt_journal_contents {
    smelt_journal_header header;
    smelt_journal_record *records; /* in file order */
    size_t nrecords;
    size_t valid_len; /* bytes of the header and the whole, intact records */
    int torn;         /* 1 when bytes after valid_len (a torn or corrupt tail) were dropped */
} smelt_journal_contents;

/* Encodes a header / a record into a malloc'd buffer (caller frees). Returns SMELT_OK, or
 * SMELT_E_NOMEM / SMELT_E_ARG (a name or path too long) with a message. */
int smelt_journal_encode_header(smelt_ctx *ctx, const smelt_journal_header *h, uint8_t **buf,
                                size_t *len);
int smelt_journal_encode_record(smelt_ctx *ctx, const char *name, const smelt_hash128 *hash,
                                uint8_t **buf, size_t *len);

/* Parses a journal held in memory. A header that is short, has another magic or version, or
 * fails its checksum is SMELT_E_FORMAT (the journal cannot be trusted at all); a bad record
 * only ends the list (torn = 1). `path` is for messages. Free with
 * smelt_journal_contents_free() (also safe after a failure). */
int smelt_journal_parse(smelt_ctx *ctx, const char *path, const uint8_t *buf, size_t len,
                        smelt_journal_contents *out);

/* Reads and parses the journal file at path. SMELT_E_IO when it cannot be read. */
int smelt_journal_read(smelt_ctx *ctx, const char *path, smelt_journal_contents *out);

void smelt_journal_contents_free(smelt_journal_contents *c);

/* Frees the strings of a header built by the caller with malloc'd paths. */
void smelt_journal_header_free(smelt_journal_header *h);

/* Describes how `now` differs from `then` in one sentence fragment ("the config changed",
 * "input a/model.safetensors changed", ...) into buf; returns 0 when they match. */
int smelt_journal_header_diff(const smelt_journal_header *then, const smelt_journal_header *now,
                              char *buf, size_t len);

/* An open journal being appended to. */
typedef struct smelt_journal smelt_journal;

/* Writes a new journal at path holding the header and `n` records (through a temporary file,
 * fsync and rename, so a crash leaves either the old journal or the new one), fsyncs the
 * directory and opens it for appending. Used for a fresh merge (n = 0) and to compact the
 * journal of a resumed one to its re-verified records. */
int smelt_journal_create(smelt_ctx *ctx, const char *path, const smelt_journal_header *h,
                         const smelt_journal_record *records, size_t n, smelt_journal **out);

/* Queues a record for a tensor whose bytes went to data_fd. Records are made durable in
 * batches (every SMELT_JOURNAL_BATCH_SECONDS, or what the environment variable
 * SMELT_JOURNAL_INTERVAL says in seconds; 0 = every tensor, for tests): data_fd is fdatasync'd first, then the
 * records are appended and the journal fdatasync'd. */
#define SMELT_JOURNAL_BATCH_SECONDS 0.25
int smelt_journal_add(smelt_ctx *ctx, smelt_journal *j, int data_fd, const char *name,
                      const smelt_hash128 *hash);

/* Makes every queued record durable now (fdatasync of their data files, append, fdatasync). */
int smelt_journal_flush(smelt_ctx *ctx, smelt_journal *j);

/* Closes the journal without flushing what is queued. NULL is allowed. */
void smelt_journal_close(smelt_journal *j);

#endif
