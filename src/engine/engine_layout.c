/* How the engine divides its budget and what it reads: chunk size and depth, which tensors
 * stay resident, bytes to read, for one plan or a group of plans read together. */
#include "engine/engine_layout.h"

#include "common/pool.h"
#include "common/util.h"
#include "engine/source.h"
#include "format/delta.h"
#include "io/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

/* Bytes per SPAN_UNIT elements of the output buffer over the whole plan (COPY chunks use it as
 * bytes). */
uint64_t smelt_engine_out_unit(const smelt_plan *plan)
{
    uint64_t out_unit = 2 * SPAN_UNIT;
    for (size_t t = 0; t < plan->ntensors; t++) {
        const smelt_plan_tensor *pt = &plan->tensors[t];
        if (pt->kind == SMELT_TASK_MERGE && smelt_dtype_span(pt->out_dtype, SPAN_UNIT) > out_unit)
            out_unit = smelt_dtype_span(pt->out_dtype, SPAN_UNIT);
    }
    return out_unit;
}



/* Bytes per SPAN_UNIT elements of input i's buffer and staging buffer over the plan (see
 * engine_layout.h). */
void smelt_engine_unit_sizes(const smelt_plan *plan, uint64_t *in_unit, uint64_t *stage_unit)
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
}

/* The f32 factors of the largest LoRA module any input needs, and the scratch to load it, per
 * input: one set each, loaded when a tensor's first chunk is prepared (chunks are prepared in
 * plan order). */
uint64_t smelt_engine_factor_bytes(const smelt_plan *plan, size_t i, uint64_t *scratch)
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
        total += smelt_engine_factor_bytes(plan, i, &scratch);
        if (scratch > most_scratch)
            most_scratch = scratch;
    }
    return total + most_scratch;
}

/* The most any plan of the group has of a per-tensor count. */
static unsigned group_most(const smelt_plan *const *plans, size_t nplans, size_t t,
                           unsigned (*count)(const smelt_plan *, const smelt_plan_tensor *))
{
    unsigned most = 0;
    for (size_t o = 0; o < nplans; o++) {
        unsigned n = count(plans[o], &plans[o]->tensors[t]);
        if (n > most)
            most = n;
    }
    return most;
}

/* The statistics passes the group's reads of tensor t serve: the most any output needs (an
 * output with fewer applies on an earlier read of a streamed tensor). */
unsigned smelt_engine_group_passes(const smelt_plan *const *plans, size_t nplans, size_t t)
{
    return group_most(plans, nplans, t, tensor_passes);
}

unsigned smelt_engine_group_stat_reads(const smelt_plan *const *plans, size_t nplans, size_t t)
{
    return group_most(plans, nplans, t, tensor_stat_reads);
}

int smelt_engine_group_fallback_read(const smelt_plan *const *plans, size_t nplans, size_t t,
                                     unsigned r)
{
    int any = 0;
    for (size_t o = 0; o < nplans; o++) {
        const smelt_plan_tensor *pt = &plans[o]->tensors[t];
        unsigned passes = tensor_passes(plans[o], pt);
        if (pass_read(plans[o], pt, passes) == r)
            return 0; /* this plan applies on read r */
        for (unsigned p = 0; p < passes; p++)
            if (pass_read(plans[o], pt, p) == r) {
                if (pass_kind(plans[o], pt, p) != SMELT_PASS_FALLBACK)
                    return 0;
                any = 1;
            }
    }
    return any;
}

uint64_t smelt_engine_chunk_cap(const smelt_plan *plan, const smelt_engine_layout *layout,
                                const smelt_plan_tensor *pt)
{
    if (pt->kind != SMELT_TASK_MERGE)
        return layout->chunk_elements / SPAN_UNIT * smelt_engine_out_unit(plan);
    return layout->chunk_elements / TASK_ELEMS * tensor_task(plan, pt);
}

uint64_t smelt_engine_tensor_chunks(const smelt_plan *plan, const smelt_engine_layout *layout,
                                    const smelt_plan_tensor *pt)
{
    uint64_t cap = smelt_engine_chunk_cap(plan, layout, pt);
    return (chunk_units(pt) + cap - 1) / cap;
}

/* A tensor with statistics passes whose chunks all fit in the buffers at once is read once:
 * its chunks stay in their slots through every statistics pass and the apply pass. The passes
 * visit the chunks in the same order as a streamed tensor's re-reads would, so the statistics,
 * and the output, are the same bits either way. */
int smelt_engine_tensor_resident(const smelt_plan *const *plans, size_t nplans,
                                 const smelt_engine_layout *layout, size_t t)
{
    const smelt_plan_tensor *pt = &plans[0]->tensors[t];
    return smelt_engine_group_passes(plans, nplans, t) > 0 && chunk_units(pt) > 0 &&
           smelt_engine_tensor_chunks(plans[0], layout, pt) <= layout->depth;
}

unsigned smelt_engine_apply_read(const smelt_plan *const *plans, size_t nplans,
                                 const smelt_engine_layout *layout, size_t o, size_t t)
{
    if (smelt_engine_tensor_resident(plans, nplans, layout, t))
        return smelt_engine_group_stat_reads(plans, nplans, t);
    return tensor_stat_reads(plans[o], &plans[o]->tensors[t]);
}

/* The reads of tensor t the plan counts: fallback reads are counted as skipped. */
static unsigned group_tensor_reads(const smelt_plan *const *plans, size_t nplans,
                                   const smelt_engine_layout *layout, size_t t)
{
    if (smelt_engine_tensor_resident(plans, nplans, layout, t))
        return 1;
    unsigned stat_reads = smelt_engine_group_stat_reads(plans, nplans, t), reads = 1;
    for (unsigned r = 0; r < stat_reads; r++)
        reads += !smelt_engine_group_fallback_read(plans, nplans, t, r);
    return reads;
}

unsigned smelt_engine_tensor_fallback_reads(const smelt_plan *plan,
                                            const smelt_engine_layout *layout, size_t t)
{
    if (smelt_engine_tensor_resident(&plan, 1, layout, t))
        return 0;
    unsigned n = 0;
    for (unsigned r = 0; r < smelt_engine_group_stat_reads(&plan, 1, t); r++)
        n += smelt_engine_group_fallback_read(&plan, 1, t, r);
    return n;
}

unsigned smelt_engine_tensor_reads(const smelt_plan *plan, const smelt_engine_layout *layout,
                                   size_t t)
{
    return group_tensor_reads(&plan, 1, layout, t);
}

/* The bytes of tensor t read for the group (layout NULL: once). */
static uint64_t group_tensor_bytes(const smelt_plan *const *plans, size_t nplans,
                                   const smelt_engine_layout *layout, size_t t)
{
    const smelt_plan *plan = plans[0];
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
    uint64_t reads = layout ? group_tensor_reads(plans, nplans, layout, t) : 1;
    uint64_t total = reads * once;
    /* DoRA's norm pass reads its base weight once more (source.h). */
    for (size_t i = 0; layout && pt->kind == SMELT_TASK_MERGE && i < pt->ninputs; i++)
        if (lora_of(pt, i) && lora_of(pt, i)->magnitude)
            total += smelt_dtype_span(pt->inputs[i]->dtype, pt->ref->numel);
    return total;
}

uint64_t smelt_engine_tensor_bytes_to_read(const smelt_plan *plan,
                                           const smelt_engine_layout *layout, size_t t)
{
    return group_tensor_bytes(&plan, 1, layout, t);
}

uint64_t smelt_engine_group_bytes_to_read(const smelt_plan *const *plans, size_t nplans,
                                          const smelt_engine_layout *layout)
{
    uint64_t total = 0;
    for (size_t t = 0; t < plans[0]->ntensors; t++)
        total += group_tensor_bytes(plans, nplans, layout, t);
    return total;
}

uint64_t smelt_engine_bytes_to_read(const smelt_plan *plan, const smelt_engine_layout *layout)
{
    return smelt_engine_group_bytes_to_read(&plan, 1, layout);
}

/* The largest per-task partial of any tensor and pass, the apply pass's scratch included (0 when
 * the method keeps none). */
size_t smelt_engine_partial_bytes(const smelt_plan *const *plans, size_t nplans)
{
    size_t most = 0; /* the outputs' statistics run one after another over the same partials */
    for (size_t o = 0; o < nplans; o++)
        for (size_t t = 0; t < plans[o]->ntensors; t++) {
            const smelt_plan_tensor *pt = &plans[o]->tensors[t];
            const smelt_method *m = plans[o]->method;
            if (pt->kind != SMELT_TASK_MERGE || !m->partial_size)
                continue;
            for (unsigned p = 0; p <= tensor_passes(plans[o], pt); p++) {
                size_t bytes = m->partial_size(pt->method_state, p);
                if (bytes > most)
                    most = bytes;
            }
        }
    return (most + 63) / 64 * 64; /* each partial on its own cache line */
}

static size_t method_carry(const smelt_plan *plan, const smelt_plan_tensor *pt)
{
    const smelt_method *m = plan->method;
    return pt->kind == SMELT_TASK_MERGE && m->carry_bytes ? m->carry_bytes(pt->method_state) : 0;
}

/* Bytes of tensor t's carry when the layout keeps it resident (a group keeps none). */
static uint64_t carry_need(const smelt_plan *const *plans, size_t nplans,
                           const smelt_engine_layout *layout, size_t t)
{
    const smelt_plan_tensor *pt = &plans[0]->tensors[t];
    size_t per = nplans == 1 ? method_carry(plans[0], pt) : 0;
    if (!per || !smelt_engine_tensor_resident(plans, nplans, layout, t))
        return 0;
    return chunk_units(pt) * per;
}

size_t smelt_engine_tensor_carry(const smelt_plan *const *plans, size_t nplans,
                                 const smelt_engine_layout *layout, size_t t)
{
    uint64_t need = carry_need(plans, nplans, layout, t);
    return need && need <= layout->carry_bytes ? method_carry(plans[0], &plans[0]->tensors[t])
                                               : 0;
}

size_t smelt_engine_worker_partial_bytes(const smelt_plan *const *plans, size_t nplans)
{
    size_t most = 0;
    for (size_t o = 0; o < nplans; o++)
        for (size_t t = 0; t < plans[o]->ntensors; t++) {
            const smelt_plan_tensor *pt = &plans[o]->tensors[t];
            const smelt_method *m = plans[o]->method;
            if (pt->kind != SMELT_TASK_MERGE || !m->worker_partial_size)
                continue;
            for (unsigned p = 0; p < tensor_passes(plans[o], pt); p++) {
                size_t bytes = m->worker_partial_size(pt->method_state, p);
                if (bytes > most)
                    most = bytes;
            }
        }
    return (most + 63) / 64 * 64;
}

/* Per-worker f32 tiles and statistics accumulators, plus one statistics partial per task of a
 * chunk of `chunk` elements. */
uint64_t smelt_engine_scratch_bytes(const smelt_plan *const *plans, size_t nplans,
                                    unsigned threads, uint64_t chunk)
{
    return (uint64_t)threads * ((plans[0]->ninputs + 1) * TILE_ELEMS * sizeof(float) +
                                smelt_engine_worker_partial_bytes(plans, nplans)) +
           chunk / TASK_ELEMS * smelt_engine_partial_bytes(plans, nplans);
}

int smelt_engine_layout_for(smelt_ctx *ctx, const smelt_plan *plan, uint64_t max_memory,
                            int threads, smelt_engine_layout *layout)
{
    return smelt_engine_layout_group(ctx, &plan, 1, max_memory, threads, layout);
}

/* Bytes of one slot per SPAN_UNIT elements of chunk, and its alignment slack. */
static void slot_units(const smelt_plan *const *plans, size_t nplans, uint64_t *per_unit,
                       uint64_t *slot_slack)
{
    const smelt_plan *plan = plans[0];
    uint64_t in_unit[plan->ninputs + 1], stage_unit[plan->ninputs + 1];
    smelt_engine_unit_sizes(plan, in_unit, stage_unit);
    *per_unit = 0;
    for (size_t o = 0; o < nplans; o++) /* every output stages its own encoded chunk */
        *per_unit += smelt_engine_out_unit(plans[o]);
    for (size_t i = 0; i < plan->ninputs; i++)
        *per_unit += in_unit[i] + stage_unit[i];
    /* Each slot's buffers may round up to the alignment. */
    *slot_slack = (plan->ninputs + nplans) * BUFFER_ALIGN;
    for (size_t i = 0; i < plan->ninputs; i++)
        if (stage_unit[i])
            *slot_slack += BUFFER_ALIGN;
}

int smelt_engine_layout_group(smelt_ctx *ctx, const smelt_plan *const *plans, size_t nplans,
                              uint64_t max_memory, int threads, smelt_engine_layout *layout)
{
    int rc = smelt_engine_layout_chunks(ctx, plans, nplans, max_memory, threads, layout);
    if (rc != SMELT_OK)
        return rc;
    /* The carry (one region, shared by the tensors in turn: one tensor's passes run at a time)
     * never costs a tensor its residency, so never a read: it takes what the chunks leave of
     * the budget, and slots of read-ahead beyond two past the largest resident tensor's chunks
     * where that is not enough. Then the largest resident tensor's carry that fits. */
    const smelt_plan *plan = plans[0];
    uint64_t most_carry = 0, most_chunks = 0;
    for (size_t t = 0; t < plan->ntensors; t++) {
        uint64_t need = carry_need(plans, nplans, layout, t);
        most_carry = need > most_carry ? need : most_carry;
        if (smelt_engine_tensor_resident(plans, nplans, layout, t)) {
            uint64_t c = smelt_engine_tensor_chunks(plan, layout, &plan->tensors[t]);
            most_chunks = c > most_chunks ? c : most_chunks;
        }
    }
    uint64_t per_unit, slot_slack;
    slot_units(plans, nplans, &per_unit, &slot_slack);
    uint64_t per_slot = per_unit * (layout->chunk_elements / SPAN_UNIT) + slot_slack;
    uint64_t left = max_memory > layout->buffer_bytes ? max_memory - layout->buffer_bytes : 0;
    if (most_carry > left) {
        uint64_t spare = layout->depth > most_chunks + 2 ? layout->depth - (most_chunks + 2) : 0;
        uint64_t give = (most_carry - left + per_slot - 1) / per_slot;
        give = give < spare ? give : spare;
        layout->depth -= (unsigned)give;
        layout->buffer_bytes -= give * per_slot;
        left += give * per_slot;
    }
    for (size_t t = 0; t < plan->ntensors; t++) {
        uint64_t need = carry_need(plans, nplans, layout, t);
        if (need <= left && need > layout->carry_bytes)
            layout->carry_bytes = need;
    }
    layout->buffer_bytes += layout->carry_bytes;
    return SMELT_OK;
}

int smelt_engine_layout_chunks(smelt_ctx *ctx, const smelt_plan *const *plans, size_t nplans,
                               uint64_t max_memory, int threads, smelt_engine_layout *layout)
{
    const smelt_plan *plan = plans[0]; /* the inputs are the same in every plan of a group */
    uint64_t per_unit, slot_slack; /* bytes of one slot per SPAN_UNIT elements of chunk */
    slot_units(plans, nplans, &per_unit, &slot_slack);
    unsigned nthreads = smelt_pool_default_threads(threads);
    /* The partials scale with the chunk (one per task), so they shrink with it on a small
     * budget instead of being reserved for the largest chunk. */
    uint64_t partial = smelt_engine_partial_bytes(plans, nplans);
    uint64_t fixed = smelt_engine_scratch_bytes(plans, nplans, nthreads, 0) +
                     all_factor_bytes(plan) +
                     smelt_delta_sources_bytes(plan, nthreads, CHUNK_ELEMS_TARGET);
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
            char outputs[48] = "the output";
            if (nplans > 1)
                snprintf(outputs, sizeof outputs, "%zu outputs", nplans);
            return smelt_fail(ctx, SMELT_E_BUDGET,
                              "a memory budget of %llu bytes cannot hold two chunks of %u "
                              "elements for %zu input%s and %s (%llu bytes are needed at %u "
                              "threads); raise --max-memory",
                              (unsigned long long)max_memory, TASK_ELEMS, plan->ninputs,
                              plan->ninputs == 1 ? "" : "s", outputs, (unsigned long long)need,
                              nthreads);
        }
    }
    layout->chunk_elements = chunk;
    layout->depth = (unsigned)depth;
    layout->buffer_bytes = fixed + depth * (per_unit * (chunk / SPAN_UNIT) + slot_slack) +
                           chunk / TASK_ELEMS * partial;
    layout->carry_bytes = 0;
    return SMELT_OK;
}

