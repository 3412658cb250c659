/* Checks a merged model against an independent, whole-tensor f32 computation of the task-vector
 * methods, written from the notes rather than from smelt's method code: rank ranges by a full
 * sort on (|x| bit pattern, index), DARE masks from this file's own Philox4x32-10 (checked
 * against the Random123 known answer first), sums in plain index order in double. DELLA ranks
 * each row (the last dimension) by the same full sort, row by row over the whole tensor.
 *
 * usage: taskvec_ref METHOD OUT_DIR BASE W:D:MODEL ... [name=value ...]
 *   names: normalize, lambda, rescale, rescale_by_density, gamma, epsilon, k, tall_lambda,
 *   select_topk, seed (the merge's --random-seed). W and D are the model's weight and density (metagpt and
 *   sce ignore them). Exit status as refcheck_finish(); 2 for usage errors. */
#include "refcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t mag(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u & 0x7FFFFFFFu;
}

static void philox(const uint32_t in[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t x[4] = {in[0], in[1], in[2], in[3]}, k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * x[0], p1 = (uint64_t)0xCD9E8D57u * x[2];
        uint32_t y0 = (uint32_t)(p1 >> 32) ^ x[1] ^ k0, y2 = (uint32_t)(p0 >> 32) ^ x[3] ^ k1;
        x[1] = (uint32_t)p1;
        x[3] = (uint32_t)p0;
        x[0] = y0;
        x[2] = y2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    memcpy(out, x, sizeof x);
}

static float uniform(uint64_t key, uint64_t j)
{
    /* One block serves four consecutive elements: remember the last one. */
    static uint64_t last_key, last_block = UINT64_MAX;
    static uint32_t r[4];
    if (key != last_key || j >> 2 != last_block) {
        uint32_t c[4] = {(uint32_t)(j >> 2), (uint32_t)(j >> 34), 0, 0},
                 k[2] = {(uint32_t)key, (uint32_t)(key >> 32)};
        philox(c, k, r);
        last_key = key;
        last_block = j >> 2;
    }
    return (float)(r[j & 3] >> 8) / 16777216.0f;
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* The documented key: (seed, FNV-1a of the tensor name, input position with the base at 0). */
static uint64_t dare_key(uint64_t seed, const char *name, int input)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001B3ull;
    return mix64(seed ^ mix64(h ^ (uint64_t)input * 0x9E3779B97F4A7C15ull));
}

/* Ascending (|key| bit pattern, index) by one plain sort of 64-bit composites: the magnitude
 * bits above the index (tensors here stay below 2^32 elements). */
static int by_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts n 64-bit values: qsort when few, else four stable counting passes of 16 bits (whole
 * tensors of millions of elements, where qsort would dominate the test's time). */
static void sort_u64(uint64_t *v, uint64_t n)
{
    if (n < (1u << 16)) {
        qsort(v, n, sizeof *v, by_u64);
        return;
    }
    uint64_t *tmp = malloc(n * sizeof *tmp), *count = malloc((1u << 16) * sizeof *count);
    for (unsigned shift = 0; shift < 64; shift += 16) {
        memset(count, 0, (1u << 16) * sizeof *count);
        for (uint64_t e = 0; e < n; e++)
            count[(v[e] >> shift) & 0xFFFF]++;
        uint64_t at = 0;
        for (unsigned b = 0; b < (1u << 16); b++) {
            uint64_t c = count[b];
            count[b] = at;
            at += c;
        }
        for (uint64_t e = 0; e < n; e++)
            tmp[count[(v[e] >> shift) & 0xFFFF]++] = v[e];
        memcpy(v, tmp, n * sizeof *v);
    }
    free(tmp);
    free(count);
}

static uint64_t *sorted_order(const float *key, uint64_t n)
{
    uint64_t *order = malloc((n ? n : 1) * sizeof *order);
    for (uint64_t e = 0; e < n; e++)
        order[e] = (uint64_t)mag(key[e]) << 32 | e;
    sort_u64(order, n);
    for (uint64_t e = 0; e < n; e++)
        order[e] &= 0xFFFFFFFFu;
    return order;
}

/* rank[e] = the ascending position of element e within its row of `row` elements. */
static void row_ranks(const float *key, uint64_t n, uint64_t row, uint64_t *rank)
{
    for (uint64_t r0 = 0; r0 < n; r0 += row) {
        uint64_t *order = sorted_order(key + r0, row);
        for (uint64_t p = 0; p < row; p++)
            rank[r0 + order[p]] = p;
        free(order);
    }
}

/* keep[e] = 1 for the elements at ascending positions [lo, hi) of (|key|, index). */
static void rank_keep(const float *key, uint64_t n, int64_t lo, int64_t hi, unsigned char *keep)
{
    uint64_t *order = sorted_order(key, n);
    memset(keep, 0, n);
    for (int64_t p = lo < 0 ? 0 : lo; p < hi && p < (int64_t)n; p++)
        keep[order[p]] = 1;
    free(order);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: taskvec_ref METHOD OUT_DIR BASE W:D:MODEL ... [name=value ...]\n");
        return 2;
    }
    static const uint32_t kat_in[4] = {0, 0, 0, 0}, kat_key[2] = {0, 0};
    uint32_t kat[4];
    philox(kat_in, kat_key, kat);
    if (kat[0] != 0x6627e8d5u || kat[1] != 0xe169c58du || kat[2] != 0xbc57ac4cu ||
        kat[3] != 0x9b00dbd8u) {
        fprintf(stderr, "taskvec_ref: Philox known answer failed\n");
        return 2;
    }
    refcheck rc = {.tool = "taskvec_ref"};
    const char *method = argv[1];
    int ties = !strcmp(method, "ties") || !strcmp(method, "consensus_ties");
    int dare = !strncmp(method, "dare_", 5);
    int della = !strncmp(method, "della", 5);
    int bc = !strncmp(method, "breadcrumbs", 11);
    int consensus = ties || !strcmp(method, "dare_ties") || !strcmp(method, "breadcrumbs_ties") ||
                    !strcmp(method, "della");
    int tall = !strncmp(method, "consensus_", 10);
    int metagpt = !strcmp(method, "metagpt"), sce = !strcmp(method, "sce");
    double normalize = ties || !strcmp(method, "della") ? 1 : 0, lambda = 1, rescale = 1,
           by_density = 0, gamma = 0.01, epsilon = 0.15,
           kk = 2, tall_lambda = 0.4, topk = 1, seed = 0;
    smelt_model *out = refcheck_open(&rc, argv[2]), *base = refcheck_open(&rc, argv[3]);
    smelt_model *models[argc];
    float w[argc];
    double density[argc];
    int n = 0;
    for (int a = 4; a < argc; a++) {
        char *eq = strchr(argv[a], '=');
        if (eq) {
            double v = strtod(eq + 1, NULL);
            size_t len = (size_t)(eq - argv[a]);
#define OPT(name, var) if (len == strlen(name) && !strncmp(argv[a], name, len)) { var = v; continue; }
            OPT("normalize", normalize) OPT("lambda", lambda) OPT("rescale", rescale)
            OPT("rescale_by_density", by_density) OPT("gamma", gamma) OPT("k", kk)
            OPT("epsilon", epsilon)
            OPT("tall_lambda", tall_lambda) OPT("select_topk", topk) OPT("seed", seed)
            fprintf(stderr, "taskvec_ref: unknown option %s\n", argv[a]);
            return 2;
        }
        char *c1 = strchr(argv[a], ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            return 2;
        w[n] = strtof(argv[a], NULL);
        density[n] = strtod(c1 + 1, NULL);
        models[n++] = refcheck_open(&rc, c2 + 1);
    }
    for (size_t t = 0; t < out->ntensors; t++) {
        const smelt_tensor_info *ot = &out->tensors[t];
        if (!smelt_dtype_mergeable(ot->dtype))
            continue;
        uint64_t ne, e;
        float *b = refcheck_read(&rc, base, ot->name, &ne);
        float *d[n], *tau[n], wt[n];
        unsigned char *keep = malloc(ne ? ne : 1);
        for (int i = 0; i < n; i++) {
            d[i] = refcheck_read(&rc, models[i], ot->name, &ne);
            tau[i] = malloc((ne ? ne : 1) * sizeof(float));
            for (e = 0; e < ne; e++)
                tau[i][e] = d[i][e] = d[i][e] - b[e];
            wt[i] = w[i];
        }
        for (int i = 0; i < n; i++) {
            if (!(density[i] < 1 && (ties || dare || bc || della)))
                continue;
            if (dare || della) {
                /* DELLA: p = (density − ε) + 2ε·rank/(row − 1) within the last dimension. */
                uint64_t key = dare_key((uint64_t)seed, ot->name, i + 1);
                uint64_t row = ot->ndim ? ot->shape[ot->ndim - 1] : 1;
                uint64_t *rank = della ? malloc((ne ? ne : 1) * sizeof *rank) : NULL;
                if (della)
                    row_ranks(d[i], ne, row, rank);
                double before = 0, after = 0;
                for (e = 0; e < ne; e++) {
                    double p = density[i];
                    if (della)
                        p = (density[i] - epsilon) +
                            2 * epsilon * (row > 1 ? (double)rank[e] / (double)(row - 1) : 0.0);
                    before += fabs((double)d[i][e]);
                    if (!((double)uniform(key, e) < p))
                        d[i][e] = 0;
                    after += fabs((double)d[i][e]);
                    if (rescale && by_density)
                        d[i][e] = d[i][e] / (float)p;
                }
                free(rank);
                if (rescale && !by_density && before >= 1e-7 && after >= 1e-7)
                    for (e = 0; e < ne; e++)
                        d[i][e] = d[i][e] * (float)(before / after);
                continue;
            }
            int64_t target = (int64_t)floor(density[i] * (double)ne), lo, hi = (int64_t)ne;
            if (ties) {
                lo = (int64_t)ne - target;
            } else {
                int64_t top = (int64_t)floor(gamma * (double)ne);
                lo = (int64_t)ne - target - top;
                if (lo < 0) {
                    top += lo;
                    lo = 0;
                }
                hi = (int64_t)ne - top;
            }
            rank_keep(d[i], ne, lo, hi, keep);
            for (e = 0; e < ne; e++)
                if (!keep[e])
                    d[i][e] = 0;
        }
        if (sce && topk < 1) {
            float *var = malloc((ne ? ne : 1) * sizeof(float));
            uint64_t nonzero = 0;
            for (e = 0; e < ne; e++) {
                float mean = d[0][e];
                for (int i = 1; i < n; i++)
                    mean += d[i][e];
                mean /= (float)n;
                float acc = 0;
                for (int i = 0; i < n; i++)
                    acc += (d[i][e] - mean) * (d[i][e] - mean);
                var[e] = acc / (float)n;
                nonzero += var[e] != 0;
            }
            int64_t k = (int64_t)floor((double)nonzero * topk);
            rank_keep(var, ne, (int64_t)ne - k, (int64_t)ne, keep);
            for (int i = 0; i < n; i++)
                for (e = 0; e < ne; e++)
                    if (!keep[e])
                        d[i][e] = 0;
            free(var);
        }
        if (metagpt || sce) {
            double sq[n], total = 0;
            for (int i = 0; i < n; i++) {
                sq[i] = 0;
                for (e = 0; e < ne; e++)
                    sq[i] += (double)d[i][e] * d[i][e];
                if (sce)
                    sq[i] /= (double)ne;
                total += sq[i];
            }
            for (int i = 0; i < n; i++)
                wt[i] = sce ? (fabs(total) < 1e-6 ? (float)(1.0 / n) : (float)(sq[i] / total))
                            : (total > 0 ? (float)(sq[i] / total) : (float)(1.0 / n));
        }
        float wsum = wt[0];
        for (int i = 1; i < n; i++)
            wsum += wt[i];
        float *want = malloc((ne ? ne : 1) * sizeof(float));
        for (e = 0; e < ne; e++) {
            float mixed, div;
            if (consensus || sce) {
                float vote = 0;
                for (int i = 0; i < n; i++)
                    vote = i ? vote + (sce ? d[i][e] : wt[i] * d[i][e])
                             : (sce ? d[i][e] : wt[i] * d[i][e]);
                mixed = 0, div = 0;
                for (int i = 0; i < n; i++) {
                    float wd = wt[i] * d[i][e];
                    if ((vote < 0 ? wd < 0 : wd > 0) || isnan(wd)) {
                        mixed += wd;
                        div += wt[i];
                    }
                }
                if (sce)
                    mixed = mixed / (div > 1e-6f ? div : 1e-6f);
                else if (normalize)
                    mixed = mixed / (div == 0 ? 1 : div);
            } else {
                mixed = wt[0] * d[0][e];
                for (int i = 1; i < n; i++)
                    mixed += wt[i] * d[i][e];
                if (normalize)
                    mixed = mixed / (fabsf(wsum) < 1e-8f ? 1 : wsum);
            }
            if ((float)lambda != 1)
                mixed = mixed * (float)lambda;
            want[e] = b[e] + mixed;
            if (tall) {
                int count = 0;
                for (int i = 0; i < n; i++)
                    count += fabsf(tau[i][e]) > (float)tall_lambda * fabsf(mixed - tau[i][e]);
                if (count < kk)
                    want[e] = b[e];
            }
        }
        refcheck_tensor(&rc, out, ot, want);
        free(want);
        free(keep);
        free(b);
        for (int i = 0; i < n; i++) {
            free(d[i]);
            free(tau[i]);
        }
    }
    for (int i = 0; i < n; i++)
        smelt_model_close(models[i]);
    smelt_model_close(base);
    smelt_model_close(out);
    return refcheck_finish(&rc);
}
