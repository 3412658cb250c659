/* io/ring: io_uring and pread serve the same reads with the same results. */
#include "io/ring.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FILE_BYTES (3u << 20)

static char *make_file(unsigned char **content)
{
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "data.bin");
    unsigned char *data = malloc(FILE_BYTES);
    for (size_t i = 0; i < FILE_BYTES; i++)
        data[i] = (unsigned char)(i * 2654435761u >> 13);
    tu_write_file(path, data, FILE_BYTES);
    *content = data;
    free(dir);
    return path;
}

/* A ring over a fresh test file: the file's content in fx->want, its descriptor in fx->fd. */
typedef struct ring_fixture {
    unsigned char *want, *got;
    char *path;
    int fd;
    smelt_ctx *ctx;
    smelt_ring *ring;
} ring_fixture;

static void fixture_open(ring_fixture *fx, unsigned depth, int force_pread)
{
    fx->path = make_file(&fx->want);
    fx->fd = open(fx->path, O_RDONLY);
    ck_assert_int_ge(fx->fd, 0);
    fx->ctx = smelt_ctx_new();
    ck_assert_int_eq(smelt_ring_open(fx->ctx, depth, force_pread, &fx->ring), SMELT_OK);
    fx->got = calloc(1, FILE_BYTES);
}

static void fixture_close(ring_fixture *fx)
{
    smelt_ring_close(fx->ring);
    smelt_ctx_free(fx->ctx);
    close(fx->fd);
    free(fx->got);
    free(fx->want);
    free(fx->path);
}

static void read_everything(int force_pread)
{
    ring_fixture fx;
    fixture_open(&fx, 8, force_pread);
    smelt_ring *ring = fx.ring;
    unsigned char *want = fx.want, *got = fx.got;
    int fd = fx.fd;
    if (force_pread)
        ck_assert_int_eq(smelt_ring_is_uring(ring), 0);
    /* Pieces of uneven sizes, queued 8 at a time, land where they belong. */
    size_t piece = 100003, at = 0;
    unsigned long done_mask = 0, queued = 0;
    while (at < FILE_BYTES || smelt_ring_pending(ring)) {
        while (at < FILE_BYTES && smelt_ring_pending(ring) < 8) {
            size_t len = FILE_BYTES - at < piece ? FILE_BYTES - at : piece;
            ck_assert_int_eq(smelt_ring_queue_read(ring, fd, got + at, len, at, queued++), 0);
            at += len;
        }
        ck_assert_int_eq(smelt_ring_submit(ring), 0);
        smelt_completion c;
        ck_assert_int_eq(smelt_ring_wait(ring, &c), 1);
        ck_assert_int_eq(c.error, 0);
        ck_assert_uint_lt(c.tag, 64);
        done_mask |= 1ul << c.tag;
    }
    ck_assert_uint_eq(done_mask, (1ul << queued) - 1);
    ck_assert_int_eq(memcmp(got, want, FILE_BYTES), 0);
    /* The ring's own count of bytes read is what came in, on either path. */
    ck_assert_uint_eq(smelt_ring_bytes_read(ring), FILE_BYTES);

    /* The ring holds at most its depth. */
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(smelt_ring_queue_read(ring, fd, got, 16, 0, 100 + (unsigned)i), 0);
    ck_assert_int_eq(smelt_ring_queue_read(ring, fd, got, 16, 0, 200), -1);
    smelt_ring_submit(ring);
    smelt_completion c;
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(smelt_ring_wait(ring, &c), 1);
    ck_assert_int_eq(smelt_ring_wait(ring, &c), 0);
    ck_assert_uint_eq(smelt_ring_bytes_read(ring), FILE_BYTES + 8 * 16);

    /* A range past the end of the file is an error, not a silent short buffer. */
    ck_assert_int_eq(smelt_ring_queue_read(ring, fd, got, 4096, FILE_BYTES - 100, 7), 0);
    smelt_ring_submit(ring);
    ck_assert_int_eq(smelt_ring_wait(ring, &c), 1);
    ck_assert_uint_eq(c.tag, 7);
    ck_assert_int_eq(c.error, EIO);
    /* A bad descriptor reports its errno. */
    ck_assert_int_eq(smelt_ring_queue_read(ring, 9999, got, 16, 0, 9), 0);
    smelt_ring_submit(ring);
    ck_assert_int_eq(smelt_ring_wait(ring, &c), 1);
    ck_assert_int_eq(c.error, EBADF);
    fixture_close(&fx);
}

/* Submitted reads proceed while the caller does something else (on the pread path, reader
 * threads perform them): the data lands before anyone waits. Waiting on a read that was queued
 * but not submitted still returns it, and closing a ring with reads in flight neither hangs
 * nor leaks. */
static void reads_in_background(int force_pread)
{
    ring_fixture fx;
    fixture_open(&fx, 4, force_pread);
    smelt_ring *ring = fx.ring;
    unsigned char *want = fx.want, *got = fx.got;
    int fd = fx.fd;
    ck_assert_int_eq(smelt_ring_queue_read(ring, fd, got, FILE_BYTES, 0, 1), 0);
    ck_assert_int_eq(smelt_ring_submit(ring), 0);
    /* Polls the last byte (reads fill in order) for up to 30 s: no time is asserted, only that
     * the read happened without smelt_ring_wait. */
    for (int i = 0; i < 30000 && got[FILE_BYTES - 1] != want[FILE_BYTES - 1]; i++)
        usleep(1000);
    ck_assert_uint_eq(got[FILE_BYTES - 1], want[FILE_BYTES - 1]);
    smelt_completion c;
    ck_assert_int_eq(smelt_ring_wait(ring, &c), 1);
    ck_assert_int_eq(c.error, 0);
    ck_assert_int_eq(memcmp(got, want, FILE_BYTES), 0);

    memset(got, 0, FILE_BYTES);
    ck_assert_int_eq(smelt_ring_queue_read(ring, fd, got, 4096, 4096, 2), 0);
    ck_assert_int_eq(smelt_ring_wait(ring, &c), 1);
    ck_assert_uint_eq(c.tag, 2);
    ck_assert_int_eq(memcmp(got, want + 4096, 4096), 0);

    for (uint64_t i = 0; i < 4; i++)
        ck_assert_int_eq(smelt_ring_queue_read(ring, fd, got, FILE_BYTES, 0, 10 + i), 0);
    ck_assert_int_eq(smelt_ring_submit(ring), 0);
    fixture_close(&fx); /* reads still in flight */
}

START_TEST(uring_background) { reads_in_background(0); }
END_TEST

START_TEST(pread_background) { reads_in_background(1); }
END_TEST

START_TEST(uring_reads) { read_everything(0); }
END_TEST

START_TEST(pread_reads) { read_everything(1); }
END_TEST

int main(void)
{
    Suite *s = suite_create("ring");
    TCase *tc = tcase_create("ring");
    tcase_add_test(tc, uring_reads);
    tcase_add_test(tc, pread_reads);
    tcase_add_test(tc, uring_background);
    tcase_add_test(tc, pread_background);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
