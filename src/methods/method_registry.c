#include "methods/method.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

extern const smelt_method smelt_method_linear;
extern const smelt_method smelt_method_slerp, smelt_method_nuslerp, smelt_method_multislerp,
    smelt_method_karcher, smelt_method_model_stock, smelt_method_nearswap,
    smelt_method_passthrough;
extern const smelt_method smelt_method_task_arithmetic, smelt_method_ties,
    smelt_method_dare_ties, smelt_method_dare_linear, smelt_method_breadcrumbs,
    smelt_method_breadcrumbs_ties, smelt_method_della, smelt_method_della_linear,
    smelt_method_metagpt, smelt_method_consensus_ta,
    smelt_method_consensus_ties, smelt_method_sce;

static const smelt_method *const all_methods[] = {
    &smelt_method_linear,
    &smelt_method_task_arithmetic,
    &smelt_method_ties,
    &smelt_method_dare_ties,
    &smelt_method_dare_linear,
    &smelt_method_breadcrumbs,
    &smelt_method_breadcrumbs_ties,
    &smelt_method_della,
    &smelt_method_della_linear,
    &smelt_method_metagpt,
    &smelt_method_consensus_ta,
    &smelt_method_consensus_ties,
    &smelt_method_sce,
    &smelt_method_slerp,
    &smelt_method_nuslerp,
    &smelt_method_multislerp,
    &smelt_method_karcher,
    &smelt_method_model_stock,
    &smelt_method_nearswap,
    &smelt_method_passthrough,
};

const smelt_method *smelt_method_find(const char *name)
{
    for (size_t i = 0; i < sizeof all_methods / sizeof all_methods[0]; i++)
        if (strcmp(all_methods[i]->name, name) == 0)
            return all_methods[i];
    return NULL;
}

/* Built from the table so that a new method can never be missing from messages. */
static char method_names[1024];

static void build_method_names(void)
{
    size_t at = 0;
    for (size_t i = 0; i < sizeof all_methods / sizeof all_methods[0]; i++)
        at += (size_t)snprintf(method_names + at, sizeof method_names - at, "%s%s",
                               i ? ", " : "", all_methods[i]->name);
}

const char *smelt_method_names(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, build_method_names);
    return method_names;
}

int smelt_method_param_index(const smelt_method *m, const char *name)
{
    for (size_t i = 0; i < m->nparams; i++)
        if (strcmp(m->params[i].name, name) == 0)
            return (int)i;
    return -1;
}
