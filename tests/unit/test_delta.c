/* The delta container (format/delta.h): byte planes, frame records, the header writer and
 * parser, and the reader's frame decoding with its checksum and table checks, on a delta that
 * smelt_delta_extract writes for two small synthetic models. */
#include "format/delta.h"
#include "kernels/kernels.h"
#include "smelt.h"
#include "testutil.h"

#include <check.h>
#include <stdint.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_frameHeaderSize */
#include <zstd.h>
#include <stdlib.h>
#include <string.h>

START_TEST(planes_round_trip)
{
    for (unsigned unit = 1; unit <= 8; unit *= 2) {
        enum { N = 1000 };
        uint8_t *elems = malloc(N * unit), *base = malloc(N * unit), *planes = malloc(N * unit),
                *back = malloc(N * unit);
        for (size_t i = 0; i < (size_t)N * unit; i++) {
            elems[i] = (uint8_t)(i * 131 + 7);
            base[i] = (uint8_t)(i * 17 + 3);
        }
        const smelt_kernels *k = smelt_kernels_get();
        k->delta_split(planes, N, elems, N, unit, NULL);
        /* plane 0 is the most significant byte of every element */
        ck_assert_uint_eq(planes[0], elems[unit - 1]);
        ck_assert_uint_eq(planes[1], elems[2 * unit - 1]);
        ck_assert_uint_eq(planes[(size_t)(unit - 1) * N], elems[0]);
        k->delta_join(back, planes, N, N, unit, NULL);
        ck_assert(memcmp(back, elems, (size_t)N * unit) == 0);
        /* with a base: the planes are of elems ^ base, and joining them onto base restores
         * elems */
        k->delta_split(planes, N, elems, N, unit, base);
        k->delta_join(back, planes, N, N, unit, base);
        ck_assert(memcmp(back, elems, (size_t)N * unit) == 0);
        free(elems);
        free(base);
        free(planes);
        free(back);
    }
    ck_assert_uint_eq(smelt_delta_unit(SMELT_DT_BF16), 2);
    ck_assert_uint_eq(smelt_delta_unit(SMELT_DT_F32), 4);
    ck_assert_uint_eq(smelt_delta_unit(SMELT_DT_F4), 1);
}
END_TEST

START_TEST(records_and_hex)
{
    uint8_t rec[SMELT_DELTA_TABLE_RECORD];
    smelt_delta_put_record(rec, 0x0102030405060708ull, 0xfedcba9876543210ull);
    ck_assert_uint_eq(rec[0], 0x08); /* little-endian */
    ck_assert_uint_eq(rec[8], 0x10);
    uint64_t end, sum;
    smelt_delta_get_record(rec, &end, &sum);
    ck_assert(end == 0x0102030405060708ull && sum == 0xfedcba9876543210ull);
    uint8_t h[16], g[16];
    for (int i = 0; i < 16; i++)
        h[i] = (uint8_t)(i * 37);
    char hex[33];
    smelt_delta_hex(h, hex);
    ck_assert_int_eq(smelt_delta_unhex(hex, g), 0);
    ck_assert(memcmp(h, g, 16) == 0);
    ck_assert_int_eq(smelt_delta_unhex("abc", g), -1);
    ck_assert_int_eq(smelt_delta_unhex("zz000000000000000000000000000000", g), -1);
}
END_TEST

/* A description with empty blobs only: the header builder and the parser agree. */
START_TEST(header_round_trip)
{
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_delta d = {.fd = -1};
    smelt_delta_entry e[2] = {{.name = "header:m.safetensors", .dtype = SMELT_DT_U8, .ndim = 1},
                              {.name = "w", .dtype = SMELT_DT_BF16, .ndim = 2,
                               .mode = SMELT_DELTA_XOR}};
    size_t parts[2] = {0, 1};
    smelt_delta_file f = {.name = "m.safetensors", .size = 0, .parts = parts, .nparts = 2,
                          .safetensors = 1};
    smelt_delta_base_file b = {.name = "m.safetensors"};
    memset(b.header_xxh3, 0xab, 16);
    d.entries = e;
    d.nentries = 2;
    d.files = &f;
    d.nfiles = 1;
    d.base = &b;
    d.nbase = 1;
    uint8_t *bound_hdr, *hdr;
    size_t bound, len;
    ck_assert_int_eq(smelt_delta_header(ctx, &d, 1, 0, &bound_hdr, &bound), SMELT_OK);
    ck_assert_int_eq(smelt_delta_header(ctx, &d, 0, bound, &hdr, &len), SMELT_OK);
    ck_assert_uint_eq(len, bound);
    ck_assert_uint_eq(len % 8, 0);
    smelt_delta *p;
    int rc = smelt_delta_parse(ctx, "t.safetensors", hdr, len, len, &p);
    ck_assert_msg(rc == SMELT_OK, "%s", smelt_errmsg(ctx));
    ck_assert_uint_eq(p->nentries, 2);
    ck_assert_uint_eq(p->nfiles, 1);
    ck_assert_uint_eq(p->nbase, 1);
    ck_assert(memcmp(p->base[0].header_xxh3, b.header_xxh3, 16) == 0);
    const smelt_delta_entry *w = smelt_delta_find(p, "w");
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(w->mode, SMELT_DELTA_XOR);
    ck_assert_uint_eq(w->nframes, 0);
    smelt_delta_close(p);
    /* the same header with one character of the document changed no longer parses */
    char *at = memmem(hdr, len, "\\\"xor\\\"", 7);
    ck_assert_ptr_nonnull(at);
    memcpy(at, "\\\"xxx\\\"", 7);
    ck_assert_int_eq(smelt_delta_parse(ctx, "t.safetensors", hdr, len, len, &p), SMELT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "tensor 'w': mode is xxx"));
    free(bound_hdr);
    free(hdr);
    smelt_ctx_free(ctx);
}
END_TEST

static char *dir;

static void make_models(void)
{
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_synth_options o;
    smelt_synth_options_default(&o);
    o.size = 1 << 20;
    o.layers = 1;
    o.seed = 1;
    char *base = tu_path(dir, "base"), *ft = tu_path(dir, "ft"), *out = tu_path(dir, "d");
    ck_assert_int_eq(smelt_synth(ctx, base, &o), SMELT_OK);
    o.has_base = 1;
    o.base_seed = 1;
    o.seed = 2;
    ck_assert_int_eq(smelt_synth(ctx, ft, &o), SMELT_OK);
    smelt_delta_options d;
    smelt_delta_options_default(&d);
    d.threads = 2;
    smelt_delta_stats st;
    int rc = smelt_delta_extract(ctx, base, ft, out, &d, &st);
    ck_assert_msg(rc == SMELT_OK, "%s", smelt_errmsg(ctx));
    ck_assert_uint_eq(st.tensors, st.tensors_xor);
    free(base);
    free(ft);
    free(out);
    smelt_ctx_free(ctx);
}

/* The largest XOR tensor of the delta. */
static const smelt_delta_entry *largest(const smelt_delta *d)
{
    const smelt_delta_entry *best = NULL;
    for (size_t i = 0; i < d->nentries; i++)
        if (d->entries[i].mode == SMELT_DELTA_XOR && (!best || d->entries[i].nframes > best->nframes))
            best = &d->entries[i];
    return best;
}

START_TEST(decode_frames)
{
    dir = tu_tmpdir();
    make_models();
    smelt_ctx *ctx = smelt_ctx_new();
    char *dpath = tu_path(dir, "d");
    smelt_delta *d;
    ck_assert_int_eq(smelt_delta_open(ctx, dpath, &d), SMELT_OK);
    const smelt_delta_entry *e = largest(d);
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_ge(e->nframes, 2);
    ck_assert_uint_eq(e->nframes, (e->nelems + 65535) / 65536);
    smelt_delta_scratch *s = smelt_delta_scratch_new(d, e->unit);
    size_t len = (size_t)e->nbytes;
    uint8_t *all = malloc(len);
    const smelt_kernels *k = smelt_kernels_get();
    size_t fbytes = (size_t)d->frame_elems * e->unit;
    for (uint64_t f = 0; f < e->nframes; f++) {
        const uint8_t *planes;
        ck_assert_int_eq(smelt_delta_decode(ctx, d, e, f, s, &planes), SMELT_OK);
        size_t n = (size_t)smelt_delta_frame_elems(d, e, f);
        k->delta_join(all + f * fbytes, planes, n, n, e->unit, NULL);
    }
    /* the frame table read in one piece gives the same frame as its records read alone */
    uint8_t rec[2 * SMELT_DELTA_TABLE_RECORD];
    uint64_t start, end, sum, ignored;
    ck_assert_int_eq(smelt_delta_read_table(ctx, d, e, 0, 2, rec), SMELT_OK);
    smelt_delta_get_record(rec, &start, &ignored);
    smelt_delta_get_record(rec + SMELT_DELTA_TABLE_RECORD, &end, &sum);
    const uint8_t *planes1;
    ck_assert_int_eq(smelt_delta_decode_frame(ctx, d, e, 1, start, end, sum, s, &planes1),
                     SMELT_OK);
    size_t n1 = (size_t)smelt_delta_frame_elems(d, e, 1);
    uint8_t *part = malloc(fbytes);
    k->delta_join(part, planes1, n1, n1, e->unit, NULL);
    ck_assert(memcmp(part, all + fbytes, n1 * e->unit) == 0);
    /* base ^ decoded = the fine-tune's bytes: the XOR of two nearby models has mostly zero
     * high bytes */
    size_t zero_hi = 0;
    for (size_t i = 0; i < len / 2; i++)
        zero_hi += all[2 * i + 1] == 0;
    ck_assert_uint_gt(zero_hi, len / 4);
    /* a frame past the end, a bad table range and impossible frame bounds are refused */
    const uint8_t *planes;
    ck_assert_int_eq(smelt_delta_decode(ctx, d, e, e->nframes, s, &planes), SMELT_E_ARG);
    ck_assert_int_eq(smelt_delta_read_table(ctx, d, e, 1, e->nframes + 1, rec), SMELT_E_ARG);
    ck_assert_int_eq(smelt_delta_decode_frame(ctx, d, e, 1, end, start, sum, s, &planes),
                     SMELT_E_FORMAT);
    uint64_t frames_at = e->blob_offset + e->nframes * SMELT_DELTA_TABLE_RECORD;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dpath, SMELT_DELTA_FILE_NAME);
    size_t flen;
    char *bytes = tu_read_file(path, &flen);
    char name[256];
    snprintf(name, sizeof name, "%s", e->name);
    uint64_t blob_offset = e->blob_offset;
    smelt_delta_close(d);

    /* a flipped bit inside frame 0's compressed bytes: zstd or the checksum catches it */
    char *copy = tu_path(dir, "bad.safetensors");
    bytes[frames_at + 40] ^= 0x10;
    tu_write_file(copy, bytes, flen);
    ck_assert_int_eq(smelt_delta_open(ctx, copy, &d), SMELT_OK); /* tables are intact */
    e = smelt_delta_find(d, name);
    ck_assert_int_eq(smelt_delta_decode(ctx, d, e, 0, s, &planes), SMELT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "frame 0 of"));
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), name));
    ck_assert_int_eq(smelt_delta_decode(ctx, d, e, 1, s, &planes), SMELT_OK);
    bytes[frames_at + 40] ^= 0x10;
    smelt_delta_close(d);

    /* a wrong checksum in the table: "checksum mismatch" */
    bytes[blob_offset + 8] ^= 1;
    tu_write_file(copy, bytes, flen);
    ck_assert_int_eq(smelt_delta_open(ctx, copy, &d), SMELT_OK);
    const smelt_delta_entry *e2 = smelt_delta_find(d, name);
    ck_assert_int_eq(smelt_delta_decode(ctx, d, e2, 0, s, &planes), SMELT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "checksum mismatch"));
    bytes[blob_offset + 8] ^= 1;
    smelt_delta_close(d);

    /* a frame end that runs back: refused when the delta is opened */
    bytes[blob_offset + SMELT_DELTA_TABLE_RECORD] = 0;
    bytes[blob_offset + SMELT_DELTA_TABLE_RECORD + 1] = 0;
    bytes[blob_offset + SMELT_DELTA_TABLE_RECORD + 2] = 0;
    tu_write_file(copy, bytes, flen);
    ck_assert_int_eq(smelt_delta_open(ctx, copy, &d), SMELT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "frame 1 of"));

    /* a truncated file: the safetensors rules name the blob that runs past the end */
    tu_write_file(copy, bytes, flen - 100);
    ck_assert_int_eq(smelt_delta_open(ctx, copy, &d), SMELT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "past the end"));
    free(copy);
    free(bytes);
    free(all);
    free(part);
    free(dpath);
    smelt_delta_scratch_free(s);
    smelt_ctx_free(ctx);
}
END_TEST

/* The block type of a one-block zstd frame (0 raw, 1 RLE, 2 compressed) and, for a compressed
 * block, its literals' coding (0 raw, 1 RLE, 2 Huffman, 3 Huffman with the previous tables)
 * and sequence count, read with RFC 8878's layout (sections 3.1.1.2 to 3.1.1.3.2). */
static void block_kind(const uint8_t *f, size_t len, int *type, int *lit_type, int *nseq)
{
    size_t at = ZSTD_frameHeaderSize(f, len);
    ck_assert(!ZSTD_isError(at));
    uint32_t bh = f[at] | (uint32_t)f[at + 1] << 8 | (uint32_t)f[at + 2] << 16;
    ck_assert_uint_eq(bh & 1, 1); /* the last block: a plane of 64Ki bytes is one block */
    *type = (int)(bh >> 1 & 3);
    *lit_type = *nseq = -1;
    if (*type != 2)
        return;
    const uint8_t *b = f + at + 3;
    *lit_type = b[0] & 3;
    unsigned size_format = b[0] >> 2 & 3;
    size_t lit_header, lit_bytes;
    if (*lit_type < 2) { /* raw or RLE literals: 1, 2 or 3 header bytes */
        lit_header = (size_format & 1) == 0 ? 1 : size_format == 1 ? 2 : 3;
        size_t regen = lit_header == 1 ? b[0] >> 3
                       : lit_header == 2 ? (b[0] >> 4) | (size_t)b[1] << 4
                                         : (b[0] >> 4) | (size_t)b[1] << 4 | (size_t)b[2] << 12;
        lit_bytes = *lit_type == 0 ? regen : 1;
    } else { /* Huffman: 3, 4 or 5 header bytes holding the regenerated and compressed sizes */
        lit_header = size_format < 2 ? 3 : size_format + 2;
        uint64_t v = 0;
        for (size_t i = 0; i < lit_header; i++)
            v |= (uint64_t)b[i] << (8 * i);
        unsigned bits = lit_header == 3 ? 10 : lit_header == 4 ? 14 : 18;
        lit_bytes = (size_t)(v >> (4 + bits) & ((1u << bits) - 1));
    }
    const uint8_t *q = b + lit_header + lit_bytes; /* the sequences section's count */
    *nseq = q[0] < 128   ? q[0]
            : q[0] < 255 ? ((q[0] - 128) << 8) + q[1]
                         : q[1] + (q[2] << 8) + 0x7f00;
}

/* Writes a one-tensor bf16 safetensors file "w" [rows, 65536] with these bytes. */
static void write_bf16(const char *path, const uint8_t *data, size_t rows)
{
    size_t len = rows * 65536 * 2;
    char hdr[256];
    int n = snprintf(hdr, sizeof hdr, "{\"w\":{\"dtype\":\"BF16\",\"shape\":[%zu,65536],"
                     "\"data_offsets\":[0,%zu]}}", rows, len);
    while (n % 8)
        hdr[n++] = ' ';
    uint8_t *file = malloc(8 + (size_t)n + len);
    for (int i = 0; i < 8; i++)
        file[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(file + 8, hdr, (size_t)n);
    memcpy(file + 8 + n, data, len);
    tu_write_file(path, file, 8 + (size_t)n + len);
    free(file);
}

/* Each plane of a frame is a zstd frame of its own, coded for decoding speed (compress_plane):
 * a sparse sign/exponent plane as Huffman-coded literals with no sequences; a low plane that
 * Huffman shrinks by less than an eighth (about 4 % here) raw, where
 * zstd alone would code it; a low plane that repeats (matches more than halve it) with
 * sequences. */
START_TEST(plane_frames)
{
    dir = tu_tmpdir();
    const size_t rows = 2, elems = 65536, len = rows * elems * 2;
    uint8_t *base = malloc(len), *ft = malloc(len), pattern[997];
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = (uint8_t)((x = x * 6364136223846793005u + 1442695040888963407u) >> 56);
    for (size_t i = 0; i < rows * elems; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        uint8_t hi = (x >> 20) % 16 == 0 ? (uint8_t)(1 + (x >> 30) % 3) : 0, lo;
        uint64_t y = x * 6364136223846793005u + 1442695040888963407u;
        if (i < elems) /* 3 in 20 from {0..3}, the rest uniform: zstd saves about 4 % */
            lo = (uint8_t)((y >> 33) % 20 < 3 ? (y >> 40) % 4 : y >> 48);
        else
            lo = pattern[i % sizeof pattern];
        base[2 * i] = (uint8_t)(x >> 8);
        base[2 * i + 1] = (uint8_t)(x >> 50 & 0x3f);
        ft[2 * i] = base[2 * i] ^ lo; /* little-endian: byte 0 is the low one */
        ft[2 * i + 1] = base[2 * i + 1] ^ (i < elems ? hi : 0);
    }
    char *bpath = tu_path(dir, "pb.safetensors"), *fpath = tu_path(dir, "pf.safetensors");
    char *dpath = tu_path(dir, "pd");
    write_bf16(bpath, base, rows);
    write_bf16(fpath, ft, rows);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_delta_options o;
    smelt_delta_options_default(&o);
    smelt_delta_stats st;
    ck_assert_msg(smelt_delta_extract(ctx, bpath, fpath, dpath, &o, &st) == SMELT_OK, "%s",
                  smelt_errmsg(ctx));
    smelt_delta *d;
    ck_assert_int_eq(smelt_delta_open(ctx, dpath, &d), SMELT_OK);
    const smelt_delta_entry *e = smelt_delta_find(d, "w");
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(e->nframes, rows);
    uint8_t rec[2 * SMELT_DELTA_TABLE_RECORD];
    ck_assert_int_eq(smelt_delta_read_table(ctx, d, e, 0, 2, rec), SMELT_OK);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dpath, SMELT_DELTA_FILE_NAME);
    size_t flen;
    uint8_t *bytes = (uint8_t *)tu_read_file(path, &flen);
    const uint8_t *frames = bytes + e->blob_offset + e->nframes * SMELT_DELTA_TABLE_RECORD;
    int type[2][2], lit[2][2], nseq[2][2];
    uint64_t start = 0;
    for (int f = 0; f < 2; f++) {
        uint64_t end, sum;
        smelt_delta_get_record(rec + f * SMELT_DELTA_TABLE_RECORD, &end, &sum);
        size_t at = (size_t)start;
        for (int p = 0; p < 2; p++) {
            ck_assert_uint_lt(at, end);
            size_t n = ZSTD_findFrameCompressedSize(frames + at, (size_t)end - at);
            ck_assert(!ZSTD_isError(n));
            ck_assert_uint_eq(ZSTD_getFrameContentSize(frames + at, n), elems);
            block_kind(frames + at, n, &type[f][p], &lit[f][p], &nseq[f][p]);
            at += n;
        }
        ck_assert_uint_eq(at, end); /* two planes, two zstd frames, nothing else */
        start = end;
    }
    ck_assert_int_eq(type[0][0], 2); /* sparse high plane: Huffman literals, no sequences */
    ck_assert_int_eq(lit[0][0], 2);
    ck_assert_int_eq(nseq[0][0], 0);
    ck_assert_int_eq(type[0][1], 0); /* low plane that barely compresses: raw */
    ck_assert_int_eq(type[1][1], 2); /* repeating low plane: matched */
    ck_assert_int_gt(nseq[1][1], 0);
    /* zstd alone codes that plane (it saves about 4 %), so the raw one above is a
     * choice */
    uint8_t plane[65536], out[70000];
    for (size_t i = 0; i < elems; i++)
        plane[i] = ft[2 * i] ^ base[2 * i];
    size_t zn = ZSTD_compress(out, sizeof out, plane, elems, 3);
    ck_assert_uint_lt(zn, elems - elems / 64);
    /* and apply rebuilds the fine-tune */
    char *apath = tu_path(dir, "pa");
    ck_assert_int_eq(smelt_delta_apply(ctx, bpath, dpath, apath, &o, &st), SMELT_OK);
    char rebuilt[4096];
    snprintf(rebuilt, sizeof rebuilt, "%s/pf.safetensors", apath);
    size_t rlen, olen;
    char *r = tu_read_file(rebuilt, &rlen), *orig = tu_read_file(fpath, &olen);
    ck_assert_uint_eq(rlen, olen);
    ck_assert(memcmp(r, orig, olen) == 0);
    free(r);
    free(orig);
    free(apath);
    free(bytes);
    smelt_delta_close(d);
    smelt_ctx_free(ctx);
    free(bpath);
    free(fpath);
    free(dpath);
    free(base);
    free(ft);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("delta");
    TCase *tc = tcase_create("delta");
    tcase_add_test(tc, planes_round_trip);
    tcase_add_test(tc, records_and_hex);
    tcase_add_test(tc, header_round_trip);
    tcase_add_test(tc, decode_frames);
    tcase_add_test(tc, plane_frames);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
