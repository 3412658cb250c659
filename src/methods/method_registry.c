#include "methods/method.h"

#include <string.h>

extern const smelt_method smelt_method_linear;

static const smelt_method *const all_methods[] = {
    &smelt_method_linear,
};

const smelt_method *smelt_method_find(const char *name)
{
    for (size_t i = 0; i < sizeof all_methods / sizeof all_methods[0]; i++)
        if (strcmp(all_methods[i]->name, name) == 0)
            return all_methods[i];
    return NULL;
}

const char *smelt_method_names(void) { return "linear"; }

int smelt_method_param_index(const smelt_method *m, const char *name)
{
    for (size_t i = 0; i < m->nparams; i++)
        if (strcmp(m->params[i].name, name) == 0)
            return (int)i;
    return -1;
}
