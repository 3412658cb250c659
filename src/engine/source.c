/* Tensor sources: what each input is and whose read serves it; LoRA products (see source.h). */
#include "engine/source.h"

#include "common/util.h"
#include "format/delta.h"

#include <math.h>
#include <string.h>

smelt_source_kind smelt_source_kind_of(const smelt_plan_tensor *pt, size_t i)
{
    if (pt->kind != SMELT_TASK_MERGE || !pt->sources)
        return SMELT_SOURCE_FILE;
    if (pt->sources[i].delta)
        return SMELT_SOURCE_DELTA;
    return pt->sources[i].round_to != SMELT_DT_INVALID ? SMELT_SOURCE_LORA : SMELT_SOURCE_FILE;
}

static const smelt_st_file *file_of(const smelt_plan *plan, const smelt_plan_tensor *pt, size_t i)
{
    return &plan->models[pt->input_model[i]]->files[pt->inputs[i]->file];
}

/* A delta entry stored whole: its bytes come from its frames alone. */
static int reads_nothing(const smelt_plan_tensor *pt, size_t i)
{
    return smelt_source_kind_of(pt, i) == SMELT_SOURCE_DELTA &&
           pt->sources[i].delta->mode == SMELT_DELTA_RAW;
}

size_t smelt_source_reader(const smelt_plan *plan, const smelt_plan_tensor *pt, size_t i)
{
    if (pt->kind != SMELT_TASK_MERGE)
        return i;
    if (reads_nothing(pt, i))
        return SMELT_SOURCE_NO_READ;
    const smelt_st_file *fi = file_of(plan, pt, i);
    if (fi->ino == 0)
        return i; /* no identity known (a file not opened through format/) */
    for (size_t j = 0; j < i; j++) {
        if (reads_nothing(pt, j))
            continue;
        const smelt_st_file *fj = file_of(plan, pt, j);
        if (fj->dev == fi->dev && fj->ino == fi->ino &&
            pt->inputs[j]->offset == pt->inputs[i]->offset &&
            pt->inputs[j]->dtype == pt->inputs[i]->dtype)
            return j;
    }
    return i;
}

uint64_t smelt_source_file_bytes(const smelt_plan *plan, const smelt_plan_tensor *pt, size_t i,
                                 uint64_t count)
{
    if (smelt_source_reader(plan, pt, i) != i)
        return 0;
    return smelt_dtype_span(pt->inputs[i]->dtype, count);
}

/* DoRA's norm pass reads the base weight in blocks of whole rows of about this many elements. */
#define DORA_BLOCK_ELEMS (1u << 20)

static uint64_t dora_features(const smelt_lora_module *m)
{
    return m->transposed ? m->cols : m->rows;
}

static uint64_t dora_block_rows(const smelt_lora_module *m)
{
    uint64_t rows = DORA_BLOCK_ELEMS / m->cols;
    return rows < 1 ? 1 : rows > m->rows ? m->rows : rows;
}

uint64_t smelt_source_lora_factor_bytes(const smelt_lora_module *m)
{
    uint64_t dora = m->magnitude ? dora_features(m) : 0;
    return ((uint64_t)m->rank * (m->rows + m->cols) + dora) * sizeof(float);
}

uint64_t smelt_source_lora_scratch_bytes(const smelt_lora_module *m)
{
    uint64_t copy_b = m->b->numel * sizeof(float);
    if (!m->magnitude)
        return copy_b;
    /* f64 sums, then one block of rows in the widest base dtype (F32). */
    uint64_t norm_pass = dora_features(m) * sizeof(double) +
                         dora_block_rows(m) * m->cols * sizeof(float);
    return norm_pass > copy_b ? norm_pass : copy_b;
}

/* Tensor t of the adapter's weights as f32 into dst. */
static int read_f32(smelt_ctx *ctx, const smelt_lora *lora, const smelt_tensor_info *t, float *dst)
{
    const smelt_st_file *f = &lora->weights->files[t->file];
    unsigned size = smelt_dtype_size(t->dtype);
    /* 2-byte elements are read into the back half and widened front to back: element i's bytes
     * at 2n + 2i are read before the f32 at 4i overwrites them (4i < 2n + 2i for i < n). */
    uint8_t *raw = size == 2 ? (uint8_t *)dst + t->numel * 2 : (uint8_t *)dst;
    int err = smelt_pread_all(f->fd, raw, t->nbytes, t->offset);
    if (err)
        return smelt_fail_errno(ctx, err, "%s: tensor '%s': read failed", f->path, t->name);
    if (size == 2) {
        const smelt_kernels *k = smelt_kernels_get();
        float tile[SMELT_SOURCE_TILE];
        for (uint64_t at = 0; at < t->numel; at += SMELT_SOURCE_TILE) {
            size_t n = t->numel - at < SMELT_SOURCE_TILE ? (size_t)(t->numel - at)
                                                         : SMELT_SOURCE_TILE;
            smelt_decode(k, tile, raw + at * 2, t->dtype, n);
            memcpy(dst + at, tile, n * sizeof *tile);
        }
    }
    return SMELT_OK;
}

int smelt_source_lora_load(smelt_ctx *ctx, const smelt_lora *lora, const smelt_lora_module *m,
                           float *left, float *right, float *scratch)
{
    /* Plain: left = B^T (rank x out), right = A (rank x in). Transposed (fan_in_fan_out,
     * embeddings): left = A (rank x rows), right = B^T (rank x cols). B is [n, rank]. */
    float *a_dst = m->transposed ? left : right, *bt = m->transposed ? right : left;
    int rc = read_f32(ctx, lora, m->a, a_dst);
    if (rc == SMELT_OK)
        rc = read_f32(ctx, lora, m->b, scratch);
    if (rc != SMELT_OK)
        return rc;
    uint64_t n = m->b->shape[0];
    for (uint64_t i = 0; i < n; i++)
        for (uint32_t k = 0; k < m->rank; k++)
            bt[(uint64_t)k * n + i] = scratch[i * m->rank + k];
    return SMELT_OK;
}

/* Columns per lora_delta call: four rows of deltas stay in 8 KiB of stack, and the columns of
 * `right` they read (rank x 512 floats) in L2. */
#define LORA_COLS 512u

/* Adds the delta (and DoRA's rescaling) to rows [row, row + nrows) (at most 4) over columns
 * [col, col + len) of out, which holds element (row, col) at out[0] and rows out_stride apart. */
static void add_delta(const smelt_kernels *k, const smelt_lora_module *m, const float *left,
                      const float *right, const float *dora, uint64_t row, size_t nrows,
                      uint64_t col, size_t len, float *out, size_t out_stride)
{
    float delta[4 * LORA_COLS];
    for (size_t c = 0; c < len; c += LORA_COLS) {
        size_t w = len - c < LORA_COLS ? len - c : LORA_COLS;
        k->lora_delta(delta, LORA_COLS, left + row, m->rows, nrows, right + col + c, m->cols,
                      m->rank, w);
        for (size_t i = 0; i < nrows; i++) {
            float *d = delta + i * LORA_COLS, *o = out + i * out_stride + c;
            k->scale(d, d, m->scale, w);
            k->axpy(o, d, 1.0f, w); /* W + delta: 1 * delta is exact */
            if (dora && !m->transposed)
                k->scale(o, o, dora[row + i], w);
            else if (dora)
                for (size_t q = 0; q < w; q++)
                    o[q] *= dora[col + c + q];
        }
    }
}

void smelt_source_lora_apply(const smelt_kernels *k, const smelt_lora_module *m,
                             const float *left, const float *right, const float *dora,
                             const void *raw, smelt_dtype dt, uint64_t index0, size_t n,
                             float *out)
{
    smelt_decode(k, out, raw, dt, n);
    uint64_t row = index0 / m->cols, col = index0 % m->cols;
    size_t j = 0;
    if (col) { /* the rest of a row begun before index0 */
        size_t len = (size_t)(m->cols - col < n ? m->cols - col : n);
        add_delta(k, m, left, right, dora, row++, 1, col, len, out, 0);
        j = len;
    }
    while (n - j >= m->cols) { /* whole rows, four at a time */
        size_t nrows = (size_t)((n - j) / m->cols < 4 ? (n - j) / m->cols : 4);
        add_delta(k, m, left, right, dora, row, nrows, 0, (size_t)m->cols, out + j,
                  (size_t)m->cols);
        j += nrows * (size_t)m->cols;
        row += nrows;
    }
    if (j < n) /* a row that goes on after the span */
        add_delta(k, m, left, right, dora, row, 1, 0, n - j, out + j, 0);
}

/* One block of DoRA's norm pass: rows [row0, row0 + nrows) of the base weight, raw. */
typedef struct dora_job {
    const smelt_kernels *k;
    const smelt_lora_module *m;
    const float *left, *right;
    const uint8_t *raw;
    smelt_dtype dt;
    uint64_t row0, nrows;
    double *sums;
} dora_job;

/* Plain: task t sums row row0 + t. Transposed: task t sums columns [t * TILE, (t + 1) * TILE)
 * over the block's rows in order. Either way one task owns each feature's sum. */
static void dora_task(void *arg, size_t task, unsigned worker)
{
    (void)worker;
    const dora_job *job = arg;
    const smelt_lora_module *m = job->m;
    float v[SMELT_SOURCE_TILE];
    uint64_t first = m->transposed ? 0 : task, last = m->transposed ? job->nrows : task + 1;
    uint64_t col0 = m->transposed ? (uint64_t)task * SMELT_SOURCE_TILE : 0;
    uint64_t col1 = m->transposed && col0 + SMELT_SOURCE_TILE < m->cols ? col0 + SMELT_SOURCE_TILE
                                                                        : m->cols;
    for (uint64_t r = first; r < last; r++)
        for (uint64_t c = col0; c < col1; c += SMELT_SOURCE_TILE) {
            size_t n = col1 - c < SMELT_SOURCE_TILE ? (size_t)(col1 - c) : SMELT_SOURCE_TILE;
            uint64_t in_block = r * m->cols + c;
            smelt_source_lora_apply(job->k, m, job->left, job->right, NULL,
                                    job->raw + smelt_dtype_span(job->dt, in_block), job->dt,
                                    (job->row0 + r) * m->cols + c, n, v);
            double *sum = m->transposed ? job->sums + c : job->sums + job->row0 + r;
            for (size_t q = 0; q < n; q++) {
                double x = v[q];
                if (m->transposed)
                    sum[q] += x * x;
                else
                    *sum += x * x;
            }
        }
}

int smelt_source_dora_prepare(smelt_ctx *ctx, const smelt_kernels *k, smelt_pool *pool,
                              const smelt_lora *lora, const smelt_lora_module *m,
                              const float *left, const float *right, const smelt_st_file *wfile,
                              const smelt_tensor_info *w, void *scratch, float *dora)
{
    int rc = read_f32(ctx, lora, m->magnitude, dora);
    if (rc != SMELT_OK)
        return rc;
    uint64_t features = dora_features(m), block = dora_block_rows(m);
    double *sums = scratch;
    uint8_t *raw = (uint8_t *)(sums + features);
    memset(sums, 0, features * sizeof *sums);
    dora_job job = {k, m, left, right, raw, w->dtype, 0, 0, sums};
    for (uint64_t row0 = 0; row0 < m->rows; row0 += block) {
        job.row0 = row0;
        job.nrows = m->rows - row0 < block ? m->rows - row0 : block;
        uint64_t at = smelt_dtype_span(w->dtype, row0 * m->cols);
        int err = smelt_pread_all(wfile->fd, raw, smelt_dtype_span(w->dtype, job.nrows * m->cols),
                                  w->offset + at);
        if (err)
            return smelt_fail_errno(ctx, err, "%s: tensor '%s': read failed (DoRA's norm pass)",
                                    wfile->path, w->name);
        size_t ntasks = m->transposed
                            ? (size_t)((m->cols + SMELT_SOURCE_TILE - 1) / SMELT_SOURCE_TILE)
                            : (size_t)job.nrows;
        smelt_pool_run(pool, ntasks, dora_task, &job);
    }
    for (uint64_t j = 0; j < features; j++) {
        float factor = (float)((double)dora[j] / sqrt(sums[j]));
        if (!isfinite(factor))
            return smelt_fail(ctx, SMELT_E_FORMAT, "%s: tensor '%s': DoRA's rescaling of output "
                              "feature %llu is not finite (magnitude %g over the norm %g of W + "
                              "delta's %s)", lora->weights->files[0].path, m->target,
                              (unsigned long long)j, (double)dora[j], sqrt(sums[j]),
                              m->transposed ? "column" : "row");
        dora[j] = factor;
    }
    return SMELT_OK;
}

void smelt_source_round(const smelt_kernels *k, float *x, smelt_dtype dt, size_t n)
{
    if (dt == SMELT_DT_F32)
        return;
    uint16_t narrow[SMELT_SOURCE_TILE];
    smelt_encode(k, narrow, x, dt, n);
    smelt_decode(k, x, narrow, dt, n);
}
