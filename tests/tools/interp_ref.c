/* Checks a merged model against an independent, whole-tensor computation of an interpolation
 * method (slerp, nuslerp, multislerp, karcher, model_stock, nearswap, passthrough), as
 * /work/shared/notes/methods.md states it: vectors held in full, norms and dot products summed
 * in double element by element, iterations (karcher) and tangents (multislerp) done on explicit
 * vectors. smelt instead works on a Gram matrix; this tool does not.
 *
 * Where the method's output is a linear combination of the inputs, the tool also carries the
 * combination's coefficients along (every vector update is applied to them too) and writes the
 * output as f32 sums in input order: the result smelt defines, rounded once to the output dtype.
 *
 * usage: interp_ref METHOD OUT_DIR [--base MODEL] W:MODEL ... [name=value ...]
 *   W is the model's weight (nuslerp, multislerp) or scale (passthrough); '-' when unused.
 *   name=value: t, eps, normalize_weights, max_iter, tol, nuslerp_flatten, nuslerp_row_wise,
 *   filter_wise. The last three make each row (vector along the last dimension) or, for
 *   nuslerp_row_wise on a matrix, each column a vector of its own: the tool copies each such
 *   vector out of the tensors and computes the method on it alone.
 * Exits non-zero when fewer than 99.9 % of the elements match bit for bit or any is more than
 * one unit in the last place away. */
#include "refcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXM 16

typedef struct ref_args {
    const char *method;
    int has_base;
    int m;             /* models (not the base) */
    double w[MAXM];
    double t, eps, tol;
    int normalize, max_iter;
    int flatten, row_wise, filter_wise;
} ref_args;

static double dotd(const float *a, const float *b, uint64_t n)
{
    double s = 0;
    for (uint64_t e = 0; e < n; e++)
        s += (double)a[e] * (double)b[e];
    return s;
}

static double dotdd(const double *a, const double *b, uint64_t n)
{
    double s = 0;
    for (uint64_t e = 0; e < n; e++)
        s += a[e] * b[e];
    return s;
}

/* Coefficients of the two-vector slerp on vectors of norms and dot given. */
static void two_slerp(double t, double theta, double *c0, double *c1)
{
    *c0 = sin(theta - t * theta) / sin(theta);
    *c1 = sin(t * theta) / sin(theta);
}

/* karcher on explicit vectors; returns coefficients over v[0..m) in c. zero: all-zero output. */
static void karcher(const ref_args *a, float **v, uint64_t n, double *c, int *zero)
{
    int m = a->m;
    double norm[MAXM], beta[MAXM], gamma[MAXM];
    int valid[MAXM], nvalid = 0, first = -1;
    *zero = 0;
    if (m == 1) {
        c[0] = 1;
        return;
    }
    for (int i = 0; i < m; i++) {
        norm[i] = sqrt(dotd(v[i], v[i], n));
        valid[i] = norm[i] > a->tol;
        if (valid[i] && first < 0)
            first = i;
        nvalid += valid[i];
    }
    if (!nvalid) {
        *zero = 1;
        return;
    }
    double *u = calloc(n + 1, sizeof *u), *tg = calloc(n + 1, sizeof *tg);
    double **unit = calloc((size_t)m, sizeof *unit);
    for (int i = 0; i < m; i++) {
        unit[i] = calloc(n + 1, sizeof(double));
        for (uint64_t e = 0; e < n && valid[i]; e++)
            unit[i][e] = v[i][e] / norm[i];
    }
    double alpha = 1.0 / nvalid;
    for (int i = 0; i < m; i++)
        beta[i] = valid[i] ? alpha / norm[i] : 0;
    for (uint64_t e = 0; e < n; e++)
        for (int i = 0; i < m; i++)
            if (valid[i])
                u[e] += alpha * unit[i][e];
    double un = sqrt(dotdd(u, u, n));
    if (un < a->tol) {
        for (uint64_t e = 0; e < n; e++)
            u[e] = unit[first][e];
        for (int i = 0; i < m; i++)
            beta[i] = i == first ? 1 / norm[i] : 0;
    } else {
        for (uint64_t e = 0; e < n; e++)
            u[e] /= un;
        for (int i = 0; i < m; i++)
            beta[i] /= un;
    }
    for (int it = 0; it < a->max_iter; it++) {
        memset(tg, 0, n * sizeof *tg);
        for (int i = 0; i < m; i++)
            gamma[i] = 0;
        for (int i = 0; i < m; i++) {
            if (!valid[i])
                continue;
            double d = dotdd(u, unit[i], n);
            d = d < -1 ? -1 : d > 1 ? 1 : d;
            double th = acos(d);
            if (th < a->tol || th > M_PI - a->tol) /* at u or its antipode: no direction */
                continue;
            double f = alpha * th / sin(th);
            for (uint64_t e = 0; e < n; e++)
                tg[e] += f * (unit[i][e] - d * u[e]);
            gamma[i] += f / norm[i];
            for (int j = 0; j < m; j++)
                gamma[j] -= f * d * beta[j];
        }
        double tn = sqrt(dotdd(tg, tg, n));
        if (tn < a->tol)
            break;
        for (uint64_t e = 0; e < n; e++)
            u[e] = cos(tn) * u[e] + sin(tn) * (tg[e] / tn);
        for (int i = 0; i < m; i++)
            beta[i] = cos(tn) * beta[i] + sin(tn) * (gamma[i] / tn);
        double nn = sqrt(dotdd(u, u, n));
        if (nn > a->tol) {
            for (uint64_t e = 0; e < n; e++)
                u[e] /= nn;
            for (int i = 0; i < m; i++)
                beta[i] /= nn;
        }
    }
    double scale = 0;
    for (int i = 0; i < m; i++)
        scale += norm[i] / m;
    for (int i = 0; i < m; i++)
        c[i] = scale * beta[i];
    for (int i = 0; i < m; i++)
        free(unit[i]);
    free(unit);
    free(u);
    free(tg);
}

/* multislerp on explicit vectors; coefficients over v in c. Returns -1 when undefined. */
static int multislerp(const ref_args *a, float **v, uint64_t n, double *c)
{
    int m = a->m;
    if (m == 1) {
        c[0] = 1;
        return 0;
    }
    double w[MAXM], norm[MAXM], wsum = 0;
    for (int i = 0; i < m; i++)
        wsum += a->w[i];
    for (int i = 0; i < m; i++)
        w[i] = a->normalize ? a->w[i] / wsum : a->w[i];
    double *mean = calloc(n + 1, sizeof *mean), *tg = calloc(n + 1, sizeof *tg);
    for (int i = 0; i < m; i++)
        norm[i] = sqrt(dotd(v[i], v[i], n));
    for (uint64_t e = 0; e < n; e++)
        for (int i = 0; i < m; i++)
            mean[e] += w[i] * (v[i][e] / (norm[i] + a->eps));
    double mn = sqrt(dotdd(mean, mean, n));
    if (mn < a->eps || mn == 0) {
        free(mean);
        free(tg);
        if (m != 2)
            return -1;
        c[0] = w[0];
        c[1] = w[1];
        return 0;
    }
    double dots[MAXM], along = 0;
    for (uint64_t e = 0; e < n; e++)
        mean[e] /= mn;
    for (int i = 0; i < m; i++) {
        dots[i] = 0;
        for (uint64_t e = 0; e < n; e++)
            dots[i] += v[i][e] / (norm[i] + a->eps) * mean[e];
        along += w[i] * dots[i];
    }
    for (uint64_t e = 0; e < n; e++)
        for (int i = 0; i < m; i++)
            tg[e] += w[i] * (v[i][e] / (norm[i] + a->eps) - dots[i] * mean[e]);
    double tn = sqrt(dotdd(tg, tg, n)) + a->eps;
    double sinc = tn > 0 ? sin(tn) / tn : 1, avg = 0;
    for (int i = 0; i < m; i++)
        avg += w[i] * norm[i];
    /* mean = Σ (w_i/(|v_i|+eps)/mn) v_i; tangent = Σ w_i/(|v_i|+eps) v_i − along·mean. */
    for (int i = 0; i < m; i++) {
        double mu = w[i] / (norm[i] + a->eps) / mn;
        double tc = w[i] / (norm[i] + a->eps) - along * mu;
        c[i] = (mu * cos(tn) + tc * sinc) * avg;
    }
    free(mean);
    free(tg);
    return 0;
}

/* Expected values of one tensor; base may be NULL. Returns -1 when the method is undefined. */
static int expect(const ref_args *a, const float *base, float **x, uint64_t n, float *want)
{
    const char *me = a->method;
    int m = a->m;
    if (!strcmp(me, "nearswap")) {
        float t = (float)a->t;
        for (uint64_t e = 0; e < n; e++) {
            float d = fabsf(base[e] - x[0][e]);
            float w = t / (d > 1e-6f ? d : 1e-6f);
            if (w < 0)
                w = 0;
            if (w > 1)
                w = 1;
            want[e] = w * x[0][e] + (1 - w) * base[e];
        }
        return 0;
    }
    /* The vectors the geometry is about: task vectors (f32 differences) where a base is the
     * origin; the raw tensors otherwise. slerp: the base is the t = 0 end. */
    int task = base && strcmp(me, "slerp") != 0;
    float *vbuf[MAXM + 1], **v = vbuf;
    if (!strcmp(me, "slerp")) {
        vbuf[0] = (float *)base;
        vbuf[1] = x[0];
    } else {
        for (int i = 0; i < m; i++) {
            if (task) {
                vbuf[i] = malloc((n + 1) * sizeof(float));
                for (uint64_t e = 0; e < n; e++)
                    vbuf[i][e] = x[i][e] - base[e];
            } else {
                vbuf[i] = x[i];
            }
        }
    }
    double c[MAXM + 1] = {0}, cbase = 0;
    int zero = 0, delta = 0, use_base = 0, rc = 0;
    if (!strcmp(me, "passthrough")) {
        c[0] = a->w[0];
    } else if (!strcmp(me, "slerp")) {
        double na = sqrt(dotd(base, base, n)), nb = sqrt(dotd(x[0], x[0], n));
        double d = dotd(base, x[0], n) / ((na > 1e-8 ? na : 1) * (nb > 1e-8 ? nb : 1));
        if (fabs(d) > 0.9995) {
            cbase = 1 - a->t;
            c[0] = a->t;
        } else {
            two_slerp(a->t, acos(d), &cbase, &c[0]);
        }
        use_base = 1;
    } else if (!strcmp(me, "nuslerp")) {
        double s = a->w[0] + a->w[1], t = fabs(s) < 1e-6 ? 0.5 : a->w[1] / s;
        /* sin θ from the 2×2 Gram determinant (exactly 0 for exact multiples and negations);
         * mergekit's sqrt(1 − cos²) where a norm is under its 1e-7 clamp. */
        double g00 = dotd(v[0], v[0], n), g11 = dotd(v[1], v[1], n), g01 = dotd(v[0], v[1], n);
        double n0 = sqrt(g00), n1 = sqrt(g11);
        double d = g01 / ((n0 < 1e-7 ? 1e-7 : n0) * (n1 < 1e-7 ? 1e-7 : n1));
        d = d < -1 ? -1 : d > 1 ? 1 : d;
        double s2 = n0 > 1e-7 && n1 > 1e-7 ? (g00 * g11 - g01 * g01) / (g00 * g11) : 1 - d * d;
        double sn = sqrt(s2 < 0 ? 0 : s2 > 1 ? 1 : s2);
        if (sn < 1e-8 || isnan(s2)) {
            c[0] = 1 - t;
            c[1] = t;
        } else {
            double th = atan2(sn, d);
            c[0] = sin(th - t * th) / sn;
            c[1] = sin(t * th) / sn;
        }
        delta = task;
    } else if (!strcmp(me, "multislerp")) {
        rc = multislerp(a, v, n, c);
        delta = task && m > 1;
    } else if (!strcmp(me, "karcher")) {
        karcher(a, v, n, c, &zero);
    } else if (!strcmp(me, "model_stock")) {
        double sum = 0;
        int pairs = 0;
        for (int i = 0; i < m; i++)
            for (int j = i + 1; j < m; j++) {
                double np = sqrt(dotd(v[i], v[i], n)) * sqrt(dotd(v[j], v[j], n));
                double cs = dotd(v[i], v[j], n) / (np < 1e-6 ? 1e-6 : np);
                sum += cs < -1 ? -1 : cs > 1 ? 1 : cs;
                pairs++;
            }
        double cs = sum / pairs, den = 1 + (m - 1) * cs;
        double t = den == 0 ? 0 : m * cs / den;
        cbase = 1 - t;
        for (int i = 0; i < m; i++)
            c[i] = t / m;
        use_base = 1;
    } else {
        fprintf(stderr, "interp_ref: unknown method '%s'\n", me);
        exit(2);
    }
    if (rc == 0) {
        float cf[MAXM], cbf = (float)cbase;
        for (int i = 0; i < m; i++)
            cf[i] = (float)c[i];
        for (uint64_t e = 0; e < n; e++) {
            float acc;
            if (zero) {
                acc = 0;
            } else if (delta) { /* (Σ c τ) + θ₀ */
                acc = cf[0] * v[0][e];
                for (int i = 1; i < m; i++)
                    acc += cf[i] * v[i][e];
                acc += base[e];
            } else { /* the inputs in order: the base first where it takes part */
                acc = use_base ? cbf * base[e] : cf[0] * x[0][e];
                for (int i = use_base ? 0 : 1; i < m; i++)
                    acc += cf[i] * x[i][e];
            }
            want[e] = acc;
        }
    }
    if (task)
        for (int i = 0; i < m; i++)
            free(vbuf[i]);
    return rc;
}

/* expect() on every vector of a tensor that is split into rows (count vectors of len
 * contiguous elements) or columns (count vectors of len elements, count apart). */
static int expect_split(const ref_args *a, const float *base, float **x, uint64_t count,
                        uint64_t len, int cols, float *want)
{
    float *gb = malloc((len + 1) * sizeof(float)), *gw = malloc((len + 1) * sizeof(float));
    float *gx[MAXM];
    for (int i = 0; i < a->m; i++)
        gx[i] = malloc((len + 1) * sizeof(float));
    int rc = 0;
    for (uint64_t v = 0; v < count && rc == 0; v++) {
        for (uint64_t e = 0; e < len; e++) {
            uint64_t at = cols ? e * count + v : v * len + e;
            if (base)
                gb[e] = base[at];
            for (int i = 0; i < a->m; i++)
                gx[i][e] = x[i][at];
        }
        rc = expect(a, base ? gb : NULL, gx, len, gw);
        for (uint64_t e = 0; e < len; e++)
            want[cols ? e * count + v : v * len + e] = gw[e];
    }
    for (int i = 0; i < a->m; i++)
        free(gx[i]);
    free(gb);
    free(gw);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: interp_ref METHOD OUT_DIR [--base MODEL] W:MODEL ... "
                        "[name=value ...]\n");
        return 2;
    }
    refcheck rc = {.tool = "interp_ref"};
    ref_args a = {.method = argv[1], .eps = 1e-8, .tol = 1e-5, .normalize = 1, .max_iter = 10,
                  .flatten = 1};
    smelt_model *out = refcheck_open(&rc, argv[2]), *base = NULL, *models[MAXM];
    for (int i = 3; i < argc; i++) {
        char *eq = strchr(argv[i], '='), *colon = strchr(argv[i], ':');
        if (!strcmp(argv[i], "--base") && i + 1 < argc) {
            base = refcheck_open(&rc, argv[++i]);
            a.has_base = 1;
        } else if (eq && (!colon || eq < colon)) {
            double v = strtod(eq + 1, NULL);
            if (!strncmp(argv[i], "t=", 2)) a.t = v;
            else if (!strncmp(argv[i], "eps=", 4)) a.eps = v;
            else if (!strncmp(argv[i], "tol=", 4)) a.tol = v;
            else if (!strncmp(argv[i], "max_iter=", 9)) a.max_iter = (int)v;
            else if (!strncmp(argv[i], "normalize_weights=", 18)) a.normalize = v != 0;
            else if (!strncmp(argv[i], "nuslerp_flatten=", 16)) a.flatten = v != 0;
            else if (!strncmp(argv[i], "nuslerp_row_wise=", 17)) a.row_wise = v != 0;
            else if (!strncmp(argv[i], "filter_wise=", 12)) a.filter_wise = v != 0;
            else { fprintf(stderr, "interp_ref: unknown parameter %s\n", argv[i]); return 2; }
        } else if (colon && a.m < MAXM) {
            a.w[a.m] = argv[i][0] == '-' && argv[i] + 1 == colon ? 1 : strtod(argv[i], NULL);
            models[a.m++] = refcheck_open(&rc, colon + 1);
        } else {
            fprintf(stderr, "interp_ref: bad argument '%s'\n", argv[i]);
            return 2;
        }
    }
    for (size_t t = 0; t < out->ntensors; t++) {
        const smelt_tensor_info *ot = &out->tensors[t];
        if (!smelt_dtype_mergeable(ot->dtype))
            continue;
        uint64_t n;
        float *x[MAXM], *b = base ? refcheck_read(&rc, base, ot->name, &n) : NULL;
        for (int i = 0; i < a.m; i++)
            x[i] = refcheck_read(&rc, models[i], ot->name, &n);
        float *want = malloc((ot->numel + 1) * sizeof(float));
        /* mergekit: nuslerp unflattened slerps along dim −1, or with row_wise along dim 0
         * (transpose(0, −1), the identity on a vector); model_stock filter_wise: dim −1. */
        int split = !strcmp(a.method, "nuslerp") ? !a.flatten
                    : !strcmp(a.method, "model_stock") && a.filter_wise;
        int cols = split && !strcmp(a.method, "nuslerp") && a.row_wise && ot->ndim == 2;
        uint64_t len = ot->ndim ? ot->shape[ot->ndim - 1] : 1, count = len ? ot->numel / len : 0;
        if (cols) {
            len = ot->shape[0];
            count = ot->shape[1];
        }
        int bad = split ? expect_split(&a, b, x, count, len, cols, want)
                        : expect(&a, b, x, ot->numel, want);
        if (bad != 0) {
            fprintf(stderr, "interp_ref: %s is undefined for tensor '%s'\n", a.method, ot->name);
            return 1;
        }
        refcheck_tensor(&rc, out, ot, want);
        free(want);
        free(b);
        for (int i = 0; i < a.m; i++)
            free(x[i]);
    }
    for (int i = 0; i < a.m; i++)
        smelt_model_close(models[i]);
    if (base)
        smelt_model_close(base);
    smelt_model_close(out);
    return refcheck_finish(&rc);
}
