/* The errors of a batch of pool tasks (see task_errors.h). */
#include "common/task_errors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int smelt_task_errors_init(smelt_ctx *ctx, smelt_task_errors *t, unsigned n)
{
    memset(t, 0, sizeof *t);
    t->n = n;
    t->scratch = calloc(n, sizeof *t->scratch);
    t->kept = calloc(n, sizeof *t->kept);
    t->fail_task = calloc(n, sizeof *t->fail_task);
    if (!t->scratch || !t->kept || !t->fail_task)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (unsigned i = 0; i < n; i++)
        if (!(t->scratch[i] = smelt_ctx_new()) || !(t->kept[i] = smelt_ctx_new()))
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    smelt_task_errors_reset(t);
    return SMELT_OK;
}

void smelt_task_errors_free(smelt_task_errors *t)
{
    for (unsigned i = 0; i < t->n; i++) {
        if (t->scratch)
            smelt_ctx_free(t->scratch[i]);
        if (t->kept)
            smelt_ctx_free(t->kept[i]);
    }
    free(t->scratch);
    free(t->kept);
    free(t->fail_task);
    memset(t, 0, sizeof *t);
}

void smelt_task_errors_reset(smelt_task_errors *t)
{
    for (unsigned i = 0; i < t->n; i++)
        t->fail_task[i] = SIZE_MAX;
}

void smelt_task_failed(smelt_task_errors *t, unsigned worker, size_t task)
{
    if (task >= t->fail_task[worker])
        return;
    t->fail_task[worker] = task;
    smelt_fail(t->kept[worker], smelt_errcode(t->scratch[worker]), "%s",
               smelt_errmsg(t->scratch[worker]));
}

int smelt_task_errors_result(smelt_ctx *ctx, const smelt_task_errors *t)
{
    unsigned best = t->n;
    for (unsigned i = 0; i < t->n; i++)
        if (t->fail_task[i] != SIZE_MAX && (best == t->n || t->fail_task[i] < t->fail_task[best]))
            best = i;
    if (best == t->n)
        return SMELT_OK;
    return smelt_fail(ctx, smelt_errcode(t->kept[best]), "%s", smelt_errmsg(t->kept[best]));
}
