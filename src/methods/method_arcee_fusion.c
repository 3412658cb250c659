/* arcee_fusion: Arcee's dynamic-threshold fusion of one model into a base, as mergekit implements
 * it in mergekit/merge_methods/arcee_fusion.py (DynamicThresholdFusion, _compute_importance and
 * _arcee_fusion_merge; registered as "arcee_fusion" with a required base and exactly one other
 * model, no parameters). With θ the model and θ₀ the base:
 *
 *   kl_r       = Σ_j p_j · log(p_j / q_j) over row r (the last dimension; a 1-D tensor is one
 *                row), p = softmax(θ_r) + 1e-8, q = softmax(θ₀_r) + 1e-8
 *   importance = |θ − θ₀| · kl_r
 *   threshold  = median + 1.5 · (q3 − q1) of the importances of the whole tensor
 *   out        = θ₀ + (θ − θ₀) · (importance >= threshold)
 *
 * The quartiles. mergekit sorts the importances and takes sorted[(long)(q · (n − 1))] for
 * q = 0.25, 0.5, 0.75: the order statistic at floor(q · (n − 1)), without interpolation (it does
 * not call torch.quantile). For a tensor of more than 10^6 elements it sorts a random sample of
 * 10^6 instead, drawn from torch's unseeded global generator, so its threshold, and its output,
 * change from run to run. smelt takes the same order statistics of the whole tensor, exactly:
 * positions (n − 1) / 4, (n − 1) / 2 and 3 (n − 1) / 4 in integer arithmetic, found by radix
 * select (method_radix.h) over the importances' sign-folded f32 patterns in three histogram
 * passes of 11, 11 and 10 bits; NaNs rank above +Inf, where torch.sort puts them. Up to 10^6
 * elements mergekit's positions are these (q · (n − 1) is exact in f32 there) and the two agree.
 *
 * Fixed-order arithmetic. Each row's KL is computed in double, sequentially in index order: the
 * row maxima, the sums of exp(x − max), then Σ p · log(p / q), rounded once to f32 (the dtype
 * mergekit's KL has). The importance (|θ − θ₀| as an f32 difference, times that f32 KL), the
 * threshold (q3 − q1, times 1.5, plus the median) and the output (θ₀ plus the f32 delta times
 * the 0/1 mask) are f32 operations in mergekit's order. A row's KL depends only on the row, and
 * the quartiles only on the tensor's values, so the output is the same for any thread count,
 * budget or SIMD level.
 *
 * Streaming. The method asks for tasks of whole rows (at most SMELT_TASK_ELEMS elements, at
 * most AF_TASK_ROWS rows), so a task computes its rows' KLs at its first tile; the first
 * statistics pass keeps them in its partial and its folds gather them into the state (4 bytes
 * per row), which the later passes and the apply pass read. Rows longer than SMELT_TASK_ELEMS
 * are refused, as for DELLA. A streamed tensor is read 4 times (3 histogram passes and the
 * merge), a resident one once. */
#include "methods/method.h"
#include "methods/method_radix.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows per task at most: bounds the per-task KL area for tensors of very short rows (a [n, 1]
 * tensor would otherwise get 65536 rows, 256 KB, per task partial). */
#define AF_TASK_ROWS 1024u

/* The three order statistics, by index into the state's arrays. */
enum { Q1, MEDIAN, Q3, NQ };

/* The digits of the 32-bit sign-folded keys, most significant first. */
#define AF_PASSES 3
static const unsigned af_bits[AF_PASSES] = {11, 11, 10};
static const unsigned af_shift[AF_PASSES] = {21, 10, 0};

typedef struct af_state {
    const char *tensor;     /* for messages */
    uint64_t numel;
    uint64_t row;           /* elements per row */
    uint64_t task_rows;     /* rows per task */
    uint64_t nrows;
    uint64_t rank[NQ];      /* while selecting: the position left to find under prefix */
    uint32_t prefix[NQ];    /* key digits found so far; after the last pass the key */
    uint64_t *hist;         /* NQ * SMELT_RADIX_BINS folded counts, from the first fold */
    float *kl;              /* nrows KLs, gathered by pass 0's folds */
    uint64_t folded;        /* tasks folded in pass 0 */
    int nomem;              /* a fold could not allocate: end_pass reports it */
    float threshold;        /* after the last pass */
} af_state;

static void af_finished(void *state)
{
    af_state *s = state;
    free(s->hist);
    free(s->kl);
    s->hist = NULL;
    s->kl = NULL;
}

static void af_release(void *state)
{
    if (state)
        af_finished(state);
    free(state);
}

static int af_prepare(smelt_ctx *ctx, const smelt_tensor_args *args, void **state)
{
    if (!args->has_base || args->ninputs != 2)
        return smelt_fail(ctx, SMELT_E_CONFIG, "method 'arcee_fusion': tensor '%s': needs a "
                          "base_model and exactly one other model", args->tensor);
    /* 1-D tensors are one row; so is a 0-D one (of one element). */
    uint64_t row = args->row_elems ? args->row_elems : args->numel;
    if (row > SMELT_TASK_ELEMS)
        return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "method 'arcee_fusion': tensor '%s': its "
                          "rows of %llu elements are longer than the %u elements that "
                          "arcee_fusion takes the softmax of at once", args->tensor,
                          (unsigned long long)row, SMELT_TASK_ELEMS);
    af_state *s = calloc(1, sizeof *s);
    if (!s)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    s->tensor = args->tensor;
    s->numel = args->numel;
    s->row = row ? row : 1; /* an empty tensor: no task ever runs */
    s->task_rows = SMELT_TASK_ELEMS / s->row;
    if (s->task_rows > AF_TASK_ROWS)
        s->task_rows = AF_TASK_ROWS;
    s->nrows = s->numel / s->row;
    if (s->numel) {
        uint64_t last = s->numel - 1;
        s->rank[Q1] = last / 4;
        s->rank[MEDIAN] = last / 2;
        s->rank[Q3] = 3 * last / 4;
    }
    *state = s;
    return SMELT_OK;
}

static uint64_t af_task_elems(const void *state)
{
    const af_state *s = state;
    return s->task_rows * s->row;
}

static unsigned af_passes(const void *state)
{
    return ((const af_state *)state)->numel ? AF_PASSES : 0;
}

/* Pass 0: one histogram (every quartile's first digit is the same histogram) and the task's
 * rows' KLs after it; passes 1 and 2: a histogram per quartile; the apply pass: nothing. */
static size_t af_partial_size(const void *state, unsigned pass)
{
    const af_state *s = state;
    if (pass == 0)
        return SMELT_RADIX_BINS * sizeof(uint32_t) + s->task_rows * sizeof(float);
    if (pass < AF_PASSES)
        return NQ * SMELT_RADIX_BINS * sizeof(uint32_t);
    return 0;
}

/* Decodes `n` elements of input i of the task from element `at` of the task into dst. */
static void decode_task(const smelt_tile *t, size_t i, size_t at, size_t n, float *dst)
{
    const uint8_t *src = (const uint8_t *)t->task_raw[i] + at * smelt_dtype_size(t->dtype[i]);
    smelt_decode(t->k, dst, src, t->dtype[i], n);
}

/* KL(softmax(θ) + 1e-8 ‖ softmax(θ₀) + 1e-8) of the row of `len` elements at element `at` of
 * the task, in double in index order (see the top of the file). Reads the row in tile-sized
 * pieces three times (maxima, sums, KL) instead of keeping a row-sized copy in the partial. */
static float row_kl(const smelt_tile *t, size_t at, size_t len)
{
    float x[SMELT_TILE_ELEMS], b[SMELT_TILE_ELEMS];
    /* Maxima, by "greater than": a NaN is skipped here but then makes every exp NaN, so the row's
     * KL is NaN, as with torch's NaN-propagating max. */
    float mx = -INFINITY, mb = -INFINITY;
    for (size_t o = 0; o < len; o += SMELT_TILE_ELEMS) {
        size_t n = len - o < SMELT_TILE_ELEMS ? len - o : SMELT_TILE_ELEMS;
        decode_task(t, 1, at + o, n, x);
        decode_task(t, 0, at + o, n, b);
        for (size_t j = 0; j < n; j++) {
            mx = x[j] > mx ? x[j] : mx;
            mb = b[j] > mb ? b[j] : mb;
        }
    }
    double sx = 0, sb = 0;
    for (size_t o = 0; o < len; o += SMELT_TILE_ELEMS) {
        size_t n = len - o < SMELT_TILE_ELEMS ? len - o : SMELT_TILE_ELEMS;
        decode_task(t, 1, at + o, n, x);
        decode_task(t, 0, at + o, n, b);
        for (size_t j = 0; j < n; j++) {
            sx += exp((double)x[j] - (double)mx);
            sb += exp((double)b[j] - (double)mb);
        }
    }
    double kl = 0;
    for (size_t o = 0; o < len; o += SMELT_TILE_ELEMS) {
        size_t n = len - o < SMELT_TILE_ELEMS ? len - o : SMELT_TILE_ELEMS;
        decode_task(t, 1, at + o, n, x);
        decode_task(t, 0, at + o, n, b);
        for (size_t j = 0; j < n; j++) {
            double p = exp((double)x[j] - (double)mx) / sx + 1e-8;
            double q = exp((double)b[j] - (double)mb) / sb + 1e-8;
            kl += p * log(p / q);
        }
    }
    return (float)kl;
}

/* The tile's importances: |θ − θ₀| times the KL of each element's row, kl[r] being the KL of
 * row row0 + r. Leaves the base in scratch slot 0 and θ − θ₀ in slot 1 for apply. */
static void importance(const af_state *s, const smelt_tile *t, const float *kl, uint64_t row0,
                       float *imp)
{
    float *base = t->scratch, *d = t->scratch + SMELT_TILE_ELEMS;
    size_t n = t->n;
    smelt_decode(t->k, base, t->raw[0], t->dtype[0], n);
    smelt_decode(t->k, d, t->raw[1], t->dtype[1], n);
    t->k->sub(d, d, base, n);
    /* Row by row: one KL for each run of the tile that lies in one row. */
    for (size_t j = 0; j < n;) {
        uint64_t r = (t->index0 + j) / s->row;
        size_t end = (size_t)((r + 1) * s->row - t->index0);
        if (end > n)
            end = n;
        float k = kl[r - row0];
        for (; j < end; j++)
            imp[j] = fabsf(d[j]) * k;
    }
}

static void af_stats(const void *state, unsigned pass, const smelt_tile *t, void *partial)
{
    const af_state *s = state;
    float imp[SMELT_TILE_ELEMS];
    uint32_t *hist = partial;
    size_t n = t->n;
    if (pass == 0) {
        /* The task's rows' KLs, once, at its first tile; its later tiles come in index order
         * to the same partial. */
        float *kl = (float *)(hist + SMELT_RADIX_BINS);
        if (t->index0 == t->task_index0)
            for (size_t r = 0; r * s->row < t->task_n; r++)
                kl[r] = row_kl(t, (size_t)(r * s->row), (size_t)s->row);
        importance(s, t, kl, t->task_index0 / s->row, imp);
        for (size_t j = 0; j < n; j++)
            hist[smelt_radix_signed_key(imp[j]) >> af_shift[0]]++;
        return;
    }
    importance(s, t, s->kl, 0, imp);
    unsigned above = af_shift[pass - 1], shift = af_shift[pass];
    uint32_t mask = (1u << af_bits[pass]) - 1;
    uint32_t key[SMELT_TILE_ELEMS];
    for (size_t j = 0; j < n; j++)
        key[j] = smelt_radix_signed_key(imp[j]);
    for (size_t q = 0; q < NQ; q++) {
        uint32_t *h = hist + q * SMELT_RADIX_BINS, prefix = s->prefix[q];
        for (size_t j = 0; j < n; j++)
            if (key[j] >> above == prefix)
                h[key[j] >> shift & mask]++;
    }
}

static void af_fold(void *state, unsigned pass, const void *partial)
{
    af_state *s = state;
    const uint32_t *hist = partial;
    /* Allocated at the tensor's first fold and freed when it is written, so the plan holds no
     * KLs for the tensors not being merged. */
    if (!s->nomem && !s->hist) {
        s->hist = calloc(NQ * SMELT_RADIX_BINS, sizeof *s->hist);
        s->kl = malloc((s->nrows ? s->nrows : 1) * sizeof *s->kl);
        s->nomem = !s->hist || !s->kl;
    }
    if (s->nomem)
        return;
    if (pass == 0) {
        for (unsigned j = 0; j < SMELT_RADIX_BINS; j++)
            s->hist[j] += hist[j];
        uint64_t row0 = s->folded * s->task_rows;
        uint64_t rows = s->nrows - row0 < s->task_rows ? s->nrows - row0 : s->task_rows;
        memcpy(s->kl + row0, hist + SMELT_RADIX_BINS, rows * sizeof *s->kl);
        s->folded++;
        return;
    }
    for (unsigned j = 0; j < NQ * SMELT_RADIX_BINS; j++)
        s->hist[j] += hist[j];
}

static int af_end_pass(smelt_ctx *ctx, void *state, unsigned pass)
{
    af_state *s = state;
    if (s->nomem || !s->hist)
        return smelt_fail(ctx, SMELT_E_NOMEM, "method 'arcee_fusion': tensor '%s': out of "
                          "memory for its quartile statistics", s->tensor);
    if (pass == 0) /* the first digit's histogram is every quartile's */
        for (size_t q = 1; q < NQ; q++)
            memcpy(s->hist + q * SMELT_RADIX_BINS, s->hist, SMELT_RADIX_BINS * sizeof *s->hist);
    for (size_t q = 0; q < NQ; q++)
        smelt_radix_narrow(s->hist + q * SMELT_RADIX_BINS, af_bits[pass], &s->rank[q],
                           &s->prefix[q]);
    if (pass + 1 == AF_PASSES) {
        /* mergekit: median + 1.5 * (q3 - q1), as f32 operations. */
        float q1 = smelt_radix_signed_value(s->prefix[Q1]);
        float median = smelt_radix_signed_value(s->prefix[MEDIAN]);
        float q3 = smelt_radix_signed_value(s->prefix[Q3]);
        float iqr = q3 - q1;
        s->threshold = median + 1.5f * iqr;
        free(s->hist);
        s->hist = NULL;
    }
    return SMELT_OK;
}

static void af_apply(const void *state, const smelt_tile *t, float *out)
{
    const af_state *s = state;
    float imp[SMELT_TILE_ELEMS];
    importance(s, t, s->kl, 0, imp);
    const float *base = t->scratch, *d = t->scratch + SMELT_TILE_ELEMS;
    float threshold = s->threshold;
    /* The mask multiplies, as in mergekit: a dropped delta adds a signed zero (or NaN). */
    for (size_t j = 0; j < t->n; j++)
        out[j] = base[j] + d[j] * (float)(imp[j] >= threshold);
}

const smelt_method smelt_method_arcee_fusion = {
    .name = "arcee_fusion", .params = NULL, .nparams = 0, .base_use = SMELT_BASE_REQUIRED,
    .min_models = 1, .max_models = 1, .prepare = af_prepare, .apply = af_apply,
    .task_elems = af_task_elems, .passes = af_passes, .partial_size = af_partial_size,
    .stats = af_stats, .fold = af_fold, .end_pass = af_end_pass, .finished = af_finished,
    .release = af_release,
};
