/* Checks one output of an emr merge against an independent whole-tensor computation written
 * from FusionBench's emr_merge (fusion_bench/method/emr_merging/utils.py) and
 * EMRTaskModulator.apply, step by step as its tensor expressions run: every task vector of the
 * tensor, the sum of all of them, the sign flag ((sum > 0) * 2 - 1), each model's mask
 * (tv * flag > 0) and the running maximum of |mask * tv| (strictly larger replaces), the unified
 * vector max * flag; then model K's rescaler sum|tv_K| / sum|unified * mask_K| over the tensor
 * (smelt's documented per-tensor form of FusionBench's per-model ratio of means; 0 when the
 * denominator is 0) and its output base + (unified * mask_K) * rescaler. Tile math in f32; the
 * two sums in f64 over blocks of SMELT_TASK_ELEMS elements, each block in index order and the
 * blocks summed in order (smelt's documented reduction order), the ratio rounded to f32 once.
 * Nothing here is smelt's method code: tensors are whole arrays, not tiles or tasks. Every
 * element must match bit for bit.
 *
 * usage: emr_ref OUT_DIR K BASE MODEL1 MODEL2 ...
 *   OUT_DIR holds model K's output (1-based, config order). Exit status 0 when every element
 *   matches bit for bit, 1 when one does not, 2 for usage errors. */
#include "methods/method.h"
#include "refcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Σ f(e) for e in [0, ne) in smelt's block order. */
static double block_sum(const float *v, uint64_t ne)
{
    double total = 0;
    for (uint64_t b = 0; b < ne; b += SMELT_TASK_ELEMS) {
        double block = 0;
        for (uint64_t e = b; e < ne && e < b + SMELT_TASK_ELEMS; e++)
            block += fabs((double)v[e]);
        total += block;
    }
    return total;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: emr_ref OUT_DIR K BASE MODEL1 MODEL2 ...\n");
        return 2;
    }
    refcheck rc = {.tool = "emr_ref"};
    int n = argc - 4, k = atoi(argv[2]) - 1;
    if (k < 0 || k >= n) {
        fprintf(stderr, "emr_ref: K must be 1 to %d\n", n);
        return 2;
    }
    smelt_model *out = refcheck_open(&rc, argv[1]), *base = refcheck_open(&rc, argv[3]);
    smelt_model *models[n];
    for (int i = 0; i < n; i++)
        models[i] = refcheck_open(&rc, argv[4 + i]);
    for (size_t t = 0; t < out->ntensors; t++) {
        const smelt_tensor_info *ot = &out->tensors[t];
        if (!smelt_dtype_mergeable(ot->dtype))
            continue;
        uint64_t ne, e;
        float *b = refcheck_read(&rc, base, ot->name, &ne);
        float *tv[n];
        float *sum = malloc((ne ? ne : 1) * sizeof(float));
        for (int i = 0; i < n; i++) {
            tv[i] = refcheck_read(&rc, models[i], ot->name, &ne);
            for (e = 0; e < ne; e++) {
                tv[i][e] = tv[i][e] - b[e];
                sum[e] = i == 0 ? tv[i][e] : sum[e] + tv[i][e];
            }
        }
        float *flag = sum; /* the sum is not needed past its sign */
        float *unified = calloc(ne ? ne : 1, sizeof(float));
        for (e = 0; e < ne; e++)
            flag[e] = (float)((sum[e] > 0) * 2 - 1);
        for (int i = 0; i < n; i++)
            for (e = 0; e < ne; e++) {
                float param_abs = fabsf((float)(tv[i][e] * flag[e] > 0) * tv[i][e]);
                unified[e] = param_abs > unified[e] ? param_abs : unified[e];
            }
        float *masked = malloc((ne ? ne : 1) * sizeof(float));
        for (e = 0; e < ne; e++) {
            unified[e] = unified[e] * flag[e];
            masked[e] = unified[e] * (float)(tv[k][e] * flag[e] > 0);
        }
        double scale = block_sum(tv[k], ne), new_scale = block_sum(masked, ne);
        float rescaler = new_scale == 0 ? 0.0f : (float)(scale / new_scale);
        float *want = malloc((ne ? ne : 1) * sizeof(float));
        for (e = 0; e < ne; e++)
            want[e] = b[e] + masked[e] * rescaler;
        refcheck_tensor(&rc, out, ot, want);
        free(want);
        free(masked);
        free(unified);
        free(sum);
        free(b);
        for (int i = 0; i < n; i++)
            free(tv[i]);
    }
    for (int i = 0; i < n; i++)
        smelt_model_close(models[i]);
    smelt_model_close(base);
    smelt_model_close(out);
    int status = refcheck_finish(&rc);
    return status ? status : rc.off_by_one ? 1 : 0;
}
