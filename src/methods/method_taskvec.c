/* The task-vector family: task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs,
 * breadcrumbs_ties, della, della_linear, metagpt, consensus_ta, consensus_ties and sce, as one
 * routine (mergekit's
 * generalized task arithmetic) with pluggable parts:
 *
 *   d_i   = select(θ_i − θ₀)           none | magnitude top-k | DARE random | breadcrumbs range
 *                                       | DELLA magprune (random, p by rank within the row)
 *                                       | sce's top-variance positions (one mask for all models)
 *   d_i  *= rescale_i                   DARE, DELLA: ‖d‖₁/‖kept‖₁ (mergekit) or 1/p (paper)
 *   w_i   = given | ‖d_i‖² share (metagpt) | mean d_i² share (sce)
 *   mixed = Σ w_i d_i, or with TIES sign election Σ m_i w_i d_i;  div = Σ w_i or Σ m_i w_i
 *   out   = θ₀ + lambda · mixed / div (normalize), zeroed where fewer than k TALL masks agree
 *
 * Exact whole-tensor statistics in bounded memory. A rank range [lo, hi) over the ascending
 * order of (|key| bit pattern, element index) is found by radix select: two histogram passes
 * over the 31 magnitude bits (16/15) narrow each bound to its exact key v and to c, the
 * number of elements equal to v that rank below the bound. A fourth pass counts, per engine
 * task, the elements equal to v, and their prefix sums over tasks (numel/65536 entries per
 * bound) let apply number every equal element by its index with a running per-task count, so
 * exactly hi − lo elements survive whatever the chunking or thread count. That count is a prefix
 * pass (smelt_method.prefix_pass): a streamed tensor runs it over each chunk just before the
 * next pass uses the chunk, so selection costs two reads before apply. Sums (L1
 * rescale, norms) take one more pass with the fixed-association f64 reductions per tile.
 *
 * Random masks come from Philox keyed by (--random-seed, tensor name, input position) and the
 * element index: independent of chunking, threads and SIMD level.
 *
 * DELLA's keep probability depends on each element's magnitude rank within its row, so a row
 * must be seen whole. Rows are short (the last dimension: at most a few ten thousand elements in
 * every LLM), so the method asks the engine for tasks of whole rows (task_elems: the most rows
 * that fit in SMELT_TASK_ELEMS) and refuses rows longer than SMELT_TASK_ELEMS. At a task's first
 * tile it ranks every row of the task once, by a stable LSD radix sort of the 31-bit magnitude
 * patterns (ties in index order), into 16-bit ranks in the task's partial (statistics pass) or
 * task_scratch (apply pass); the task's tiles then draw their masks from those ranks. Memory per
 * task: 2 bytes per element and model plus 16 bytes per row element of sort scratch, whatever
 * the tensor's size; and the result depends only on indices and values. */
#include "methods/method.h"
#include "methods/method_radix.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum sparsifier {
    SPARSE_NONE,
    SPARSE_MAGNITUDE, /* keep the floor(density·n) largest |d| */
    SPARSE_RANDOM,    /* DARE: keep each element with probability density */
    SPARSE_OUTLIERS,  /* breadcrumbs: drop the largest floor(gamma·n) and the smallest */
    SPARSE_MAGPRUNE   /* DELLA: keep with probability (density − ε) + 2ε·(row rank)/(n − 1) */
} sparsifier;

/* DARE and DELLA drop at random, with a per-element keep probability. */
static int random_drop(sparsifier sp) { return sp == SPARSE_RANDOM || sp == SPARSE_MAGPRUNE; }

typedef enum weighting {
    WEIGHTS_GIVEN,
    WEIGHTS_NORM_SHARE, /* metagpt: ‖τ_i‖² / Σ‖τ_k‖² */
    WEIGHTS_SCE         /* sce: mean(d_i²) / Σ mean(d_k²), uniform when that sum < 1e-6 */
} weighting;

typedef struct variant {
    sparsifier sparsify;
    int consensus;  /* TIES sign election */
    weighting weights;
    int tall;       /* consensus_*: keep entries where at least k TALL masks agree */
    int sce;        /* top-variance selection, election on unweighted d, div clamped at 1e-6 */
    const smelt_param_def *params;
    size_t nparams;
    const char *name;
} variant;

/* Radix select over 31-bit magnitude patterns: the digits of each histogram pass. Two wide
 * digits, counted into per-worker histograms (smelt_method.worker_partial_size): one read
 * fewer for a streamed tensor than three 11/10/10-bit digits in per-task partials. */
#define RADIX_PASSES 2
static const unsigned radix_bits[RADIX_PASSES] = {16, 15};
static const unsigned radix_shift[RADIX_PASSES] = {15, 0};
#define RADIX_BINS (1u << 16)
#define FINE_BINS (1u << 15) /* the second digit's bins under one first-digit bin */
/* The first digit's bins around the sample's guess whose second digit HIST0 counts too: a
 * window of 32-bit counts, 128 KiB a bin, for each bound. */
#define WINDOW_MAX 8u

/* SAMPLE guesses, from the tensor's first chunks, which first-digit bins will hold each
 * bound; HIST0 counts the first digit over the whole tensor and, for the elements in the
 * guessed window, the second digit too: when the bound's bin is in the window, HIST0 alone
 * finds its exact key and the fallback HIST1 (the second digit's own pass) is skipped, so a
 * streamed tensor is read twice. A resident tensor's sample is the whole tensor, so its
 * window is exact. */
typedef enum stage { STAGE_SAMPLE, STAGE_HIST0, STAGE_HIST1, STAGE_COUNT, STAGE_SUMS } stage;

/* One end of a rank range: the element at ascending position `rank`. */
typedef struct bound {
    int active;       /* 0: the range has no such end (or sce found it trivial) */
    int upper;        /* 1: keeps positions below it; 0: keeps positions at and above it */
    uint64_t rank;    /* while selecting: the position left to find under `prefix` */
    uint32_t prefix;  /* key bits found so far; after the last digit: the key v itself */
    uint64_t equal;   /* elements equal to v seen by the counting folds so far */
    uint64_t *hist;   /* RADIX_BINS: the folded histogram of the current pass */
    uint64_t *before; /* per task: elements equal to v before the task */
    /* HIST0's window: second-digit counts of first-digit bins [wlo, wlo + wbins), added
     * atomically by the workers (integer counts: the same in any order); NULL when none. */
    uint32_t *window;
    uint32_t wlo, wbins;
    int resolved;     /* HIST0 found the exact key: HIST1 has nothing to do for this bound */
    int whole_sample; /* SAMPLE saw every element: its histogram was the first digit's, so
                         HIST0 counts the second digit under the prefix it found */
} bound;

/* A rank range [lo, hi) over one key (model i's d, or sce's variance). */
typedef struct channel {
    int lo, hi;   /* bound indices, -1 when that end is open */
    int none;     /* the range is empty */
} channel;

typedef struct tv_model {
    float w;
    double density;
    double p_lo, p_span; /* DELLA: keep probability p_lo + p_span · rank / (row − 1) */
    int sparse;     /* density < 1 and a sparsifier is set */
    uint64_t key;   /* Philox key of the DARE mask */
    float scale;    /* L1 rescale of kept entries (1 when none) */
    double sum_abs, sum_abs_kept, sumsq_kept;
} tv_model;

typedef struct tv_state {
    const variant *v;
    const char *tensor;
    size_t n;          /* models, base excluded; input i + 1 is model i */
    uint64_t numel, ntasks;
    int normalize, rescale, by_density;
    int carry;           /* 1: SUMS leaves the random masks for apply (tv_carry_bytes) */
    float lambda, tall_lambda, div_const;
    double k, select_topk;
    stage stages[5];
    uint64_t sample_zeros; /* sce: zero variances in SAMPLE's chunks */
    int sce_ranked;        /* sce: the bound's rank is set (after a whole-tensor sample) */
    unsigned nstages;
    bound *bounds;
    size_t nbounds;
    channel *channels; /* n per-model channels, or one shared (sce) */
    size_t counted;    /* tasks folded in the COUNT pass so far */
    int nomem;         /* a fold could not allocate the bounds' buffers: end_pass reports it */
    uint64_t row;      /* DELLA: elements per row */
    uint64_t task;     /* DELLA: elements per engine task (whole rows); 0 when not ranking */
    tv_model m[];
} tv_state;

static uint32_t mag_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u & 0x7FFFFFFFu;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* The DARE key of input `input` (1-based among the inputs, the base being 0): FNV-1a of the
 * tensor name mixed with the seed and the position, so tensors and models draw independently. */
static uint64_t mask_key(uint64_t seed, const char *tensor, size_t input)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (const unsigned char *p = (const unsigned char *)tensor; *p; p++)
        h = (h ^ *p) * 0x100000001B3ull;
    return splitmix64(seed ^ splitmix64(h ^ (uint64_t)input * 0x9E3779B97F4A7C15ull));
}

static void tv_finished(void *state)
{
    tv_state *s = state;
    for (size_t b = 0; b < s->nbounds; b++) {
        free(s->bounds[b].hist);
        free(s->bounds[b].before);
        free(s->bounds[b].window);
        s->bounds[b].hist = NULL;
        s->bounds[b].before = NULL;
        s->bounds[b].window = NULL;
    }
}

static void tv_release(void *state)
{
    tv_state *s = state;
    if (!s)
        return;
    tv_finished(s);
    free(s->bounds);
    free(s->channels);
    free(s);
}

static double param(const variant *v, const smelt_tensor_args *args, const char *name,
                    size_t input, double fallback)
{
    for (size_t p = 0; p < v->nparams; p++)
        if (strcmp(v->params[p].name, name) == 0)
            return args->values[p][v->params[p].per_model ? input : 0];
    return fallback;
}

static int add_bound(tv_state *s, int upper, uint64_t rank)
{
    bound *b = &s->bounds[s->nbounds];
    b->active = 1;
    b->upper = upper;
    b->rank = rank;
    return (int)s->nbounds++;
}

/* The bounds' histogram and per-task counts exist only while their tensor is being merged:
 * allocated at its first fold, freed when it is written (tv_finished), so the plan does not
 * hold them for every tensor of the model at once. Returns -1 when out of memory. */
static int bound_buffers(tv_state *s)
{
    for (size_t i = 0; i < s->nbounds; i++) {
        bound *b = &s->bounds[i];
        if (!b->hist && !(b->hist = calloc(RADIX_BINS, sizeof *b->hist)))
            return -1;
        if (!b->before && !(b->before = calloc(s->ntasks ? s->ntasks : 1, sizeof *b->before)))
            return -1;
    }
    return 0;
}


/* Sets channel c to keep ascending ranks [lo, hi) of n elements. */
static int set_range(tv_state *s, channel *c, uint64_t lo, uint64_t hi)
{
    c->lo = c->hi = -1;
    c->none = lo >= hi;
    if (c->none)
        return 0;
    if (lo > 0 && (c->lo = add_bound(s, 0, lo)) < 0)
        return -1;
    if (hi < s->numel && (c->hi = add_bound(s, 1, hi)) < 0)
        return -1;
    return 0;
}

static int tv_prepare(const variant *v, smelt_ctx *ctx, const smelt_tensor_args *args,
                      void **state)
{
    if (!args->has_base || args->ninputs < 2)
        return smelt_fail(ctx, SMELT_E_CONFIG, "method '%s': tensor '%s': needs a base_model and "
                          "at least one other model", v->name, args->tensor);
    size_t n = args->ninputs - 1;
    tv_state *s = calloc(1, sizeof *s + n * sizeof(tv_model));
    if (!s)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    s->v = v;
    s->tensor = args->tensor;
    s->n = n;
    s->numel = args->numel;
    s->ntasks = (args->numel + SMELT_TASK_ELEMS - 1) / SMELT_TASK_ELEMS;
    s->normalize = param(v, args, "normalize", 0, 0) != 0;
    s->rescale = param(v, args, "rescale", 0, 0) != 0;
    s->by_density = param(v, args, "rescale_by_density", 0, 0) != 0;
    double lambda = param(v, args, "lambda", 0, 1.0);
    double tall_lambda = param(v, args, "tall_lambda", 0, 0.4);
    s->k = param(v, args, "k", 0, 2.0);
    s->select_topk = param(v, args, "select_topk", 0, 1.0);
    const char *bad = NULL;
    double value = 0;
    /* lambda and tall_lambda are used in f32 (tile math); k is compared with a count. */
    int rc = smelt_check_finite(ctx, v->name, args, SMELT_NO_INPUT, "lambda", lambda,
                                SMELT_NUM_F32);
    if (rc == SMELT_OK)
        rc = smelt_check_finite(ctx, v->name, args, SMELT_NO_INPUT, "tall_lambda", tall_lambda,
                                SMELT_NUM_F32);
    if (rc == SMELT_OK)
        rc = smelt_check_finite(ctx, v->name, args, SMELT_NO_INPUT, "k", s->k, SMELT_NUM_F64);
    if (rc != SMELT_OK) {
        free(s);
        return rc;
    }
    s->lambda = (float)lambda;
    s->tall_lambda = (float)tall_lambda;
    if (!(tall_lambda >= 0))
        bad = "tall_lambda", value = tall_lambda;
    else if (!(s->k >= 0))
        bad = "k", value = s->k;
    else if (!(s->select_topk > 0 && s->select_topk <= 1))
        bad = "select_topk", value = s->select_topk;
    if (bad) {
        free(s);
        return smelt_fail(ctx, SMELT_E_CONFIG, "method '%s': tensor '%s': %s %g is out of range "
                          "(%s)", v->name, args->tensor, bad, value,
                          bad[0] == 's' ? "it must be in (0, 1]" : "it must be >= 0");
    }
    s->channels = calloc(n + 1, sizeof *s->channels);
    s->bounds = calloc(2 * n + 1, sizeof *s->bounds);
    if (!s->channels || !s->bounds) {
        tv_release(s);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    float div = 0;
    double abs_sum = 0;
    for (size_t i = 0; i < n; i++) {
        tv_model *m = &s->m[i];
        const char *model = args->input_names[i + 1];
        double w = param(v, args, "weight", i + 1, 1.0);
        double density = param(v, args, "density", i + 1, 1.0);
        double gamma = param(v, args, "gamma", i + 1, 0.0);
        double epsilon = param(v, args, "epsilon", i + 1, 0.0);
        const char *why = NULL;
        /* The weight is used in f32, alone and times lambda. */
        if ((rc = smelt_check_finite(ctx, v->name, args, i + 1, "weight", w, SMELT_NUM_F32)) ||
            (rc = smelt_check_finite(ctx, v->name, args, i + 1, "weight * lambda",
                                     (double)(float)w * (double)s->lambda, SMELT_NUM_F32))) {
            tv_release(s);
            return rc;
        }
        if (!(density > 0 && density <= 1))
            why = "density", value = density;
        else if (!(gamma >= 0 && gamma <= 1))
            why = "gamma", value = gamma;
        if (why) {
            tv_release(s);
            return smelt_fail(ctx, SMELT_E_CONFIG, "method '%s': model '%s': tensor '%s': %s %g "
                              "is out of range (it must be in (0, 1])", v->name, model,
                              args->tensor, why, value);
        }
        m->w = (float)w;
        m->density = density;
        m->scale = 1.0f;
        m->sparse = v->sparsify != SPARSE_NONE && density < 1;
        if (m->sparse && v->sparsify == SPARSE_MAGPRUNE) {
            /* mergekit's rule: every keep probability must lie strictly inside (0, 1). */
            if (!(density - epsilon > 0 && density + epsilon < 1)) {
                tv_release(s);
                return smelt_fail(ctx, SMELT_E_CONFIG, "method '%s': model '%s': tensor '%s': "
                                  "density %g with epsilon %g is out of range (density - epsilon "
                                  "and density + epsilon must be in (0, 1))", v->name, model,
                                  args->tensor, density, epsilon);
            }
            m->p_lo = density - epsilon;
            m->p_span = 2 * epsilon;
            s->task = 1; /* set to the real task size below */
        }
        m->key = mask_key(args->random_seed, args->tensor, i + 1);
        div = i ? div + m->w : m->w;
        abs_sum += fabs((double)m->w);
        channel *c = &s->channels[i];
        c->lo = c->hi = -1;
        if (!m->sparse || random_drop(v->sparsify))
            continue;
        uint64_t nn = args->numel, lo, hi = nn;
        uint64_t keep = (uint64_t)floor(density * (double)nn);
        if (v->sparsify == SPARSE_MAGNITUDE) {
            lo = nn - keep;
        } else {
            /* mergekit's breadcrumbs: n_bot may not go negative; then fewer outliers go. */
            int64_t top = (int64_t)floor(gamma * (double)nn);
            int64_t bot = (int64_t)nn - (int64_t)keep - top;
            if (bot < 0) {
                top += bot;
                bot = 0;
            }
            lo = (uint64_t)bot;
            hi = nn - (uint64_t)top;
        }
        if (set_range(s, c, lo, hi) != 0) {
            tv_release(s);
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        }
    }
    /* normalize divides by an f32 sum of f32 weights, of all of them or (sign election) of
     * those kept at an element (sce always): finite weights can still sum to an infinity, and dividing by
     * it would zero the merge. Σ|w| bounds every such sum. lambda / divisor is what one delta
     * gets. */
    if (((s->normalize || v->sce) && (rc = smelt_check_finite(ctx, v->name, args, SMELT_NO_INPUT,
                                                  "the sum of the weights' magnitudes", abs_sum,
                                                  SMELT_NUM_F32))) ||
        (s->normalize && fabsf(div) >= 1e-8f &&
         (rc = smelt_check_finite(ctx, v->name, args, SMELT_NO_INPUT,
                                  "lambda / the sum of the weights",
                                  (double)s->lambda / (double)div, SMELT_NUM_F32)))) {
        tv_release(s);
        return rc;
    }
    s->div_const = fabsf(div) < 1e-8f ? 1.0f : div;
    if (s->task) {
        /* 1-D tensors are one row. Rows up to one default task long cover every LLM matrix met
         * so far and keep ranks in 16 bits; longer ones would need a task larger than the
         * engine's buffers are sized for. */
        uint64_t row = args->row_elems ? args->row_elems : args->numel;
        if (row > SMELT_TASK_ELEMS) {
            tv_release(s);
            return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "method '%s': tensor '%s': its rows of "
                              "%llu elements are longer than the %u elements that %s ranks at "
                              "once", v->name, args->tensor, (unsigned long long)row,
                              SMELT_TASK_ELEMS, v->name);
        }
        s->row = row;
        if (s->row == 0)
            s->row = 1; /* an empty tensor: no task ever runs */
        s->task = SMELT_TASK_ELEMS / s->row * s->row;
    }
    if (v->sce && s->select_topk < 1) {
        /* The rank depends on the count of nonzero variances, known after the first pass. */
        channel *c = &s->channels[n];
        c->lo = add_bound(s, 0, 0);
        c->hi = -1;
        if (c->lo < 0) {
            tv_release(s);
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        }
    }
    if (s->nbounds > 0) {
        for (stage st = STAGE_SAMPLE; st <= STAGE_COUNT; st++)
            s->stages[s->nstages++] = st;
    }
    int l1 = 0;
    for (size_t i = 0; i < n; i++)
        l1 |= s->m[i].sparse && random_drop(v->sparsify) && s->rescale && !s->by_density;
    if (l1 || v->weights != WEIGHTS_GIVEN)
        s->stages[s->nstages++] = STAGE_SUMS;
    /* A random drop's masks, drawn (and for DELLA ranked) by SUMS for its sums of kept
     * entries, are the ones apply draws again: a resident tensor's apply reads them back from
     * tile->carry, one bit per model. DELLA dividing by each entry's own keep probability needs
     * the ranks in apply anyway and does not. */
    s->carry = random_drop(v->sparsify) && s->nstages > 0 &&
               s->stages[s->nstages - 1] == STAGE_SUMS && n <= 8 &&
               !(v->sparsify == SPARSE_MAGPRUNE && s->rescale && s->by_density);
    *state = s;
    return SMELT_OK;
}

/* x[j] /= by. x / 2^k is x * 2^-k, bit for bit (both round the same real number), so a
 * power-of-two divisor (sce's 2, 4 or 8 models) costs a multiply, not a division. */
static void divide_all(float *x, size_t n, float by)
{
    int exponent;
    if (frexpf(by, &exponent) == 0.5f) {
        float recip = ldexpf(1.0f, 1 - exponent);
        for (size_t j = 0; j < n; j++)
            x[j] *= recip;
    } else {
        for (size_t j = 0; j < n; j++)
            x[j] /= by;
    }
}

/* Decodes every input of the tile into the worker's scratch: slot 0 the base, slot i the task
 * vector d_i = θ_i − θ₀; with sce also the population variance of the d_i per element. */
static float *load_deltas(const tv_state *s, const smelt_tile *t, float *var)
{
    float *base = t->scratch;
    for (size_t i = 0; i <= s->n; i++)
        smelt_decode(t->k, t->scratch + i * SMELT_TILE_ELEMS, t->raw[i], t->dtype[i], t->n);
    for (size_t i = 1; i <= s->n; i++) {
        float *d = t->scratch + i * SMELT_TILE_ELEMS;
        t->k->sub(d, d, base, t->n);
    }
    if (var) {
        /* Model by model over the tile, so each loop vectorizes (an element's models are a
         * tile apart); every element's sums still add its models in order 1, 2, ..., as one
         * element at a time would. n in a local: var's stores could alias t->n otherwise. */
        float inv = (float)s->n, mean[SMELT_TILE_ELEMS];
        size_t n = t->n;
        const float *d1 = t->scratch + SMELT_TILE_ELEMS;
        memcpy(mean, d1, n * sizeof *mean);
        for (size_t i = 2; i <= s->n; i++) {
            const float *d = t->scratch + i * SMELT_TILE_ELEMS;
            for (size_t j = 0; j < n; j++)
                mean[j] += d[j];
        }
        divide_all(mean, n, inv);
        memset(var, 0, n * sizeof *var);
        for (size_t i = 1; i <= s->n; i++) {
            const float *d = t->scratch + i * SMELT_TILE_ELEMS;
            for (size_t j = 0; j < n; j++) {
                float x = d[j] - mean[j];
                var[j] += x * x;
            }
        }
        divide_all(var, n, inv);
    }
    return base;
}

static float *delta(const smelt_tile *t, size_t model)
{
    return t->scratch + (model + 1) * SMELT_TILE_ELEMS;
}

/* keep[j] (a lane mask: all ones or 0) for channel c over the tile's keys; running[b] counts
 * bound b's equal elements seen earlier in this task (tiles come in index order). */
static void rank_mask(const tv_state *s, const channel *c, const float *key, const smelt_tile *t,
                      uint32_t *running, uint32_t *keep)
{
    if (c->none) {
        memset(keep, 0, t->n * sizeof *keep);
        return;
    }
    uint64_t task = t->index0 / SMELT_TASK_ELEMS;
    const bound *lo = c->lo >= 0 && s->bounds[c->lo].active ? &s->bounds[c->lo] : NULL;
    const bound *hi = c->hi >= 0 && s->bounds[c->hi].active ? &s->bounds[c->hi] : NULL;
    /* The kernel keeps the elements inside the key range and lists those equal to a bound's
     * key (rare: one key value), whose rank among equals is then counted in index order. */
    uint32_t lo_key = lo ? lo->prefix : 0, hi_key = hi ? hi->prefix : UINT32_MAX;
    /* A key no magnitude pattern has (bit 31 set) stands for an open end. */
    uint32_t lo_eq = lo ? lo_key : UINT32_MAX, hi_eq = hi ? hi_key : UINT32_MAX;
    uint32_t tied[SMELT_TILE_ELEMS];
    size_t ntied = t->k->mask_mag_range(keep, tied, key, t->n, lo_key, hi_key, lo_eq, hi_eq);
    for (size_t e = 0; e < ntied; e++) {
        size_t j = tied[e];
        uint32_t m = mag_bits(key[j]);
        if (m == lo_eq && lo->before[task] + running[c->lo]++ < lo->rank)
            keep[j] = 0;
        if (m == hi_eq && hi->before[task] + running[c->hi]++ >= hi->rank)
            keep[j] = 0;
    }
}

/* DELLA's per-task area: the sort scratch of one row (its base as f32, two key and two index
 * buffers), each model's 16-bit ranks for the task's elements, then each model's keep
 * threshold per rank (keep_thresholds). */
static size_t thresholds_offset(const tv_state *s)
{
    return (size_t)(16 * s->row + 2 * s->n * s->task + 3) / 4 * 4;
}

static size_t rank_bytes(const tv_state *s)
{
    return s->task ? thresholds_offset(s) + (size_t)(4 * s->n * s->row) : 0;
}

static uint16_t *ranks_of(const tv_state *s, uint8_t *area, size_t model)
{
    return (uint16_t *)(area + 16 * s->row) + model * s->task;
}

static float *thresholds_of(const tv_state *s, uint8_t *area, size_t model)
{
    return (float *)(area + thresholds_offset(s)) + model * s->row;
}

/* DELLA keeps an entry of rank r when (double)u < p(r), p(r) = p_lo + p_span · r / (row − 1)
 * in double, for its uniform u = k · 2^-24 (k < 2^24 an integer: philox_uniform). That is
 * k < p(r) · 2^24 (a power-of-two scale, exact), so k < ceil(p(r) · 2^24) = K, so u < K · 2^-24,
 * a float (K <= 2^24) compare with the same truth for every u. One table per model and row
 * length: a division per rank, not per element. */
static void keep_thresholds(const tv_state *s, const tv_model *m, float *thr)
{
    double row_last = s->row > 1 ? (double)(s->row - 1) : 0.0;
    for (uint64_t r = 0; r < s->row; r++) {
        double p = m->p_lo + m->p_span * (row_last > 0 ? (double)r / row_last : 0.0);
        thr[r] = (float)(ceil(p * 0x1p24) * 0x1p-24);
    }
}

/* At a task's first tile: every sparsified model's rank of each element within its row, by
 * ascending (|d| bit pattern, index). d is computed exactly as load_deltas computes it, so the
 * ranks are those of the values the tiles will mask. */
static void rank_rows(const tv_state *s, const smelt_tile *t, uint8_t *area)
{
    size_t row = (size_t)s->row;
    float *base = (float *)area;
    uint32_t *key = (uint32_t *)(base + row), *key2 = key + row;
    uint16_t *idx = (uint16_t *)(key2 + row), *idx2 = idx + row;
    for (size_t i = 0; i < s->n; i++)
        if (s->m[i].sparse)
            keep_thresholds(s, &s->m[i], thresholds_of(s, area, i));
    for (size_t r0 = 0; r0 + row <= t->task_n; r0 += row) {
        smelt_decode(t->k, base,
                     (const uint8_t *)t->task_raw[0] + smelt_dtype_span(t->dtype[0], r0),
                     t->dtype[0], row);
        for (size_t i = 0; i < s->n; i++) {
            if (!s->m[i].sparse)
                continue;
            float *d = (float *)key2; /* free until the sort */
            smelt_decode(t->k, d,
                         (const uint8_t *)t->task_raw[i + 1] +
                             smelt_dtype_span(t->dtype[i + 1], r0),
                         t->dtype[i + 1], row);
            t->k->sub(d, d, base, row);
            for (size_t j = 0; j < row; j++)
                key[j] = mag_bits(d[j]);
            const uint16_t *order = smelt_radix_sort_rows(key, key2, idx, idx2, row);
            uint16_t *rank = ranks_of(s, area, i) + r0;
            for (size_t p = 0; p < row; p++)
                rank[order[p]] = (uint16_t)p;
        }
    }
}

/* Applies each model's selection to its d_i in place (dropped entries become +0). Random drops
 * with paper-style rescaling also divide each kept entry by its keep probability here. `area`
 * is DELLA's per-task rank area (NULL for the other methods). */
static void select_tile(const tv_state *s, const smelt_tile *t, const float *var,
                        uint32_t *running, uint8_t *area, int in_apply)
{
    /* keep: lane masks (all ones or 0), 32 bits like the elements they clear, so the loops
     * that make and apply them never pack or widen bytes */
    uint32_t keep[SMELT_TILE_ELEMS];
    uint8_t bits[SMELT_TILE_ELEMS];
    /* SUMS leaves the random masks in carry (tv_carry_bytes); apply reads them back */
    const int carry_in = in_apply && s->carry && t->carry;
    const int carry_out = !in_apply && s->carry && t->carry;
    int shared = s->v->sce && s->select_topk < 1;
    if (shared)
        rank_mask(s, &s->channels[s->n], var, t, running, keep);
    if (s->task && t->index0 == t->task_index0 && !carry_in)
        rank_rows(s, t, area);
    if (carry_out)
        memset(bits, 0, t->n);
    int divide = s->rescale && s->by_density;
    for (size_t i = 0; i < s->n; i++) {
        const tv_model *m = &s->m[i];
        float *d = delta(t, i);
        if (!shared && !m->sparse)
            continue;
        if (carry_in) {
            size_t n = t->n;
            const uint8_t *carry = t->carry;
            for (size_t j = 0; j < n; j++)
                keep[j] = 0u - (uint32_t)(carry[j] >> i & 1);
            if (divide) /* DARE: the one keep probability (DELLA's divide takes no carry) */
                for (size_t j = 0; j < n; j++)
                    d[j] = d[j] / (float)m->density;
        } else if (!shared && s->v->sparsify == SPARSE_RANDOM) {
            float u[SMELT_TILE_ELEMS], density = (float)m->density;
            t->k->philox_uniform(u, m->key, t->index0, t->n);
            /* (double)u < density for a float u is u < the least float >= density: the same
             * truth for every u, in a compare the compiler vectorizes (the widening one it
             * did not). n in a local: keep's stores could alias t->n otherwise. */
            float keep_below = (float)m->density;
            if ((double)keep_below < m->density)
                keep_below = nextafterf(keep_below, INFINITY);
            size_t n = t->n;
            for (size_t j = 0; j < n; j++)
                keep[j] = 0u - (uint32_t)(u[j] < keep_below);
            if (divide)
                for (size_t j = 0; j < t->n; j++)
                    d[j] = d[j] / density;
        } else if (!shared && s->v->sparsify == SPARSE_MAGPRUNE) {
            float u[SMELT_TILE_ELEMS];
            const uint16_t *rank = ranks_of(s, area, i) + (t->index0 - t->task_index0);
            t->k->philox_uniform(u, m->key, t->index0, t->n);
            size_t n = t->n; /* locals, as above */
            if (divide) { /* each kept entry over its own keep probability */
                double p_lo = m->p_lo, p_span = m->p_span;
                double row_last = s->row > 1 ? (double)(s->row - 1) : 0.0;
                for (size_t j = 0; j < n; j++) {
                    double r = row_last > 0 ? (double)rank[j] / row_last : 0.0;
                    double p = p_lo + p_span * r;
                    keep[j] = 0u - (uint32_t)((double)u[j] < p);
                    d[j] = d[j] / (float)p;
                }
            } else {
                const float *thr = thresholds_of(s, area, i);
                for (size_t j = 0; j < n; j++)
                    keep[j] = 0u - (uint32_t)(u[j] < thr[rank[j]]);
            }
        } else if (!shared) {
            rank_mask(s, &s->channels[i], d, t, running, keep);
        }
        /* Dropped entries become +0: clearing every bit of the pattern, branch-free. */
        size_t n = t->n;
        for (size_t j = 0; j < n; j++) {
            uint32_t u;
            memcpy(&u, &d[j], sizeof u);
            u &= keep[j];
            memcpy(&d[j], &u, sizeof u);
        }
        if (carry_out)
            for (size_t j = 0; j < n; j++)
                bits[j] |= (uint8_t)((keep[j] & 1u) << i);
    }
    if (carry_out)
        memcpy(t->carry, bits, t->n);
}

static size_t tv_carry_bytes(const void *state) { return ((const tv_state *)state)->carry; }

static unsigned tv_passes(const void *state) { return ((const tv_state *)state)->nstages; }

/* SAMPLE guesses HIST0's window from the chunks in the buffers; HIST1 is only needed when the
 * bin of some bound fell outside its window; COUNT only numbers the equal elements before
 * each task, which apply (and sce's SUMS) read at that task. */
static smelt_pass_kind tv_pass_kind(const void *state, unsigned pass)
{
    const tv_state *s = state;
    switch (pass < s->nstages ? s->stages[pass] : STAGE_SUMS) {
    case STAGE_SAMPLE: return SMELT_PASS_SAMPLE;
    case STAGE_HIST1: return SMELT_PASS_FALLBACK;
    case STAGE_COUNT: return SMELT_PASS_PREFIX;
    default: return SMELT_PASS_READ;
    }
}

static int tv_pass_needed(const void *state, unsigned pass)
{
    const tv_state *s = state;
    if (pass >= s->nstages || s->stages[pass] != STAGE_HIST1)
        return 1;
    for (size_t b = 0; b < s->nbounds; b++)
        if (s->bounds[b].active && !s->bounds[b].resolved)
            return 1;
    return 0;
}

static size_t sums_offset(const tv_state *s) { return (s->nbounds * sizeof(uint32_t) + 7) / 8 * 8; }

/* Where DELLA's rank area starts in a task's partial (SUMS pass) or task_scratch (apply). */
static size_t rank_offset(const tv_state *s, unsigned pass)
{
    if (pass >= s->nstages)
        return sums_offset(s);
    return sums_offset(s) + 3 * s->n * sizeof(double);
}

static uint8_t *rank_area(const tv_state *s, unsigned pass, void *partial)
{
    return s->task ? (uint8_t *)partial + rank_offset(s, pass) : NULL;
}

static uint64_t tv_task_elems(const void *state) { return ((const tv_state *)state)->task; }

static size_t tv_partial_size(const void *state, unsigned pass)
{
    const tv_state *s = state;
    if (pass >= s->nstages) /* apply: the running counts of equal elements; DELLA's ranks */
        return s->task ? rank_offset(s, pass) + rank_bytes(s) : s->nbounds * sizeof(uint32_t);
    switch (s->stages[pass]) {
    case STAGE_SAMPLE:
    case STAGE_HIST0:
    case STAGE_HIST1: return 0; /* counted per worker (tv_worker_partial_size) */
    case STAGE_COUNT: return s->nbounds * sizeof(uint32_t);
    case STAGE_SUMS: return rank_offset(s, pass) + rank_bytes(s);
    }
    return 0;
}

/* The key a bound ranks: the d of its channel's model, or sce's variance. */
static const float *bound_key(const tv_state *s, size_t b, const smelt_tile *t, const float *var)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->channels[i].lo == (int)b || s->channels[i].hi == (int)b)
            return delta(t, i);
    return var;
}

/* The channel whose key bound b ranks (n: sce's variance). */
static size_t bound_channel(const tv_state *s, size_t b)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->channels[i].lo == (int)b || s->channels[i].hi == (int)b)
            return i;
    return s->n;
}

/* The digit a histogram pass counts for bound b: 0 for the first (no prefix), 1 for the second
 * under the bound's prefix. */
static unsigned hist_digit(const bound *bd, stage st)
{
    return st == STAGE_HIST1 || (st == STAGE_HIST0 && bd->whole_sample);
}

/* The first bound whose histogram in this pass is bound b's own: the same key and digit, and
 * the same prefix where there is one (breadcrumbs' two ends of one model, over its first
 * digit). Its twins are not counted again; the fold adds its counts to each of them. */
static size_t hist_twin(const tv_state *s, size_t b, stage st)
{
    const bound *bd = &s->bounds[b];
    unsigned digit = hist_digit(bd, st);
    for (size_t a = 0; a < b; a++) {
        const bound *ad = &s->bounds[a];
        if (ad->active && !(st == STAGE_HIST1 && ad->resolved) && hist_digit(ad, st) == digit &&
            (digit == 0 || ad->prefix == bd->prefix) && bound_channel(s, a) == bound_channel(s, b))
            return a;
    }
    return b;
}

/* HIST0's second digit for the elements in the bound's window. The window's counts are
 * contiguous (bin wlo's 32768, then the next bin's), so an element's slot is its pattern less
 * wlo << 15. Few elements fall in it, so the atomic adds cost little. */
static void count_window(const bound *bd, const float *key, size_t n)
{
    uint32_t from = bd->wlo << 15, span = bd->wbins << 15;
    for (size_t j = 0; j < n; j++) {
        uint32_t at = mag_bits(key[j]) - from;
        if (at < span)
            __atomic_fetch_add(&bd->window[at], 1u, __ATOMIC_RELAXED);
    }
}

/* COUNT numbers the elements equal to a bound's key only up to the bound: once `rank` of them
 * are behind (the folds of earlier chunks say so), every later one is on the same side of the
 * bound, which the running counts apply compares with the rank tell just as well. */
static int count_settled(const bound *bd) { return !bd->active || bd->equal >= bd->rank; }

static void tv_stats(const void *state, unsigned pass, const smelt_tile *t, void *partial)
{
    const tv_state *s = state;
    if (s->stages[pass] == STAGE_COUNT) {
        size_t b = 0;
        while (b < s->nbounds && count_settled(&s->bounds[b]))
            b++;
        if (b == s->nbounds)
            return; /* nothing left to count: not even a decode */
    }
    float var[SMELT_TILE_ELEMS];
    int need_var = s->v->sce && s->select_topk < 1;
    load_deltas(s, t, need_var ? var : NULL);
    stage st = s->stages[pass];
    if (st <= STAGE_HIST1) {
        uint32_t *hist = t->worker_partial;
        for (size_t b = 0; b < s->nbounds; b++) {
            const bound *bd = &s->bounds[b];
            if (!bd->active || (st == STAGE_HIST1 && bd->resolved))
                continue;
            const float *key = bound_key(s, b, t, var);
            /* HIST0 after a whole sample knows the first digit: it counts the second under it */
            unsigned p = hist_digit(bd, st);
            if (hist_twin(s, b, st) == b)
                t->k->hist_mag(hist + b * RADIX_BINS, key, t->n, bd->prefix,
                               p == 0 ? 32 : radix_shift[p - 1], radix_shift[p], radix_bits[p]);
            if (st == STAGE_HIST0 && bd->window)
                count_window(bd, key, t->n);
        }
        if (st != STAGE_HIST1 && need_var) {
            uint32_t zeros = 0; /* a local: a store through hist could alias var */
            for (size_t j = 0; j < t->n; j++)
                zeros += mag_bits(var[j]) == 0;
            hist[s->nbounds * RADIX_BINS] += zeros;
        }
        return;
    }
    if (st == STAGE_COUNT) {
        uint32_t *count = partial;
        for (size_t b = 0; b < s->nbounds; b++) {
            const bound *bd = &s->bounds[b];
            if (count_settled(bd))
                continue;
            const float *key = bound_key(s, b, t, var);
            /* Locals: count's stores could alias bd->prefix, which kept the loop scalar. */
            uint32_t v = bd->prefix, equal = 0;
            size_t n = t->n;
            for (size_t j = 0; j < n; j++)
                equal += mag_bits(key[j]) == v;
            count[b] += equal;
        }
        return;
    }
    double *sums = (double *)((uint8_t *)partial + sums_offset(s));
    for (size_t i = 0; i < s->n; i++)
        sums[3 * i] += t->k->sum_abs_f64(delta(t, i), t->n);
    select_tile(s, t, var, partial, rank_area(s, pass, partial), 0);
    for (size_t i = 0; i < s->n; i++) {
        sums[3 * i + 1] += t->k->sum_abs_f64(delta(t, i), t->n);
        sums[3 * i + 2] += t->k->sumsq_f64(delta(t, i), t->n);
    }
}

static void tv_fold(void *state, unsigned pass, const void *partial)
{
    tv_state *s = state;
    stage st = s->stages[pass];
    if (s->nomem || bound_buffers(s) != 0) {
        s->nomem = 1;
        return;
    }
    if (st == STAGE_COUNT) {
        const uint32_t *count = partial;
        for (size_t b = 0; b < s->nbounds; b++) {
            s->bounds[b].before[s->counted] = s->bounds[b].equal;
            s->bounds[b].equal += count[b];
        }
        s->counted++;
    } else if (st == STAGE_SUMS) {
        const double *sums = (const double *)((const uint8_t *)partial + sums_offset(s));
        for (size_t i = 0; i < s->n; i++) {
            s->m[i].sum_abs += sums[3 * i];
            s->m[i].sum_abs_kept += sums[3 * i + 1];
            s->m[i].sumsq_kept += sums[3 * i + 2];
        }
    }
}

static size_t tv_worker_partial_size(const void *state, unsigned pass)
{
    const tv_state *s = state;
    if (pass >= s->nstages || s->stages[pass] > STAGE_HIST1)
        return 0;
    return (s->nbounds * RADIX_BINS + 1) * sizeof(uint32_t); /* + sce's zero variances */
}

/* Adds a worker's histograms into the bounds' and clears them: only the digit's bins. */
static void tv_fold_worker(void *state, unsigned pass, void *worker_partial)
{
    tv_state *s = state;
    uint32_t *hist = worker_partial;
    unsigned bins = 1u << radix_bits[s->stages[pass] == STAGE_HIST1];
    if (s->nomem || bound_buffers(s) != 0) {
        s->nomem = 1;
        memset(hist, 0, tv_worker_partial_size(s, pass));
        return;
    }
    stage st = s->stages[pass];
    for (size_t b = 0; b < s->nbounds; b++) { /* a twin adds the counts of its first */
        const bound *bd = &s->bounds[b];
        int counted = bd->active && !(st == STAGE_HIST1 && bd->resolved);
        const uint32_t *h = hist + (counted ? hist_twin(s, b, st) : b) * RADIX_BINS;
        uint64_t *into = s->bounds[b].hist;
        for (unsigned j = 0; j < bins; j++)
            into[j] += h[j];
    }
    memset(hist, 0, s->nbounds * RADIX_BINS * sizeof *hist);
    uint32_t *zeros = hist + s->nbounds * RADIX_BINS;
    if (s->stages[pass] == STAGE_HIST0 && s->v->sce && s->select_topk < 1)
        s->bounds[0].equal += *zeros; /* zero variances */
    if (s->stages[pass] == STAGE_SAMPLE)
        s->sample_zeros += *zeros;
    *zeros = 0;
}

/* mergekit's sce: the top floor(nonzero · select_topk) variances survive. */
static void sce_rank(tv_state *s, uint64_t zeros)
{
    bound *b = &s->bounds[0];
    uint64_t k = (uint64_t)floor((double)(s->numel - zeros) * s->select_topk);
    s->channels[s->n].none = k == 0;
    b->rank = s->numel - k;
    b->active = k > 0 && k < s->numel;
}

/* Picks the digit bin holding position rank; narrows the bound to it. */
static void narrow(bound *b, unsigned p)
{
    smelt_radix_narrow(b->hist, radix_bits[p], &b->rank, &b->prefix);
}

/* After SAMPLE: the first-digit bins whose second digit HIST0 counts for bound b: around the
 * bound's position scaled to its sample (b->hist), give or take 1% of the sample and 4096
 * elements, at most WINDOW_MAX bins (smelt_radix_window). Clears the histogram. Tensors of
 * 2^32 elements or more get no window (its counts are 32-bit): HIST1 runs for them. */
static int choose_window(tv_state *s, bound *b)
{
    if (!b->hist)
        return 0; /* nothing was folded */
    uint64_t m = 0;
    for (unsigned j = 0; j < RADIX_BINS; j++)
        m += b->hist[j];
    if (m > 0 && s->numel <= UINT32_MAX) {
        double rank;
        if (s->v->sce && s->select_topk < 1 && b == &s->bounds[0]) /* its rank comes in HIST0 */
            rank = (double)m - floor((double)(m - s->sample_zeros) * s->select_topk);
        else
            rank = (double)b->rank * (double)m / (double)s->numel;
        smelt_radix_window(b->hist, RADIX_BINS, rank, 0.01 * (double)m + 4096.0, WINDOW_MAX,
                           &b->wlo, &b->wbins);
        b->window = calloc((size_t)b->wbins * FINE_BINS, sizeof *b->window);
    }
    memset(b->hist, 0, RADIX_BINS * sizeof *b->hist);
    return m > 0 && s->numel <= UINT32_MAX && !b->window ? -1 : 0;
}

static int tv_end_pass(smelt_ctx *ctx, void *state, unsigned pass)
{
    tv_state *s = state;
    stage st = s->stages[pass];
    if (s->nomem)
        return smelt_fail(ctx, SMELT_E_NOMEM, "tensor '%s': out of memory for its rank statistics",
                          s->tensor);
    int sce = s->v->sce && s->select_topk < 1;
    if (st == STAGE_HIST0 && sce) {
        if (!s->sce_ranked)
            sce_rank(s, s->bounds[0].equal);
        s->bounds[0].equal = 0; /* COUNT counts in it next */
    }
    if (st == STAGE_SAMPLE) {
        /* Every bound saw the same elements: a sample of all of them is the whole tensor. */
        uint64_t m = 0;
        for (size_t b = 0; b < s->nbounds; b++)
            if (s->bounds[b].active && s->bounds[b].hist) {
                for (unsigned j = 0; j < RADIX_BINS; j++)
                    m += s->bounds[b].hist[j];
                break;
            }
        if (m == s->numel && sce) {
            sce_rank(s, s->sample_zeros);
            s->sce_ranked = 1;
        }
        for (size_t b = 0; b < s->nbounds; b++) {
            bound *bd = &s->bounds[b];
            if (bd->active && m == s->numel) {
                narrow(bd, 0);
                bd->whole_sample = 1;
            } else if (bd->active && choose_window(s, bd) != 0) {
                return smelt_fail(ctx, SMELT_E_NOMEM,
                                  "tensor '%s': out of memory for its rank statistics", s->tensor);
            } else if (bd->hist) {
                memset(bd->hist, 0, RADIX_BINS * sizeof *bd->hist);
            }
        }
    } else if (st == STAGE_HIST0) {
        for (size_t b = 0; b < s->nbounds; b++) {
            bound *bd = &s->bounds[b];
            if (bd->active && bd->whole_sample) {
                narrow(bd, 1);
                bd->resolved = 1;
            } else if (bd->active) {
                narrow(bd, 0);
                uint32_t at = bd->prefix - bd->wlo;
                if (bd->window && at < bd->wbins) {
                    smelt_radix_narrow_u32(bd->window + (size_t)at * FINE_BINS, radix_bits[1],
                                           &bd->rank, &bd->prefix);
                    bd->resolved = 1;
                }
            }
            free(bd->window);
            bd->window = NULL;
        }
    } else if (st == STAGE_HIST1) {
        for (size_t b = 0; b < s->nbounds; b++)
            if (s->bounds[b].active && !s->bounds[b].resolved)
                narrow(&s->bounds[b], 1);
    } else if (st == STAGE_SUMS) {
        double total = 0;
        for (size_t i = 0; i < s->n; i++)
            total += s->v->weights == WEIGHTS_SCE ? s->m[i].sumsq_kept / (double)s->numel
                                                  : s->m[i].sumsq_kept;
        for (size_t i = 0; i < s->n; i++) {
            tv_model *m = &s->m[i];
            if (s->v->weights == WEIGHTS_SCE)
                m->w = fabs(total) < 1e-6 ? (float)(1.0 / (double)s->n)
                                          : (float)(m->sumsq_kept / (double)s->numel / total);
            else if (s->v->weights == WEIGHTS_NORM_SHARE)
                m->w = total > 0 ? (float)(m->sumsq_kept / total) : (float)(1.0 / (double)s->n);
            if (m->sparse && random_drop(s->v->sparsify) && s->rescale && !s->by_density &&
                m->sum_abs >= 1e-7 && m->sum_abs_kept >= 1e-7)
                m->scale = (float)(m->sum_abs / m->sum_abs_kept);
        }
    }
    (void)ctx;
    return SMELT_OK;
}

static void tv_apply(const void *state, const smelt_tile *t, float *out)
{
    const tv_state *s = state;
    const variant *v = s->v;
    size_t n = t->n;
    float var[SMELT_TILE_ELEMS], vote[SMELT_TILE_ELEMS], div[SMELT_TILE_ELEMS];
    const float *base = load_deltas(s, t, v->sce && s->select_topk < 1 ? var : NULL);
    select_tile(s, t, var, t->task_scratch, rank_area(s, s->nstages, t->task_scratch), 1);
    for (size_t i = 0; i < s->n; i++) {
        const tv_model *m = &s->m[i];
        float *d = delta(t, i);
        if (m->sparse && random_drop(v->sparsify) && s->rescale && !s->by_density)
            for (size_t j = 0; j < n; j++)
                d[j] = d[j] * m->scale;
    }
    float *mixed = out;
    if (v->consensus) {
        /* sce elects on the unweighted task vectors, the rest on the weighted ones. */
        for (size_t i = 0; i < s->n; i++) {
            const float *d = delta(t, i);
            float w = v->sce ? 1.0f : s->m[i].w;
            for (size_t j = 0; j < n; j++)
                vote[j] = i ? vote[j] + w * d[j] : w * d[j];
        }
        memset(mixed, 0, n * sizeof *mixed);
        memset(div, 0, n * sizeof *div);
        for (size_t i = 0; i < s->n; i++) {
            float *d = delta(t, i);
            t->k->scale(d, d, s->m[i].w, n);
            t->k->masked_accum(mixed, div, d, vote, s->m[i].w, n);
        }
        if (v->sce) {
            for (size_t j = 0; j < n; j++)
                mixed[j] = mixed[j] / (div[j] > 1e-6f ? div[j] : 1e-6f);
        } else if (s->normalize) {
            /* Two loops: in one, the compiler turned x / 1 into a branch around the division
             * and left the loop scalar. x / 1 is x, so the bits are the same. */
            for (size_t j = 0; j < n; j++)
                div[j] = div[j] == 0 ? 1.0f : div[j];
            for (size_t j = 0; j < n; j++)
                mixed[j] = mixed[j] / div[j];
        }
    } else {
        t->k->scale(mixed, delta(t, 0), s->m[0].w, n);
        for (size_t i = 1; i < s->n; i++)
            t->k->axpy(mixed, delta(t, i), s->m[i].w, n);
        if (s->normalize)
            for (size_t j = 0; j < n; j++)
                mixed[j] = mixed[j] / s->div_const;
    }
    if (s->lambda != 1.0f)
        for (size_t j = 0; j < n; j++)
            mixed[j] = mixed[j] * s->lambda;
    if (v->tall) {
        /* TALL masks compare the unsparsified task vectors with the merged one. */
        float count[SMELT_TILE_ELEMS], tau[SMELT_TILE_ELEMS];
        memset(count, 0, n * sizeof *count);
        for (size_t i = 0; i < s->n; i++) {
            smelt_decode(t->k, tau, t->raw[i + 1], t->dtype[i + 1], n);
            t->k->sub(tau, tau, base, n);
            for (size_t j = 0; j < n; j++)
                count[j] += fabsf(tau[j]) > s->tall_lambda * fabsf(mixed[j] - tau[j]);
        }
        /* count[j] is a whole number <= the models, so (double)count >= k is count >= ceil(k),
         * clamped past the models (exact in f32): a float compare and a bit-mask select,
         * which vectorize (the double compare with a branch did not). */
        float need = (float)(s->k > (double)s->n ? (double)s->n + 1 : ceil(s->k));
        for (size_t j = 0; j < n; j++)
            out[j] = smelt_pick_f32(count[j] >= need, base[j] + mixed[j], base[j]);
        return;
    }
    for (size_t j = 0; j < n; j++)
        out[j] = base[j] + mixed[j];
}

/* Parameters (mergekit's names and defaults; normalize's default differs per method). */
#define P_WEIGHT {"weight", SMELT_PARAM_NUMBER, 1, 1, 0.0}
#define P_DENSITY {"density", SMELT_PARAM_NUMBER, 1, 0, 1.0}
#define P_GAMMA {"gamma", SMELT_PARAM_NUMBER, 1, 0, 0.01}
#define P_NORMALIZE(def) {"normalize", SMELT_PARAM_BOOL, 0, 0, def}
#define P_RESCALE {"rescale", SMELT_PARAM_BOOL, 0, 0, 1.0}
#define P_BY_DENSITY {"rescale_by_density", SMELT_PARAM_BOOL, 0, 0, 0.0}
#define P_LAMBDA {"lambda", SMELT_PARAM_NUMBER, 0, 0, 1.0}
#define P_INT8 {"int8_mask", SMELT_PARAM_BOOL, 0, 0, 0.0}
#define P_K {"k", SMELT_PARAM_NUMBER, 0, 0, 2.0}
#define P_TALL {"tall_lambda", SMELT_PARAM_NUMBER, 0, 0, 0.4}
#define P_EPSILON {"epsilon", SMELT_PARAM_NUMBER, 1, 0, 0.15}

static const smelt_param_def ta_params[] = {P_WEIGHT, P_DENSITY, P_NORMALIZE(0.0), P_LAMBDA, P_INT8};
static const smelt_param_def ties_params[] = {P_WEIGHT, P_DENSITY, P_NORMALIZE(1.0), P_LAMBDA,
                                              P_INT8};
static const smelt_param_def dare_params[] = {P_WEIGHT, P_DENSITY, P_NORMALIZE(0.0), P_RESCALE,
                                              P_BY_DENSITY, P_LAMBDA, P_INT8};
static const smelt_param_def bc_params[] = {P_WEIGHT, P_DENSITY, P_GAMMA, P_NORMALIZE(0.0),
                                            P_LAMBDA, P_INT8};
static const smelt_param_def della_params[] = {P_WEIGHT, P_DENSITY, P_EPSILON, P_NORMALIZE(1.0),
                                               P_RESCALE, P_BY_DENSITY, P_LAMBDA, P_INT8};
static const smelt_param_def della_linear_params[] = {P_WEIGHT, P_DENSITY, P_EPSILON,
                                                      P_NORMALIZE(0.0), P_RESCALE, P_BY_DENSITY,
                                                      P_LAMBDA, P_INT8};
static const smelt_param_def metagpt_params[] = {P_LAMBDA};
static const smelt_param_def cta_params[] = {P_WEIGHT, P_DENSITY, P_NORMALIZE(0.0), P_LAMBDA,
                                             P_INT8, P_K, P_TALL};
static const smelt_param_def cties_params[] = {P_WEIGHT, P_DENSITY, P_NORMALIZE(1.0), P_LAMBDA,
                                               P_INT8, P_K, P_TALL};
static const smelt_param_def sce_params[] = {{"select_topk", SMELT_PARAM_NUMBER, 0, 0, 1.0},
                                             P_INT8};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define VARIANT(id, sp, cons, wt, tall_, sce_, prm)                                            \
    static const variant variant_##id = {sp, cons, wt, tall_, sce_, prm, COUNT(prm), #id};      \
    static int prepare_##id(smelt_ctx *ctx, const smelt_tensor_args *args, void **state)       \
    {                                                                                          \
        return tv_prepare(&variant_##id, ctx, args, state);                                    \
    }                                                                                          \
    const smelt_method smelt_method_##id = {                                                   \
        .name = #id, .params = prm, .nparams = COUNT(prm), .base_use = SMELT_BASE_REQUIRED,     \
        .min_models = 1, .max_models = 0, .prepare = prepare_##id, .apply = tv_apply,          \
        .task_elems = tv_task_elems, .passes = tv_passes, .pass_kind = tv_pass_kind,           \
        .pass_needed = tv_pass_needed,                                                         \
        .partial_size = tv_partial_size, .stats = tv_stats, .fold = tv_fold,                   \
        .worker_partial_size = tv_worker_partial_size, .fold_worker = tv_fold_worker,          \
        .end_pass = tv_end_pass, .carry_bytes = tv_carry_bytes, .finished = tv_finished,      \
        .release = tv_release,                                                                 \
    };

VARIANT(task_arithmetic, SPARSE_NONE, 0, WEIGHTS_GIVEN, 0, 0, ta_params)
VARIANT(ties, SPARSE_MAGNITUDE, 1, WEIGHTS_GIVEN, 0, 0, ties_params)
VARIANT(dare_ties, SPARSE_RANDOM, 1, WEIGHTS_GIVEN, 0, 0, dare_params)
VARIANT(dare_linear, SPARSE_RANDOM, 0, WEIGHTS_GIVEN, 0, 0, dare_params)
VARIANT(breadcrumbs, SPARSE_OUTLIERS, 0, WEIGHTS_GIVEN, 0, 0, bc_params)
VARIANT(breadcrumbs_ties, SPARSE_OUTLIERS, 1, WEIGHTS_GIVEN, 0, 0, bc_params)
VARIANT(della, SPARSE_MAGPRUNE, 1, WEIGHTS_GIVEN, 0, 0, della_params)
VARIANT(della_linear, SPARSE_MAGPRUNE, 0, WEIGHTS_GIVEN, 0, 0, della_linear_params)
VARIANT(metagpt, SPARSE_NONE, 0, WEIGHTS_NORM_SHARE, 0, 0, metagpt_params)
VARIANT(consensus_ta, SPARSE_NONE, 0, WEIGHTS_GIVEN, 1, 0, cta_params)
VARIANT(consensus_ties, SPARSE_MAGNITUDE, 1, WEIGHTS_GIVEN, 1, 0, cties_params)
VARIANT(sce, SPARSE_NONE, 1, WEIGHTS_SCE, 0, 1, sce_params)
