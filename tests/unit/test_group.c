/* engine/group: the sweep's value list and its config rewrite. What a sweep records as each
 * output's config must be exactly the config a user would write for that value (the e2e test
 * merges it separately and compares every byte), so the text edits are pinned here case by
 * case: in place, inserted into `parameters:`, appended, and the refusals. */
#include "engine/group.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

/* The rewrite of text with name=value; NULL when refused (the status in *rc). */
static char *rewrite(const char *text, const char *name, const char *value, int *rc)
{
    smelt_ctx *ctx = smelt_ctx_new();
    char *out = NULL;
    *rc = smelt_sweep_rewrite(ctx, "c.yml", text, name, value, &out);
    smelt_ctx_free(ctx);
    return out;
}

START_TEST(rewrite_in_place)
{
    int rc;
    char *out = rewrite("merge_method: slerp\nparameters:\n  t: 0.5 # mid\nx: 0.5\n", "t", "0.25",
                        &rc);
    ck_assert_int_eq(rc, SMELT_OK);
    ck_assert_str_eq(out, "merge_method: slerp\nparameters:\n  t: 0.25 # mid\nx: 0.5\n");
    free(out);
    /* The value on its own line, and a flow mapping. */
    out = rewrite("parameters:\n  t:\n    0.5\n", "t", "1", &rc);
    ck_assert_str_eq(out, "parameters:\n  t:\n    1\n");
    free(out);
    out = rewrite("parameters: {t: 0.5, lambda: 0.5}\n", "lambda", "2", &rc);
    ck_assert_str_eq(out, "parameters: {t: 0.5, lambda: 2}\n");
    free(out);
    out = rewrite("parameters: {at: 0.5, t : 0.5}\n", "t", "2", &rc); /* not the 't' in "at" */
    ck_assert_str_eq(out, "parameters: {at: 0.5, t : 2}\n");
    free(out);
}
END_TEST

START_TEST(rewrite_added)
{
    int rc;
    char *out = rewrite("parameters:\n    normalize: true\nmodels: []\n", "lambda", "0.5", &rc);
    ck_assert_int_eq(rc, SMELT_OK);
    ck_assert_str_eq(out, "parameters:\n    lambda: 0.5\n    normalize: true\nmodels: []\n");
    free(out);
    out = rewrite("merge_method: ties", "lambda", "2", &rc); /* no final newline */
    ck_assert_str_eq(out, "merge_method: ties\nparameters:\n  lambda: 2\n");
    free(out);
    /* A per-model `parameters:` is not the top-level one. */
    out = rewrite("models:\n  - model: a\n    parameters:\n      lambda: 1\n", "lambda", "2", &rc);
    ck_assert_str_eq(out, "models:\n  - model: a\n    parameters:\n      lambda: 1\n"
                          "parameters:\n  lambda: 2\n");
    free(out);
}
END_TEST

START_TEST(rewrite_refused)
{
    int rc;
    ck_assert_ptr_null(rewrite("parameters:\n  t: [0, 1]\n", "t", "1", &rc));
    ck_assert_int_eq(rc, SMELT_E_ARG);
    ck_assert_ptr_null(rewrite("parameters: {normalize: true}\n", "t", "1", &rc));
    ck_assert_int_eq(rc, SMELT_E_ARG);
    ck_assert_ptr_null(rewrite("parameters:\n  t: \"0.5\"\n", "t", "1", &rc)); /* quoted */
    ck_assert_int_eq(rc, SMELT_E_ARG);
}
END_TEST

START_TEST(sweep_values)
{
    smelt_ctx *ctx = smelt_ctx_new();
    char *name, **values;
    size_t n;
    ck_assert_int_eq(smelt_sweep_parse(ctx, "t=0.2,0.40,1", &name, &values, &n), SMELT_OK);
    ck_assert_str_eq(name, "t");
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(values[1], "0.40"); /* as written: the directory is t=0.40 */
    free(name);
    for (size_t i = 0; i < n; i++)
        free(values[i]);
    free(values);
    static const char *const bad[] = {"t", "=1", "t=", "t=1,", "t=,1", "t=1,1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(smelt_sweep_parse(ctx, bad[i], &name, &values, &n), SMELT_E_ARG);
        free(name);
        for (size_t v = 0; v < n; v++)
            free(values[v]);
        free(values);
    }
    smelt_ctx_free(ctx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("group");
    TCase *tc = tcase_create("sweep");
    tcase_add_test(tc, rewrite_in_place);
    tcase_add_test(tc, rewrite_added);
    tcase_add_test(tc, rewrite_refused);
    tcase_add_test(tc, sweep_values);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
