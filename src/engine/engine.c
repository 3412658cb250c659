#include "engine/engine.h"

#include "common/pool.h"
#include "common/util.h"
#include "engine/source.h"
#include "io/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#define TILE_ELEMS SMELT_TILE_ELEMS
/* Chunks are whole multiples of a task, so task boundaries sit at the same tensor indices
 * whatever the thread count or budget: per-task statistics then fold in one fixed order. */
#define TASK_ELEMS SMELT_TASK_ELEMS
/* Preferred chunk: large sequential reads; a bigger budget buys depth, not size. */
#define CHUNK_ELEMS_TARGET (2u * 1024u * 1024u)
/* Enough chunks to keep a tensor resident through its statistics passes (see tensor_resident)
 * with read-ahead beside it; the budget, not this cap, sets the depth in practice. */
#define MAX_DEPTH 64u
#define BUFFER_ALIGN 4096u

/* Buffer sizes are counted per 256 elements, the largest block of ggml's types: every dtype's
 * bytes for 256 elements are whole, and chunks are whole multiples of 256 elements. */
#define SPAN_UNIT 256u

/* Bytes per SPAN_UNIT elements of the output buffer over the whole plan (COPY chunks use it as
 * bytes). */
static uint64_t out_unit_bytes(const smelt_plan *plan)
{
    uint64_t out_unit = 2 * SPAN_UNIT;
    for (size_t t = 0; t < plan->ntensors; t++) {
        const smelt_plan_tensor *pt = &plan->tensors[t];
        if (pt->kind == SMELT_TASK_MERGE && smelt_dtype_span(pt->out_dtype, SPAN_UNIT) > out_unit)
            out_unit = smelt_dtype_span(pt->out_dtype, SPAN_UNIT);
    }
    return out_unit;
}

/* The LoRA module input i stands for, or NULL. */
static const smelt_lora_module *lora_of(const smelt_plan_tensor *pt, size_t i)
{
    return smelt_source_kind_of(pt, i) == SMELT_SOURCE_LORA ? pt->sources[i].lora : NULL;
}

/* The dtype the methods see input i in: a LoRA input's f32, else the tensor's own. */
static smelt_dtype tile_dtype(const smelt_plan_tensor *pt, size_t i)
{
    return smelt_source_kind_of(pt, i) == SMELT_SOURCE_LORA ? SMELT_DT_F32 : pt->inputs[i]->dtype;
}

/* Bytes per SPAN_UNIT elements of input i's buffer (what the tiles see; a file input that
 * another input's read serves has none) and of its staging buffer (the bytes a derived input's
 * own read brings; 0 when it never reads for itself), and of the output buffer, over the
 * plan. */
static void unit_sizes(const smelt_plan *plan, uint64_t *in_unit, uint64_t *stage_unit,
                       uint64_t *out_unit)
{
    for (size_t i = 0; i < plan->ninputs; i++)
        in_unit[i] = stage_unit[i] = 0;
    for (size_t t = 0; t < plan->ntensors; t++) {
        const smelt_plan_tensor *pt = &plan->tensors[t];
        if (pt->kind != SMELT_TASK_MERGE)
            continue;
        for (size_t i = 0; i < pt->ninputs; i++) {
            int reads = smelt_source_reader(plan, pt, i) == i;
            int file = smelt_source_kind_of(pt, i) == SMELT_SOURCE_FILE;
            uint64_t read = smelt_dtype_span(pt->inputs[i]->dtype, SPAN_UNIT);
            uint64_t seen = smelt_dtype_span(tile_dtype(pt, i), SPAN_UNIT);
            if ((reads || !file) && seen > in_unit[i])
                in_unit[i] = seen;
            if (reads && !file && read > stage_unit[i])
                stage_unit[i] = read;
        }
    }
    *out_unit = out_unit_bytes(plan);
}

/* The f32 factors of the largest LoRA module any input needs, and the scratch to load it, per
 * input: one set each, loaded when a tensor's first chunk is prepared (chunks are prepared in
 * plan order). */
static uint64_t factor_bytes(const smelt_plan *plan, size_t i, uint64_t *scratch)
{
    uint64_t most = 0;
    if (scratch)
        *scratch = 0;
    for (size_t t = 0; t < plan->ntensors; t++) {
        const smelt_lora_module *m = lora_of(&plan->tensors[t], i);
        if (!m)
            continue;
        if (smelt_source_lora_factor_bytes(m) > most)
            most = smelt_source_lora_factor_bytes(m);
        if (scratch && smelt_source_lora_scratch_bytes(m) > *scratch)
            *scratch = smelt_source_lora_scratch_bytes(m);
    }
    return most;
}

static uint64_t all_factor_bytes(const smelt_plan *plan)
{
    uint64_t total = 0, scratch, most_scratch = 0;
    for (size_t i = 0; i < plan->ninputs; i++) {
        total += factor_bytes(plan, i, &scratch);
        if (scratch > most_scratch)
            most_scratch = scratch;
    }
    return total + most_scratch;
}

static unsigned tensor_passes(const smelt_plan *plan, const smelt_plan_tensor *pt)
{
    if (pt->kind != SMELT_TASK_MERGE || !plan->method->passes)
        return 0;
    return plan->method->passes(pt->method_state);
}

/* Elements per task of a tensor: SMELT_TASK_ELEMS unless its method asks for fewer (whole
 * rows). It depends only on the tensor and its parameters, never on threads or budget, so task
 * boundaries stay at fixed tensor indices. */
static uint64_t tensor_task(const smelt_plan *plan, const smelt_plan_tensor *pt)
{
    if (pt->kind != SMELT_TASK_MERGE || !plan->method->task_elems)
        return TASK_ELEMS;
    uint64_t task = plan->method->task_elems(pt->method_state);
    return task > 0 && task <= TASK_ELEMS ? task : TASK_ELEMS;
}

/* Elements (MERGE) or bytes (COPY) the engine moves for a tensor, and the most of them one
 * chunk holds: a chunk holds whole tasks, and no more of them than the partials were sized for
 * (chunk_elements / TASK_ELEMS), so with smaller tasks a chunk is a little shorter. */
static uint64_t chunk_units(const smelt_plan_tensor *pt)
{
    if (pt->kind == SMELT_TASK_MERGE)
        return pt->ref->numel;
    return pt->inputs[0]->nbytes;
}

static uint64_t chunk_cap(const smelt_plan *plan, const smelt_engine_layout *layout,
                          const smelt_plan_tensor *pt)
{
    if (pt->kind != SMELT_TASK_MERGE)
        return layout->chunk_elements / SPAN_UNIT * out_unit_bytes(plan);
    return layout->chunk_elements / TASK_ELEMS * tensor_task(plan, pt);
}

static uint64_t tensor_chunks(const smelt_plan *plan, const smelt_engine_layout *layout,
                              const smelt_plan_tensor *pt)
{
    uint64_t cap = chunk_cap(plan, layout, pt);
    return (chunk_units(pt) + cap - 1) / cap;
}

/* A tensor with statistics passes whose chunks all fit in the buffers at once is read once:
 * its chunks stay in their slots through every statistics pass and the apply pass. The passes
 * visit the chunks in the same order as a streamed tensor's re-reads would, so the statistics,
 * and the output, are the same bits either way. */
static int tensor_resident(const smelt_plan *plan, const smelt_engine_layout *layout,
                           const smelt_plan_tensor *pt)
{
    return tensor_passes(plan, pt) > 0 && chunk_units(pt) > 0 &&
           tensor_chunks(plan, layout, pt) <= layout->depth;
}

unsigned smelt_engine_tensor_reads(const smelt_plan *plan, const smelt_engine_layout *layout,
                                   size_t t)
{
    const smelt_plan_tensor *pt = &plan->tensors[t];
    if (tensor_resident(plan, layout, pt))
        return 1;
    return 1 + tensor_passes(plan, pt);
}

uint64_t smelt_engine_tensor_bytes_to_read(const smelt_plan *plan,
                                           const smelt_engine_layout *layout, size_t t)
{
    const smelt_plan_tensor *pt = &plan->tensors[t];
    uint64_t once = 0;
    if (pt->kind == SMELT_TASK_COPY)
        once = pt->inputs[0]->nbytes;
    else
        for (size_t i = 0; i < pt->ninputs; i++) {
            once += smelt_source_file_bytes(plan, pt, i, pt->ref->numel);
            /* A BASE+DELTA input also reads its delta's frames, once per read of the tensor. */
            if (smelt_source_kind_of(pt, i) == SMELT_SOURCE_DELTA)
                once += pt->sources[i].delta_bytes;
        }
    uint64_t reads = layout ? smelt_engine_tensor_reads(plan, layout, t) : 1;
    uint64_t total = reads * once;
    /* DoRA's norm pass reads its base weight once more (source.h). */
    for (size_t i = 0; layout && pt->kind == SMELT_TASK_MERGE && i < pt->ninputs; i++)
        if (lora_of(pt, i) && lora_of(pt, i)->magnitude)
            total += smelt_dtype_span(pt->inputs[i]->dtype, pt->ref->numel);
    return total;
}

uint64_t smelt_engine_bytes_to_read(const smelt_plan *plan, const smelt_engine_layout *layout)
{
    uint64_t total = 0;
    for (size_t t = 0; t < plan->ntensors; t++)
        total += smelt_engine_tensor_bytes_to_read(plan, layout, t);
    return total;
}

/* The largest per-task partial of any tensor and pass, the apply pass's scratch included (0 when
 * the method keeps none). */
static size_t max_partial_bytes(const smelt_plan *plan)
{
    size_t most = 0;
    for (size_t t = 0; t < plan->ntensors; t++) {
        const smelt_plan_tensor *pt = &plan->tensors[t];
        if (pt->kind != SMELT_TASK_MERGE || !plan->method->partial_size)
            continue;
        for (unsigned p = 0; p <= tensor_passes(plan, pt); p++) {
            size_t bytes = plan->method->partial_size(pt->method_state, p);
            if (bytes > most)
                most = bytes;
        }
    }
    return (most + 63) / 64 * 64; /* each partial on its own cache line */
}

/* Per-worker f32 tiles, plus one statistics partial per task of a chunk of `chunk` elements. */
static uint64_t scratch_bytes(const smelt_plan *plan, unsigned threads, uint64_t chunk)
{
    return (uint64_t)threads * (plan->ninputs + 1) * TILE_ELEMS * sizeof(float) +
           chunk / TASK_ELEMS * max_partial_bytes(plan);
}

int smelt_engine_layout_for(smelt_ctx *ctx, const smelt_plan *plan, uint64_t max_memory,
                            int threads, smelt_engine_layout *layout)
{
    uint64_t in_unit[plan->ninputs + 1], stage_unit[plan->ninputs + 1], out_unit;
    unit_sizes(plan, in_unit, stage_unit, &out_unit);
    uint64_t per_unit = out_unit; /* bytes of one slot per SPAN_UNIT elements of chunk */
    for (size_t i = 0; i < plan->ninputs; i++)
        per_unit += in_unit[i] + stage_unit[i];
    unsigned nthreads = smelt_pool_default_threads(threads);
    /* The partials scale with the chunk (one per task), so they shrink with it on a small
     * budget instead of being reserved for the largest chunk. */
    uint64_t partial = max_partial_bytes(plan);
    uint64_t fixed = scratch_bytes(plan, nthreads, 0) + all_factor_bytes(plan) +
                     smelt_delta_sources_bytes(plan, nthreads, CHUNK_ELEMS_TARGET);
    /* Each slot's buffers may round up to the alignment. */
    uint64_t slot_slack = (plan->ninputs + 1) * BUFFER_ALIGN;
    for (size_t i = 0; i < plan->ninputs; i++)
        if (stage_unit[i])
            slot_slack += BUFFER_ALIGN;
    uint64_t avail = max_memory > fixed ? max_memory - fixed : 0;
    uint64_t chunk = CHUNK_ELEMS_TARGET;
    uint64_t partials = chunk / TASK_ELEMS * partial;
    uint64_t depth =
        avail > partials ? (avail - partials) / (per_unit * (chunk / SPAN_UNIT) + slot_slack) : 0;
    if (depth > MAX_DEPTH)
        depth = MAX_DEPTH;
    if (depth < 2) {
        /* Less than two full chunks: shrink the chunk so reading can still overlap compute. */
        depth = 2;
        uint64_t room = avail > depth * slot_slack ? avail - depth * slot_slack : 0;
        chunk = room / (per_unit * depth * (TASK_ELEMS / SPAN_UNIT) + partial) * TASK_ELEMS;
        if (chunk < TASK_ELEMS) {
            uint64_t need =
                fixed + 2 * (per_unit * (TASK_ELEMS / SPAN_UNIT) + slot_slack) + partial;
            return smelt_fail(ctx, SMELT_E_BUDGET,
                              "a memory budget of %llu bytes cannot hold two chunks of %u "
                              "elements for %zu input%s and the output (%llu bytes are needed "
                              "at %u threads); raise --max-memory",
                              (unsigned long long)max_memory, TASK_ELEMS, plan->ninputs,
                              plan->ninputs == 1 ? "" : "s", (unsigned long long)need, nthreads);
        }
    }
    layout->chunk_elements = chunk;
    layout->depth = (unsigned)depth;
    layout->buffer_bytes = fixed + depth * (per_unit * (chunk / SPAN_UNIT) + slot_slack) +
                           chunk / TASK_ELEMS * partial;
    return SMELT_OK;
}

/* One chunk of one tensor, and the buffers it is read into. */
typedef struct slot {
    int busy;
    size_t tensor;
    unsigned pass;         /* < the tensor's statistics passes: a statistics pass */
    uint64_t start, count; /* elements (MERGE) or bytes (COPY) */
    unsigned pending;      /* reads not yet completed */
    int prepared;          /* derived inputs computed from the staged bytes (prepare_slot) */
    uint8_t **in;          /* per input: its own buffer (NULL when it never needs one) */
    uint8_t **stage;       /* per input: the bytes a derived input reads (NULL if never one) */
    const uint8_t **read;  /* per input, for this chunk: the bytes its reader read */
    const uint8_t **view;  /* per input, for this chunk: what the tiles see */
    uint8_t *out;
} slot;

typedef struct engine {
    smelt_ctx *ctx;
    const smelt_plan *plan;
    const smelt_kernels *k;
    smelt_engine_layout layout;
    uint64_t in_unit[256], stage_unit[256], out_unit; /* buffer bytes per SPAN_UNIT elements */
    float *factors[256];   /* per input: a LoRA module's f32 factors (left, then right) */
    const smelt_lora_module *factors_of[256];
    float *factor_scratch;
    smelt_delta_sources *deltas; /* BASE+DELTA inputs' decoding (source.h), NULL if none */
    slot *decoding;        /* the slot whose delta frames the workers are decoding while this
                              thread writes and reads (begin_deltas), or NULL */
    smelt_ring *ring;
    smelt_pool *pool;
    slot *slots;
    float *scratch;        /* per worker: (ninputs + 1) tiles */
    uint8_t *partials;     /* one per task of a chunk, partial_bytes each */
    size_t partial_bytes;
    size_t cursor_tensor;  /* next chunk to read */
    unsigned cursor_pass;
    uint64_t cursor_pos;
    smelt_progress progress;
    double started, last_report;
    const smelt_engine_options *opts;
    /* The tensor being written: its chunks finish in order, one tensor at a time, so one
     * streaming state hashes every output byte as it goes to the writer. */
    XXH3_state_t *hash;
} engine;

/* What one pool call computes: one chunk of a MERGE tensor. */
typedef struct compute_job {
    engine *e;
    const smelt_plan_tensor *pt;
    const slot *s;
} compute_job;

static void compute_task(void *arg, size_t task, unsigned worker)
{
    const compute_job *job = arg;
    const engine *e = job->e;
    const smelt_plan_tensor *pt = job->pt;
    const smelt_method *method = e->plan->method;
    size_t ninputs = pt->ninputs;
    float *scratch = e->scratch + (size_t)worker * (e->plan->ninputs + 1) * TILE_ELEMS;
    float *result = scratch + ninputs * TILE_ELEMS;
    const void *raw[ninputs];
    smelt_dtype dtype[ninputs];
    for (size_t i = 0; i < ninputs; i++)
        dtype[i] = tile_dtype(pt, i);
    smelt_tile tile = {.k = e->k, .ninputs = ninputs, .raw = raw, .dtype = dtype,
                       .scratch = scratch};
    int stats = job->s->pass < tensor_passes(e->plan, pt);
    size_t partial_size = method->partial_size ? method->partial_size(pt->method_state,
                                                                      job->s->pass) : 0;
    void *partial = partial_size ? e->partials + task * e->partial_bytes : NULL;
    if (partial)
        memset(partial, 0, partial_size);
    tile.task_scratch = stats ? NULL : partial;
    uint64_t task_elems = tensor_task(e->plan, pt);
    uint64_t begin = (uint64_t)task * task_elems;
    uint64_t end = begin + task_elems < job->s->count ? begin + task_elems : job->s->count;
    const void *task_raw[ninputs];
    for (size_t i = 0; i < ninputs; i++)
        task_raw[i] = job->s->view[i] + smelt_dtype_span(dtype[i], begin);
    tile.task_raw = task_raw;
    tile.task_index0 = job->s->start + begin;
    tile.task_n = (size_t)(end - begin);
    for (uint64_t at = begin; at < end; at += TILE_ELEMS) {
        tile.n = end - at < TILE_ELEMS ? (size_t)(end - at) : TILE_ELEMS;
        tile.index0 = job->s->start + at;
        for (size_t i = 0; i < ninputs; i++)
            raw[i] = job->s->view[i] + smelt_dtype_span(dtype[i], at);
        if (stats) {
            method->stats(pt->method_state, job->s->pass, &tile, partial);
            continue;
        }
        method->apply(pt->method_state, &tile, result);
        /* Encoding F32 too gives NaNs one canonical bit pattern whatever the ISA. */
        smelt_encode(e->k, job->s->out + smelt_dtype_span(pt->out_dtype, at), result,
                     pt->out_dtype, tile.n);
    }
}

/* Assigns the next chunk to a free slot and queues its reads. 0 = queued, 1 = nothing left. */
static int start_chunk(engine *e, slot *s, size_t slot_index)
{
    const smelt_plan *plan = e->plan;
    while (e->cursor_tensor < plan->ntensors) {
        const smelt_plan_tensor *done = &plan->tensors[e->cursor_tensor];
        if (e->opts->skip && e->opts->skip[e->cursor_tensor] && e->cursor_pos == 0 &&
            e->cursor_pass == 0) {
            /* A resumed merge: this tensor's bytes are already in place and verified. */
            e->progress.tensors_done++;
            e->progress.bytes_written += done->out_nbytes;
            e->cursor_tensor++;
            continue;
        }
        if (e->cursor_pos < chunk_units(done))
            break;
        e->cursor_pos = 0;
        if (chunk_units(done) > 0 && e->cursor_pass < tensor_passes(plan, done)) {
            e->cursor_pass++; /* read the tensor again for the next pass */
            continue;
        }
        if (chunk_units(done) == 0) {
            e->progress.tensors_done++; /* empty tensors have no chunk */
            if (e->opts->tensor_done) {
                smelt_hash128 empty = smelt_hash_bytes("", 0);
                int rc = e->opts->tensor_done(e->opts->tensor_done_user, e->cursor_tensor, &empty);
                if (rc != SMELT_OK)
                    return rc;
            }
        }
        e->cursor_tensor++;
        e->cursor_pass = 0;
    }
    if (e->cursor_tensor >= plan->ntensors)
        return 1;
    const smelt_plan_tensor *pt = &plan->tensors[e->cursor_tensor];
    uint64_t total = chunk_units(pt);
    uint64_t cap = chunk_cap(plan, &e->layout, pt);
    /* A resident tensor is read once, straight into its apply pass; its statistics passes run
     * over the same buffers (run_resident_stats). */
    if (e->cursor_pos == 0 && e->cursor_pass == 0 && tensor_resident(plan, &e->layout, pt))
        e->cursor_pass = tensor_passes(plan, pt);
    s->busy = 1;
    s->tensor = e->cursor_tensor;
    s->pass = e->cursor_pass;
    s->start = e->cursor_pos;
    s->count = total - s->start < cap ? total - s->start : cap;
    s->pending = 0;
    e->cursor_pos += s->count;
    if (pt->kind == SMELT_TASK_COPY) {
        const smelt_tensor_info *t = pt->inputs[0];
        int fd = plan->models[pt->input_model[0]]->files[t->file].fd;
        if (smelt_ring_queue_read(e->ring, fd, s->out, s->count, t->offset + s->start,
                                  slot_index << 8) != 0)
            return smelt_fail(e->ctx, SMELT_E_INTERNAL, "read ring full");
        s->pending = 1;
        return 0;
    }
    s->prepared = 0;
    for (size_t i = 0; i < pt->ninputs; i++) {
        const smelt_tensor_info *t = pt->inputs[i];
        size_t reader = smelt_source_reader(plan, pt, i);
        int file = smelt_source_kind_of(pt, i) == SMELT_SOURCE_FILE;
        /* An earlier input's read serves this one, or none does (a delta entry stored
         * whole, decoded from its frames alone). */
        s->read[i] = reader == SMELT_SOURCE_NO_READ ? NULL : s->read[reader];
        if (reader == i) {
            uint8_t *dst = file ? s->in[i] : s->stage[i];
            int fd = plan->models[pt->input_model[i]]->files[t->file].fd;
            if (smelt_ring_queue_read(e->ring, fd, dst, smelt_dtype_span(t->dtype, s->count),
                                      t->offset + smelt_dtype_span(t->dtype, s->start),
                                      slot_index << 8 | i) != 0)
                return smelt_fail(e->ctx, SMELT_E_INTERNAL, "read ring full");
            s->read[i] = dst;
            s->pending++;
        }
        s->view[i] = file ? s->read[i] : s->in[i];
    }
    return 0;
}

static int read_failed(engine *e, const smelt_completion *c)
{
    const smelt_plan *plan = e->plan;
    const slot *s = &e->slots[c->tag >> 8];
    const smelt_plan_tensor *pt = &plan->tensors[s->tensor];
    size_t input = c->tag & 0xff;
    const smelt_model *m = plan->models[pt->input_model[pt->kind == SMELT_TASK_COPY ? 0 : input]];
    const smelt_tensor_info *t = pt->inputs[pt->kind == SMELT_TASK_COPY ? 0 : input];
    return smelt_fail_errno(e->ctx, c->error, "%s: tensor '%s': read failed",
                            m->files[t->file].path, t->name);
}

/* Waits until every read of slot s has landed (completions of other slots are counted as they
 * come). */
static int await_slot(engine *e, const slot *s)
{
    while (s->pending > 0) {
        smelt_completion c;
        int got = smelt_ring_wait(e->ring, &c);
        if (got < 0)
            return smelt_fail_errno(e->ctx, -got, "waiting for reads failed");
        if (got == 0)
            return smelt_fail(e->ctx, SMELT_E_INTERNAL, "read ring lost a request");
        if (c.error)
            return read_failed(e, &c);
        e->slots[c.tag >> 8].pending--;
    }
    return SMELT_OK;
}

/* Input data that was consumed will not be read again: let the kernel drop it. */
static void drop_inputs(const engine *e, const slot *s)
{
    const smelt_plan *plan = e->plan;
    const smelt_plan_tensor *pt = &plan->tensors[s->tensor];
    if (pt->kind == SMELT_TASK_COPY) {
        const smelt_tensor_info *t = pt->inputs[0];
        posix_fadvise(plan->models[pt->input_model[0]]->files[t->file].fd,
                      (off_t)(t->offset + s->start), (off_t)s->count, POSIX_FADV_DONTNEED);
        return;
    }
    for (size_t i = 0; i < pt->ninputs; i++) {
        const smelt_tensor_info *t = pt->inputs[i];
        if (smelt_source_reader(plan, pt, i) != i)
            continue;
        posix_fadvise(plan->models[pt->input_model[i]]->files[t->file].fd,
                      (off_t)(t->offset + smelt_dtype_span(t->dtype, s->start)),
                      (off_t)smelt_dtype_span(t->dtype, s->count), POSIX_FADV_DONTNEED);
    }
}

/* What one pool call derives: the derived inputs of one chunk (source.h). */
typedef struct derive_job {
    const engine *e;
    const smelt_plan_tensor *pt;
    const slot *s;
} derive_job;

/* LoRA inputs: W + scale * (B @ A) (or the adapter's copy) as f32, rounded to the base's
 * dtype, for one task's elements. */
static void derive_task(void *arg, size_t task, unsigned worker)
{
    (void)worker;
    const derive_job *job = arg;
    const smelt_plan_tensor *pt = job->pt;
    uint64_t task_elems = tensor_task(job->e->plan, pt);
    uint64_t begin = (uint64_t)task * task_elems;
    uint64_t end = begin + task_elems < job->s->count ? begin + task_elems : job->s->count;
    for (size_t i = 0; i < pt->ninputs; i++) {
        if (smelt_source_kind_of(pt, i) != SMELT_SOURCE_LORA)
            continue;
        const smelt_plan_source *src = &pt->sources[i];
        const smelt_lora_module *m = src->lora;
        const float *left = job->e->factors[i];
        const float *right = m ? left + (uint64_t)m->rank * m->rows : NULL;
        const float *dora = m && m->magnitude ? right + (uint64_t)m->rank * m->cols : NULL;
        smelt_dtype dt = pt->inputs[i]->dtype;
        const uint8_t *raw = job->s->read[i];
        if (m) /* the whole task at once: its rows go through the product four at a time */
            smelt_source_lora_apply(job->e->k, m, left, right, dora,
                                    raw + smelt_dtype_span(dt, begin), dt,
                                    job->s->start + begin, (size_t)(end - begin),
                                    (float *)job->s->in[i] + begin);
        for (uint64_t at = begin; at < end; at += SMELT_SOURCE_TILE) {
            size_t n = end - at < SMELT_SOURCE_TILE ? (size_t)(end - at) : SMELT_SOURCE_TILE;
            float *out = (float *)job->s->in[i] + at;
            if (!m)
                smelt_decode(job->e->k, out, raw + smelt_dtype_span(dt, at), dt, n);
            smelt_source_round(job->e->k, out, src->round_to, n);
        }
    }
}

/* Starts decoding slot s's delta frames on the workers (source.h), and finishes it. */
static int begin_deltas(engine *e, slot *s)
{
    int rc = smelt_delta_sources_begin(e->ctx, e->deltas, e->pool, e->plan, s->tensor, s->start,
                                       s->count, s->read, s->in);
    if (rc == SMELT_OK)
        e->decoding = s;
    return rc;
}

static int end_deltas(engine *e)
{
    if (!e->decoding)
        return SMELT_OK;
    uint64_t before = smelt_delta_sources_bytes_read(e->deltas);
    int rc = smelt_delta_sources_end(e->ctx, e->deltas, e->pool);
    e->progress.bytes_read += smelt_delta_sources_bytes_read(e->deltas) - before;
    e->decoding = NULL;
    return rc;
}

/* A chunk whose reads have landed, before any pass sees it: computes its derived inputs once
 * (a resident tensor's passes all reuse them; a streamed tensor's re-reads derive again, the
 * same bits). Chunks come here in plan order, so each input's factors are loaded once per
 * tensor. */
static int prepare_slot(engine *e, slot *s)
{
    const smelt_plan_tensor *pt = &e->plan->tensors[s->tensor];
    if (s->prepared || pt->kind != SMELT_TASK_MERGE || !pt->sources)
        return SMELT_OK;
    if (e->decoding && e->decoding != s) { /* not expected: prefetch_deltas picks this slot */
        int rc = end_deltas(e);
        if (rc != SMELT_OK)
            return rc;
    }
    int any_lora = 0;
    for (size_t i = 0; i < pt->ninputs; i++) {
        any_lora |= smelt_source_kind_of(pt, i) == SMELT_SOURCE_LORA;
        const smelt_lora_module *m = lora_of(pt, i);
        if (!m || e->factors_of[i] == m)
            continue;
        const smelt_model *model = e->plan->models[pt->input_model[i]];
        float *left = e->factors[i], *right = left + (uint64_t)m->rank * m->rows;
        int rc = smelt_source_lora_load(e->ctx, model->lora, m, left, right, e->factor_scratch);
        if (rc == SMELT_OK && m->magnitude)
            rc = smelt_source_dora_prepare(e->ctx, e->k, e->pool, model->lora, m, left, right,
                                           &model->files[pt->inputs[i]->file], pt->inputs[i],
                                           e->factor_scratch,
                                           right + (uint64_t)m->rank * m->cols);
        if (rc != SMELT_OK)
            return rc;
        e->factors_of[i] = m;
    }
    int rc = e->decoding == s || !e->deltas ? SMELT_OK : begin_deltas(e, s);
    if (rc == SMELT_OK)
        rc = end_deltas(e);
    if (rc != SMELT_OK)
        return rc;
    if (any_lora) {
        derive_job job = {e, pt, s};
        uint64_t task = tensor_task(e->plan, pt);
        smelt_pool_run(e->pool, (size_t)((s->count + task - 1) / task), derive_task, &job);
    }
    s->prepared = 1;
    return SMELT_OK;
}

/* One chunk of statistics pass s->pass: accumulate per task, fold in task order, close the
 * pass at the tensor's last chunk. */
static int stats_chunk(engine *e, const slot *s)
{
    const smelt_plan_tensor *pt = &e->plan->tensors[s->tensor];
    const smelt_method *method = e->plan->method;
    uint64_t task = tensor_task(e->plan, pt);
    size_t ntasks = (size_t)((s->count + task - 1) / task);
    compute_job job = {e, pt, s};
    smelt_pool_run(e->pool, ntasks, compute_task, &job);
    for (size_t t = 0; t < ntasks; t++)
        method->fold(pt->method_state, s->pass, e->partials + t * e->partial_bytes);
    if (s->start + s->count == chunk_units(pt))
        return method->end_pass(e->ctx, pt->method_state, s->pass);
    return SMELT_OK;
}

/* A streamed tensor's statistics chunk: its buffers are free again once it is folded. */
static int finish_stats_chunk(engine *e, slot *s)
{
    const smelt_plan_tensor *pt = &e->plan->tensors[s->tensor];
    int rc = stats_chunk(e, s);
    for (size_t i = 0; i < pt->ninputs; i++)
        e->progress.bytes_read += smelt_source_file_bytes(e->plan, pt, i, s->count);
    s->busy = 0;
    return rc;
}

/* The first chunk of a resident tensor is due: wait until all its chunks (the slots after
 * `first`, in ring order) have arrived, then run every statistics pass over them in tensor
 * order. Their apply pass follows chunk by chunk as for any tensor. Slots after the tensor's
 * keep reading ahead meanwhile. */
static int run_resident_stats(engine *e, unsigned first)
{
    const slot *head = &e->slots[first];
    const smelt_plan_tensor *pt = &e->plan->tensors[head->tensor];
    unsigned nchunks = (unsigned)tensor_chunks(e->plan, &e->layout, pt);
    unsigned depth = e->layout.depth;
    for (unsigned c = 0; c < nchunks; c++) {
        slot *s = &e->slots[(first + c) % depth];
        if (!s->busy || s->tensor != head->tensor)
            return smelt_fail(e->ctx, SMELT_E_INTERNAL,
                              "tensor '%s': chunk %u of %u is not in its buffers", pt->name, c,
                              nchunks);
        int rc = await_slot(e, s);
        if (rc == SMELT_OK)
            rc = prepare_slot(e, s);
        if (rc != SMELT_OK)
            return rc;
    }
    unsigned apply = head->pass;
    for (unsigned p = 0; p < apply; p++)
        for (unsigned c = 0; c < nchunks; c++) {
            slot *s = &e->slots[(first + c) % depth];
            s->pass = p;
            int rc = stats_chunk(e, s);
            s->pass = apply;
            if (rc != SMELT_OK)
                return rc;
        }
    return SMELT_OK;
}

/* While this thread writes chunk s and queues the next reads, the workers can decode the
 * delta frames of the chunk after it (`next`, in ring order): that keeps both cores busy, as
 * the frames are most of the work. prepare_slot(next) then only waits for them. Tensors with
 * LoRA inputs are left to prepare_slot (their factors load in plan order). */
static int prefetch_deltas(engine *e, const slot *s, slot *next)
{
    if (!e->deltas || e->decoding || next == s || !next->busy || next->prepared)
        return SMELT_OK;
    const smelt_plan_tensor *pt = &e->plan->tensors[next->tensor];
    if (pt->kind != SMELT_TASK_MERGE || !pt->sources)
        return SMELT_OK;
    int any_delta = 0;
    for (size_t i = 0; i < pt->ninputs; i++) {
        smelt_source_kind kind = smelt_source_kind_of(pt, i);
        if (kind == SMELT_SOURCE_LORA)
            return SMELT_OK;
        any_delta |= kind == SMELT_SOURCE_DELTA;
    }
    if (!any_delta)
        return SMELT_OK;
    int rc = await_slot(e, next);
    return rc == SMELT_OK ? begin_deltas(e, next) : rc;
}

static int finish_chunk(engine *e, slot *s, slot *next, smelt_out_file *files)
{
    const smelt_plan_tensor *pt = &e->plan->tensors[s->tensor];
    uint64_t out_off, out_len;
    if (pt->kind == SMELT_TASK_MERGE) {
        if (s->pass < tensor_passes(e->plan, pt))
            return finish_stats_chunk(e, s);
        compute_job job = {e, pt, s};
        uint64_t task = tensor_task(e->plan, pt);
        smelt_pool_run(e->pool, (size_t)((s->count + task - 1) / task), compute_task, &job);
        int rc = prefetch_deltas(e, s, next);
        if (rc != SMELT_OK)
            return rc;
        out_off = pt->out_offset + smelt_dtype_span(pt->out_dtype, s->start);
        out_len = smelt_dtype_span(pt->out_dtype, s->count);
        for (size_t i = 0; i < pt->ninputs; i++)
            e->progress.bytes_read += smelt_source_file_bytes(e->plan, pt, i, s->count);
    } else {
        out_off = pt->out_offset + s->start;
        out_len = s->count;
        e->progress.bytes_read += s->count;
    }
    int rc = smelt_out_write(e->ctx, &files[pt->shard], s->out, out_len, out_off);
    if (rc != SMELT_OK)
        return rc;
    if (s->start == 0)
        XXH3_128bits_reset(e->hash);
    XXH3_128bits_update(e->hash, s->out, (size_t)out_len);
    drop_inputs(e, s); /* the last pass: nothing reads these bytes again */
    e->progress.bytes_written += out_len;
    s->busy = 0;
    if (s->start + s->count == chunk_units(pt)) {
        e->progress.tensors_done++;
        if (pt->kind == SMELT_TASK_MERGE && e->plan->method->finished)
            e->plan->method->finished(pt->method_state);
        if (e->opts->tensor_done) {
            XXH128_canonical_t c;
            smelt_hash128 h;
            XXH128_canonicalFromHash(&c, XXH3_128bits_digest(e->hash));
            memcpy(h.b, c.digest, sizeof h.b);
            return e->opts->tensor_done(e->opts->tensor_done_user, s->tensor, &h);
        }
    }
    return SMELT_OK;
}

/* What came in from the input files: through the ring, and the deltas' frames (read by the
 * workers that decode them). */
static uint64_t files_read(const engine *e)
{
    return smelt_ring_bytes_read(e->ring) + smelt_delta_sources_bytes_read(e->deltas);
}

/* Calls the progress callback at most four times a second (and always when final). */
static void report(engine *e, const smelt_engine_options *opts, int final)
{
    if (!opts->progress)
        return;
    double now = smelt_now();
    if (!final && now - e->last_report < 0.25)
        return;
    e->last_report = now;
    e->progress.seconds = now - e->started;
    if (e->ring)
        e->progress.bytes_from_files = files_read(e);
    opts->progress(opts->progress_user, &e->progress);
}

static int alloc_buffers(engine *e)
{
    const smelt_plan *plan = e->plan;
    unsigned depth = e->layout.depth;
    uint64_t chunk = e->layout.chunk_elements;
    e->slots = calloc(depth, sizeof *e->slots);
    if (!e->slots)
        return smelt_fail(e->ctx, SMELT_E_NOMEM, "out of memory");
    for (unsigned d = 0; d < depth; d++) {
        slot *s = &e->slots[d];
        s->in = calloc(plan->ninputs + 1, sizeof *s->in);
        s->stage = calloc(plan->ninputs + 1, sizeof *s->stage);
        s->read = calloc(plan->ninputs + 1, sizeof *s->read);
        s->view = calloc(plan->ninputs + 1, sizeof *s->view);
        s->out = smelt_aligned_alloc(BUFFER_ALIGN, chunk / SPAN_UNIT * e->out_unit);
        if (!s->in || !s->stage || !s->read || !s->view || !s->out)
            return smelt_fail(e->ctx, SMELT_E_NOMEM, "out of memory for the chunk buffers");
        for (size_t i = 0; i < plan->ninputs; i++)
            if ((e->in_unit[i] &&
                 !(s->in[i] = smelt_aligned_alloc(BUFFER_ALIGN, chunk / SPAN_UNIT * e->in_unit[i]))) ||
                (e->stage_unit[i] &&
                 !(s->stage[i] = smelt_aligned_alloc(BUFFER_ALIGN,
                                                     chunk / SPAN_UNIT * e->stage_unit[i]))))
                return smelt_fail(e->ctx, SMELT_E_NOMEM, "out of memory for the chunk buffers");
    }
    uint64_t most_scratch = 0, scratch;
    for (size_t i = 0; i < plan->ninputs; i++) {
        uint64_t bytes = factor_bytes(plan, i, &scratch);
        if (scratch > most_scratch)
            most_scratch = scratch;
        if (bytes && !(e->factors[i] = malloc(bytes)))
            return smelt_fail(e->ctx, SMELT_E_NOMEM, "out of memory for the adapters' factors");
    }
    if (most_scratch && !(e->factor_scratch = malloc(most_scratch)))
        return smelt_fail(e->ctx, SMELT_E_NOMEM, "out of memory for the adapters' factors");
    unsigned threads = smelt_pool_threads(e->pool);
    int rc = smelt_delta_sources_new(e->ctx, plan, threads, chunk, &e->deltas);
    if (rc != SMELT_OK)
        return rc;
    e->scratch = smelt_aligned_alloc(64, scratch_bytes(plan, threads, chunk));
    if (!e->scratch)
        return smelt_fail(e->ctx, SMELT_E_NOMEM, "out of memory");
    e->partial_bytes = max_partial_bytes(plan);
    e->partials = (uint8_t *)(e->scratch + (size_t)threads * (plan->ninputs + 1) * TILE_ELEMS);
    return SMELT_OK;
}

static void free_buffers(engine *e)
{
    for (unsigned d = 0; e->slots && d < e->layout.depth; d++) {
        for (size_t i = 0; i < e->plan->ninputs; i++) {
            if (e->slots[d].in)
                free(e->slots[d].in[i]);
            if (e->slots[d].stage)
                free(e->slots[d].stage[i]);
        }
        free(e->slots[d].in);
        free(e->slots[d].stage);
        free(e->slots[d].read);
        free(e->slots[d].view);
        free(e->slots[d].out);
    }
    free(e->slots);
    free(e->scratch);
    for (size_t i = 0; i < e->plan->ninputs; i++)
        free(e->factors[i]);
    free(e->factor_scratch);
    smelt_delta_sources_free(e->deltas);
}

static int write_headers(engine *e, smelt_out_file *files)
{
    for (size_t s = 0; s < e->plan->nshards; s++) {
        const smelt_plan_shard *sh = &e->plan->shards[s];
        if (files[s].fd < 0)
            continue; /* a partitioned merge: another part writes this shard */
        int rc = smelt_out_write(e->ctx, &files[s], sh->header, sh->header_len, 0);
        if (rc != SMELT_OK)
            return rc;
    }
    return SMELT_OK;
}

static int pipeline(engine *e, smelt_out_file *files, const smelt_engine_options *opts)
{
    unsigned depth = e->layout.depth;
    unsigned oldest = 0, next_free = 0;
    for (;;) {
        /* Keep every free slot reading, in order, so chunks finish in file order. */
        while (!e->slots[next_free].busy) {
            int rc = start_chunk(e, &e->slots[next_free], next_free);
            if (rc < 0)
                return rc;
            if (rc == 1)
                break;
            next_free = (next_free + 1) % depth;
        }
        int err = smelt_ring_submit(e->ring);
        if (err)
            return smelt_fail_errno(e->ctx, err, "cannot submit reads");
        slot *s = &e->slots[oldest];
        if (!s->busy)
            return SMELT_OK; /* nothing in flight and nothing left */
        int rc = await_slot(e, s);
        if (rc == SMELT_OK)
            rc = prepare_slot(e, s);
        if (rc != SMELT_OK)
            return rc;
        const smelt_plan_tensor *pt = &e->plan->tensors[s->tensor];
        if (s->start == 0 && s->pass > 0 && s->pass == tensor_passes(e->plan, pt) &&
            tensor_resident(e->plan, &e->layout, pt)) {
            rc = run_resident_stats(e, oldest);
            if (rc != SMELT_OK)
                return rc;
        }
        rc = finish_chunk(e, s, &e->slots[(oldest + 1) % depth], files);
        if (rc != SMELT_OK)
            return rc;
        oldest = (oldest + 1) % depth;
        if (opts->cancel && *opts->cancel)
            return smelt_fail(e->ctx, SMELT_E_INTERRUPTED, "interrupted");
        report(e, opts, 0);
    }
}

int smelt_engine_run(smelt_ctx *ctx, const smelt_plan *plan, smelt_out_file *files,
                     const smelt_engine_options *opts)
{
    if (plan->ninputs > 255) /* the plan refuses these; the read tag keeps the index in 8 bits */
        return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "at most 255 models can be merged at once");
    engine e = {.ctx = ctx, .plan = plan, .k = smelt_kernels_get(), .opts = opts};
    int rc = smelt_engine_layout_for(ctx, plan, opts->max_memory, opts->threads, &e.layout);
    if (rc != SMELT_OK)
        return rc;
    unit_sizes(plan, e.in_unit, e.stage_unit, &e.out_unit);
    e.progress.tensors_total = plan->ntensors;
    e.progress.bytes_to_read = smelt_engine_bytes_to_read(plan, &e.layout);
    e.progress.bytes_to_write = plan->bytes_to_write;
    e.started = e.last_report = smelt_now();
    e.hash = XXH3_createState();
    if (!e.hash)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    e.pool = smelt_pool_new(opts->threads);
    if (!e.pool) {
        XXH3_freeState(e.hash);
        return smelt_fail(ctx, SMELT_E_NOMEM, "cannot start worker threads");
    }
    rc = smelt_ring_open(ctx, e.layout.depth * (unsigned)(plan->ninputs + 1), opts->force_pread,
                         &e.ring);
    if (rc == SMELT_OK)
        rc = alloc_buffers(&e);
    if (rc == SMELT_OK)
        rc = write_headers(&e, files);
    if (rc == SMELT_OK)
        rc = pipeline(&e, files, opts);
    if (e.decoding) { /* stopped early: the workers still decode; the first error stands */
        smelt_ctx *quiet = smelt_ctx_new();
        int end = smelt_delta_sources_end(quiet ? quiet : ctx, e.deltas, e.pool);
        rc = rc == SMELT_OK ? end : rc;
        smelt_ctx_free(quiet);
    }
    if (e.ring)
        e.progress.bytes_from_files = files_read(&e);
    smelt_ring_close(e.ring);
    e.ring = NULL;
    free_buffers(&e);
    smelt_pool_free(e.pool);
    XXH3_freeState(e.hash);
    if (rc == SMELT_OK)
        report(&e, opts, 1);
    return rc;
}
