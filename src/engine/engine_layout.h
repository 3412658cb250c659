/* The engine's sizing rules, shared by the scheduler (engine.c) and the layout (engine_layout.c):
 * buffer units, passes, tasks and chunks of a tensor, what stays resident. Internal to engine/. */
#ifndef SMELT_ENGINE_LAYOUT_H
#define SMELT_ENGINE_LAYOUT_H

#include "engine/engine.h"
#include "engine/source.h"

#define TILE_ELEMS SMELT_TILE_ELEMS
/* Chunks are whole multiples of a task, so task boundaries sit at the same tensor indices
 * whatever the thread count or budget: per-task statistics then fold in one fixed order. */
#define TASK_ELEMS SMELT_TASK_ELEMS
/* Preferred chunk: large sequential reads; a bigger budget buys depth, not size. */
#define CHUNK_ELEMS_TARGET (2u * 1024u * 1024u)
/* Enough chunks to keep a tensor resident through its statistics passes (see
 * smelt_engine_tensor_resident) with read-ahead beside it; the budget, not this cap, sets the
 * depth in practice. */
#define MAX_DEPTH 64u
#define BUFFER_ALIGN 4096u

/* Buffer sizes are counted per 256 elements, the largest block of ggml's types: every dtype's
 * bytes for 256 elements are whole, and chunks are whole multiples of 256 elements. */
#define SPAN_UNIT 256u

/* The LoRA module input i stands for, or NULL. */
static inline const smelt_lora_module *lora_of(const smelt_plan_tensor *pt, size_t i)
{
    return smelt_source_kind_of(pt, i) == SMELT_SOURCE_LORA ? pt->sources[i].lora : NULL;
}

/* The dtype the methods see input i in: a LoRA input's f32, else the tensor's own. */
static inline smelt_dtype tile_dtype(const smelt_plan_tensor *pt, size_t i)
{
    return smelt_source_kind_of(pt, i) == SMELT_SOURCE_LORA ? SMELT_DT_F32 : pt->inputs[i]->dtype;
}

static inline unsigned tensor_passes(const smelt_plan *plan, const smelt_plan_tensor *pt)
{
    if (pt->kind != SMELT_TASK_MERGE || !plan->method->passes)
        return 0;
    return plan->method->passes(pt->method_state);
}

static inline smelt_pass_kind pass_kind(const smelt_plan *plan, const smelt_plan_tensor *pt,
                                        unsigned p)
{
    return plan->method->pass_kind ? plan->method->pass_kind(pt->method_state, p)
                                   : SMELT_PASS_READ;
}

/* Whether pass p has a read of its own (else it shares the next pass's). */
static inline int pass_owns_read(const smelt_plan *plan, const smelt_plan_tensor *pt, unsigned p)
{
    smelt_pass_kind kind = pass_kind(plan, pt, p);
    return kind == SMELT_PASS_READ || kind == SMELT_PASS_FALLBACK;
}

/* The read of a streamed tensor that pass p runs on (p == tensor_passes: the apply pass): one
 * per statistics pass before it with a read of its own. A fallback read that is skipped keeps
 * its number; no chunk carries it. */
static inline unsigned pass_read(const smelt_plan *plan, const smelt_plan_tensor *pt, unsigned p)
{
    unsigned read = 0;
    for (unsigned q = 0; q < p; q++)
        read += pass_owns_read(plan, pt, q);
    return read;
}

/* Whether pass p runs: a fallback pass only when its method says it is needed. */
static inline int pass_runs(const smelt_plan *plan, const smelt_plan_tensor *pt, unsigned p)
{
    return pass_kind(plan, pt, p) != SMELT_PASS_FALLBACK ||
           plan->method->pass_needed(pt->method_state, p);
}

/* The reads of a streamed tensor before its apply read. */
static inline unsigned tensor_stat_reads(const smelt_plan *plan, const smelt_plan_tensor *pt)
{
    return pass_read(plan, pt, tensor_passes(plan, pt));
}

/* Elements per task of a tensor: SMELT_TASK_ELEMS unless its method asks for fewer (whole
 * rows). It depends only on the tensor and its parameters, never on threads or budget, so task
 * boundaries stay at fixed tensor indices. */
static inline uint64_t tensor_task(const smelt_plan *plan, const smelt_plan_tensor *pt)
{
    if (pt->kind != SMELT_TASK_MERGE || !plan->method->task_elems)
        return TASK_ELEMS;
    uint64_t task = plan->method->task_elems(pt->method_state);
    return task > 0 && task <= TASK_ELEMS ? task : TASK_ELEMS;
}

/* Elements (MERGE) or bytes (COPY) the engine moves for a tensor, and the most of them one
 * chunk holds: a chunk holds whole tasks, and no more of them than the partials were sized for
 * (chunk_elements / TASK_ELEMS), so with smaller tasks a chunk is a little shorter. */
static inline uint64_t chunk_units(const smelt_plan_tensor *pt)
{
    if (pt->kind == SMELT_TASK_MERGE)
        return pt->ref->numel;
    return pt->inputs[0]->nbytes;
}

/* Bytes per SPAN_UNIT elements of one plan's output buffer (a COPY chunk uses it as bytes). */
uint64_t smelt_engine_out_unit(const smelt_plan *plan);

/* Bytes per SPAN_UNIT elements of input i's buffer (what the tiles see; a file input that
 * another input's read serves has none) and of its staging buffer (the bytes a derived input's
 * own read brings; 0 when it never reads for itself), over the plan. */
void smelt_engine_unit_sizes(const smelt_plan *plan, uint64_t *in_unit, uint64_t *stage_unit);

/* The f32 factors of the largest LoRA module input i needs (and in *scratch, when not NULL,
 * the scratch to load it). */
uint64_t smelt_engine_factor_bytes(const smelt_plan *plan, size_t i, uint64_t *scratch);

/* The statistics passes the group's reads of tensor t serve: the most any plan needs. */
unsigned smelt_engine_group_passes(const smelt_plan *const *plans, size_t nplans, size_t t);
/* The reads of streamed tensor t before the last: the most any plan's apply read needs. */
unsigned smelt_engine_group_stat_reads(const smelt_plan *const *plans, size_t nplans, size_t t);

/* 1 when read r of streamed tensor t carries only fallback passes (in every plan that reads
 * on it): it is read only when one of them turns out needed. */
int smelt_engine_group_fallback_read(const smelt_plan *const *plans, size_t nplans, size_t t,
                                     unsigned r);

/* The most elements (MERGE) or bytes (COPY) of a tensor one chunk holds, and its chunks. */
uint64_t smelt_engine_chunk_cap(const smelt_plan *plan, const smelt_engine_layout *layout,
                                const smelt_plan_tensor *pt);
uint64_t smelt_engine_tensor_chunks(const smelt_plan *plan, const smelt_engine_layout *layout,
                                    const smelt_plan_tensor *pt);

/* 1 when tensor t has statistics passes (in any plan of the group) and all its chunks fit in
 * the buffers at once: it is read once and every pass runs over the same bytes. */
int smelt_engine_tensor_resident(const smelt_plan *const *plans, size_t nplans,
                                 const smelt_engine_layout *layout, size_t t);

/* The read of tensor t (0-based) on which plan o applies and writes its output: its own
 * statistics reads' count for a streamed tensor (an output with fewer applies on an earlier
 * read), the one read of a resident tensor. */
unsigned smelt_engine_apply_read(const smelt_plan *const *plans, size_t nplans,
                                 const smelt_engine_layout *layout, size_t o, size_t t);

/* The largest per-task partial of any plan, tensor and pass (the apply pass's scratch
 * included), rounded to a cache line: the plans' statistics run one after another over the
 * same partials. */
size_t smelt_engine_partial_bytes(const smelt_plan *const *plans, size_t nplans);

/* The chunk size, depth and buffers smelt_engine_layout_group starts from, before it sets the
 * carry region aside (carry_bytes 0): the carry never makes a tensor resident here streamed
 * there (unit test_engine checks it). */
int smelt_engine_layout_chunks(smelt_ctx *ctx, const smelt_plan *const *plans, size_t nplans,
                               uint64_t max_memory, int threads, smelt_engine_layout *layout);

/* The carry bytes per element tensor t gets in every pass (smelt_method.carry_bytes), from the
 * start of the layout's carry region: its method's, when the tensor is resident and its carry
 * fits the region; 0 otherwise, and always for a merge group (whose outputs' passes would
 * share it). */
size_t smelt_engine_tensor_carry(const smelt_plan *const *plans, size_t nplans,
                                 const smelt_engine_layout *layout, size_t t);

/* The largest per-worker accumulator of any tensor and statistics pass (0 when none). */
size_t smelt_engine_worker_partial_bytes(const smelt_plan *const *plans, size_t nplans);

/* Per-worker f32 tiles, plus one partial per task of a chunk of `chunk` elements. */
uint64_t smelt_engine_scratch_bytes(const smelt_plan *const *plans, size_t nplans,
                                    unsigned threads, uint64_t chunk);

#endif
