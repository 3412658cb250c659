/* Checks a merged model against an independent computation of the linear merge:
 *   out = Σ w_i θ_i / Σ w_i   in f32, rounded to the output dtype with refcheck's own RNE.
 * usage: linear_ref OUT_DIR W1:MODEL1 W2:MODEL2 ... [--no-normalize]
 * Exits non-zero when fewer than 99.9 % of the elements match bit for bit or any is more than
 * one unit in the last place away. */
#include "refcheck.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: linear_ref OUT_DIR W1:MODEL1 ... [--no-normalize]\n");
        return 2;
    }
    refcheck rc = {.tool = "linear_ref"};
    int normalize = strcmp(argv[argc - 1], "--no-normalize") != 0;
    int nmodels = argc - 2 - !normalize;
    smelt_model *out = refcheck_open(&rc, argv[1]), *models[nmodels];
    float weights[nmodels];
    double wsum = 0;
    for (int i = 0; i < nmodels; i++) {
        char *colon = strchr(argv[2 + i], ':');
        if (!colon)
            return 2;
        weights[i] = strtof(argv[2 + i], NULL);
        wsum += weights[i];
        models[i] = refcheck_open(&rc, colon + 1);
    }
    for (size_t t = 0; t < out->ntensors; t++) {
        const smelt_tensor_info *ot = &out->tensors[t];
        if (!smelt_dtype_mergeable(ot->dtype))
            continue;
        float *src[nmodels];
        for (int i = 0; i < nmodels; i++) {
            uint64_t n;
            src[i] = refcheck_read(&rc, models[i], ot->name, &n);
            if (n != ot->numel) {
                fprintf(stderr, "linear_ref: '%s' resized in input %d\n", ot->name, i);
                return 1;
            }
        }
        float *want = malloc((ot->numel ? ot->numel : 1) * sizeof(float));
        for (uint64_t e = 0; e < ot->numel; e++) {
            float acc = 0;
            for (int i = 0; i < nmodels; i++)
                acc += weights[i] * src[i][e];
            want[e] = normalize ? (float)(acc / wsum) : acc;
        }
        refcheck_tensor(&rc, out, ot, want);
        free(want);
        for (int i = 0; i < nmodels; i++)
            free(src[i]);
    }
    for (int i = 0; i < nmodels; i++)
        smelt_model_close(models[i]);
    smelt_model_close(out);
    return refcheck_finish(&rc);
}
