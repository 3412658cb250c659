/* common/: the thread pool, size parsing, error messages. */
#include "common/errors.h"
#include "common/pool.h"
#include "common/util.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    atomic_int hits[1000];
    atomic_uint worker_seen_max;
} pool_probe;

static void probe_task(void *arg, size_t task, unsigned worker)
{
    pool_probe *p = arg;
    atomic_fetch_add(&p->hits[task], 1);
    unsigned seen = atomic_load(&p->worker_seen_max);
    while (worker > seen && !atomic_compare_exchange_weak(&p->worker_seen_max, &seen, worker))
        ;
}

START_TEST(pool_runs_every_task_once)
{
    int threads[] = {1, 2, 3, 8};
    for (size_t t = 0; t < 4; t++) {
        smelt_pool *pool = smelt_pool_new(threads[t]);
        ck_assert_ptr_nonnull(pool);
        ck_assert_uint_eq(smelt_pool_threads(pool), (unsigned)threads[t]);
        for (int round = 0; round < 50; round++) {
            pool_probe *p = calloc(1, sizeof *p);
            size_t ntasks = (size_t)(round * 17 % 1000);
            smelt_pool_run(pool, ntasks, probe_task, p);
            for (size_t i = 0; i < 1000; i++)
                ck_assert_int_eq(atomic_load(&p->hits[i]), i < ntasks ? 1 : 0);
            ck_assert_uint_lt(atomic_load(&p->worker_seen_max), (unsigned)threads[t]);
            free(p);
        }
        smelt_pool_free(pool);
    }
    smelt_pool_free(NULL);
}
END_TEST

START_TEST(sizes_parse)
{
    smelt_ctx *ctx = smelt_ctx_new();
    static const struct { const char *text; uint64_t want; } ok[] = {
        {"0", 0}, {"512", 512}, {"4K", 4000}, {"512M", 512000000}, {"5G", 5000000000ull},
        {"1Gi", 1073741824ull}, {"256Mi", 268435456ull}, {"2MB", 2000000}, {"1.5G", 1500000000ull},
        {"3MiB", 3145728ull}, {"1T", 1000000000000ull}, {"64k", 64000},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 1;
        ck_assert_msg(smelt_parse_size(ctx, ok[i].text, &v) == SMELT_OK, "%s: %s", ok[i].text,
                      smelt_errmsg(ctx));
        ck_assert_uint_eq(v, ok[i].want);
    }
    static const char *const bad[] = {"", "G", "-1G", "12Q", "1.2.3", "1 G", "1gib", "99999999999T"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v;
        ck_assert_int_eq(smelt_parse_size(ctx, bad[i], &v), SMELT_E_ARG);
        ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), bad[i]));
    }
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(errors_keep_messages)
{
    smelt_ctx *ctx = smelt_ctx_new();
    ck_assert_str_eq(smelt_errmsg(ctx), "");
    ck_assert_int_eq(smelt_fail(ctx, SMELT_E_FORMAT, "%s: rule %d", "a.safetensors", 7), SMELT_E_FORMAT);
    ck_assert_str_eq(smelt_errmsg(ctx), "a.safetensors: rule 7");
    ck_assert_int_eq(smelt_errcode(ctx), SMELT_E_FORMAT);
    smelt_error_prefix(ctx, "%s: ", "config.yml");
    ck_assert_str_eq(smelt_errmsg(ctx), "config.yml: a.safetensors: rule 7");
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    smelt_fail(ctx, SMELT_E_IO, "%s", big);
    smelt_error_prefix(ctx, "%s", big); /* truncates, never overflows */
    ck_assert_uint_lt(strlen(smelt_errmsg(ctx)), sizeof ctx->message);
    ck_assert_str_eq(smelt_status_name(SMELT_E_BUDGET), "SMELT_E_BUDGET");
    ck_assert_str_eq(smelt_status_name(12345), "SMELT_E_UNKNOWN");
    smelt_ctx_free(ctx);
}
END_TEST


/* A scratch directory for one test; removed by the caller with `rm -rf`-like care. */
static char *scratch_dir(void)
{
    char tmpl[] = "/tmp/smelt-common.XXXXXX";
    char *d = mkdtemp(tmpl);
    ck_assert_ptr_nonnull(d);
    return strdup(d);
}

static void rm_scratch(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* Paths and names longer than SMELT_WORD_MAX are cut in the middle; what follows them (the
 * rule, the errno reason) survives, whatever the length and wherever the word sits. */
START_TEST(long_words_are_cut_in_the_middle)
{
    smelt_ctx *ctx = smelt_ctx_new();
    size_t lens[] = {161, 1000, 4095, 5000, 100000};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        char *path = malloc(lens[i] + 1);
        memset(path, 'p', lens[i]);
        memcpy(path, "/head", 5);
        memcpy(path + lens[i] - 5, "/tail", 5);
        path[lens[i]] = '\0';
        smelt_fail_errno(ctx, ENOENT, "%s: cannot open", path);
        const char *m = smelt_errmsg(ctx);
        ck_assert_ptr_nonnull(strstr(m, "/head"));
        ck_assert_ptr_nonnull(strstr(m, "/tail: cannot open: No such file or directory"));
        ck_assert_ptr_nonnull(strstr(m, "..."));
        ck_assert_uint_eq(strlen(m), 2 * SMELT_WORD_KEEP + 3 + strlen(" cannot open: ") +
                                         strlen(strerror(ENOENT)));
        smelt_fail(ctx, SMELT_E_ARG, "'%s' and '%s': too long", path, path);
        ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "tail': too long"));
        /* a prefix never pushes the reason out */
        smelt_fail_errno(ctx, ENAMETOOLONG, "%s: cannot open", path);
        for (int k = 0; k < 40; k++)
            smelt_error_prefix(ctx, "%s: ", path);
        ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), strerror(ENAMETOOLONG)));
        free(path);
    }
    /* short words and blanks are left alone */
    char out[64];
    smelt_shorten_words(out, sizeof out, "a  b\tc");
    ck_assert_str_eq(out, "a  b\tc");
    /* a word of exactly SMELT_WORD_MAX stays whole */
    char word[SMELT_WORD_MAX + 1], big[512];
    memset(word, 'w', SMELT_WORD_MAX);
    word[SMELT_WORD_MAX] = '\0';
    ck_assert_uint_eq(smelt_shorten_words(big, sizeof big, word), SMELT_WORD_MAX);
    /* a destination too small truncates, NUL-terminated */
    ck_assert_uint_eq(smelt_shorten_words(out, 4, "abcdef"), 3);
    ck_assert_str_eq(out, "abc");
    smelt_ctx_free(ctx);
}
END_TEST

/* Every kind of file that is not regular is refused at once (no hang on a FIFO), with the
 * path and what it is; a regular file opens as a blocking descriptor. */
START_TEST(only_regular_files_are_opened)
{
    smelt_ctx *ctx = smelt_ctx_new();
    char *dir = scratch_dir();
    char *fifo = smelt_path_join(dir, "fifo"), *file = smelt_path_join(dir, "file");
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    FILE *f = fopen(file, "w");
    fputs("{}", f);
    fclose(f);
    const char *bad[] = {fifo, dir, "/dev/null"};
    const char *kind[] = {"(a FIFO)", "(a directory)", "(a character device)"};
    for (int i = 0; i < 3; i++) {
        int fd = -1;
        ck_assert_int_eq(smelt_open_regular(ctx, bad[i], 0, &fd, NULL), SMELT_E_IO);
        ck_assert_int_eq(fd, -1);
        ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), bad[i]));
        ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), kind[i]));
        char *text = NULL;
        ck_assert_int_eq(smelt_read_file(ctx, bad[i], 100, &text, NULL), SMELT_E_IO);
        ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "not a regular file"));
        char *dst = smelt_path_join(dir, "copy");
        ck_assert_int_eq(smelt_copy_file(ctx, bad[i], dst), SMELT_E_IO);
        ck_assert_int_ne(access(dst, F_OK), 0);
        free(dst);
    }
    int fd = -1;
    struct stat st;
    ck_assert_int_eq(smelt_open_regular(ctx, file, 0, &fd, &st), SMELT_OK);
    ck_assert_int_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
    ck_assert_int_eq(st.st_size, 2);
    close(fd);
    ck_assert_int_eq(smelt_open_regular(ctx, fifo + strlen(fifo), 0, &fd, NULL), SMELT_E_IO);
    free(fifo);
    free(file);
    rm_scratch(dir);
    free(dir);
    smelt_ctx_free(ctx);
}
END_TEST

/* Copies stream: sizes well past any buffer, sparse files stay sparse, bytes are equal; reads
 * into memory are bounded with a message naming the file and the bound. */
START_TEST(copies_stream_and_reads_are_bounded)
{
    smelt_ctx *ctx = smelt_ctx_new();
    char *dir = scratch_dir();
    char *src = smelt_path_join(dir, "src"), *dst = smelt_path_join(dir, "dst");
    int fd = open(src, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    /* data, a 256 MiB hole, data, a hole to the end */
    ck_assert_int_eq(pwrite(fd, "head", 4, 0), 4);
    ck_assert_int_eq(pwrite(fd, "middle", 6, (off_t)256 << 20), 6);
    ck_assert_int_eq(ftruncate(fd, ((off_t)512 << 20) + 3), 0);
    close(fd);
    ck_assert_int_eq(smelt_copy_file(ctx, src, dst), SMELT_OK);
    struct stat st;
    ck_assert_int_eq(stat(dst, &st), 0);
    ck_assert_int_eq(st.st_size, ((off_t)512 << 20) + 3);
    ck_assert_int_lt((long long)st.st_blocks * 512, 64ll << 20); /* holes stayed holes */
    char buf[8] = {0};
    fd = open(dst, O_RDONLY);
    ck_assert_int_eq(pread(fd, buf, 4, 0), 4);
    ck_assert_str_eq(buf, "head");
    ck_assert_int_eq(pread(fd, buf, 6, (off_t)256 << 20), 6);
    ck_assert_str_eq(buf, "middle");
    ck_assert_int_eq(pread(fd, buf, 1, (off_t)300 << 20), 1);
    ck_assert_int_eq(buf[0], 0);
    close(fd);
    char *tmp = smelt_path_join(dir, "dst.smelt-tmp");
    ck_assert_int_ne(access(tmp, F_OK), 0);
    char *text = NULL;
    ck_assert_int_eq(smelt_read_file(ctx, src, SMELT_JSON_MAX_BYTES, &text, NULL), SMELT_E_IO);
    ck_assert_ptr_null(text);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), src));
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "(64 MiB)"));
    ck_assert_int_eq(smelt_check_readable(ctx, src, SMELT_JSON_MAX_BYTES), SMELT_E_IO);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "(64 MiB)"));
    ck_assert_int_eq(smelt_check_readable(ctx, src, 0), SMELT_OK);
    ck_assert_int_eq(smelt_check_readable(ctx, tmp, SMELT_JSON_MAX_BYTES), SMELT_OK); /* absent */
    free(tmp);
    free(src);
    free(dst);
    rm_scratch(dir);
    free(dir);
    smelt_ctx_free(ctx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("common");
    TCase *tc = tcase_create("common");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, pool_runs_every_task_once);
    tcase_add_test(tc, sizes_parse);
    tcase_add_test(tc, errors_keep_messages);
    tcase_add_test(tc, long_words_are_cut_in_the_middle);
    tcase_add_test(tc, only_regular_files_are_opened);
    tcase_add_test(tc, copies_stream_and_reads_are_bounded);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
