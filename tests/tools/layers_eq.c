/* Checks that a frankenmerge copied layers unchanged: output layers [OUT0, OUT0 + N) must hold
 * the bytes of MODEL's layers [IN0, IN0 + N), tensor by tensor, and a non-layer tensor given
 * with --same NAME must equal MODEL's; --only SUBSTR limits the layer tensors compared to those
 * whose name contains SUBSTR.
 * usage: layers_eq OUT_DIR OUT0 N MODEL IN0 [--same NAME]... [--only SUBSTR]
 * Exits 0 when every tensor matches, 1 on the first difference (named on stderr). */
#include "refcheck.h"

#include "plan/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint8_t *bytes_of(const smelt_model *m, const smelt_tensor_info *t)
{
    uint8_t *buf = malloc(t->nbytes + 1);
    if (pread(m->files[t->file].fd, buf, t->nbytes, (off_t)t->offset) != (ssize_t)t->nbytes) {
        fprintf(stderr, "layers_eq: cannot read '%s'\n", t->name);
        exit(2);
    }
    return buf;
}

static int same(const smelt_model *out, const char *out_name, const smelt_model *in,
                const char *in_name)
{
    const smelt_tensor_info *a = smelt_model_find(out, out_name), *b = smelt_model_find(in, in_name);
    if (!a || !b) {
        fprintf(stderr, "layers_eq: '%s' missing in %s\n", a ? in_name : out_name,
                a ? in->ref : out->ref);
        return 0;
    }
    if (a->nbytes != b->nbytes || a->dtype != b->dtype) {
        fprintf(stderr, "layers_eq: '%s' and '%s' differ in dtype or size\n", out_name, in_name);
        return 0;
    }
    uint8_t *x = bytes_of(out, a), *y = bytes_of(in, b);
    int eq = memcmp(x, y, a->nbytes) == 0;
    if (!eq)
        fprintf(stderr, "layers_eq: output '%s' differs from %s:'%s'\n", out_name, in->ref, in_name);
    free(x);
    free(y);
    return eq;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: layers_eq OUT_DIR OUT0 N MODEL IN0 [--same NAME]...\n");
        return 2;
    }
    refcheck rc = {.tool = "layers_eq"};
    smelt_model *out = refcheck_open(&rc, argv[1]), *in = refcheck_open(&rc, argv[4]);
    long out0 = atol(argv[2]), n = atol(argv[3]), in0 = atol(argv[5]);
    size_t checked = 0;
    int ok = 1;
    const char *only = NULL;
    for (int a = 6; a + 1 < argc; a += 2)
        if (strcmp(argv[a], "--only") == 0)
            only = argv[a + 1];
    for (size_t i = 0; ok && i < in->ntensors; i++) {
        const char *name = in->tensors[i].name;
        long layer = smelt_layer_index(name);
        if (layer < in0 || layer >= in0 + n || (only && !strstr(name, only)))
            continue;
        char *out_name = smelt_layer_rename(name, out0 + (layer - in0));
        ok = same(out, out_name, in, name);
        free(out_name);
        checked++;
    }
    for (int a = 6; ok && a + 1 < argc; a += 2)
        if (strcmp(argv[a], "--same") == 0)
            ok = same(out, argv[a + 1], in, argv[a + 1]), checked++;
    printf("layers_eq: %zu tensors %s\n", checked, ok ? "identical" : "DIFFER");
    smelt_model_close(in);
    smelt_model_close(out);
    return ok && checked > 0 ? 0 : 1;
}
