/* Checks an arcee_fusion merge against an independent whole-tensor computation written from
 * mergekit/merge_methods/arcee_fusion.py and smelt's documented arithmetic order: each row's
 * softmaxes and KL in double (the row's exponentials kept in arrays, summed in index order), the
 * importances |θ − θ₀| · kl of the whole tensor, the quartiles read off a full sort of those
 * importances (qsort, NaNs last) at positions floor(q · (n − 1)), the threshold
 * median + 1.5 · (q3 − q1) and θ₀ + (θ − θ₀) · mask, in f32. Nothing here is smelt's method
 * code: no tiles, tasks or radix select. Every element must match bit for bit.
 *
 * usage: arcee_fusion_ref OUT_DIR BASE MODEL
 *   Prints the elements kept (importance >= threshold) over all tensors. Exit status 0 when every
 *   element matches, 1 when one does not, 2 for usage errors. */
#include "refcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ascending by value, NaNs after everything (torch.sort's order); -0 and +0 compare equal. */
static int by_value(const void *pa, const void *pb)
{
    float a = *(const float *)pa, b = *(const float *)pb;
    if (isnan(a) || isnan(b))
        return isnan(a) - isnan(b);
    return a < b ? -1 : a > b;
}

/* KL(softmax(x) + 1e-8 ‖ softmax(y) + 1e-8) of one row of len elements, in double. */
static float kl_row(const float *x, const float *y, uint64_t len, double *ex, double *ey)
{
    float mx = -INFINITY, my = -INFINITY;
    for (uint64_t j = 0; j < len; j++) {
        if (x[j] > mx)
            mx = x[j];
        if (y[j] > my)
            my = y[j];
    }
    double sx = 0, sy = 0;
    for (uint64_t j = 0; j < len; j++) {
        ex[j] = exp((double)x[j] - (double)mx);
        ey[j] = exp((double)y[j] - (double)my);
        sx += ex[j];
        sy += ey[j];
    }
    double kl = 0;
    for (uint64_t j = 0; j < len; j++) {
        double p = ex[j] / sx + 1e-8, q = ey[j] / sy + 1e-8;
        kl += p * log(p / q);
    }
    return (float)kl;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: arcee_fusion_ref OUT_DIR BASE MODEL\n");
        return 2;
    }
    refcheck rc = {.tool = "arcee_fusion_ref"};
    smelt_model *out = refcheck_open(&rc, argv[1]), *base = refcheck_open(&rc, argv[2]),
                *model = refcheck_open(&rc, argv[3]);
    uint64_t kept = 0, total = 0;
    for (size_t t = 0; t < out->ntensors; t++) {
        const smelt_tensor_info *ot = &out->tensors[t];
        if (!smelt_dtype_mergeable(ot->dtype))
            continue;
        uint64_t ne;
        float *b = refcheck_read(&rc, base, ot->name, &ne);
        float *x = refcheck_read(&rc, model, ot->name, &ne);
        if (ne == 0) {
            free(b);
            free(x);
            continue;
        }
        /* softmax(dim=-1): rows along the last dimension; a 1-D or 0-D tensor is one row. */
        uint64_t row = ot->ndim ? ot->shape[ot->ndim - 1] : 1;
        double *ex = malloc(row * sizeof *ex), *ey = malloc(row * sizeof *ey);
        float *imp = malloc(ne * sizeof *imp), *sorted = malloc(ne * sizeof *sorted);
        for (uint64_t r0 = 0; r0 < ne; r0 += row) {
            float kl = kl_row(x + r0, b + r0, row, ex, ey);
            for (uint64_t j = r0; j < r0 + row; j++)
                imp[j] = fabsf(x[j] - b[j]) * kl;
        }
        memcpy(sorted, imp, ne * sizeof *imp);
        qsort(sorted, ne, sizeof *sorted, by_value);
        float q1 = sorted[(uint64_t)floor(0.25 * (double)(ne - 1))];
        float med = sorted[(uint64_t)floor(0.5 * (double)(ne - 1))];
        float q3 = sorted[(uint64_t)floor(0.75 * (double)(ne - 1))];
        float threshold = med + 1.5f * (q3 - q1);
        float *want = malloc(ne * sizeof *want);
        for (uint64_t e = 0; e < ne; e++) {
            float mask = imp[e] >= threshold ? 1.0f : 0.0f;
            kept += mask != 0;
            want[e] = b[e] + (x[e] - b[e]) * mask;
        }
        total += ne;
        refcheck_tensor(&rc, out, ot, want);
        free(want);
        free(imp);
        free(sorted);
        free(ex);
        free(ey);
        free(b);
        free(x);
    }
    printf("arcee_fusion_ref: kept %llu of %llu elements\n", (unsigned long long)kept,
           (unsigned long long)total);
    smelt_model_close(model);
    smelt_model_close(base);
    smelt_model_close(out);
    int status = refcheck_finish(&rc);
    return status ? status : rc.off_by_one ? 1 : 0;
}
