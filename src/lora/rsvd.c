/* Randomized truncated SVD over a streamed matrix; see rsvd.h. */
#include "lora/rsvd.h"

#include "kernels/kernels_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ROW_TILE 8  /* rows of A per task in a product with A: each X row is loaded once per tile */
#define COL_TILE 16 /* columns of A per task in a product with A^T: a Z tile stays in L1/L2 */
#define DEP_TOL 1e-13

/* ---- small dense algebra ---- */

static double dot(const double *restrict a, const double *restrict b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

size_t rsvd_orthonormalize(double *a, size_t m, size_t k, double *scratch)
{
    /* Column-major copy: Gram-Schmidt works on whole columns, contiguous here. */
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < k; j++)
            scratch[j * m + i] = a[i * k + j];
    size_t nonzero = 0;
    for (size_t j = 0; j < k; j++) {
        double *cj = scratch + j * m;
        double norm0 = sqrt(dot(cj, cj, m));
        for (int pass = 0; pass < 2 && norm0 > 0; pass++)
            for (size_t i = 0; i < j; i++) {
                const double *ci = scratch + i * m;
                double r = dot(ci, cj, m);
                if (r != 0)
                    for (size_t e = 0; e < m; e++)
                        cj[e] -= r * ci[e];
            }
        double norm = sqrt(dot(cj, cj, m));
        if (!(norm > DEP_TOL * norm0) || !isfinite(norm)) {
            memset(cj, 0, m * sizeof *cj);
            continue;
        }
        double inv = 1.0 / norm;
        for (size_t e = 0; e < m; e++)
            cj[e] *= inv;
        nonzero++;
    }
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < k; j++)
            a[i * k + j] = scratch[j * m + i];
    return nonzero;
}

int rsvd_jacobi_eigen(double *g, size_t k, double *evals, double *evecs)
{
    for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < k; j++)
            evecs[i * k + j] = i == j;
    int sweeps = -1;
    for (int sweep = 1; sweep <= 100; sweep++) {
        int rotated = 0;
        for (size_t p = 0; p + 1 < k; p++)
            for (size_t q = p + 1; q < k; q++) {
                double apq = g[p * k + q], app = g[p * k + p], aqq = g[q * k + q];
                /* Negligible next to both diagonal entries: rounding could not tell. */
                if (fabs(apq) <= 1e-300 || fabs(apq) <= 1e-17 * sqrt(fabs(app) * fabs(aqq)))
                    continue;
                rotated = 1;
                /* The symmetric Schur rotation that zeroes g[p][q] (GVL algorithm 8.5.1). */
                double tau = (aqq - app) / (2 * apq);
                double t = (tau >= 0 ? 1.0 : -1.0) / (fabs(tau) + sqrt(1 + tau * tau));
                double c = 1 / sqrt(1 + t * t), s = t * c;
                for (size_t r = 0; r < k; r++) { /* columns p and q */
                    double grp = g[r * k + p], grq = g[r * k + q];
                    g[r * k + p] = c * grp - s * grq;
                    g[r * k + q] = s * grp + c * grq;
                }
                for (size_t r = 0; r < k; r++) { /* rows p and q */
                    double gpr = g[p * k + r], gqr = g[q * k + r];
                    g[p * k + r] = c * gpr - s * gqr;
                    g[q * k + r] = s * gpr + c * gqr;
                }
                g[p * k + q] = g[q * k + p] = 0;
                for (size_t r = 0; r < k; r++) {
                    double vrp = evecs[r * k + p], vrq = evecs[r * k + q];
                    evecs[r * k + p] = c * vrp - s * vrq;
                    evecs[r * k + q] = s * vrp + c * vrq;
                }
            }
        if (!rotated) {
            sweeps = sweep;
            break;
        }
    }
    for (size_t i = 0; i < k; i++)
        evals[i] = g[i * k + i];
    /* Selection sort, descending; a strict comparison keeps ties in index order. */
    for (size_t i = 0; i < k; i++) {
        size_t best = i;
        for (size_t j = i + 1; j < k; j++)
            if (evals[j] > evals[best])
                best = j;
        if (best == i)
            continue;
        double t = evals[i];
        evals[i] = evals[best];
        evals[best] = t;
        for (size_t r = 0; r < k; r++) {
            double v = evecs[r * k + i];
            evecs[r * k + i] = evecs[r * k + best];
            evecs[r * k + best] = v;
        }
    }
    return sweeps;
}

void rsvd_gaussian(double *dst, size_t n, uint64_t key, uint64_t index0)
{
    const uint32_t k2[2] = {(uint32_t)key, (uint32_t)(key >> 32)};
    for (size_t i = 0; i < n; i++) {
        uint64_t pos = index0 + i;
        const uint32_t ctr[4] = {(uint32_t)pos, (uint32_t)(pos >> 32), 0x6A09E667u, 0xBB67AE85u};
        uint32_t out[4];
        smelt_philox4x32_10(ctr, k2, out);
        uint64_t a = ((uint64_t)out[0] << 21) ^ (out[1] >> 11), b = ((uint64_t)out[2] << 21) ^ (out[3] >> 11);
        a &= (1ull << 53) - 1;
        b &= (1ull << 53) - 1;
        double u1 = ((double)a + 1.0) / 9007199254740992.0; /* (0, 1]: log is finite */
        double u2 = (double)b / 9007199254740992.0;
        dst[i] = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
    }
}

/* ---- the streaming passes ---- */

typedef struct pass_task {
    const float *a;    /* the round's rows of A: nrows x cols */
    size_t nrows;
    uint64_t row0;
    uint64_t cols;
    size_t k;
    const double *in;  /* Y pass: X [cols, k]; Z pass: Q [rows, k] */
    double *out;       /* Y pass: Y [rows, k]; Z pass: Z [cols, k], accumulated */
    double *rowsq;     /* Y pass, first pass only: per-row sum of squares, or NULL */
} pass_task;

/* Y[i] = A[i] X for a tile of rows: each Y element sums over columns in increasing order. */
static void y_task(void *arg, size_t task, unsigned worker)
{
    (void)worker;
    const pass_task *t = arg;
    size_t k = t->k, r0 = task * ROW_TILE;
    size_t nr = t->nrows - r0 < ROW_TILE ? t->nrows - r0 : ROW_TILE;
    double *y = t->out + (t->row0 + r0) * k;
    memset(y, 0, nr * k * sizeof *y);
    const float *a = t->a + r0 * t->cols;
    for (uint64_t j = 0; j < t->cols; j++) {
        const double *restrict x = t->in + j * k;
        for (size_t r = 0; r < nr; r++) {
            double d = a[r * t->cols + j];
            double *restrict yr = y + r * k;
            for (size_t c = 0; c < k; c++)
                yr[c] += d * x[c];
        }
    }
    if (t->rowsq)
        for (size_t r = 0; r < nr; r++) {
            double s = 0;
            for (uint64_t j = 0; j < t->cols; j++) {
                double d = a[r * t->cols + j];
                s += d * d;
            }
            t->rowsq[r0 + r] = s;
        }
}

/* Z[j] += sum over the round's rows i, in increasing order, of A[i][j] Q[i], for a tile of
 * columns j: rounds come in row order, so each Z element is one sum in row order. */
static void z_task(void *arg, size_t task, unsigned worker)
{
    (void)worker;
    const pass_task *t = arg;
    size_t k = t->k;
    uint64_t j0 = (uint64_t)task * COL_TILE;
    uint64_t nj = t->cols - j0 < COL_TILE ? t->cols - j0 : COL_TILE;
    double *z = t->out + j0 * k;
    for (size_t i = 0; i < t->nrows; i++) {
        const double *restrict q = t->in + (t->row0 + i) * k;
        const float *a = t->a + i * t->cols + j0;
        for (uint64_t j = 0; j < nj; j++) {
            double d = a[j];
            double *restrict zj = z + j * k;
            for (size_t c = 0; c < k; c++)
                zj[c] += d * q[c];
        }
    }
}

typedef struct stream {
    const rsvd_job *job;
    smelt_ctx *ctx;
    float *buf;      /* round_rows x cols */
    size_t round;
    int resident;    /* the whole matrix is in buf once loaded */
    int loaded;
    unsigned reads;
} stream;

/* One product with A (z = 0: out = A in, rows x k) or with A^T (z = 1: out = A^T in,
 * cols x k), streaming the rows in rounds. With frob2, also ||A||_F^2 (rows folded in order). */
static int pass(stream *st, int z, const double *in, double *out, double *frob2, double *rowsq)
{
    const rsvd_job *job = st->job;
    if (z)
        memset(out, 0, (size_t)job->cols * job->k * sizeof *out);
    double sum = 0;
    for (uint64_t row0 = 0; row0 < job->rows; row0 += st->round) {
        if (job->cancel && *job->cancel)
            return smelt_fail(st->ctx, SMELT_E_INTERRUPTED, "interrupted");
        size_t nr = (size_t)(job->rows - row0 < st->round ? job->rows - row0 : st->round);
        if (!st->resident || !st->loaded) {
            int rc = job->read(job->read_user, row0, nr, st->buf);
            if (rc != SMELT_OK)
                return rc;
            if (row0 == 0)
                st->reads++;
        }
        pass_task t = {st->buf, nr, row0, job->cols, job->k, in, out, frob2 ? rowsq : NULL};
        if (z)
            smelt_pool_run(job->pool, (size_t)((job->cols + COL_TILE - 1) / COL_TILE), z_task, &t);
        else
            smelt_pool_run(job->pool, (nr + ROW_TILE - 1) / ROW_TILE, y_task, &t);
        if (frob2)
            for (size_t r = 0; r < nr; r++)
                sum += rowsq[r];
    }
    st->loaded = 1;
    if (frob2)
        *frob2 = sum;
    return SMELT_OK;
}

uint64_t rsvd_fixed_bytes(uint64_t rows, uint64_t cols, size_t k)
{
    uint64_t big = rows > cols ? rows : cols;
    /* y [rows, k], x/z [cols, k], scratch [big, k], g, w, evals, a row of k, per-row sums */
    return 8 * ((rows + cols + big) * (uint64_t)k + 2 * (uint64_t)k * k + 2 * (uint64_t)k) +
           8 * (uint64_t)ROW_TILE * k;
}

void rsvd_result_free(rsvd_result *r)
{
    free(r->u);
    free(r->v);
    free(r->s);
    memset(r, 0, sizeof *r);
}

int rsvd_run(smelt_ctx *ctx, const rsvd_job *job, rsvd_result *out)
{
    memset(out, 0, sizeof *out);
    size_t m = (size_t)job->rows, n = (size_t)job->cols, k = job->k;
    size_t big = m > n ? m : n;
    stream st = {.job = job, .ctx = ctx};
    st.round = job->round_rows < m ? job->round_rows : m;
    st.resident = st.round >= m;
    double *y = malloc(m * k * sizeof *y), *z = malloc(n * k * sizeof *z);
    double *scratch = malloc(big * k * sizeof *scratch);
    double *g = malloc(k * k * sizeof *g), *w = malloc(k * k * sizeof *w);
    double *s = malloc(k * sizeof *s), *row = malloc(k * sizeof *row);
    double *rowsq = malloc(st.round * sizeof *rowsq);
    st.buf = malloc(st.round * n * sizeof *st.buf);
    int rc = SMELT_OK;
    if (!y || !z || !scratch || !g || !w || !s || !row || !rowsq || !st.buf) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    unsigned passes = 0;
    /* The sketch Omega, element (j, c) at position j * k + c. */
    rsvd_gaussian(z, n * k, job->key, 0);
    if ((rc = pass(&st, 0, z, y, &out->frob2, rowsq)))
        goto out;
    passes++;
    for (unsigned it = 0; it < job->power_iters; it++) {
        rsvd_orthonormalize(y, m, k, scratch);
        if ((rc = pass(&st, 1, y, z, NULL, NULL)))
            goto out;
        rsvd_orthonormalize(z, n, k, scratch);
        if ((rc = pass(&st, 0, z, y, NULL, NULL)))
            goto out;
        passes += 2;
    }
    rsvd_orthonormalize(y, m, k, scratch);
    if ((rc = pass(&st, 1, y, z, NULL, NULL)))
        goto out;
    passes++;
    /* G = B B^T = Z^T Z, each element summed over the columns of A in order. */
    for (size_t a = 0; a < k; a++)
        for (size_t b = a; b < k; b++) {
            double sum = 0;
            for (size_t j = 0; j < n; j++)
                sum += z[j * k + a] * z[j * k + b];
            g[a * k + b] = g[b * k + a] = sum;
        }
    rsvd_jacobi_eigen(g, k, s, w);
    /* U = Q W and Z W = V diag(s), row by row in place. s is taken as the norm of Z W's
     * columns rather than the square root of the eigenvalue: the eigenvalues of the Gram
     * matrix carry an absolute error near eps * s_max^2, which would swamp the small ones. */
    for (size_t i = 0; i < m; i++) {
        for (size_t c = 0; c < k; c++) {
            double sum = 0;
            for (size_t e = 0; e < k; e++)
                sum += y[i * k + e] * w[e * k + c];
            row[c] = sum;
        }
        memcpy(y + i * k, row, k * sizeof *row);
    }
    memset(s, 0, k * sizeof *s);
    for (size_t j = 0; j < n; j++) {
        for (size_t c = 0; c < k; c++) {
            double sum = 0;
            for (size_t e = 0; e < k; e++)
                sum += z[j * k + e] * w[e * k + c];
            row[c] = sum;
            s[c] += sum * sum;
        }
        memcpy(z + j * k, row, k * sizeof *row);
    }
    for (size_t c = 0; c < k; c++) {
        s[c] = sqrt(s[c]);
        row[c] = s[c] > 0 ? 1.0 / s[c] : 0;
    }
    for (size_t j = 0; j < n; j++)
        for (size_t c = 0; c < k; c++)
            z[j * k + c] *= row[c];
    /* The norms may reorder the smallest values: sort descending, ties in index order. */
    for (size_t i = 0; i < k; i++) {
        size_t best = i;
        for (size_t j = i + 1; j < k; j++)
            if (s[j] > s[best])
                best = j;
        if (best == i)
            continue;
        double t = s[i];
        s[i] = s[best];
        s[best] = t;
        for (size_t r = 0; r < m; r++) {
            t = y[r * k + i];
            y[r * k + i] = y[r * k + best];
            y[r * k + best] = t;
        }
        for (size_t r = 0; r < n; r++) {
            t = z[r * k + i];
            z[r * k + i] = z[r * k + best];
            z[r * k + best] = t;
        }
    }
    out->u = y;
    out->v = z;
    out->s = s;
    y = z = s = NULL;
    out->passes = passes;
    out->reads = st.reads;
out:
    free(y);
    free(z);
    free(scratch);
    free(g);
    free(w);
    free(s);
    free(row);
    free(rowsq);
    free(st.buf);
    return rc;
}
