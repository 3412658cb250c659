/* The interpolation family: slerp, nuslerp, multislerp, karcher, model_stock (geometric, one
 * routine), nearswap (elementwise) and passthrough.
 *
 * Why one routine fits all the geometric methods: each of them is, per tensor, a function of
 * angles and norms of its working vectors v_1..v_m (the inputs themselves, or the task vectors
 * τ_i = θ_i − θ₀), and its output is built only by scaling and adding those vectors (normalizing
 * is a scale, a tangent u_i − (u_i·μ)μ is a combination, an exponential map cos‖T‖μ + sin‖T‖ T/‖T‖
 * is a combination of combinations). So the output is Σ c_i v_i with scalar c_i, and every
 * angle and norm the method needs is a dot product of two combinations, i.e. a quadratic form in
 * the Gram matrix G_ij = v_i·v_j. One statistics pass accumulates G (m(m+1)/2 doubles, however
 * large the tensor); end_pass turns G into coefficients in double; apply is m scaled adds per
 * element, with the fused decode kernels where the vectors are the inputs themselves.
 *
 * Task vectors are formed in f32 per tile (k->sub) before the dot products, never derived from
 * the inputs' Gram (θ_i·θ_j − θ_i·θ₀ − ...): fine-tune deltas are a thousandth of the weights, and
 * that difference of large sums would cancel away most of their digits.
 *
 * nuslerp (nuslerp_flatten: false) and model_stock (filter_wise: true) may instead treat each
 * row, or (nuslerp_row_wise on a matrix) each column, as a vector of its own: the same
 * coefficient function then runs on one Gram per vector.
 *  - Rows (SPLIT_ROWS) need no statistics pass: the engine hands out tasks of whole rows
 *    (task_elems), and at a task's first tile apply reads the task's rows, builds each row's
 *    Gram and coefficients into the task's scratch, then serves every tile piece by piece with
 *    its row's coefficients. One read of the inputs.
 *  - Columns (SPLIT_COLS) cross every task, so they take a statistics pass whose partial holds
 *    a Gram per column; end_pass turns them into per-column coefficients. Two reads. */
#include "methods/method.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* How apply forms the output from the coefficients. */
typedef enum interp_form {
    FORM_INPUTS, /* out = Σ c_i x_i over the inputs (base included), in input order */
    FORM_DELTA,  /* out = (Σ c_i τ_i) + θ₀: the methods that add a base back to a result built
                    from task vectors, so the small result is not rounded against θ₀ first */
    FORM_ZERO    /* out = +0 everywhere (karcher when every vector is zero, as mergekit) */
} interp_form;

struct interp_state;

/* One method of the family: how it reads its parameters and turns a Gram into coefficients. */
typedef struct interp_desc {
    int gram;           /* needs the statistics pass (when it has two or more vectors) */
    int base_is_vector; /* slerp: the base is one end of the arc, not an origin */
    /* Validates the resolved parameters into the state (prepare time). */
    int (*check)(smelt_ctx *ctx, const smelt_tensor_args *args, struct interp_state *s);
    /* Sets form and coef[] from the parameters and, when gram, from G. */
    int (*coefs)(smelt_ctx *ctx, struct interp_state *s);
} interp_desc;

/* Which vectors the geometry is about. */
typedef enum interp_split {
    SPLIT_NONE, /* the whole tensor is one vector */
    SPLIT_ROWS, /* each run of `vec` contiguous elements (a row along the last dimension) */
    SPLIT_COLS  /* each column of a matrix with `vec` columns: elements vec apart */
} interp_split;

typedef struct interp_state {
    const interp_desc *d;
    interp_split split;
    uint64_t vec;       /* SPLIT_ROWS: elements of a row; SPLIT_COLS: columns */
    uint64_t task_len;  /* SPLIT_ROWS: elements per engine task, a whole number of rows */
    /* SPLIT_COLS: per-column Gram upper triangles (from the first fold to end_pass; an
     * allocation failure in fold, which cannot report, is reported by end_pass), then the
     * per-column results, cols × n coefficients and use flags and cols forms. */
    double *cg;
    int cg_failed;
    float *ccoef;
    unsigned char *cuse, *cform;
    const char *tensor; /* the plan's string: lives as long as the plan */
    const char *const *names; /* the inputs' model references (the plan's), for messages */
    const char *method;
    size_t n;           /* inputs */
    size_t first;       /* input index of working vector 0 */
    size_t m;           /* working vectors: inputs first .. n-1 */
    int task;           /* working vectors are x_i − x_0 */
    double t, eps, tol; /* the method's scalar parameters (those it has) */
    unsigned max_iter;
    int normalize;
    interp_form form;
    double *w;          /* per-input weight (or scale), n entries */
    double *g;          /* m × m, full after end_pass */
    double *work;       /* WORK_ARRAYS × m doubles for the coefficient math */
    float *coef;        /* per input; used where use[i] */
    unsigned char *use;
} interp_state;

/* Arrays of m doubles a coefficient function may use from s->work. */
#define WORK_ARRAYS 6
#define G(s, i, j) ((s)->g[(i) * (s)->m + (j)])

/* ---- parameter schemas ---------------------------------------------------------------- */

enum { SLERP_T };
static const smelt_param_def slerp_params[] = {{"t", SMELT_PARAM_NUMBER, 0, 1, 0.0}};

enum { NU_WEIGHT, NU_FLATTEN, NU_ROW_WISE };
static const smelt_param_def nuslerp_params[] = {
    [NU_WEIGHT] = {"weight", SMELT_PARAM_NUMBER, 1, 1, 0.0},
    [NU_FLATTEN] = {"nuslerp_flatten", SMELT_PARAM_BOOL, 0, 0, 1.0},
    [NU_ROW_WISE] = {"nuslerp_row_wise", SMELT_PARAM_BOOL, 0, 0, 0.0},
};

enum { MS_WEIGHT, MS_NORMALIZE, MS_EPS };
static const smelt_param_def multislerp_params[] = {
    [MS_WEIGHT] = {"weight", SMELT_PARAM_NUMBER, 1, 1, 0.0},
    [MS_NORMALIZE] = {"normalize_weights", SMELT_PARAM_BOOL, 0, 0, 1.0},
    [MS_EPS] = {"eps", SMELT_PARAM_NUMBER, 0, 0, 1e-8},
};

enum { KA_MAX_ITER, KA_TOL };
static const smelt_param_def karcher_params[] = {
    [KA_MAX_ITER] = {"max_iter", SMELT_PARAM_NUMBER, 0, 0, 10.0},
    [KA_TOL] = {"tol", SMELT_PARAM_NUMBER, 0, 0, 1e-5},
};

enum { MST_FILTER_WISE };
static const smelt_param_def model_stock_params[] = {
    [MST_FILTER_WISE] = {"filter_wise", SMELT_PARAM_BOOL, 0, 0, 0.0},
};

enum { NS_T };
static const smelt_param_def nearswap_params[] = {{"t", SMELT_PARAM_NUMBER, 0, 1, 0.0}};

enum { PT_SCALE };
static const smelt_param_def passthrough_params[] = {{"scale", SMELT_PARAM_NUMBER, 1, 0, 1.0}};

/* ---- small linear algebra on the Gram ------------------------------------------------------ */

/* aᵀ G b for coefficient vectors over the working vectors: the dot product of Σ a_i v_i and
 * Σ b_j v_j. Exact math would make a quadratic form non-negative; callers taking a root clamp. */
static double gram_form(const interp_state *s, const double *a, const double *b)
{
    double sum = 0;
    size_t m = s->m;
    for (size_t i = 0; i < m; i++) {
        double row = 0;
        for (size_t j = 0; j < m; j++)
            row += G(s, i, j) * b[j];
        sum += a[i] * row;
    }
    return sum;
}

static double gram_norm(const interp_state *s, const double *a)
{
    double q = gram_form(s, a, a);
    return sqrt(q > 0 ? q : 0);
}

/* Puts per-working-vector coefficients into the per-input arrays. A coefficient past f32's
 * range is stored as an infinity (the conversion itself would be undefined) for check_coefs to
 * refuse. */
static void set_vector_coefs(interp_state *s, const double *c, interp_form form)
{
    s->form = form;
    for (size_t j = 0; j < s->m; j++) {
        s->coef[s->first + j] = fabs(c[j]) >= 0x1.ffffffp127 ? (float)copysign(INFINITY, c[j])
                                                             : (float)c[j];
        s->use[s->first + j] = 1;
    }
}

/* Every coefficient apply will use must be finite: huge weights can make the combination's
 * coefficients overflow f32 (or turn NaN) though each parameter is finite. */
static int check_coefs(smelt_ctx *ctx, const interp_state *s, const float *coef,
                       const unsigned char *use, const char *method)
{
    smelt_tensor_args args = {.tensor = s->tensor, .ninputs = s->n, .input_names = s->names};
    for (size_t i = 0; i < s->n; i++) {
        if (!use[i])
            continue;
        int rc = smelt_check_finite(ctx, method, &args, i, "the coefficient the merge gives it",
                                    coef[i], SMELT_NUM_F32);
        if (rc != SMELT_OK)
            return rc;
    }
    return SMELT_OK;
}

/* Where task vectors are the working vectors the output is θ₀ + Σ c τ (mergekit's form). */
static interp_form vector_form(const interp_state *s) { return s->task ? FORM_DELTA : FORM_INPUTS; }

/* Coefficients (c0, c1) of slerp between v0 and v1 at t, given cos θ. */
static void arc_coefs(double t, double theta, double c[2])
{
    double sin_theta = sin(theta);
    c[0] = sin(theta - t * theta) / sin_theta;
    c[1] = sin(t * theta) / sin_theta;
}

/* Elements of the upper triangle of a Gram: what a statistics partial holds per vector. */
static size_t tri_size(const interp_state *s) { return s->m * (s->m + 1) / 2; }

/* The longest row or most columns smelt splits a tensor into: per-row tasks must hold a row,
 * and per-column partials grow with the columns. */
#define SPLIT_MAX SMELT_TASK_ELEMS

/* Sets s->split for a method that can work per row (last dimension) or per column. Rows of a
 * 1-D tensor are the tensor; columns need a matrix (≥3-D transposes are refused, not guessed). */
static int set_split(smelt_ctx *ctx, const smelt_tensor_args *args, interp_state *s,
                     interp_split split, const char *what)
{
    if (split == SPLIT_COLS && args->ndim <= 1)
        split = SPLIT_ROWS; /* mergekit's transpose(0, -1) of a vector is the vector */
    if (split == SPLIT_COLS && args->ndim > 2)
        return smelt_fail(ctx, SMELT_E_UNSUPPORTED,
                          "tensor '%s': %s on a %u-D tensor (a vector along dimension 0 for "
                          "every index of the others) is not supported; smelt does it for "
                          "1-D and 2-D tensors", args->tensor, what, args->ndim);
    uint64_t vec = args->row_elems ? args->row_elems : args->numel;
    if (vec > SPLIT_MAX)
        return smelt_fail(ctx, SMELT_E_UNSUPPORTED,
                          "tensor '%s': %s: its rows have %llu elements; smelt handles rows (and "
                          "columns) of at most %u", args->tensor, what,
                          (unsigned long long)vec, (unsigned)SPLIT_MAX);
    s->split = split;
    s->vec = vec ? vec : 1; /* an empty tensor: no task ever runs */
    if (split == SPLIT_ROWS)
        s->task_len = SMELT_TASK_ELEMS / s->vec * s->vec;
    return SMELT_OK;
}

/* ---- slerp -------------------------------------------------------------------------------- */

static int check_unit_t(smelt_ctx *ctx, const smelt_tensor_args *args, interp_state *s,
                        const char *method)
{
    s->t = args->values[SLERP_T][0];
    if (!(s->t >= 0 && s->t <= 1)) /* NaN fails too */
        return smelt_fail(ctx, SMELT_E_CONFIG,
                          "tensor '%s': %s: t = %g is outside [0, 1] (t = 0 gives the base_model "
                          "'%s', t = 1 the model '%s')", args->tensor, method, s->t,
                          args->input_names[0], args->input_names[1]);
    return SMELT_OK;
}

static int slerp_check(smelt_ctx *ctx, const smelt_tensor_args *args, interp_state *s)
{
    return check_unit_t(ctx, args, s, "slerp");
}

/* mergekit normalizes copies (a norm <= 1e-8 is left as is), takes dot = â·b̂ and, away from
 * colinear, weights the UN-normalized a, b by sin((1−t)θ)/sin θ and sin(tθ)/sin θ: so the output
 * is c0·a + c1·b and dot = G01 / (|a|'·|b|') with |x|' = |x| or 1 for a tiny |x|. */
static int slerp_coefs(smelt_ctx *ctx, interp_state *s)
{
    (void)ctx;
    double na = sqrt(G(s, 0, 0)), nb = sqrt(G(s, 1, 1));
    double dot = G(s, 0, 1) / ((na > 1e-8 ? na : 1) * (nb > 1e-8 ? nb : 1));
    double c[2];
    if (fabs(dot) > 0.9995) {
        c[0] = 1 - s->t;
        c[1] = s->t;
    } else {
        arc_coefs(s->t, acos(dot), c);
    }
    set_vector_coefs(s, c, FORM_INPUTS);
    return SMELT_OK;
}

/* ---- nuslerp ------------------------------------------------------------------------------ */

/* mergekit: flatten wins over row_wise; unflattened, one slerp per vector along dim −1, or
 * along dim 0 (transposed to the end) with row_wise. */
static int nuslerp_check(smelt_ctx *ctx, const smelt_tensor_args *args, interp_state *s)
{
    if (args->values[NU_FLATTEN][0] == 0) {
        int cols = args->values[NU_ROW_WISE][0] != 0;
        int rc = set_split(ctx, args, s, cols ? SPLIT_COLS : SPLIT_ROWS,
                           cols ? "nuslerp with nuslerp_row_wise: true"
                                : "nuslerp with nuslerp_flatten: false");
        if (rc != SMELT_OK)
            return rc;
    }
    double sum = 0;
    for (size_t i = s->first; i < s->n; i++) {
        int rc = smelt_check_finite(ctx, "nuslerp", args, i, "weight", s->w[i], SMELT_NUM_F64);
        if (rc != SMELT_OK)
            return rc;
        sum += s->w[i];
    }
    /* t = w2 / (w1 + w2): an infinite sum would give t = 0 from finite weights. */
    return smelt_check_finite(ctx, "nuslerp", args, SMELT_NO_INPUT, "the sum of the weights",
                              sum, SMELT_NUM_F64);
}

/* t = w₂/(w₁+w₂); cos θ = v0·v1 / (max(|v0|, 1e-7)·max(|v1|, 1e-7)) clamped to [−1, 1]; the
 * sin-weighted sum of the vectors, or their lerp where |sin θ| < 1e-8 (colinear or opposite).
 *
 * sin θ is taken from the Gram determinant, sin²θ = (G00·G11 − G01²)/(G00·G11), not as
 * sin(acos(cos θ)): for a vector and its exact negation or multiple the determinant is exactly 0
 * in double, while cos θ lands one rounding off ±1 and sin(acos) of that is ~1.5e-8, just above
 * the threshold, which would send the merge down the arc formula with 1/sin θ ~ 1e8 weights.
 * (Where a norm is under the 1e-7 clamp, mergekit's cos θ is not a true cosine; sin θ is then
 * sqrt(1 − cos²θ) as there.) */
static int nuslerp_coefs(smelt_ctx *ctx, interp_state *s)
{
    (void)ctx;
    double w1 = s->w[s->first], w2 = s->w[s->first + 1], sum = w1 + w2;
    double t = fabs(sum) < 1e-6 ? 0.5 : w2 / sum;
    double n0 = sqrt(G(s, 0, 0)), n1 = sqrt(G(s, 1, 1));
    double cos_theta = fmin(fmax(G(s, 0, 1) / (fmax(n0, 1e-7) * fmax(n1, 1e-7)), -1.0), 1.0);
    double sin2 = n0 > 1e-7 && n1 > 1e-7
                      ? (G(s, 0, 0) * G(s, 1, 1) - G(s, 0, 1) * G(s, 0, 1)) / (G(s, 0, 0) * G(s, 1, 1))
                      : 1 - cos_theta * cos_theta;
    double sin_theta = sqrt(fmin(fmax(sin2, 0.0), 1.0)), c[2];
    if (sin_theta < 1e-8 || isnan(sin2)) {
        c[0] = 1 - t;
        c[1] = t;
    } else {
        double theta = atan2(sin_theta, cos_theta);
        c[0] = sin(theta - t * theta) / sin_theta;
        c[1] = sin(t * theta) / sin_theta;
    }
    set_vector_coefs(s, c, vector_form(s));
    return SMELT_OK;
}

/* ---- multislerp --------------------------------------------------------------------------- */

static int multislerp_check(smelt_ctx *ctx, const smelt_tensor_args *args, interp_state *s)
{
    s->normalize = args->values[MS_NORMALIZE][0] != 0;
    s->eps = args->values[MS_EPS][0];
    int rc = smelt_check_finite(ctx, "multislerp", args, SMELT_NO_INPUT, "eps", s->eps,
                                SMELT_NUM_F64);
    if (rc != SMELT_OK)
        return rc;
    if (!(s->eps >= 0))
        return smelt_fail(ctx, SMELT_E_CONFIG, "tensor '%s': multislerp: eps = %g must be a "
                          "finite number >= 0", args->tensor, s->eps);
    double sum = 0;
    for (size_t i = s->first; i < s->n; i++) {
        if ((rc = smelt_check_finite(ctx, "multislerp", args, i, "weight", s->w[i],
                                     SMELT_NUM_F64)) != SMELT_OK)
            return rc;
        sum += s->w[i];
    }
    if (s->normalize) {
        if ((rc = smelt_check_finite(ctx, "multislerp", args, SMELT_NO_INPUT,
                                     "the sum of the weights", sum, SMELT_NUM_F64)) != SMELT_OK)
            return rc;
        if (fabs(sum) < 1e-8)
            return smelt_fail(ctx, SMELT_E_CONFIG,
                              "tensor '%s': multislerp: the weights sum to %g, so "
                              "normalize_weights cannot divide by it (set normalize_weights: "
                              "false or change the weights)", args->tensor, sum);
        for (size_t i = s->first; i < s->n; i++)
            s->w[i] /= sum;
    }
    return SMELT_OK;
}

/* In coefficients over v: u_i = v_i/(|v_i|+eps); the weighted mean Σ w_i u_i has coefficients
 * a_i = w_i/(|v_i|+eps); μ = that / its norm; u_i·μ = (Gμ)_i/(|v_i|+eps); the tangent
 * T = Σ w_i (u_i − (u_i·μ) μ) = Σ w_i u_i − (Σ w_i u_i·μ) μ; the exponential map
 * μ cos|T| + T sin|T|/|T| (|T| + eps, as mergekit) and the scale Σ w_i |v_i| keep it a
 * combination. */
static int multislerp_coefs(smelt_ctx *ctx, interp_state *s)
{
    size_t m = s->m;
    double *w = s->w + s->first, *norm = s->work, *a = norm + m, *mu = a + m, *gmu = mu + m,
           *tng = gmu + m, *c = tng + m;
    if (m == 1) { /* mergekit returns the one model as it is */
        c[0] = 1;
        set_vector_coefs(s, c, FORM_INPUTS);
        return SMELT_OK;
    }
    for (size_t i = 0; i < m; i++) {
        norm[i] = sqrt(G(s, i, i));
        a[i] = w[i] / (norm[i] + s->eps);
    }
    double mean_norm = gram_norm(s, a);
    if (mean_norm < s->eps || mean_norm == 0) {
        if (m == 2) { /* mergekit's fallback for two balanced antipodal vectors: w0 v0 + w1 v1 */
            set_vector_coefs(s, w, vector_form(s));
            return SMELT_OK;
        }
        return smelt_fail(ctx, SMELT_E_CONFIG,
                          "tensor '%s': multislerp: the weighted unit vectors of the models "
                          "cancel out (antipodal models with balancing weights), so they have no "
                          "mean direction; change the weights", s->tensor);
    }
    for (size_t i = 0; i < m; i++)
        mu[i] = a[i] / mean_norm;
    double along = 0; /* Σ w_i (u_i·μ) */
    for (size_t i = 0; i < m; i++) {
        gmu[i] = 0;
        for (size_t j = 0; j < m; j++)
            gmu[i] += G(s, i, j) * mu[j];
        along += w[i] * (gmu[i] / (norm[i] + s->eps));
    }
    for (size_t i = 0; i < m; i++)
        tng[i] = a[i] - along * mu[i];
    double tn = gram_norm(s, tng) + s->eps;
    double sinc = tn > 0 ? sin(tn) / tn : 1;
    double avg_norm = 0;
    for (size_t i = 0; i < m; i++)
        avg_norm += norm[i] * w[i];
    for (size_t i = 0; i < m; i++)
        c[i] = (mu[i] * cos(tn) + tng[i] * sinc) * avg_norm;
    set_vector_coefs(s, c, vector_form(s));
    return SMELT_OK;
}

/* ---- karcher ------------------------------------------------------------------------------ */

static int karcher_check(smelt_ctx *ctx, const smelt_tensor_args *args, interp_state *s)
{
    double it = args->values[KA_MAX_ITER][0];
    s->tol = args->values[KA_TOL][0];
    if (!(it >= 0 && it <= 1e6) || it != floor(it))
        return smelt_fail(ctx, SMELT_E_CONFIG, "tensor '%s': karcher: max_iter = %g must be a "
                          "whole number from 0 to 1000000", args->tensor, it);
    int rc = smelt_check_finite(ctx, "karcher", args, SMELT_NO_INPUT, "tol", s->tol,
                                SMELT_NUM_F64);
    if (rc != SMELT_OK)
        return rc;
    if (!(s->tol >= 0))
        return smelt_fail(ctx, SMELT_E_CONFIG, "tensor '%s': karcher: tol = %g must be a finite "
                          "number >= 0", args->tensor, s->tol);
    s->max_iter = (unsigned)it;
    return SMELT_OK;
}

/* The Riemannian mean u of the unit vectors u_i = v_i/|v_i| (equal weights, vectors with
 * |v_i| <= tol left out), scaled by the mean norm. The iteration never needs a vector: u is kept
 * as coefficients β over v (u = Σ β_j v_j), so u·u_i = (Gβ)_i/|v_i|; the tangent
 * T = Σ a_i θ_i/sin θ_i (u_i − cos θ_i u) has coefficients γ built from β and the unit
 * coefficients; |T| = sqrt(γᵀGγ); the step u ← cos|T| u + sin|T| T/|T| and the renormalization
 * u/|u| (|u| = sqrt(βᵀGβ)) are combinations again. So all of mergekit's fixed-point loop runs on
 * the m × m Gram, whatever the tensor size.
 *
 * One deviation, at the antipode: a unit vector within tol of −u is skipped like one within tol
 * of u. Its tangent u_i − cos θ_i·u is zero (exactly so in mergekit's f32 for an exact negation)
 * but its weight θ_i/sin θ_i explodes, and in coefficient form the zero is a difference of
 * large terms that rounding leaves at ~1, which would throw u across the sphere. */
static int karcher_coefs(smelt_ctx *ctx, interp_state *s)
{
    (void)ctx;
    size_t m = s->m, valid = 0, first_valid = 0;
    double *norm = s->work, *beta = norm + m, *gamma = beta + m, *gbeta = gamma + m,
           *c = gbeta + m;
    if (m == 1) { /* mergekit returns the one model as it is */
        c[0] = 1;
        set_vector_coefs(s, c, FORM_INPUTS);
        return SMELT_OK;
    }
    for (size_t i = 0; i < m; i++) {
        norm[i] = sqrt(G(s, i, i));
        if (norm[i] > s->tol && valid++ == 0)
            first_valid = i;
    }
    if (valid == 0) {
        s->form = FORM_ZERO;
        return SMELT_OK;
    }
    /* Equal weights 1/m, renormalized over the valid vectors: 1/valid each. */
    double alpha = 1.0 / (double)valid;
    for (size_t i = 0; i < m; i++)
        beta[i] = norm[i] > s->tol ? alpha / norm[i] : 0;
    double mean_norm = gram_norm(s, beta);
    for (size_t i = 0; i < m; i++)
        beta[i] = mean_norm < s->tol ? (i == first_valid ? 1 / norm[i] : 0) : beta[i] / mean_norm;
    for (unsigned it = 0; it < s->max_iter; it++) {
        for (size_t i = 0; i < m; i++) {
            gbeta[i] = 0;
            for (size_t j = 0; j < m; j++)
                gbeta[i] += G(s, i, j) * beta[j];
            gamma[i] = 0;
        }
        for (size_t i = 0; i < m; i++) {
            if (!(norm[i] > s->tol))
                continue;
            double dot = fmin(fmax(gbeta[i] / norm[i], -1.0), 1.0);
            double theta = acos(dot);
            if (theta < s->tol || theta > M_PI - s->tol)
                continue;
            double f = alpha * theta / sin(theta);
            gamma[i] += f / norm[i];
            for (size_t j = 0; j < m; j++)
                gamma[j] -= f * dot * beta[j];
        }
        double tn = gram_norm(s, gamma);
        if (tn < s->tol)
            break;
        for (size_t i = 0; i < m; i++)
            beta[i] = cos(tn) * beta[i] + sin(tn) * (gamma[i] / tn);
        double un = gram_norm(s, beta);
        if (un > s->tol)
            for (size_t i = 0; i < m; i++)
                beta[i] /= un;
    }
    double scale = 0; /* Σ (1/m) |v_i| over all vectors, zero ones included (mergekit) */
    for (size_t i = 0; i < m; i++)
        scale += norm[i] / (double)m;
    for (size_t i = 0; i < m; i++)
        c[i] = scale * beta[i];
    set_vector_coefs(s, c, FORM_INPUTS);
    return SMELT_OK;
}

/* ---- model_stock -------------------------------------------------------------------------- */

/* filter_wise: one ratio per row along the last dimension (mergekit). */
static int model_stock_check(smelt_ctx *ctx, const smelt_tensor_args *args, interp_state *s)
{
    if (args->values[MST_FILTER_WISE][0] != 0)
        return set_split(ctx, args, s, SPLIT_ROWS, "model_stock with filter_wise: true");
    return SMELT_OK;
}

/* cos = mean pairwise cosine of the task vectors (norm product clamped >= 1e-6, each cosine
 * clamped to [−1, 1]); t = N cos/(1 + (N−1) cos); out = t·mean(θ_i) + (1−t)·θ₀, which is the
 * combination (1−t)·θ₀ + Σ (t/N)·θ_i of the inputs. The denominator is 0 only when the unit task
 * vectors sum to zero; mergekit then divides by zero and writes inf/NaN, smelt keeps the base. */
static int model_stock_coefs(smelt_ctx *ctx, interp_state *s)
{
    (void)ctx;
    size_t m = s->m, pairs = 0;
    double sum = 0;
    for (size_t i = 0; i < m; i++)
        for (size_t j = i + 1; j < m; j++) {
            double np = fmax(sqrt(G(s, i, i)) * sqrt(G(s, j, j)), 1e-6);
            sum += fmin(fmax(G(s, i, j) / np, -1.0), 1.0);
            pairs++;
        }
    double cos_theta = sum / (double)pairs, nn = (double)m;
    double den = 1 + (nn - 1) * cos_theta;
    double t = den == 0 ? 0 : nn * cos_theta / den;
    s->form = FORM_INPUTS;
    s->coef[0] = (float)(1 - t);
    s->use[0] = 1;
    for (size_t i = 1; i < s->n; i++) {
        s->coef[i] = (float)(t / nn);
        s->use[i] = 1;
    }
    return SMELT_OK;
}

/* ---- passthrough -------------------------------------------------------------------------- */

static int passthrough_check(smelt_ctx *ctx, const smelt_tensor_args *args, interp_state *s)
{
    /* The scale becomes the f32 coefficient of the copy. */
    return smelt_check_finite(ctx, "passthrough", args, 0, "scale", s->w[0], SMELT_NUM_F32);
}

static int passthrough_coefs(smelt_ctx *ctx, interp_state *s)
{
    (void)ctx;
    s->form = FORM_INPUTS;
    s->coef[0] = (float)s->w[0];
    s->use[0] = 1;
    return SMELT_OK;
}

/* ---- nearswap ----------------------------------------------------------------------------- */

static int nearswap_check(smelt_ctx *ctx, const smelt_tensor_args *args, interp_state *s)
{
    s->t = args->values[NS_T][0];
    /* apply uses t in f32. */
    int rc = smelt_check_finite(ctx, "nearswap", args, SMELT_NO_INPUT, "t", s->t, SMELT_NUM_F32);
    if (rc != SMELT_OK)
        return rc;
    /* mergekit refuses t <= 0: it is the distance below which the model replaces the base. */
    if (!(s->t > 0))
        return smelt_fail(ctx, SMELT_E_CONFIG, "tensor '%s': nearswap: t = %g must be a finite "
                          "number > 0 (the distance |base − model| up to which '%s' takes the "
                          "value of '%s')", args->tensor, s->t, args->input_names[0],
                          args->input_names[1]);
    return SMELT_OK;
}

/* ---- the shared vtable entries ------------------------------------------------------------ */

static int interp_prepare(smelt_ctx *ctx, const smelt_tensor_args *args, const interp_desc *d,
                          int weight_param, const char *method, void **state)
{
    size_t n = args->ninputs;
    interp_state *s = calloc(1, sizeof *s);
    if (!s)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    s->d = d;
    s->tensor = args->tensor;
    s->names = args->input_names;
    s->method = method;
    s->n = n;
    s->task = args->has_base && !d->base_is_vector;
    s->first = s->task ? 1 : 0;
    s->m = n - s->first;
    s->w = calloc(n, sizeof *s->w);
    s->g = calloc(s->m * s->m, sizeof *s->g);
    s->work = calloc(WORK_ARRAYS * s->m, sizeof *s->work);
    s->coef = calloc(n, sizeof *s->coef);
    s->use = calloc(n, 1);
    int rc = SMELT_OK;
    if (!s->w || !s->g || !s->work || !s->coef || !s->use) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; weight_param >= 0 && i < n; i++)
        s->w[i] = args->values[weight_param][i];
    if ((rc = d->check(ctx, args, s)) != SMELT_OK)
        goto fail;
    if (!(d->gram && s->m >= 2) && ((rc = d->coefs(ctx, s)) != SMELT_OK ||
                                     (rc = check_coefs(ctx, s, s->coef, s->use, method))))
        goto fail;
    *state = s;
    return SMELT_OK;
fail:
    free(s->w);
    free(s->g);
    free(s->work);
    free(s->coef);
    free(s->use);
    free(s);
    return rc;
}

/* The per-column results are needed only while the tensor is written. */
static void interp_finished(void *state)
{
    interp_state *s = state;
    free(s->ccoef);
    free(s->cuse);
    free(s->cform);
    s->ccoef = NULL;
    s->cuse = NULL;
    s->cform = NULL;
}

/* The plan also releases tensors whose prepare failed (state NULL), as it would free() them. */
static void interp_release(void *state)
{
    interp_state *s = state;
    if (!s)
        return;
    free(s->w);
    free(s->g);
    free(s->work);
    free(s->coef);
    free(s->use);
    free(s->cg);
    free(s->ccoef);
    free(s->cuse);
    free(s->cform);
    free(s);
}

/* Working vector j of a tile as f32: an input, or x − θ₀ formed in the input's scratch tile
 * (free when the input is F32 and read in place; else its decoded copy, subtracted in place). */
static const float *working_vector(const interp_state *s, const smelt_tile *tile, size_t j,
                                   const float *base)
{
    size_t i = s->first + j;
    const float *x = smelt_tile_f32(tile, i);
    if (!s->task)
        return x;
    float *tau = tile->scratch + i * SMELT_TILE_ELEMS;
    tile->k->sub(tau, x, base, tile->n);
    return tau;
}

static unsigned interp_passes(const void *state)
{
    const interp_state *s = state;
    if (s->split != SPLIT_NONE)
        return s->split == SPLIT_COLS; /* rows are measured in the apply pass itself */
    return s->d->gram && s->m >= 2 ? 1 : 0;
}

static uint64_t interp_task_elems(const void *state)
{
    const interp_state *s = state;
    return s->split == SPLIT_ROWS ? s->task_len : 0;
}

/* Per-vector results, `count` vectors: coefficients and use flags per input, and a form. */
typedef struct vec_results {
    float *coef;          /* count × n */
    unsigned char *use;   /* count × n */
    unsigned char *form;  /* count */
} vec_results;

/* SPLIT_ROWS's task scratch: one row's Gram triangle, the G and work arrays its coefficient
 * function runs on, then the results of every row of the task. Doubles first, for alignment. */
static size_t rows_scratch_size(const interp_state *s)
{
    size_t rows = (size_t)(s->task_len / s->vec);
    return (tri_size(s) + s->m * s->m + WORK_ARRAYS * s->m) * sizeof(double) +
           rows * (s->n * sizeof(float) + s->n + 1);
}

static size_t interp_partial_size(const void *state, unsigned pass)
{
    const interp_state *s = state;
    if (pass < interp_passes(state)) /* the statistics pass: a Gram, or one per column */
        return (s->split == SPLIT_COLS ? (size_t)s->vec : 1) * tri_size(s) * sizeof(double);
    return s->split == SPLIT_ROWS ? rows_scratch_size(s) : 0;
}

/* Adds the upper triangle of this tile's Gram to acc, in tile order. A tile is at most
 * SMELT_TILE_ELEMS <= SMELT_REDUCE_BLOCK, so one reduction call covers it. */
static void tile_gram(const interp_state *s, const smelt_tile *tile, double *acc)
{
    const smelt_kernels *k = tile->k;
    const float *v[s->m];
    const float *base = s->task ? smelt_tile_f32(tile, 0) : NULL;
    for (size_t j = 0; j < s->m; j++)
        v[j] = working_vector(s, tile, j, base);
    size_t at = 0;
    for (size_t i = 0; i < s->m; i++)
        for (size_t j = i; j < s->m; j++)
            acc[at++] += i == j ? k->sumsq_f64(v[i], tile->n) : k->dot_f64(v[i], v[j], tile->n);
}

/* Per column: each element's products go to its column's triangle, in index order. */
static void cols_stats(const interp_state *s, const smelt_tile *tile, double *acc)
{
    const float *v[s->m];
    const float *base = s->task ? smelt_tile_f32(tile, 0) : NULL;
    for (size_t j = 0; j < s->m; j++)
        v[j] = working_vector(s, tile, j, base);
    size_t tri = tri_size(s), col = (size_t)(tile->index0 % s->vec);
    for (size_t e = 0; e < tile->n; e++) {
        double *a = acc + col * tri;
        for (size_t i = 0; i < s->m; i++)
            for (size_t j = i; j < s->m; j++)
                *a++ += (double)v[i][e] * (double)v[j][e];
        if (++col == s->vec)
            col = 0;
    }
}

static void interp_stats(const void *state, unsigned pass, const smelt_tile *tile, void *partial)
{
    const interp_state *s = state;
    (void)pass;
    if (s->split == SPLIT_COLS)
        cols_stats(s, tile, partial);
    else
        tile_gram(s, tile, partial);
}

static void interp_fold(void *state, unsigned pass, const void *partial)
{
    interp_state *s = state;
    const double *p = partial;
    (void)pass;
    if (s->split == SPLIT_COLS) {
        size_t len = (size_t)s->vec * tri_size(s);
        if (!s->cg && !s->cg_failed && !(s->cg = calloc(len, sizeof *s->cg)))
            s->cg_failed = 1;
        for (size_t i = 0; s->cg && i < len; i++)
            s->cg[i] += p[i];
        return;
    }
    for (size_t i = 0; i < s->m; i++)
        for (size_t j = i; j < s->m; j++)
            G(s, i, j) += *p++;
}

/* Mirrors the upper triangle of G into the lower one. */
static void gram_mirror(interp_state *s)
{
    for (size_t i = 0; i < s->m; i++)
        for (size_t j = 0; j < i; j++)
            G(s, i, j) = G(s, j, i);
}

/* One vector's coefficients from its Gram triangle: the method's own coefficient function, run
 * on a copy of the state whose G, work and results are the vector's (g: m × m, work:
 * WORK_ARRAYS × m doubles), so per-vector and whole-tensor merges share one formula. */
static int vector_coefs(smelt_ctx *ctx, const interp_state *s, const double *tri, double *g,
                        double *work, const vec_results *r, size_t v)
{
    interp_state one = *s;
    one.g = g;
    one.work = work;
    one.coef = r->coef + v * s->n;
    one.use = r->use + v * s->n;
    size_t at = 0;
    for (size_t i = 0; i < s->m; i++)
        for (size_t j = i; j < s->m; j++)
            G(&one, i, j) = tri[at++];
    gram_mirror(&one);
    int rc = s->d->coefs(ctx, &one);
    r->form[v] = (unsigned char)one.form;
    /* Per-row coefficients come from apply, which cannot report (ctx NULL). */
    if (rc == SMELT_OK && ctx)
        rc = check_coefs(ctx, s, one.coef, one.use, s->method);
    return rc;
}

static int interp_end_pass(smelt_ctx *ctx, void *state, unsigned pass)
{
    interp_state *s = state;
    (void)pass;
    if (s->split != SPLIT_COLS) {
        gram_mirror(s);
        int rc = s->d->coefs(ctx, s);
        return rc != SMELT_OK ? rc : check_coefs(ctx, s, s->coef, s->use, s->method);
    }
    size_t cols = (size_t)s->vec, tri = tri_size(s);
    s->ccoef = calloc(cols * s->n, sizeof *s->ccoef);
    s->cuse = calloc(cols * s->n, 1);
    s->cform = calloc(cols, 1);
    if (!s->cg || !s->ccoef || !s->cuse || !s->cform)
        return smelt_fail(ctx, SMELT_E_NOMEM, "tensor '%s': out of memory for %zu per-column "
                          "coefficients", s->tensor, cols);
    vec_results r = {s->ccoef, s->cuse, s->cform};
    for (size_t c = 0; c < cols; c++) {
        int rc = vector_coefs(ctx, s, s->cg + c * tri, s->g, s->work, &r, c);
        if (rc != SMELT_OK)
            return rc;
    }
    free(s->cg); /* the Grams are spent: only the coefficients stay until release */
    s->cg = NULL;
    return SMELT_OK;
}

/* out = the combination `form` with per-input coefficients coef[i] (where use[i]) of the tile's
 * inputs: the one apply of whole tensors, and of each row's piece of a tile. */
static void apply_form(const interp_state *s, const smelt_tile *tile, interp_form form,
                       const float *coef, const unsigned char *use, float *out)
{
    int started = 0;
    switch (form) {
    case FORM_ZERO:
        memset(out, 0, tile->n * sizeof *out);
        return;
    case FORM_INPUTS:
        for (size_t i = 0; i < s->n; i++) {
            if (!use[i])
                continue;
            if (started++)
                smelt_tile_axpy(tile, i, coef[i], out);
            else
                smelt_tile_scale(tile, i, coef[i], out);
        }
        return;
    case FORM_DELTA: {
        const smelt_kernels *k = tile->k;
        const float *base = smelt_tile_f32(tile, 0);
        for (size_t j = 0; j < s->m; j++) {
            const float *tau = working_vector(s, tile, j, base);
            if (started++)
                k->axpy(out, tau, coef[s->first + j], tile->n);
            else
                k->scale(out, tau, coef[s->first + j], tile->n);
        }
        k->axpy(out, base, 1.0f, tile->n); /* 1·θ₀ is exact: this is (Σ c τ) + θ₀ */
        return;
    }
    }
}

/* A tile of the n elements from `from` on of the inputs `whole` (the tile's or the task's,
 * whose element 0 is at tensor index `index0`); `raw` receives its input pointers. */
static smelt_tile sub_tile(const smelt_tile *tile, const void *const *whole, uint64_t index0,
                           size_t from, size_t n, const void **raw)
{
    smelt_tile sub = *tile;
    for (size_t i = 0; i < tile->ninputs; i++)
        raw[i] = (const uint8_t *)whole[i] + smelt_dtype_span(tile->dtype[i], from);
    sub.raw = raw;
    sub.n = n;
    sub.index0 = index0 + from;
    return sub;
}

/* Where the parts of SPLIT_ROWS's task scratch lie (see rows_scratch_size). */
static vec_results rows_results(const interp_state *s, void *scratch, double **tri, double **g,
                                double **work)
{
    size_t rows = (size_t)(s->task_len / s->vec);
    *tri = scratch;
    *g = *tri + tri_size(s);
    *work = *g + s->m * s->m;
    float *coef = (float *)(*work + WORK_ARRAYS * s->m);
    unsigned char *use = (unsigned char *)(coef + rows * s->n);
    return (vec_results){coef, use, use + rows * s->n};
}

/* At a task's first tile: every row's Gram, accumulated piece by piece (pieces of at most a
 * tile, in index order, as the whole-tensor pass does), then its coefficients. Rows never
 * cross tasks and tasks start at fixed indices, so each row's sums are the same for any thread
 * count or budget. The coefficient functions of the per-row methods cannot fail (ctx NULL). */
static void rows_coefs(const interp_state *s, const smelt_tile *tile)
{
    double *tri, *g, *work;
    vec_results r = rows_results(s, tile->task_scratch, &tri, &g, &work);
    const void *raw[tile->ninputs];
    size_t row = (size_t)s->vec;
    for (size_t v = 0; (v + 1) * row <= tile->task_n; v++) {
        memset(tri, 0, tri_size(s) * sizeof *tri);
        for (size_t at = 0; at < row; at += SMELT_TILE_ELEMS) {
            size_t n = row - at < SMELT_TILE_ELEMS ? row - at : SMELT_TILE_ELEMS;
            smelt_tile piece = sub_tile(tile, tile->task_raw, tile->task_index0, v * row + at, n, raw);
            tile_gram(s, &piece, tri);
        }
        vector_coefs(NULL, s, tri, g, work, &r, v);
    }
}

/* A tile cut at row boundaries, each piece combined with its own row's coefficients. */
static void rows_apply(const interp_state *s, const smelt_tile *tile, float *out)
{
    if (tile->index0 == tile->task_index0)
        rows_coefs(s, tile);
    double *tri, *g, *work;
    vec_results r = rows_results(s, tile->task_scratch, &tri, &g, &work);
    const void *raw[tile->ninputs];
    size_t row = (size_t)s->vec, at = (size_t)(tile->index0 - tile->task_index0);
    for (size_t j = 0; j < tile->n;) {
        size_t v = (at + j) / row, end = (v + 1) * row - at;
        size_t n = (end < tile->n ? end : tile->n) - j;
        smelt_tile piece = sub_tile(tile, tile->raw, tile->index0, j, n, raw);
        apply_form(s, &piece, r.form[v], r.coef + v * s->n, r.use + v * s->n, out + j);
        j += n;
    }
}

/* Per column: apply_form's combination element by element with the element's column's
 * coefficients, in the same order (Σ in input order, then + θ₀ for FORM_DELTA; τ = x − θ₀ in
 * f32 as k->sub forms it), so a column's result equals a whole-tensor merge of that column. */
static void cols_apply(const interp_state *s, const smelt_tile *tile, float *out)
{
    const float *x[s->n];
    for (size_t i = 0; i < s->n; i++)
        x[i] = smelt_tile_f32(tile, i);
    size_t col = (size_t)(tile->index0 % s->vec);
    for (size_t e = 0; e < tile->n; e++) {
        const float *c = s->ccoef + col * s->n;
        const unsigned char *use = s->cuse + col * s->n;
        float acc = 0;
        int started = 0;
        switch ((interp_form)s->cform[col]) {
        case FORM_ZERO:
            break;
        case FORM_INPUTS:
            for (size_t i = 0; i < s->n; i++)
                if (use[i])
                    acc = started++ ? acc + c[i] * x[i][e] : c[i] * x[i][e];
            break;
        case FORM_DELTA:
            for (size_t i = s->first; i < s->n; i++) {
                float tau = x[i][e] - x[0][e];
                acc = started++ ? acc + c[i] * tau : c[i] * tau;
            }
            acc = acc + x[0][e];
            break;
        }
        out[e] = acc;
        if (++col == s->vec)
            col = 0;
    }
}

static void interp_apply(const void *state, const smelt_tile *tile, float *out)
{
    const interp_state *s = state;
    if (s->split == SPLIT_ROWS)
        rows_apply(s, tile, out);
    else if (s->split == SPLIT_COLS)
        cols_apply(s, tile, out);
    else
        apply_form(s, tile, s->form, s->coef, s->use, out);
}

/* nearswap: w = clamp(t / max(|a − b|, 1e-6), 0, 1); out = w·b + (1 − w)·a with a the base.
 * Elementwise, in f32 as mergekit's torch code: no statistics. */
static void nearswap_apply(const void *state, const smelt_tile *tile, float *out)
{
    const interp_state *s = state;
    const float *a = smelt_tile_f32(tile, 0), *b = smelt_tile_f32(tile, 1);
    float t = (float)s->t;
    size_t n = tile->n; /* a local: out's stores could alias tile->n, which kept it scalar */
    for (size_t j = 0; j < n; j++) {
        float d = fabsf(a[j] - b[j]);
        float w = t / smelt_pick_f32(d > 1e-6f, d, 1e-6f);
        w = smelt_pick_f32(0 > w, 0, w); /* clamp to [0, 1]; -0 and NaN stay as they are */
        w = smelt_pick_f32(1 < w, 1, w);
        out[j] = w * b[j] + (1 - w) * a[j];
    }
}

/* ---- the methods -------------------------------------------------------------------------- */

#define DESC(nm, gr, bv) \
    static const interp_desc nm##_desc = {gr, bv, nm##_check, nm##_coefs};
DESC(slerp, 1, 1)
DESC(nuslerp, 1, 0)
DESC(multislerp, 1, 0)
DESC(karcher, 1, 0)
DESC(model_stock, 1, 0)
DESC(passthrough, 0, 0)

#define PREPARE(nm, wp)                                                                      \
    static int nm##_prepare(smelt_ctx *ctx, const smelt_tensor_args *args, void **state)     \
    {                                                                                        \
        return interp_prepare(ctx, args, &nm##_desc, wp, #nm, state);                       \
    }
PREPARE(slerp, -1)
PREPARE(nuslerp, NU_WEIGHT)
PREPARE(multislerp, MS_WEIGHT)
PREPARE(karcher, -1)
PREPARE(model_stock, -1)
PREPARE(passthrough, PT_SCALE)

static int nearswap_prepare(smelt_ctx *ctx, const smelt_tensor_args *args, void **state)
{
    /* Elementwise: the state only carries t. */
    interp_state *s = calloc(1, sizeof *s);
    if (!s)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    int rc = nearswap_check(ctx, args, s);
    if (rc != SMELT_OK) {
        free(s);
        return rc;
    }
    *state = s;
    return SMELT_OK;
}

#define GRAM_METHOD(nm, base, lo, hi)                                                        \
    const smelt_method smelt_method_##nm = {                                                 \
        .name = #nm,                                                                         \
        .params = nm##_params,                                                               \
        .nparams = sizeof nm##_params / sizeof nm##_params[0],                               \
        .base_use = base,                                                                    \
        .min_models = lo,                                                                    \
        .max_models = hi,                                                                    \
        .prepare = nm##_prepare,                                                             \
        .apply = interp_apply,                                                               \
        .task_elems = interp_task_elems,                                                     \
        .passes = interp_passes,                                                             \
        .partial_size = interp_partial_size,                                                 \
        .stats = interp_stats,                                                               \
        .fold = interp_fold,                                                                 \
        .end_pass = interp_end_pass,                                                         \
        .finished = interp_finished,                                                         \
        .release = interp_release,                                                           \
    };

/* slerp: the base_model is the t = 0 end, plus exactly one other model. */
GRAM_METHOD(slerp, SMELT_BASE_REQUIRED, 1, 1)
/* nuslerp: exactly two models; a base, when given, is the origin of their task vectors. */
GRAM_METHOD(nuslerp, SMELT_BASE_OPTIONAL, 2, 2)
GRAM_METHOD(multislerp, SMELT_BASE_OPTIONAL, 1, 0)
/* karcher: mergekit averages the models' tensors themselves; a base only sets the tensor set. */
GRAM_METHOD(karcher, SMELT_BASE_IGNORED, 1, 0)
GRAM_METHOD(model_stock, SMELT_BASE_REQUIRED, 2, 0)

const smelt_method smelt_method_passthrough = {
    .name = "passthrough",
    .params = passthrough_params,
    .nparams = 1,
    .base_use = SMELT_BASE_IGNORED,
    .min_models = 1,
    .max_models = 1,
    .prepare = passthrough_prepare,
    .apply = interp_apply,
    .release = interp_release,
};

const smelt_method smelt_method_nearswap = {
    .name = "nearswap",
    .params = nearswap_params,
    .nparams = 1,
    .base_use = SMELT_BASE_REQUIRED,
    .min_models = 1,
    .max_models = 1,
    .prepare = nearswap_prepare,
    .apply = nearswap_apply,
};
