#include "integrity/journal.h"

#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static const char journal_magic[8] = {'S', 'M', 'E', 'L', 'T', 'J', 'N', 'L'};
#define JOURNAL_VERSION 2u
#define JOURNAL_MAX_PATH 65536u

/* A growable byte buffer with a sticky out-of-memory flag (as redis' rio keeps its error). */
typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
    int oom;
} bytes;

static void put(bytes *b, const void *data, size_t len)
{
    if (b->oom)
        return;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
}

static void put_u32(bytes *b, uint32_t v)
{
    uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, le, 4);
}

static void put_u64(bytes *b, uint64_t v)
{
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    put(b, le, 8);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Appends the XXH3-64 of everything from `from` to the end: the record's or header's seal. */
static void seal(bytes *b, size_t from)
{
    if (!b->oom)
        put_u64(b, XXH3_64bits(b->p + from, b->len - from));
}

static int finish(smelt_ctx *ctx, bytes *b, uint8_t **buf, size_t *len)
{
    if (b->oom) {
        free(b->p);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    *buf = b->p;
    *len = b->len;
    return SMELT_OK;
}

int smelt_journal_encode_header(smelt_ctx *ctx, const smelt_journal_header *h, uint8_t **buf,
                                size_t *len)
{
    bytes b = {0};
    put(&b, journal_magic, sizeof journal_magic);
    put_u32(&b, JOURNAL_VERSION);
    put_u32(&b, (uint32_t)h->ninputs);
    put(&b, h->config.b, 16);
    put(&b, h->plan.b, 16);
    for (size_t i = 0; i < h->ninputs; i++) {
        size_t plen = strlen(h->inputs[i].path);
        if (plen > JOURNAL_MAX_PATH) {
            free(b.p);
            return smelt_fail(ctx, SMELT_E_ARG, "%.200s...: path too long for the journal",
                              h->inputs[i].path);
        }
        put_u32(&b, (uint32_t)plen);
        put(&b, h->inputs[i].path, plen);
        const smelt_journal_input *in = &h->inputs[i];
        put(&b, in->header.b, 16);
        put_u64(&b, in->size);
        put_u64(&b, in->mtime_ns);
        put_u64(&b, in->ino);
        put_u64(&b, in->dev);
        put(&b, in->sample.b, 16);
    }
    seal(&b, 0);
    return finish(ctx, &b, buf, len);
}

static int encode_record(smelt_ctx *ctx, bytes *b, const char *name, const smelt_hash128 *hash)
{
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > SMELT_JOURNAL_MAX_NAME)
        return smelt_fail(ctx, SMELT_E_ARG, "tensor '%.200s': name of %zu bytes cannot be "
                          "journaled (1 to %u)", name, nlen, SMELT_JOURNAL_MAX_NAME);
    size_t from = b->len;
    put_u32(b, (uint32_t)nlen);
    put(b, name, nlen);
    put(b, hash->b, 16);
    seal(b, from);
    return b->oom ? smelt_fail(ctx, SMELT_E_NOMEM, "out of memory") : SMELT_OK;
}

int smelt_journal_encode_record(smelt_ctx *ctx, const char *name, const smelt_hash128 *hash,
                                uint8_t **buf, size_t *len)
{
    bytes b = {0};
    int rc = encode_record(ctx, &b, name, hash);
    if (rc != SMELT_OK) {
        free(b.p);
        return rc;
    }
    return finish(ctx, &b, buf, len);
}

void smelt_journal_header_free(smelt_journal_header *h)
{
    for (size_t i = 0; h->inputs && i < h->ninputs; i++)
        free(h->inputs[i].path);
    free(h->inputs);
    h->inputs = NULL;
    h->ninputs = 0;
}

void smelt_journal_contents_free(smelt_journal_contents *c)
{
    smelt_journal_header_free(&c->header);
    for (size_t i = 0; c->records && i < c->nrecords; i++)
        free(c->records[i].name);
    free(c->records);
    memset(c, 0, sizeof *c);
}

static char *dup_n(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static int parse_header(smelt_ctx *ctx, const char *path, const uint8_t *buf, size_t len,
                        smelt_journal_contents *out, size_t *at)
{
    if (len < 8 + 4 + 4 + 32 + 8 || memcmp(buf, journal_magic, 8) != 0)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: not a smelt journal (bad magic or too short)",
                          path);
    if (get_u32(buf + 8) < JOURNAL_VERSION)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: journal version %u, made by an older smelt "
                          "that did not record what identifies each input's data (this one "
                          "writes %u)", path, get_u32(buf + 8), JOURNAL_VERSION);
    if (get_u32(buf + 8) != JOURNAL_VERSION)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: journal version %u; this smelt writes %u",
                          path, get_u32(buf + 8), JOURNAL_VERSION);
    uint32_t ninputs = get_u32(buf + 12);
    size_t p = 16;
    memcpy(out->header.config.b, buf + p, 16);
    memcpy(out->header.plan.b, buf + p + 16, 16);
    p += 32;
    /* Each input takes at least INPUT_FIXED bytes: a count beyond what the file holds is
     * corrupt. */
    enum { INPUT_FIXED = 4 + 16 + 4 * 8 + 16 };
    if (ninputs > (len - p) / INPUT_FIXED)
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: journal header is damaged", path);
    out->header.inputs = calloc(ninputs ? ninputs : 1, sizeof *out->header.inputs);
    if (!out->header.inputs)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (uint32_t i = 0; i < ninputs; i++) {
        if (len - p < 4)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: journal header is damaged", path);
        uint32_t plen = get_u32(buf + p);
        p += 4;
        if (plen > JOURNAL_MAX_PATH || len - p < (size_t)plen + INPUT_FIXED - 4)
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: journal header is damaged", path);
        smelt_journal_input *in = &out->header.inputs[i];
        in->path = dup_n(buf + p, plen);
        if (!in->path)
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        out->header.ninputs = i + 1;
        p += plen;
        memcpy(in->header.b, buf + p, 16);
        in->size = get_u64(buf + p + 16);
        in->mtime_ns = get_u64(buf + p + 24);
        in->ino = get_u64(buf + p + 32);
        in->dev = get_u64(buf + p + 40);
        memcpy(in->sample.b, buf + p + 48, 16);
        p += INPUT_FIXED - 4;
    }
    if (len - p < 8 || get_u64(buf + p) != XXH3_64bits(buf, p))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: journal header is damaged (checksum)", path);
    *at = p + 8;
    return SMELT_OK;
}

int smelt_journal_parse(smelt_ctx *ctx, const char *path, const uint8_t *buf, size_t len,
                        smelt_journal_contents *out)
{
    memset(out, 0, sizeof *out);
    size_t at = 0;
    int rc = parse_header(ctx, path, buf, len, out, &at);
    if (rc != SMELT_OK)
        return rc;
    size_t cap = 0;
    for (;;) {
        out->valid_len = at;
        if (at == len)
            break;
        /* Anything short or mis-sealed is the torn tail of an interrupted append. */
        if (len - at < 4)
            break;
        uint32_t nlen = get_u32(buf + at);
        if (nlen == 0 || nlen > SMELT_JOURNAL_MAX_NAME || len - at - 4 < (size_t)nlen + 24)
            break;
        size_t body = 4 + (size_t)nlen + 16;
        if (get_u64(buf + at + body) != XXH3_64bits(buf + at, body))
            break;
        if (memchr(buf + at + 4, '\0', nlen))
            break; /* a sealed record never holds a NUL: treat as corrupt */
        if (out->nrecords == cap) {
            cap = cap ? cap * 2 : 64;
            smelt_journal_record *r = realloc(out->records, cap * sizeof *r);
            if (!r)
                return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
            out->records = r;
        }
        smelt_journal_record *r = &out->records[out->nrecords];
        if (!(r->name = dup_n(buf + at + 4, nlen)))
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        memcpy(r->hash.b, buf + at + 4 + nlen, 16);
        out->nrecords++;
        at += body + 8;
    }
    out->torn = out->valid_len < len;
    return SMELT_OK;
}

int smelt_journal_read(smelt_ctx *ctx, const char *path, smelt_journal_contents *out)
{
    memset(out, 0, sizeof *out);
    char *data;
    size_t len;
    /* A journal holds ~60 bytes per tensor: 1 GiB is far beyond any real model. */
    int rc = smelt_read_file(ctx, path, (size_t)1 << 30, &data, &len);
    if (rc != SMELT_OK)
        return rc;
    rc = smelt_journal_parse(ctx, path, (const uint8_t *)data, len, out);
    free(data);
    return rc;
}

int smelt_journal_header_diff(const smelt_journal_header *then, const smelt_journal_header *now,
                              char *buf, size_t len)
{
    if (!smelt_hash_eq(&then->config, &now->config)) {
        snprintf(buf, len, "the config file changed");
        return 1;
    }
    if (then->ninputs != now->ninputs) {
        snprintf(buf, len, "the inputs changed (%zu input files then, %zu now)", then->ninputs,
                 now->ninputs);
        return 1;
    }
    for (size_t i = 0; i < now->ninputs; i++) {
        if (strcmp(then->inputs[i].path, now->inputs[i].path) != 0) {
            snprintf(buf, len, "input file %zu is %s now, %s then", i + 1, now->inputs[i].path,
                     then->inputs[i].path);
            return 1;
        }
        const smelt_journal_input *a = &then->inputs[i], *b = &now->inputs[i];
        const char *why = !smelt_hash_eq(&a->header, &b->header) ? "its safetensors header differs"
                          : a->size != b->size ? "its size differs"
                          : a->ino != b->ino || a->dev != b->dev
                              ? "it is another file now (inode or device differs)"
                          : a->mtime_ns != b->mtime_ns ? "its modification time differs"
                          : !smelt_hash_eq(&a->sample, &b->sample)
                              ? "its data differs in the sampled blocks"
                              : NULL;
        if (why) {
            snprintf(buf, len, "input %s changed (%s)", b->path, why);
            return 1;
        }
    }
    if (!smelt_hash_eq(&then->plan, &now->plan)) {
        snprintf(buf, len, "the output layout or the options that change output bytes "
                 "(--out-shard-size, --random-seed) changed");
        return 1;
    }
    return 0;
}

struct smelt_journal {
    int fd;
    char *path;
    bytes pending;   /* encoded records not yet appended */
    int *data_fds;   /* distinct data files the pending records vouch for */
    size_t nfds, cap_fds;
    double last_flush;
    double interval; /* seconds between batches */
};

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int smelt_journal_create(smelt_ctx *ctx, const char *path, const smelt_journal_header *h,
                         const smelt_journal_record *records, size_t n, smelt_journal **out)
{
    *out = NULL;
    uint8_t *head;
    size_t head_len;
    int rc = smelt_journal_encode_header(ctx, h, &head, &head_len);
    if (rc != SMELT_OK)
        return rc;
    bytes b = {0};
    put(&b, head, head_len);
    free(head);
    for (size_t i = 0; i < n && rc == SMELT_OK; i++)
        rc = encode_record(ctx, &b, records[i].name, &records[i].hash);
    if (rc == SMELT_OK && b.oom)
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK)
        rc = smelt_write_file_atomic(ctx, path, b.p, b.len);
    free(b.p);
    if (rc != SMELT_OK)
        return rc;
    /* The rename must be durable before any shard byte relies on this journal. */
    char *dir_copy = strdup(path);
    if (!dir_copy)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    rc = smelt_fsync_dir(ctx, dirname(dir_copy));
    free(dir_copy);
    if (rc != SMELT_OK)
        return rc;
    smelt_journal *j = calloc(1, sizeof *j);
    if (!j || !(j->path = strdup(path))) {
        free(j);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    j->fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (j->fd < 0) {
        rc = smelt_fail_errno(ctx, errno, "%s: cannot open", path);
        smelt_journal_close(j);
        return rc;
    }
    j->last_flush = smelt_now();
    j->interval = SMELT_JOURNAL_BATCH_SECONDS;
    /* Tests set it to 0 (a record per tensor) so that short merges still journal as they go. */
    const char *env = getenv("SMELT_JOURNAL_INTERVAL");
    if (env && *env) {
        char *end;
        double v = strtod(env, &end);
        if (!*end && v >= 0 && v <= 3600)
            j->interval = v;
    }
    *out = j;
    return SMELT_OK;
}

int smelt_journal_add(smelt_ctx *ctx, smelt_journal *j, int data_fd, const char *name,
                      const smelt_hash128 *hash)
{
    int rc = encode_record(ctx, &j->pending, name, hash);
    if (rc != SMELT_OK)
        return rc;
    size_t i = 0;
    while (i < j->nfds && j->data_fds[i] != data_fd)
        i++;
    if (i == j->nfds) {
        if (j->nfds == j->cap_fds) {
            size_t cap = j->cap_fds ? 2 * j->cap_fds : 8;
            int *fds = realloc(j->data_fds, cap * sizeof *fds);
            if (!fds)
                return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
            j->data_fds = fds;
            j->cap_fds = cap;
        }
        j->data_fds[j->nfds++] = data_fd;
    }
    /* Batching keeps the cost at a few fdatasyncs a second however small the tensors are. */
    if (smelt_now() - j->last_flush >= j->interval)
        return smelt_journal_flush(ctx, j);
    return SMELT_OK;
}

int smelt_journal_flush(smelt_ctx *ctx, smelt_journal *j)
{
    j->last_flush = smelt_now();
    if (j->pending.len == 0)
        return SMELT_OK;
    /* Data first: a record must never vouch for bytes that could still be lost. */
    for (size_t i = 0; i < j->nfds; i++)
        if (fdatasync(j->data_fds[i]) != 0)
            return smelt_fail_errno(ctx, errno, "cannot flush the output to disk");
    int err = write_all(j->fd, j->pending.p, j->pending.len);
    if (err == 0 && fdatasync(j->fd) != 0)
        err = errno;
    if (err)
        return smelt_fail_errno(ctx, err, "%s: cannot write", j->path);
    j->pending.len = 0;
    j->nfds = 0;
    return SMELT_OK;
}

void smelt_journal_close(smelt_journal *j)
{
    if (!j)
        return;
    if (j->fd >= 0)
        close(j->fd);
    free(j->pending.p);
    free(j->data_fds);
    free(j->path);
    free(j);
}

int smelt_journal_input_identify(smelt_ctx *ctx, int fd, const char *path, uint64_t data_start,
                                 smelt_journal_input *in)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return smelt_fail_errno(ctx, errno, "%s: cannot stat it", path);
    in->size = (uint64_t)st.st_size;
    in->mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
    in->ino = (uint64_t)st.st_ino;
    in->dev = (uint64_t)st.st_dev;
    int rc = smelt_hash_file_prefix(ctx, fd, path, data_start, &in->header);
    if (rc != SMELT_OK)
        return rc;
    uint64_t data = in->size > data_start ? in->size - data_start : 0;
    const uint64_t all = (uint64_t)SMELT_JOURNAL_SAMPLES * SMELT_JOURNAL_SAMPLE_BYTES;
    XXH3_state_t *xs = XXH3_createState();
    uint8_t *block = malloc(SMELT_JOURNAL_SAMPLE_BYTES);
    if (!xs || !block) {
        XXH3_freeState(xs);
        free(block);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    XXH3_128bits_reset(xs);
    /* Small data: every byte, in sample-sized pieces. Else block k starts at k/15 of the way
     * from the data's start to its last full block. */
    unsigned count = data <= all ? (unsigned)((data + SMELT_JOURNAL_SAMPLE_BYTES - 1) /
                                              SMELT_JOURNAL_SAMPLE_BYTES)
                                 : SMELT_JOURNAL_SAMPLES;
    for (unsigned k = 0; k < count && rc == SMELT_OK; k++) {
        /* floor(span * k / 15) without overflow, so the last block ends at the data's end. */
        uint64_t span = data - SMELT_JOURNAL_SAMPLE_BYTES, parts = SMELT_JOURNAL_SAMPLES - 1;
        uint64_t at = data <= all ? (uint64_t)k * SMELT_JOURNAL_SAMPLE_BYTES
                                  : span / parts * k + span % parts * k / parts;
        size_t want = data - at < SMELT_JOURNAL_SAMPLE_BYTES ? (size_t)(data - at)
                                                             : SMELT_JOURNAL_SAMPLE_BYTES;
        for (size_t got = 0; got < want;) {
            ssize_t n = pread(fd, block + got, want - got, (off_t)(data_start + at + got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                rc = smelt_fail_errno(ctx, n < 0 ? errno : EIO, "%s: cannot read its data", path);
                break;
            }
            got += (size_t)n;
        }
        if (rc == SMELT_OK)
            XXH3_128bits_update(xs, block, want);
    }
    if (rc == SMELT_OK) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(xs));
        memcpy(in->sample.b, c.digest, sizeof in->sample.b);
    }
    XXH3_freeState(xs);
    free(block);
    return rc;
}
