/* Truncated SVD of a matrix that is never held whole: randomized subspace iteration (Halko,
 * Martinsson and Tropp, "Finding structure with randomness", SIAM Review 53(2), 2011,
 * algorithms 4.4 and 5.1), with every product against the matrix one streaming pass over its
 * rows, and the small dense algebra (modified Gram-Schmidt, cyclic Jacobi) in f64 here.
 *
 * Memory: O((rows + cols) * k) doubles plus one round of rows of the matrix, never the matrix.
 * Determinism: every output element is a sum taken in one fixed order (rows in increasing
 * order for the products with A^T, columns in increasing order for the products with A), so
 * the result is bit-identical for any thread count and any round size. */
#ifndef SMELT_RSVD_H
#define SMELT_RSVD_H

#include "common/errors.h"
#include "common/pool.h"

#include <stddef.h>
#include <stdint.h>

/* Orthonormalizes the k columns of the row-major [m, k] matrix a in place: modified
 * Gram-Schmidt, each column projected twice ("twice is enough", Giraud et al. 2005), using
 * `scratch` (k * m doubles). A column that is numerically in the span of the earlier ones
 * (what is left of it after projection is at most 1e-13 of its norm, or zero) becomes zero, so
 * the nonzero columns are orthonormal. Returns the number of nonzero columns. */
size_t rsvd_orthonormalize(double *a, size_t m, size_t k, double *scratch);

/* Eigen-decomposition of the symmetric [k, k] row-major matrix g (overwritten) by cyclic
 * Jacobi rotations in a fixed order (rows, then columns, of the upper triangle) until no
 * off-diagonal element is significant (Golub & Van Loan, Matrix Computations, 8.5). On return
 * evals[0..k) is descending and column j of the row-major [k, k] matrix evecs is the unit
 * eigenvector of evals[j] (ties keep index order). Returns the number of sweeps, or -1 when 100
 * sweeps did not converge (the decomposition is still usable, just less exact). */
int rsvd_jacobi_eigen(double *g, size_t k, double *evals, double *evecs);

/* Standard normal values dst[i] for the counter-based positions index0 + i under key: Philox
 * 4x32-10 of (position, key) gives two 53-bit uniforms, Box-Muller one normal. The same
 * (key, position) always gives the same value, whatever the caller's split. */
void rsvd_gaussian(double *dst, size_t n, uint64_t key, uint64_t index0);

/* Fills dst with rows [row0, row0 + nrows) of the matrix as row-major f32 (nrows * cols). Returns
 * SMELT_OK or a status with the message in the reader's context. */
typedef int (*rsvd_read_fn)(void *user, uint64_t row0, size_t nrows, float *dst);

typedef struct rsvd_job {
    uint64_t rows, cols;
    size_t k;             /* the sketch's width (rank + oversampling), 1 <= k <= min(rows, cols) */
    unsigned power_iters; /* q: each adds two passes */
    uint64_t key;         /* the Gaussian sketch's key (seed and tensor) */
    size_t round_rows;    /* rows of the matrix held at once (>= 1); >= rows: read only once */
    smelt_pool *pool;     /* borrowed */
    rsvd_read_fn read;
    void *read_user;
    volatile int *cancel; /* may be NULL: non-zero stops between rounds (SMELT_E_INTERRUPTED) */
} rsvd_job;

typedef struct rsvd_result {
    double *u;      /* [rows, k] row-major: column j is the left singular vector of s[j] */
    double *v;      /* [cols, k] row-major: column j is the right singular vector of s[j] */
    double *s;      /* [k], descending */
    double frob2;   /* ||A||_F^2, summed in row order in the first pass */
    unsigned passes;    /* products with the matrix */
    unsigned reads;     /* times the matrix was read from its source */
} rsvd_result;

/* Bytes rsvd_run allocates for a job besides the round buffer (the factors, the sketch, the
 * Gram-Schmidt scratch and the small matrices); the round buffer is round_rows * cols floats. */
uint64_t rsvd_fixed_bytes(uint64_t rows, uint64_t cols, size_t k);

/* A ~= U diag(s) V^T of rank k: Omega (cols x k Gaussian), Y = A Omega, then q times
 * {Q = orth(Y), Z = orth(A^T Q), Y = A Z}, Q = orth(Y), Z = A^T Q (= B^T with B = Q^T A), the
 * eigen-decomposition B B^T = W diag(s^2) W^T, U = Q W, V = Z W diag(1/s) (a column of V is
 * zero where s is). 2q + 2 passes over the rows. SMELT_OK and *out (rsvd_result_free), or
 * SMELT_E_NOMEM, SMELT_E_INTERRUPTED or the reader's status. */
int rsvd_run(smelt_ctx *ctx, const rsvd_job *job, rsvd_result *out);

void rsvd_result_free(rsvd_result *r);

#endif
