/* common/: the thread pool, size parsing, error messages. */
#include "common/errors.h"
#include "common/pool.h"
#include "common/util.h"
#include "testutil.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

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

int main(void)
{
    Suite *s = suite_create("common");
    TCase *tc = tcase_create("common");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, pool_runs_every_task_once);
    tcase_add_test(tc, sizes_parse);
    tcase_add_test(tc, errors_keep_messages);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
