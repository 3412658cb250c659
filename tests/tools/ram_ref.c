/* Checks a ram or ramplus_tl merge against an independent whole-tensor computation written from
 * mergekit/merge_methods/ram.py, step by step as its tensor expressions run: every task vector
 * of the tensor, then the masks nonzero = |tv| > epsilon, the contributor counts, the unique and
 * overlap masks, the per-model shared and unique counts over the whole tensor, and the merged
 * task vector Σ_i (tvz·unique·λ_i + tvz·overlap / max(count, 1)), in f32 with the sum over
 * models in config order (smelt's documented order). Nothing here is smelt's method code:
 * tensors are whole arrays, not tiles or tasks. Unlike the other reference tools it accepts no
 * element off by one ulp: the expression is the same f32 operations in the same order.
 *
 * usage: ram_ref METHOD OUT_DIR BASE MODEL ... [r=R] [alpha=A] [epsilon=E]
 *   METHOD is ram or ramplus_tl. Exit status 0 when every element matches bit for bit, 1 when
 *   one does not, 2 for usage errors. */
#include "refcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: ram_ref METHOD OUT_DIR BASE MODEL ... [r=R] [alpha=A] "
                        "[epsilon=E]\n");
        return 2;
    }
    refcheck rc = {.tool = "ram_ref"};
    int plus = !strcmp(argv[1], "ramplus_tl");
    if (!plus && strcmp(argv[1], "ram")) {
        fprintf(stderr, "ram_ref: unknown method %s\n", argv[1]);
        return 2;
    }
    double r = 0.1, alpha = 0.2, epsilon = 1e-5; /* mergekit's defaults */
    smelt_model *out = refcheck_open(&rc, argv[2]), *base = refcheck_open(&rc, argv[3]);
    smelt_model *models[argc];
    int n = 0;
    for (int a = 4; a < argc; a++) {
        char *eq = strchr(argv[a], '=');
        if (!eq) {
            models[n++] = refcheck_open(&rc, argv[a]);
            continue;
        }
        double v = strtod(eq + 1, NULL);
        if (!strncmp(argv[a], "r=", 2))
            r = v;
        else if (!strncmp(argv[a], "alpha=", 6))
            alpha = v;
        else if (!strncmp(argv[a], "epsilon=", 8))
            epsilon = v;
        else {
            fprintf(stderr, "ram_ref: unknown option %s\n", argv[a]);
            return 2;
        }
    }
    const float eps = (float)epsilon;
    for (size_t t = 0; t < out->ntensors; t++) {
        const smelt_tensor_info *ot = &out->tensors[t];
        if (!smelt_dtype_mergeable(ot->dtype))
            continue;
        uint64_t ne, e;
        float *b = refcheck_read(&rc, base, ot->name, &ne);
        float *tv[n];
        unsigned char *nonzero[n];
        int *count = calloc(ne ? ne : 1, sizeof *count);
        for (int i = 0; i < n; i++) {
            tv[i] = refcheck_read(&rc, models[i], ot->name, &ne);
            nonzero[i] = malloc(ne ? ne : 1);
            for (e = 0; e < ne; e++) {
                tv[i][e] = tv[i][e] - b[e];
                nonzero[i][e] = fabsf(tv[i][e]) > eps;
                count[e] += nonzero[i][e];
            }
        }
        float lambda[n];
        for (int i = 0; i < n; i++) {
            lambda[i] = 1.0f;
            if (!plus)
                continue;
            uint64_t shared = 0, unique = 0;
            for (e = 0; e < ne; e++) {
                shared += nonzero[i][e] && count[e] > 1;
                unique += nonzero[i][e] && count[e] == 1;
            }
            float denom = fmaxf((float)unique, eps);
            float rho = (float)shared / denom;
            lambda[i] = 1.0f + (float)r * fminf(fmaxf(rho, 0.0f), (float)alpha);
        }
        float *want = malloc((ne ? ne : 1) * sizeof(float));
        for (e = 0; e < ne; e++) {
            float merged = 0;
            for (int i = 0; i < n; i++) {
                float tvz = tv[i][e] * (nonzero[i][e] ? 1.0f : 0.0f);
                float um = count[e] == 1 ? 1.0f : 0.0f, om = count[e] > 1 ? 1.0f : 0.0f;
                float clamped = count[e] < 1 ? 1.0f : (float)count[e];
                float term = tvz * um * lambda[i] + tvz * om / clamped;
                merged = i == 0 ? term : merged + term;
            }
            want[e] = b[e] + merged;
        }
        refcheck_tensor(&rc, out, ot, want);
        free(want);
        free(count);
        free(b);
        for (int i = 0; i < n; i++) {
            free(tv[i]);
            free(nonzero[i]);
        }
    }
    for (int i = 0; i < n; i++)
        smelt_model_close(models[i]);
    smelt_model_close(base);
    smelt_model_close(out);
    int status = refcheck_finish(&rc);
    return status ? status : rc.off_by_one ? 1 : 0;
}
