/* The GGUF output of a merge: tensor types and the file's header (see plan_gguf.h). */
#include "plan/plan_gguf.h"

#include "format/gguf.h"
#include "format/gguf_write.h"
#include "smelt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int smelt_plan_gguf_outtype(smelt_ctx *ctx, const char *name, smelt_dtype *out)
{
    static const struct { const char *name; smelt_dtype dt; } types[] = {
        {"f32", SMELT_DT_F32},   {"f16", SMELT_DT_F16},   {"bf16", SMELT_DT_BF16},
        {"q8_0", SMELT_DT_Q8_0}, {"q4_0", SMELT_DT_Q4_0}, {"q4_1", SMELT_DT_Q4_1},
        {"q5_0", SMELT_DT_Q5_0}, {"q5_1", SMELT_DT_Q5_1}, {"q4_k", SMELT_DT_Q4_K},
        {"q5_k", SMELT_DT_Q5_K}, {"q6_k", SMELT_DT_Q6_K},
    };
    *out = SMELT_DT_INVALID;
    if (!name || strcasecmp(name, "same") == 0)
        return SMELT_OK;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcasecmp(types[i].name, name) == 0) {
            *out = types[i].dt;
            return SMELT_OK;
        }
    return smelt_fail(ctx, SMELT_E_ARG, "--outtype '%s' is not a type smelt writes (same, f32, "
                      "f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k)", name);
}

/* A block type smelt can decode but not encode: the nearest type it can (llama.cpp's quantize
 * has no reference quantizer of the importance-matrix types either). */
static smelt_dtype encodable(smelt_dtype dt)
{
    switch (dt) {
    case SMELT_DT_Q2_K: case SMELT_DT_Q3_K: case SMELT_DT_IQ4_XS: return SMELT_DT_Q4_K;
    case SMELT_DT_IQ4_NL: return SMELT_DT_Q4_0;
    default: return dt;
    }
}

/* When the rows are not a whole number of blocks: llama.cpp's fallbacks for the k-quants
 * (llama-quant.cpp, llama_tensor_get_type: q4_K -> q5_0, q5_K -> q5_1, q6_K -> q8_0), and F16
 * when not even a 32-element block fits. */
static smelt_dtype fitting(smelt_dtype dt, uint64_t row)
{
    if (!smelt_dtype_is_block(dt) || row % smelt_dtype_block(dt) == 0)
        return dt;
    smelt_dtype next;
    switch (dt) {
    case SMELT_DT_Q4_K: next = SMELT_DT_Q5_0; break;
    case SMELT_DT_Q5_K: next = SMELT_DT_Q5_1; break;
    case SMELT_DT_Q6_K: next = SMELT_DT_Q8_0; break;
    default: next = SMELT_DT_F16; break;
    }
    return fitting(next, row);
}

static void notice_once(smelt_ctx *ctx, smelt_plan *plan, smelt_dtype from, smelt_dtype to,
                        const char *why, const char *tensor)
{
    for (size_t i = 0; i < plan->gguf_fallbacks; i++)
        if (plan->gguf_fallback[i][0] == from && plan->gguf_fallback[i][1] == to)
            return;
    if (plan->gguf_fallbacks < sizeof plan->gguf_fallback / sizeof plan->gguf_fallback[0]) {
        plan->gguf_fallback[plan->gguf_fallbacks][0] = from;
        plan->gguf_fallback[plan->gguf_fallbacks][1] = to;
        plan->gguf_fallbacks++;
    }
    smelt_notice(ctx, SMELT_LOG_NOTICE, "tensor '%s' and any like it: written as %s, not %s (%s)",
                 tensor, smelt_dtype_name(to), smelt_dtype_name(from), why);
}

smelt_dtype smelt_plan_gguf_dtype(smelt_ctx *ctx, smelt_plan *plan, const smelt_tensor_info *pattern)
{
    if (pattern->ndim < 2)
        return SMELT_DT_F32;
    smelt_dtype want = plan->outtype != SMELT_DT_INVALID ? plan->outtype : pattern->dtype;
    smelt_dtype dt = encodable(want);
    if (dt != want)
        notice_once(ctx, plan, want, dt, "smelt has no quantizer for it", pattern->name);
    uint64_t row = pattern->shape[pattern->ndim - 1];
    smelt_dtype fit = fitting(dt, row);
    if (fit != dt)
        notice_once(ctx, plan, dt, fit, "its rows are not a whole number of blocks", pattern->name);
    return fit;
}

/* Keys the merge writes itself; the rest of the reference model's metadata is carried over. */
static const char *const replaced_keys[] = {"general.name", "general.base_model.*", "split.*",
                                            "smelt.*"};

static int add_provenance(smelt_ctx *ctx, const smelt_plan *plan, const smelt_gguf *ref,
                          smelt_gguf_kvbuf *kb)
{
    const smelt_gguf_kv *name_kv = smelt_gguf_find(ref, "general.name");
    const char *ref_name = NULL;
    uint64_t ref_len = 0;
    if (!name_kv || smelt_gguf_kv_str(name_kv, &ref_name, &ref_len) != 0)
        ref_name = "model", ref_len = 5;
    char name[256];
    int len = snprintf(name, sizeof name, "%.*s (smelt %s merge)", (int)(ref_len > 160 ? 160 :
                       ref_len), ref_name, plan->method->name);
    int rc = smelt_gguf_kvbuf_add_str(ctx, kb, "general.name", name, (size_t)len);
    /* Every distinct model the merge read, base first, as general.base_model.N.name. */
    if (rc == SMELT_OK)
        rc = smelt_gguf_kvbuf_add_u32(ctx, kb, "general.base_model.count",
                                      (uint32_t)plan->nmodels);
    for (size_t m = 0; m < plan->nmodels && rc == SMELT_OK; m++) {
        char key[64];
        snprintf(key, sizeof key, "general.base_model.%zu.name", m);
        const smelt_gguf *g = plan->models[m]->gguf->files[0];
        const smelt_gguf_kv *kv = smelt_gguf_find(g, "general.name");
        const char *s = plan->models[m]->ref;
        uint64_t n = strlen(s);
        if (kv)
            smelt_gguf_kv_str(kv, &s, &n);
        rc = smelt_gguf_kvbuf_add_str(ctx, kb, key, s, (size_t)n);
    }
    if (rc == SMELT_OK)
        rc = smelt_gguf_kvbuf_add_str(ctx, kb, "smelt.merge_method", plan->method->name,
                                      strlen(plan->method->name));
    if (rc == SMELT_OK)
        rc = smelt_gguf_kvbuf_add_str(ctx, kb, "smelt.version", smelt_version(),
                                      strlen(smelt_version()));
    return rc;
}

/* The metadata: the reference model's pairs in its order, with the block count following the
 * output's layers (a frankenmerge changes it; llama.cpp sizes the model by it). */
static int build_kvs(smelt_ctx *ctx, const smelt_plan *plan, smelt_gguf_kvbuf *kb)
{
    const smelt_gguf *ref = plan->models[plan->ref_model]->gguf->files[0];
    const char *arch = NULL;
    uint64_t arch_len = 0;
    const smelt_gguf_kv *arch_kv = smelt_gguf_find(ref, "general.architecture");
    char block_key[96] = "";
    if (arch_kv && smelt_gguf_kv_str(arch_kv, &arch, &arch_len) == 0 && arch_len < 64)
        snprintf(block_key, sizeof block_key, "%.*s.block_count", (int)arch_len, arch);
    const smelt_gguf_kv *blocks = block_key[0] ? smelt_gguf_find(ref, block_key) : NULL;
    uint64_t ref_blocks = 0;
    int retag = blocks && plan->num_layers > 0 && smelt_gguf_kv_uint(blocks, &ref_blocks) == 0 &&
                ref_blocks != plan->num_layers;
    int rc = SMELT_OK;
    for (size_t i = 0; i < ref->nkv && rc == SMELT_OK; i++) {
        const smelt_gguf_kv *kv = &ref->kvs[i];
        int skip = 0;
        for (size_t k = 0; k < sizeof replaced_keys / sizeof replaced_keys[0]; k++) {
            const char *p = replaced_keys[k];
            size_t n = strlen(p);
            if (p[n - 1] == '*' ? strncmp(kv->key, p, n - 1) == 0 : strcmp(kv->key, p) == 0)
                skip = 1;
        }
        if (skip)
            continue;
        if (retag && kv == blocks)
            rc = smelt_gguf_kvbuf_add_u32(ctx, kb, block_key, plan->num_layers);
        else
            rc = smelt_gguf_kvbuf_copy(ctx, kb, kv);
    }
    return rc == SMELT_OK ? add_provenance(ctx, plan, ref, kb) : rc;
}

/* The plan's tensors as GGUF tensor infos (the type and the shape, innermost axis first). */
static int tensor_infos(smelt_ctx *ctx, const smelt_plan *plan, smelt_gguf_out_tensor *infos)
{
    for (size_t t = 0; t < plan->ntensors; t++) {
        const smelt_plan_tensor *pt = &plan->tensors[t];
        int type = smelt_dtype_to_ggml(pt->out_dtype);
        if (type < 0)
            return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "tensor '%s': GGUF cannot hold dtype %s",
                              pt->name, smelt_dtype_name(pt->out_dtype));
        infos[t] = (smelt_gguf_out_tensor){.name = pt->name, .type = (uint32_t)type,
                                           .ndim = pt->ref->ndim ? pt->ref->ndim : 1};
        for (uint32_t d = 0; d < SMELT_GGUF_MAX_DIMS; d++)
            infos[t].ne[d] = 1;
        for (uint32_t d = 0; d < pt->ref->ndim; d++)
            infos[t].ne[d] = pt->ref->shape[pt->ref->ndim - 1 - d];
    }
    return SMELT_OK;
}

/* Puts every tensor in its split, greedy in plan order as gguf-split counts: a new split starts
 * when the next tensor's data, padded to the alignment, would take the current one past
 * split_size (a larger tensor gets a split of its own). split_size 0: one file. Refuses what
 * gguf-split's keys cannot say: more than 65535 splits (split.count is a u16) or more tensors
 * than split.tensors.count (an i32) holds. */
static int assign_splits(smelt_ctx *ctx, smelt_plan *plan, uint64_t split_size, uint32_t align,
                         size_t *nsplits)
{
    size_t split = 0;
    uint64_t in_split = 0, count = 0;
    for (size_t t = 0; t < plan->ntensors; t++) {
        uint64_t bytes = plan->tensors[t].out_nbytes;
        bytes += (align - bytes % align) % align;
        if (split_size && count > 0 && in_split + bytes > split_size) {
            split++;
            in_split = count = 0;
        }
        plan->tensors[t].shard = (uint32_t)(split < UINT32_MAX ? split : UINT32_MAX);
        in_split += bytes;
        count++;
    }
    *nsplits = split + 1;
    if (*nsplits > SMELT_GGUF_MAX_SPLITS)
        return smelt_fail(ctx, SMELT_E_ARG, "--out-shard-size %llu makes %zu GGUF splits; a "
                          "gguf-split set has at most %u (split.count is 16 bits): pass a larger "
                          "size", (unsigned long long)split_size, *nsplits, SMELT_GGUF_MAX_SPLITS);
    if (*nsplits > 1 && plan->ntensors > INT32_MAX)
        return smelt_fail(ctx, SMELT_E_UNSUPPORTED, "%zu tensors: a gguf-split set counts at "
                          "most %d (split.tensors.count is an i32)", plan->ntensors, INT32_MAX);
    return SMELT_OK;
}

/* The keys of split `no` of `count` (gguf-split's types: u16, u16, i32). */
static int add_split_keys(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, size_t no, size_t count,
                          size_t ntensors)
{
    int rc = smelt_gguf_kvbuf_add_u16(ctx, kb, "split.no", (uint16_t)no);
    if (rc == SMELT_OK)
        rc = smelt_gguf_kvbuf_add_u16(ctx, kb, "split.count", (uint16_t)count);
    if (rc == SMELT_OK)
        rc = smelt_gguf_kvbuf_add_i32(ctx, kb, "split.tensors.count", (int32_t)ntensors);
    return rc;
}

/* Output file s: its name, and its header laid out over its n tensors from `first`: the
 * metadata in the first file only, the split keys in every file of a set. */
static int layout_split(smelt_ctx *ctx, smelt_plan *plan, size_t s, const smelt_gguf_out_tensor *infos,
                        size_t first, size_t n, uint32_t align, uint64_t *offsets)
{
    smelt_plan_shard *sh = &plan->shards[s];
    char name[64] = "model.gguf";
    if (plan->nshards > 1)
        smelt_gguf_split_path(name, sizeof name, "model", 5, (unsigned)s + 1,
                              (unsigned)plan->nshards);
    sh->ntensors = n;
    if (!(sh->name = strdup(name)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    smelt_gguf_kvbuf kb;
    smelt_gguf_kvbuf_init(&kb);
    int rc = s == 0 ? build_kvs(ctx, plan, &kb) : SMELT_OK;
    if (rc == SMELT_OK && plan->nshards > 1)
        rc = add_split_keys(ctx, &kb, s, plan->nshards, plan->ntensors);
    if (rc == SMELT_OK)
        rc = smelt_gguf_layout(ctx, &kb, infos + first, n, align, &sh->header, &sh->header_len,
                               offsets + first, NULL, &sh->size);
    smelt_gguf_kvbuf_free(&kb);
    return rc;
}

int smelt_plan_gguf_layout(smelt_ctx *ctx, smelt_plan *plan, uint64_t split_size)
{
    uint32_t align = plan->models[plan->ref_model]->gguf->files[0]->alignment;
    smelt_gguf_out_tensor *infos = calloc(plan->ntensors + 1, sizeof *infos);
    uint64_t *offsets = calloc(plan->ntensors + 1, sizeof *offsets);
    size_t nsplits = 1;
    int rc = infos && offsets ? SMELT_OK : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK && (rc = tensor_infos(ctx, plan, infos)) == SMELT_OK &&
        (rc = assign_splits(ctx, plan, split_size, align ? align : 32, &nsplits)) == SMELT_OK &&
        !(plan->shards = calloc(nsplits, sizeof *plan->shards)))
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK)
        plan->nshards = nsplits;
    for (size_t s = 0, first = 0; rc == SMELT_OK && s < plan->nshards; s++) {
        size_t n = 0;
        while (first + n < plan->ntensors && plan->tensors[first + n].shard == s)
            n++;
        rc = layout_split(ctx, plan, s, infos, first, n, align, offsets);
        first += n;
    }
    for (size_t t = 0; rc == SMELT_OK && t < plan->ntensors; t++)
        plan->tensors[t].out_offset = offsets[t];
    free(infos);
    free(offsets);
    return rc;
}
