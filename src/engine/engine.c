#include "engine/engine_layout.h"

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

/* One chunk of one tensor, and the buffers it is read into. */
typedef struct slot {
    int busy;
    size_t tensor;
    unsigned pass;         /* which read of the tensor: < the group's statistics reads of
                              the tensor, the statistics passes that run on that read */
    uint64_t start, count; /* elements (MERGE) or bytes (COPY) */
    unsigned pending;      /* reads not yet completed */
    int prepared;          /* derived inputs computed from the staged bytes (prepare_slot) */
    uint8_t **in;          /* per input: its own buffer (NULL when it never needs one) */
    uint8_t **stage;       /* per input: the bytes a derived input reads (NULL if never one) */
    const uint8_t **read;  /* per input, for this chunk: the bytes its reader read */
    const uint8_t **view;  /* per input, for this chunk: what the tiles see */
    uint8_t **out;         /* per output: its encoded chunk (a COPY chunk is read into
                              out[0] and written to every output from there) */
} slot;

typedef struct engine {
    smelt_ctx *ctx;
    /* outs[0].plan: the group's inputs (fds, sources) are read through it; every output's
     * plan has the same input tensors (smelt_group_check). */
    const smelt_plan *plan;
    const smelt_engine_output *outs;
    const smelt_plan *const *plans; /* outs[o].plan */
    size_t nouts;
    const smelt_kernels *k;
    smelt_engine_layout layout;
    uint64_t in_unit[256], stage_unit[256]; /* buffer bytes per SPAN_UNIT elements */
    uint64_t *out_unit;    /* per output */
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
    uint8_t *worker_partials; /* one per worker, worker_partial_bytes each, zero between chunks */
    uint8_t *carry;           /* layout.carry_bytes: a resident tensor's carry, from element 0 */
    size_t worker_partial_bytes;
    size_t cursor_tensor;  /* next chunk to read */
    unsigned cursor_pass;
    uint64_t cursor_pos;
    /* A fallback read the cursor went past before its need was known: the chunks read since
     * (read `read` + 1 of `tensor`) become its chunks if it turns out needed (resolve_fallback). */
    struct {
        int pending;
        size_t tensor;
        unsigned read;
    } fallback;
    smelt_progress progress;
    double started, last_report;
    const smelt_engine_options *opts;
    /* Per output, the tensor being written: an output's chunks finish in order, one tensor at
     * a time, so one streaming state per output hashes every byte as it goes to the writer. */
    XXH3_state_t **hash;
} engine;

/* What one pool call computes: one chunk of a MERGE tensor for output `output`. */
typedef struct compute_job {
    engine *e;
    const smelt_plan *plan;       /* the output's */
    const smelt_plan_tensor *pt;  /* the output's */
    const slot *s;
    unsigned pass;                /* a statistics pass, or tensor_passes: the apply pass */
    size_t output;
    size_t carry;                 /* the tensor's carry bytes per element (0: none) */
} compute_job;

static void compute_task(void *arg, size_t task, unsigned worker)
{
    const compute_job *job = arg;
    const engine *e = job->e;
    const smelt_plan_tensor *pt = job->pt;
    const smelt_method *method = job->plan->method;
    size_t ninputs = pt->ninputs;
    float *scratch = e->scratch + (size_t)worker * (e->plan->ninputs + 1) * TILE_ELEMS;
    float *result = scratch + ninputs * TILE_ELEMS;
    const void *raw[ninputs];
    smelt_dtype dtype[ninputs];
    for (size_t i = 0; i < ninputs; i++)
        dtype[i] = tile_dtype(pt, i);
    smelt_tile tile = {.k = e->k, .ninputs = ninputs, .raw = raw, .dtype = dtype,
                       .scratch = scratch};
    int stats = job->pass < tensor_passes(job->plan, pt);
    size_t partial_size = method->partial_size ? method->partial_size(pt->method_state,
                                                                      job->pass) : 0;
    void *partial = partial_size ? e->partials + task * e->partial_bytes : NULL;
    if (partial)
        memset(partial, 0, partial_size);
    tile.task_scratch = stats ? NULL : partial;
    if (stats && method->worker_partial_size &&
        method->worker_partial_size(pt->method_state, job->pass))
        tile.worker_partial = e->worker_partials + (size_t)worker * e->worker_partial_bytes;
    uint64_t task_elems = tensor_task(job->plan, pt);
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
        tile.carry = job->carry ? e->carry + (job->s->start + at) * job->carry : NULL;
        if (stats) {
            method->stats(pt->method_state, job->pass, &tile, partial);
            continue;
        }
        method->apply(pt->method_state, &tile, result);
        /* Encoding F32 too gives NaNs one canonical bit pattern whatever the ISA. */
        smelt_encode(e->k, job->s->out[job->output] + smelt_dtype_span(pt->out_dtype, at), result,
                     pt->out_dtype, tile.n);
    }
}

/* Whether a slot holds a chunk of tensor t (read, or being read). */
static int tensor_in_flight(const engine *e, size_t t)
{
    for (unsigned d = 0; d < e->layout.depth; d++)
        if (e->slots[d].busy && e->slots[d].tensor == t)
            return 1;
    return 0;
}

/* Whether fallback read r of tensor t is needed: a fallback pass on it that some output needs
 * (asked once the reads before it are done). */
static int fallback_needed(const engine *e, size_t t, unsigned r)
{
    for (size_t o = 0; o < e->nouts; o++) {
        const smelt_plan *plan = e->plans[o];
        const smelt_plan_tensor *pt = &plan->tensors[t];
        for (unsigned p = 0; p < tensor_passes(plan, pt); p++)
            if (pass_read(plan, pt, p) == r && pass_kind(plan, pt, p) == SMELT_PASS_FALLBACK &&
                plan->method->pass_needed(pt->method_state, p))
                return 1;
    }
    return 0;
}

/* After the last chunk of the read before a fallback read the cursor went past: if the read
 * is needed after all, the chunks read since for the read after it (the same bytes) become
 * its chunks, and the cursor goes on with it from where it stands; the read after it follows
 * from its start. */
static int resolve_fallback(engine *e, size_t tensor, unsigned read, int last_chunk)
{
    if (!e->fallback.pending || e->fallback.tensor != tensor || read + 1 != e->fallback.read ||
        !last_chunk)
        return SMELT_OK;
    e->fallback.pending = 0;
    unsigned r = e->fallback.read;
    if (!fallback_needed(e, tensor, r))
        return SMELT_OK;
    if (e->cursor_tensor != tensor || e->cursor_pass != r + 1)
        return smelt_fail(e->ctx, SMELT_E_INTERNAL, "tensor '%s': its fallback read is behind",
                          e->plan->tensors[tensor].name);
    for (unsigned d = 0; d < e->layout.depth; d++)
        if (e->slots[d].busy && e->slots[d].tensor == tensor && e->slots[d].pass == r + 1)
            e->slots[d].pass = r;
    e->cursor_pass = r;
    return SMELT_OK;
}

/* Assigns the next chunk to a free slot and queues its reads. 0 = queued, 1 = nothing left,
 * 2 = nothing until a fallback read's need is known. */
static int start_chunk(engine *e, slot *s, size_t slot_index)
{
    const smelt_plan *plan = e->plan;
    while (e->cursor_tensor < plan->ntensors) {
        const smelt_plan_tensor *done = &plan->tensors[e->cursor_tensor];
        if (e->opts->skip && e->opts->skip[e->cursor_tensor] && e->cursor_pos == 0 &&
            e->cursor_pass == 0) {
            /* A resumed merge (one output): this tensor's bytes are already in place and
             * verified. */
            e->progress.tensors_done++;
            e->progress.bytes_written += done->out_nbytes;
            e->cursor_tensor++;
            continue;
        }
        if (e->cursor_pos < chunk_units(done))
            break;
        if (e->fallback.pending && e->fallback.tensor == e->cursor_tensor)
            return 2; /* the read after a skipped fallback read ends here: wait for its need */
        e->cursor_pos = 0;
        if (chunk_units(done) > 0 &&
            e->cursor_pass < smelt_engine_group_stat_reads(e->plans, e->nouts, e->cursor_tensor)) {
            e->cursor_pass++; /* read the tensor again for the next pass */
            if (smelt_engine_group_fallback_read(e->plans, e->nouts, e->cursor_tensor,
                                                 e->cursor_pass)) {
                if (tensor_in_flight(e, e->cursor_tensor)) {
                    /* Its need is known once the reads before it are done: read on as if it
                     * were skipped, and take those chunks for it if it is not. */
                    e->fallback.pending = 1;
                    e->fallback.tensor = e->cursor_tensor;
                    e->fallback.read = e->cursor_pass++;
                } else if (!fallback_needed(e, e->cursor_tensor, e->cursor_pass)) {
                    e->cursor_pass++;
                }
            }
            continue;
        }
        for (size_t o = 0; chunk_units(done) == 0 && o < e->nouts; o++) {
            e->progress.tensors_done++; /* empty tensors have no chunk */
            if (e->outs[o].tensor_done) {
                smelt_hash128 empty = smelt_hash_bytes("", 0);
                int rc = e->outs[o].tensor_done(e->outs[o].tensor_done_user, e->cursor_tensor,
                                                &empty);
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
    uint64_t cap = smelt_engine_chunk_cap(plan, &e->layout, pt);
    /* A resident tensor is read once, straight into its apply pass; its statistics passes run
     * over the same buffers (run_resident_stats). */
    if (e->cursor_pos == 0 && e->cursor_pass == 0 &&
        smelt_engine_tensor_resident(e->plans, e->nouts, &e->layout, e->cursor_tensor))
        e->cursor_pass = smelt_engine_group_stat_reads(e->plans, e->nouts, e->cursor_tensor);
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
        if (smelt_ring_queue_read(e->ring, fd, s->out[0], s->count, t->offset + s->start,
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

/* One chunk of output o's statistics pass `pass`: accumulate per task, fold in task order,
 * close the pass at the tensor's last chunk. */
static int pass_chunk(engine *e, const slot *s, size_t o, unsigned pass)
{
    const smelt_plan *plan = e->plans[o];
    const smelt_plan_tensor *pt = &plan->tensors[s->tensor];
    const smelt_method *method = plan->method;
    uint64_t task = tensor_task(plan, pt);
    size_t ntasks = (size_t)((s->count + task - 1) / task);
    compute_job job = {e, plan, pt, s, pass, o,
                       smelt_engine_tensor_carry(e->plans, e->nouts, &e->layout, s->tensor)};
    smelt_pool_run(e->pool, ntasks, compute_task, &job);
    for (size_t t = 0; t < ntasks; t++)
        method->fold(pt->method_state, pass, e->partials + t * e->partial_bytes);
    if (method->worker_partial_size && method->worker_partial_size(pt->method_state, pass))
        for (unsigned w = 0; w < smelt_pool_threads(e->pool); w++)
            method->fold_worker(pt->method_state, pass,
                                e->worker_partials + (size_t)w * e->worker_partial_bytes);
    if (s->start + s->count == chunk_units(pt))
        return method->end_pass(e->ctx, pt->method_state, pass);
    return SMELT_OK;
}

/* One chunk of statistics pass `pass` for every output that has that pass (a resident
 * tensor's passes). The outputs run one after another over the same partials. */
static int stats_chunk(engine *e, const slot *s, unsigned pass)
{
    for (size_t o = 0; o < e->nouts; o++) {
        const smelt_plan *plan = e->plans[o];
        const smelt_plan_tensor *pt = &plan->tensors[s->tensor];
        if (pass >= tensor_passes(plan, pt) || !pass_runs(plan, pt, pass))
            continue;
        int rc = pass_chunk(e, s, o, pass);
        if (rc != SMELT_OK)
            return rc;
    }
    return SMELT_OK;
}

/* One chunk of a streamed tensor on read s->pass: every output's statistics passes that run
 * on this read, in pass order (a prefix pass just before the pass, or the apply, that shares
 * its read). Sample passes ran over the read's first chunks already (run_samples). */
static int stats_read_chunk(engine *e, const slot *s)
{
    for (size_t o = 0; o < e->nouts; o++) {
        const smelt_plan *plan = e->plans[o];
        const smelt_plan_tensor *pt = &plan->tensors[s->tensor];
        unsigned passes = tensor_passes(plan, pt);
        for (unsigned p = 0; p < passes; p++) {
            if (pass_read(plan, pt, p) != s->pass ||
                pass_kind(plan, pt, p) == SMELT_PASS_SAMPLE || !pass_runs(plan, pt, p))
                continue;
            int rc = pass_chunk(e, s, o, p);
            if (rc != SMELT_OK)
                return rc;
        }
    }
    return SMELT_OK;
}

/* The first chunk of a resident tensor is due: wait until all its chunks (the slots after
 * `first`, in ring order) have arrived, then run every statistics pass over them in tensor
 * order. Their apply pass follows chunk by chunk as for any tensor. Slots after the tensor's
 * keep reading ahead meanwhile. */
static int run_resident_stats(engine *e, unsigned first)
{
    const slot *head = &e->slots[first];
    const smelt_plan_tensor *pt = &e->plan->tensors[head->tensor];
    unsigned nchunks = (unsigned)smelt_engine_tensor_chunks(e->plan, &e->layout, pt);
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
    unsigned passes = smelt_engine_group_passes(e->plans, e->nouts, head->tensor);
    for (unsigned p = 0; p < passes; p++)
        for (unsigned c = 0; c < nchunks; c++) {
            int rc = stats_chunk(e, &e->slots[(first + c) % depth], p);
            if (rc != SMELT_OK)
                return rc;
        }
    return SMELT_OK;
}

/* Whether an output has a sample pass on read r of tensor t. */
static int samples_on_read(const engine *e, size_t t, unsigned r)
{
    for (size_t o = 0; o < e->nouts; o++) {
        const smelt_plan *plan = e->plans[o];
        const smelt_plan_tensor *pt = &plan->tensors[t];
        for (unsigned p = 0; p < tensor_passes(plan, pt); p++)
            if (pass_read(plan, pt, p) == r && pass_kind(plan, pt, p) == SMELT_PASS_SAMPLE)
                return 1;
    }
    return 0;
}

/* The first chunk of a streamed tensor's read is due and a sample pass shares the read: wait
 * for the read's chunks the buffers hold (the slots from `first` on, in ring order, while they
 * hold this read), run the sample passes over them and end them. */
static int run_samples(engine *e, unsigned first)
{
    const slot *head = &e->slots[first];
    unsigned depth = e->layout.depth, n = 0;
    for (; n < depth; n++) {
        slot *s = &e->slots[(first + n) % depth];
        if (!s->busy || s->tensor != head->tensor || s->pass != head->pass)
            break;
        int rc = await_slot(e, s);
        if (rc == SMELT_OK)
            rc = prepare_slot(e, s);
        if (rc != SMELT_OK)
            return rc;
    }
    for (size_t o = 0; o < e->nouts; o++) {
        const smelt_plan *plan = e->plans[o];
        const smelt_plan_tensor *pt = &plan->tensors[head->tensor];
        for (unsigned p = 0; p < tensor_passes(plan, pt); p++) {
            if (pass_read(plan, pt, p) != head->pass || pass_kind(plan, pt, p) != SMELT_PASS_SAMPLE)
                continue;
            int ended = 0;
            for (unsigned c = 0; c < n; c++) {
                const slot *s = &e->slots[(first + c) % depth];
                int rc = pass_chunk(e, s, o, p); /* ends the pass at the tensor's last chunk */
                if (rc != SMELT_OK)
                    return rc;
                ended |= s->start + s->count == chunk_units(pt);
            }
            int rc = ended ? SMELT_OK : plan->method->end_pass(e->ctx, pt->method_state, p);
            if (rc != SMELT_OK)
                return rc;
        }
    }
    return SMELT_OK;
}

/* Output o's share of a MERGE chunk on its apply read: its encoded bytes in s->out[o]. */
static void compute_output_chunk(engine *e, const slot *s, size_t o)
{
    const smelt_plan *plan = e->plans[o];
    const smelt_plan_tensor *pt = &plan->tensors[s->tensor];
    if (pt->kind != SMELT_TASK_MERGE)
        return;
    compute_job job = {e, plan, pt, s, tensor_passes(plan, pt), o,
                       smelt_engine_tensor_carry(e->plans, e->nouts, &e->layout, s->tensor)};
    uint64_t task = tensor_task(plan, pt);
    smelt_pool_run(e->pool, (size_t)((s->count + task - 1) / task), compute_task, &job);
}

/* Writes output o's share of a chunk (computed by compute_output_chunk, or the COPY bytes read),
 * hashes it, and reports the tensor done after its last chunk. */
static int write_output_chunk(engine *e, const slot *s, size_t o)
{
    const smelt_plan *plan = e->plans[o];
    const smelt_plan_tensor *pt = &plan->tensors[s->tensor];
    const uint8_t *bytes = s->out[o];
    uint64_t out_off, out_len;
    if (pt->kind == SMELT_TASK_MERGE) {
        out_off = pt->out_offset + smelt_dtype_span(pt->out_dtype, s->start);
        out_len = smelt_dtype_span(pt->out_dtype, s->count);
    } else {
        bytes = s->out[0]; /* the one copy that was read */
        out_off = pt->out_offset + s->start;
        out_len = s->count;
    }
    int rc = smelt_out_write(e->ctx, &e->outs[o].files[pt->shard], bytes, out_len, out_off);
    if (rc != SMELT_OK)
        return rc;
    if (s->start == 0)
        XXH3_128bits_reset(e->hash[o]);
    XXH3_128bits_update(e->hash[o], bytes, (size_t)out_len);
    e->progress.bytes_written += out_len;
    if (s->start + s->count < chunk_units(pt))
        return SMELT_OK;
    e->progress.tensors_done++;
    if (pt->kind == SMELT_TASK_MERGE && plan->method->finished)
        plan->method->finished(pt->method_state);
    if (!e->outs[o].tensor_done)
        return SMELT_OK;
    XXH128_canonical_t c;
    smelt_hash128 h;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(e->hash[o]));
    memcpy(h.b, c.digest, sizeof h.b);
    return e->outs[o].tensor_done(e->outs[o].tensor_done_user, s->tensor, &h);
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

/* A chunk on read s->pass of its tensor: the statistics of the outputs that still gather them
 * on this read (a streamed tensor; a resident one ran them all in run_resident_stats), then the
 * outputs that apply on this read, in output order: all computed, then (while the workers
 * decode the next chunk's delta frames, prefetch_deltas) all written. Its buffers are free
 * again afterwards. */
static int finish_chunk(engine *e, slot *s, slot *next)
{
    const smelt_plan_tensor *pt = &e->plan->tensors[s->tensor];
    unsigned last = smelt_engine_group_stat_reads(e->plans, e->nouts, s->tensor);
    int resident = smelt_engine_tensor_resident(e->plans, e->nouts, &e->layout, s->tensor);
    int rc = resident ? SMELT_OK : stats_read_chunk(e, s);
    for (size_t o = 0; rc == SMELT_OK && o < e->nouts; o++)
        if (smelt_engine_apply_read(e->plans, e->nouts, &e->layout, o, s->tensor) == s->pass)
            compute_output_chunk(e, s, o);
    if (rc == SMELT_OK && pt->kind == SMELT_TASK_MERGE)
        rc = prefetch_deltas(e, s, next);
    for (size_t o = 0; rc == SMELT_OK && o < e->nouts; o++)
        if (smelt_engine_apply_read(e->plans, e->nouts, &e->layout, o, s->tensor) == s->pass)
            rc = write_output_chunk(e, s, o);
    if (rc != SMELT_OK)
        return rc;
    if (pt->kind == SMELT_TASK_MERGE)
        for (size_t i = 0; i < pt->ninputs; i++)
            e->progress.bytes_read += smelt_source_file_bytes(e->plan, pt, i, s->count);
    else
        e->progress.bytes_read += s->count;
    if (s->pass == last)
        drop_inputs(e, s); /* the last read: nothing reads these bytes again */
    s->busy = 0;
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
        s->out = calloc(e->nouts, sizeof *s->out);
        if (!s->in || !s->stage || !s->read || !s->view || !s->out)
            return smelt_fail(e->ctx, SMELT_E_NOMEM, "out of memory for the chunk buffers");
        for (size_t o = 0; o < e->nouts; o++)
            if (!(s->out[o] = smelt_aligned_alloc(BUFFER_ALIGN,
                                                  chunk / SPAN_UNIT * e->out_unit[o])))
                return smelt_fail(e->ctx, SMELT_E_NOMEM, "out of memory for the chunk buffers");
        for (size_t i = 0; i < plan->ninputs; i++)
            if ((e->in_unit[i] &&
                 !(s->in[i] = smelt_aligned_alloc(BUFFER_ALIGN,
                                                  chunk / SPAN_UNIT * e->in_unit[i]))) ||
                (e->stage_unit[i] &&
                 !(s->stage[i] = smelt_aligned_alloc(BUFFER_ALIGN,
                                                     chunk / SPAN_UNIT * e->stage_unit[i]))))
                return smelt_fail(e->ctx, SMELT_E_NOMEM, "out of memory for the chunk buffers");
    }
    uint64_t most_scratch = 0, scratch;
    for (size_t i = 0; i < plan->ninputs; i++) {
        uint64_t bytes = smelt_engine_factor_bytes(plan, i, &scratch);
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
    if (e->layout.carry_bytes && !(e->carry = malloc(e->layout.carry_bytes)))
        return smelt_fail(e->ctx, SMELT_E_NOMEM, "out of memory");
    e->scratch = smelt_aligned_alloc(64, smelt_engine_scratch_bytes(e->plans, e->nouts, threads,
                                                                    chunk));
    if (!e->scratch)
        return smelt_fail(e->ctx, SMELT_E_NOMEM, "out of memory");
    e->partial_bytes = smelt_engine_partial_bytes(e->plans, e->nouts);
    e->worker_partial_bytes = smelt_engine_worker_partial_bytes(e->plans, e->nouts);
    e->worker_partials =
        (uint8_t *)(e->scratch + (size_t)threads * (plan->ninputs + 1) * TILE_ELEMS);
    memset(e->worker_partials, 0, (size_t)threads * e->worker_partial_bytes);
    e->partials = e->worker_partials + (size_t)threads * e->worker_partial_bytes;
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
        for (size_t o = 0; e->slots[d].out && o < e->nouts; o++)
            free(e->slots[d].out[o]);
        free(e->slots[d].in);
        free(e->slots[d].stage);
        free(e->slots[d].read);
        free(e->slots[d].view);
        free(e->slots[d].out);
    }
    free(e->slots);
    free(e->scratch);
    free(e->carry);
    for (size_t i = 0; i < e->plan->ninputs; i++)
        free(e->factors[i]);
    free(e->factor_scratch);
    smelt_delta_sources_free(e->deltas);
}

static int write_headers(engine *e)
{
    for (size_t o = 0; o < e->nouts; o++)
        for (size_t s = 0; s < e->plans[o]->nshards; s++) {
            const smelt_plan_shard *sh = &e->plans[o]->shards[s];
            smelt_out_file *file = &e->outs[o].files[s];
            if (file->fd < 0)
                continue; /* a partitioned merge: another part writes this shard */
            int rc = smelt_out_write(e->ctx, file, sh->header, sh->header_len, 0);
            if (rc != SMELT_OK)
                return rc;
        }
    return SMELT_OK;
}

static int pipeline(engine *e, const smelt_engine_options *opts)
{
    unsigned depth = e->layout.depth;
    unsigned oldest = 0, next_free = 0;
    for (;;) {
        /* Keep every free slot reading, in order, so chunks finish in file order. */
        while (!e->slots[next_free].busy) {
            int rc = start_chunk(e, &e->slots[next_free], next_free);
            if (rc < 0)
                return rc;
            if (rc > 0)
                break;
            next_free = (next_free + 1) % depth;
        }
        int err = smelt_ring_submit(e->ring);
        if (err)
            return smelt_fail_errno(e->ctx, err, "cannot submit reads");
        slot *s = &e->slots[oldest];
        if (!s->busy && e->fallback.pending)
            return smelt_fail(e->ctx, SMELT_E_INTERNAL, "a fallback read waits on nothing");
        if (!s->busy)
            return SMELT_OK; /* nothing in flight and nothing left */
        int rc = await_slot(e, s);
        if (rc == SMELT_OK)
            rc = prepare_slot(e, s);
        if (rc != SMELT_OK)
            return rc;
        if (s->start == 0 &&
            smelt_engine_tensor_resident(e->plans, e->nouts, &e->layout, s->tensor))
            rc = run_resident_stats(e, oldest);
        else if (s->start == 0 && samples_on_read(e, s->tensor, s->pass))
            rc = run_samples(e, oldest);
        if (rc != SMELT_OK)
            return rc;
        size_t tensor = s->tensor;
        unsigned read = s->pass;
        int last_chunk = s->start + s->count == chunk_units(&e->plan->tensors[tensor]);
        rc = finish_chunk(e, s, &e->slots[(oldest + 1) % depth]);
        if (rc == SMELT_OK)
            rc = resolve_fallback(e, tensor, read, last_chunk);
        if (rc != SMELT_OK)
            return rc;
        oldest = (oldest + 1) % depth;
        if (opts->cancel && *opts->cancel)
            return smelt_fail(e->ctx, SMELT_E_INTERRUPTED, "interrupted");
        report(e, opts, 0);
    }
}

/* The engine's per-output arrays: plans, buffer units, hash states. */
static int alloc_outputs(engine *e)
{
    const smelt_plan **plans = calloc(e->nouts, sizeof *plans);
    e->plans = plans;
    e->out_unit = calloc(e->nouts, sizeof *e->out_unit);
    e->hash = calloc(e->nouts, sizeof *e->hash);
    if (!plans || !e->out_unit || !e->hash)
        return smelt_fail(e->ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t o = 0; o < e->nouts; o++) {
        plans[o] = e->outs[o].plan;
        e->out_unit[o] = smelt_engine_out_unit(e->plans[o]);
        if (!(e->hash[o] = XXH3_createState()))
            return smelt_fail(e->ctx, SMELT_E_NOMEM, "out of memory");
    }
    return SMELT_OK;
}

static void free_outputs(engine *e)
{
    for (size_t o = 0; e->hash && o < e->nouts; o++)
        XXH3_freeState(e->hash[o]);
    free(e->hash);
    free(e->out_unit);
    free((void *)e->plans);
}

int smelt_engine_run_group(smelt_ctx *ctx, const smelt_engine_output *outs, size_t nouts,
                           const smelt_engine_options *opts)
{
    const smelt_plan *plan = outs[0].plan;
    if (plan->ninputs > 255) /* the plan refuses these; the read tag keeps the index in 8 bits */
        return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "at most 255 models can be merged at once");
    engine e = {.ctx = ctx, .plan = plan, .outs = outs, .nouts = nouts, .k = smelt_kernels_get(),
                .opts = opts};
    int rc = alloc_outputs(&e);
    if (rc == SMELT_OK)
        rc = smelt_engine_layout_group(ctx, e.plans, nouts, opts->max_memory, opts->threads,
                                       &e.layout);
    if (rc != SMELT_OK) {
        free_outputs(&e);
        return rc;
    }
    smelt_engine_unit_sizes(plan, e.in_unit, e.stage_unit);
    for (size_t o = 0; o < nouts; o++) {
        e.progress.tensors_total += e.plans[o]->ntensors;
        e.progress.bytes_to_write += e.plans[o]->bytes_to_write;
    }
    e.progress.bytes_to_read = smelt_engine_group_bytes_to_read(e.plans, nouts, &e.layout);
    e.started = e.last_report = smelt_now();
    e.pool = smelt_pool_new(opts->threads);
    if (!e.pool) {
        free_outputs(&e);
        return smelt_fail(ctx, SMELT_E_NOMEM, "cannot start worker threads");
    }
    rc = smelt_ring_open(ctx, e.layout.depth * (unsigned)(plan->ninputs + 1), opts->force_pread,
                         &e.ring);
    if (rc == SMELT_OK)
        rc = alloc_buffers(&e);
    if (rc == SMELT_OK)
        rc = write_headers(&e);
    if (rc == SMELT_OK)
        rc = pipeline(&e, opts);
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
    free_outputs(&e);
    if (rc == SMELT_OK)
        report(&e, opts, 1);
    return rc;
}
