/* BASE+DELTA tensor sources (see source.h): the frames of a chunk decoded on the workers and
 * joined, XORed with the base's bytes, into the input's buffer. */
#include "engine/source.h"

#include "common/task_errors.h"
#include "format/delta.h"

#include <stdlib.h>
#include <string.h>

#define NO_FRAME UINT64_MAX
/* Per-worker counters a cache line apart. */
#define COUNTER_STRIDE 8

/* One plan input that is a BASE+DELTA model in some tensor: where its read of a tensor is. */
typedef struct delta_input {
    uint8_t *records;     /* the frame table records of one chunk's frames */
    uint8_t *kept[2];     /* a frame that goes on past a chunk's end, joined (no base) */
    unsigned kept_in;     /* the one the next chunk reads */
    uint64_t kept_frame;  /* the frame held in kept[kept_in], NO_FRAME for none */
    size_t tensor;        /* the tensor being read, the next element and frame it expects */
    uint64_t next_elem, next_frame;
    uint64_t frame_start; /* where next_frame's compressed bytes start */
} delta_input;

/* One pool task: a new frame, or the part of a kept one, for one input. */
typedef struct frame_job {
    const smelt_delta *d;
    const smelt_delta_entry *e;
    uint64_t frame;            /* NO_FRAME: elements [lo, hi) come from the kept frame */
    uint64_t start, end, sum;  /* the frame's compressed bytes and checksum */
    uint64_t frame_elem0;      /* the frame's (or the kept frame's) first element */
    uint64_t lo, hi;           /* the chunk's elements it fills */
    const uint8_t *base;       /* the base's bytes of element lo */
    uint8_t *out;              /* the input's buffer at element lo */
    const uint8_t *kept_src;   /* NO_FRAME: the kept frame */
    uint8_t *keep;             /* a frame going on past the chunk: joined here first */
} frame_job;

struct smelt_delta_sources {
    const smelt_kernels *k;
    size_t ninputs;
    delta_input *inputs;       /* per plan input; records NULL for one never a delta */
    unsigned threads;
    smelt_delta_scratch **scratch;
    smelt_task_errors err;     /* the lowest failed frame job of a chunk */
    uint64_t *worker_bytes;    /* per worker, COUNTER_STRIDE apart: compressed bytes read */
    frame_job *jobs;
    size_t njobs, max_jobs;
    uint64_t bytes_read;       /* records read here plus the workers' bytes collected */
};

static int input_is_delta(const smelt_plan *plan, size_t i)
{
    for (size_t t = 0; t < plan->ntensors; t++) {
        const smelt_plan_tensor *pt = &plan->tensors[t];
        if (i < pt->ninputs && smelt_source_kind_of(pt, i) == SMELT_SOURCE_DELTA)
            return 1;
    }
    return 0;
}

/* The first delta of the plan (every delta frame has SMELT_DELTA_FRAME_ELEMS elements: the
 * attach checks it) and the largest element size of any delta's entries. */
static const smelt_delta *plan_delta(const smelt_plan *plan, unsigned *max_unit)
{
    const smelt_delta *first = NULL;
    *max_unit = 0;
    for (size_t m = 0; m < plan->nmodels; m++) {
        const smelt_delta *d = plan->models[m]->delta;
        for (size_t i = 0; d && i < d->nentries; i++)
            if (d->entries[i].unit > *max_unit)
                *max_unit = d->entries[i].unit;
        if (d && !first)
            first = d;
    }
    return first;
}

/* Frames a chunk of `chunk` elements can touch: those starting in it, and a kept one. */
static uint64_t chunk_frames(uint64_t chunk)
{
    return chunk / SMELT_DELTA_FRAME_ELEMS + 2;
}

uint64_t smelt_delta_sources_bytes(const smelt_plan *plan, unsigned threads, uint64_t chunk)
{
    unsigned unit;
    const smelt_delta *d = plan_delta(plan, &unit);
    if (!d)
        return 0;
    uint64_t frame = (uint64_t)SMELT_DELTA_FRAME_ELEMS * unit, total = 0;
    total += threads * (smelt_delta_scratch_bytes(d, unit) + COUNTER_STRIDE * sizeof(uint64_t));
    for (size_t i = 0; i < plan->ninputs; i++)
        if (input_is_delta(plan, i))
            total += 2 * frame + chunk_frames(chunk) * (SMELT_DELTA_TABLE_RECORD +
                                                        sizeof(frame_job));
    return total;
}

void smelt_delta_sources_free(smelt_delta_sources *ds)
{
    if (!ds)
        return;
    for (size_t i = 0; ds->inputs && i < ds->ninputs; i++) {
        free(ds->inputs[i].records);
        free(ds->inputs[i].kept[0]);
        free(ds->inputs[i].kept[1]);
    }
    for (unsigned w = 0; ds->scratch && w < ds->threads; w++)
        smelt_delta_scratch_free(ds->scratch[w]);
    smelt_task_errors_free(&ds->err);
    free(ds->inputs);
    free(ds->scratch);
    free(ds->worker_bytes);
    free(ds->jobs);
    free(ds);
}

int smelt_delta_sources_new(smelt_ctx *ctx, const smelt_plan *plan, unsigned threads,
                            uint64_t chunk, smelt_delta_sources **out)
{
    *out = NULL;
    unsigned unit;
    const smelt_delta *d = plan_delta(plan, &unit);
    if (!d)
        return SMELT_OK;
    smelt_delta_sources *ds = calloc(1, sizeof *ds);
    if (!ds)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory for the deltas' frames");
    ds->k = smelt_kernels_get();
    ds->ninputs = plan->ninputs;
    ds->threads = threads;
    size_t frame = (size_t)SMELT_DELTA_FRAME_ELEMS * unit, per_chunk = chunk_frames(chunk);
    int ok = smelt_task_errors_init(ctx, &ds->err, threads) == SMELT_OK &&
             (ds->inputs = calloc(plan->ninputs, sizeof *ds->inputs)) &&
             (ds->scratch = calloc(threads, sizeof *ds->scratch)) &&
             (ds->worker_bytes = calloc((size_t)threads * COUNTER_STRIDE, sizeof(uint64_t)));
    for (size_t i = 0; ok && i < plan->ninputs; i++) {
        delta_input *in = &ds->inputs[i];
        if (!input_is_delta(plan, i))
            continue;
        ds->max_jobs += per_chunk;
        ok = (in->records = malloc(per_chunk * SMELT_DELTA_TABLE_RECORD)) &&
             (in->kept[0] = malloc(frame)) && (in->kept[1] = malloc(frame));
    }
    ok = ok && (ds->jobs = calloc(ds->max_jobs, sizeof *ds->jobs));
    for (unsigned w = 0; ok && w < threads; w++)
        ok = (ds->scratch[w] = smelt_delta_scratch_new(d, unit)) != NULL;
    if (!ok) {
        smelt_delta_sources_free(ds);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory for the deltas' frames");
    }
    *out = ds;
    return SMELT_OK;
}

uint64_t smelt_delta_sources_bytes_read(const smelt_delta_sources *ds)
{
    return ds ? ds->bytes_read : 0;
}

static void frame_task(void *arg, size_t task, unsigned worker)
{
    smelt_delta_sources *ds = arg;
    const frame_job *job = &ds->jobs[task];
    const unsigned unit = job->e->unit;
    const size_t n = (size_t)(job->hi - job->lo);
    if (job->frame == NO_FRAME) { /* bytes of a kept frame: a unit-1 join is a XOR */
        const uint8_t *src = job->kept_src + (job->lo - job->frame_elem0) * unit;
        ds->k->delta_join(job->out, src, n * unit, n * unit, 1, job->base);
        return;
    }
    const uint8_t *planes;
    int rc = smelt_delta_decode_frame(ds->err.scratch[worker], job->d, job->e, job->frame, job->start,
                                      job->end, job->sum, ds->scratch[worker], &planes);
    ds->worker_bytes[(size_t)worker * COUNTER_STRIDE] += job->end - job->start;
    if (rc != SMELT_OK) {
        smelt_task_failed(&ds->err, worker, task);
        return;
    }
    const size_t frame_n = (size_t)smelt_delta_frame_elems(job->d, job->e, job->frame);
    if (job->keep) /* the whole frame, for the chunks after this one */
        ds->k->delta_join(job->keep, planes, frame_n, frame_n, unit, NULL);
    ds->k->delta_join(job->out, planes, frame_n, n, unit, job->base);
}

/* Queues input i's frame jobs for elements [start, end) of its entry e and reads the records
 * of the frames that start there. */
static int plan_input(smelt_ctx *ctx, smelt_delta_sources *ds, size_t i, const smelt_delta *d,
                      const smelt_delta_entry *e, size_t tensor, uint64_t start, uint64_t end,
                      const uint8_t *base, uint8_t *out)
{
    delta_input *in = &ds->inputs[i];
    const uint64_t fe = d->frame_elems;
    if (start == 0) { /* a new read of the tensor */
        in->tensor = tensor;
        in->next_elem = in->next_frame = in->frame_start = 0;
        in->kept_frame = NO_FRAME;
    } else if (in->tensor != tensor || in->next_elem != start) {
        return smelt_fail(ctx, SMELT_E_INTERNAL, "tensor '%s': its delta's chunk at %llu came "
                          "out of order", e->name, (unsigned long long)start);
    }
    uint64_t first = in->next_frame, last = (end + fe - 1) / fe;
    if (last > e->nframes)
        last = e->nframes;
    if (last < first)
        last = first;
    int rc = smelt_delta_read_table(ctx, d, e, first, last, in->records);
    if (rc != SMELT_OK)
        return rc;
    ds->bytes_read += (last - first) * SMELT_DELTA_TABLE_RECORD;
    const unsigned unit = e->unit;
    if (start < first * fe) { /* the chunk begins inside the frame kept by the one before */
        if (in->kept_frame == NO_FRAME || in->kept_frame + 1 != first)
            return smelt_fail(ctx, SMELT_E_INTERNAL, "tensor '%s': the delta frame before "
                              "element %llu was not kept", e->name, (unsigned long long)start);
        uint64_t hi = first * fe < end ? first * fe : end;
        ds->jobs[ds->njobs++] = (frame_job){
            .d = d, .e = e, .frame = NO_FRAME, .frame_elem0 = in->kept_frame * fe, .lo = start,
            .hi = hi, .base = base, .out = out, .kept_src = in->kept[in->kept_in]};
    }
    uint64_t at = in->frame_start;
    for (uint64_t f = first; f < last; f++) {
        uint64_t frame_end, sum, elem0 = f * fe;
        smelt_delta_get_record(in->records + (f - first) * SMELT_DELTA_TABLE_RECORD, &frame_end,
                               &sum);
        uint64_t frame_hi = elem0 + smelt_delta_frame_elems(d, e, f);
        uint64_t hi = frame_hi < end ? frame_hi : end;
        frame_job job = {.d = d, .e = e, .frame = f, .start = at, .end = frame_end, .sum = sum,
                         .frame_elem0 = elem0, .lo = elem0, .hi = hi,
                         .base = base ? base + (elem0 - start) * unit : NULL,
                         .out = out + (elem0 - start) * unit};
        if (frame_hi > end) { /* goes on into the next chunk */
            in->kept_in ^= 1;
            in->kept_frame = f;
            job.keep = in->kept[in->kept_in];
        }
        ds->jobs[ds->njobs++] = job;
        at = frame_end;
    }
    in->frame_start = at;
    in->next_frame = last;
    in->next_elem = end;
    return SMELT_OK;
}

int smelt_delta_sources_begin(smelt_ctx *ctx, smelt_delta_sources *ds, smelt_pool *pool,
                              const smelt_plan *plan, size_t tensor, uint64_t start,
                              uint64_t count, const uint8_t *const *base, uint8_t *const *out)
{
    const smelt_plan_tensor *pt = &plan->tensors[tensor];
    ds->njobs = 0;
    for (size_t i = 0; i < pt->ninputs; i++) {
        if (smelt_source_kind_of(pt, i) != SMELT_SOURCE_DELTA)
            continue;
        const smelt_delta *d = plan->models[pt->input_model[i]]->delta;
        int rc = plan_input(ctx, ds, i, d, pt->sources[i].delta, tensor, start, start + count,
                            base[i], out[i]);
        if (rc != SMELT_OK)
            return rc;
    }
    smelt_task_errors_reset(&ds->err);
    smelt_pool_start(pool, ds->njobs, frame_task, ds);
    return SMELT_OK;
}

int smelt_delta_sources_end(smelt_ctx *ctx, smelt_delta_sources *ds, smelt_pool *pool)
{
    smelt_pool_finish(pool);
    for (unsigned w = 0; w < ds->threads; w++) {
        ds->bytes_read += ds->worker_bytes[(size_t)w * COUNTER_STRIDE];
        ds->worker_bytes[(size_t)w * COUNTER_STRIDE] = 0;
    }
    /* The lowest failed frame's message, whatever the thread count. */
    return smelt_task_errors_result(ctx, &ds->err);
}
