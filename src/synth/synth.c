/* smelt_synth(): Llama-shaped model directories with deterministic pseudo-random weights.
 *
 * Every element is a pure function of (seed, tensor, index), so the generator runs on all cores
 * in any order and a fine-tune never needs to read its base: it recomputes the base's element,
 * rounds it to the dtype exactly as the base file holds it, and adds delta × noise. */
#include "smelt.h"

#include "common/pool.h"
#include "common/util.h"
#include "format/safetensors.h"
#include "io/writer.h"
#include "kernels/kernels.h"
#include "out/finalize.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNTH_CHUNK (1u << 20) /* elements generated per task */

void smelt_synth_options_default(smelt_synth_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->dtype = "bfloat16";
    opts->delta = 0.01;
    opts->shard_size = 1000000000ull;
}

typedef struct synth_arch {
    uint64_t hidden, intermediate, vocab, layers, heads, kv_heads;
    int tied; /* no lm_head: the output projection is the embedding */
} synth_arch;

typedef struct synth_tensor {
    char name[96];
    uint32_t ndim;
    uint64_t shape[2];
    uint64_t numel;
    int is_norm; /* norms hover around 1, weights around 0 */
} synth_tensor;

static uint64_t round_up(uint64_t x, uint64_t m) { return (x + m - 1) / m * m; }

/* Picks the widest hidden size that still leaves room for 8 layers (or the layers asked for),
 * then as many layers as the size asks for. Depends only on the parameter budget and the layer
 * count, so a base and its fine-tunes agree. */
static synth_arch choose_arch(uint64_t params, uint64_t want_layers)
{
    synth_arch a = {.hidden = 64, .layers = 1, .heads = 1};
    uint64_t room = want_layers ? want_layers : 8;
    for (uint64_t h = 64; h <= 8192; h += 64) {
        uint64_t inter = round_up(h * 11 / 4, 64);
        uint64_t per_layer = 4 * h * h + 3 * h * inter + 2 * h;
        if (per_layer * room > params)
            break;
        a.hidden = h;
    }
    a.intermediate = round_up(a.hidden * 11 / 4, 64);
    uint64_t vocab = params / (10 * a.hidden);
    a.vocab = vocab < 256 ? 256 : vocab > 32000 ? 32000 : vocab / 64 * 64;
    uint64_t per_layer = 4 * a.hidden * a.hidden + 3 * a.hidden * a.intermediate + 2 * a.hidden;
    uint64_t fixed = 2 * a.vocab * a.hidden + a.hidden;
    a.layers = want_layers ? want_layers
               : params > fixed + per_layer ? (params - fixed + per_layer / 2) / per_layer : 1;
    a.heads = a.hidden / 64;
    a.kv_heads = a.heads;
    return a;
}

/* choose_arch, with the shapes the options fix explicitly taking the place of derived ones. */
static int explicit_arch(smelt_ctx *ctx, const smelt_synth_options *o, uint64_t params,
                         synth_arch *out)
{
    synth_arch a = choose_arch(params, o->layers);
    if (!o->hidden) {
        if (o->intermediate || o->heads || o->kv_heads)
            return smelt_fail(ctx, SMELT_E_ARG, "synth: --intermediate, --heads and --kv-heads "
                                                "need --hidden");
        *out = a;
        return SMELT_OK;
    }
    if (o->hidden > 65536)
        return smelt_fail(ctx, SMELT_E_ARG, "synth: a hidden size of %u is more than 65536",
                          o->hidden);
    a.hidden = o->hidden;
    a.intermediate = o->intermediate ? o->intermediate : round_up(a.hidden * 11 / 4, 64);
    a.heads = o->heads ? o->heads : (a.hidden >= 64 ? a.hidden / 64 : 1);
    a.kv_heads = o->kv_heads ? o->kv_heads : a.heads;
    if (a.intermediate > 1u << 20 || a.hidden % a.heads || a.heads % a.kv_heads)
        return smelt_fail(ctx, SMELT_E_ARG,
                          "synth: hidden %llu, intermediate %llu, heads %llu and kv-heads %llu do "
                          "not fit (hidden must be a multiple of heads, heads of kv-heads, "
                          "intermediate at most 1048576)",
                          (unsigned long long)a.hidden, (unsigned long long)a.intermediate,
                          (unsigned long long)a.heads, (unsigned long long)a.kv_heads);
    if (!o->vocab) {
        uint64_t vocab = params / (10 * a.hidden);
        a.vocab = vocab < 256 ? 256 : vocab > 32000 ? 32000 : vocab / 64 * 64;
    }
    if (!o->layers) {
        uint64_t kv = a.hidden / a.heads * a.kv_heads;
        uint64_t per_layer = 2 * a.hidden * a.hidden + 2 * kv * a.hidden +
                             3 * a.hidden * a.intermediate + 2 * a.hidden;
        uint64_t fixed = 2 * a.vocab * a.hidden + a.hidden;
        a.layers = params > fixed + per_layer ? (params - fixed + per_layer / 2) / per_layer : 1;
    }
    *out = a;
    return SMELT_OK;
}

static size_t list_tensors(const synth_arch *a, synth_tensor *out)
{
    size_t n = 0;
#define ADD(norm, dims, d0, d1, ...)                                                          \
    do {                                                                                      \
        synth_tensor *t = &out[n++];                                                          \
        snprintf(t->name, sizeof t->name, __VA_ARGS__);                                       \
        t->ndim = dims;                                                                       \
        t->shape[0] = d0;                                                                     \
        t->shape[1] = d1;                                                                     \
        t->numel = dims == 1 ? (uint64_t)(d0) : (uint64_t)(d0) * (d1);                        \
        t->is_norm = norm;                                                                    \
    } while (0)
    uint64_t h = a->hidden, i = a->intermediate, kv = a->hidden / a->heads * a->kv_heads;
    ADD(0, 2, a->vocab, h, "model.embed_tokens.weight");
    for (uint64_t l = 0; l < a->layers; l++) {
        ADD(1, 1, h, 0, "model.layers.%llu.input_layernorm.weight", (unsigned long long)l);
        ADD(0, 2, h, h, "model.layers.%llu.self_attn.q_proj.weight", (unsigned long long)l);
        ADD(0, 2, kv, h, "model.layers.%llu.self_attn.k_proj.weight", (unsigned long long)l);
        ADD(0, 2, kv, h, "model.layers.%llu.self_attn.v_proj.weight", (unsigned long long)l);
        ADD(0, 2, h, h, "model.layers.%llu.self_attn.o_proj.weight", (unsigned long long)l);
        ADD(1, 1, h, 0, "model.layers.%llu.post_attention_layernorm.weight", (unsigned long long)l);
        ADD(0, 2, i, h, "model.layers.%llu.mlp.gate_proj.weight", (unsigned long long)l);
        ADD(0, 2, i, h, "model.layers.%llu.mlp.up_proj.weight", (unsigned long long)l);
        ADD(0, 2, h, i, "model.layers.%llu.mlp.down_proj.weight", (unsigned long long)l);
    }
    ADD(1, 1, h, 0, "model.norm.weight");
    if (!a->tied)
        ADD(0, 2, a->vocab, h, "lm_head.weight");
#undef ADD
    return n;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* A uniform value in [-1, 1) for (key, index). */
static float unit_noise(uint64_t key, uint64_t index)
{
    uint64_t r = splitmix64(key ^ splitmix64(index));
    return (float)((double)(r >> 40) * (1.0 / 8388608.0) - 1.0);
}

static uint64_t tensor_key(uint64_t seed, size_t tensor) { return splitmix64(seed * 0x100000001B3ull + tensor); }

typedef struct synth_job {
    const smelt_synth_options *opts;
    const smelt_kernels *k;
    smelt_dtype dtype;
    const synth_tensor *tensor;
    size_t tensor_index;
    uint8_t *out;         /* the whole chunk's encoded bytes */
    uint64_t first;       /* element index of out[0] */
    uint64_t count;
    float *scratch;       /* per worker: SYNTH_CHUNK / tasks floats */
} synth_job;

#define SYNTH_TASK 65536u

static void synth_task(void *arg, size_t task, unsigned worker)
{
    const synth_job *job = arg;
    float *vals = job->scratch + (size_t)worker * SYNTH_TASK;
    uint64_t begin = (uint64_t)task * SYNTH_TASK;
    uint64_t n = job->count - begin < SYNTH_TASK ? job->count - begin : SYNTH_TASK;
    const synth_tensor *t = job->tensor;
    uint64_t base_seed = job->opts->has_base ? job->opts->base_seed : job->opts->seed;
    uint64_t key = tensor_key(base_seed, job->tensor_index);
    float center = t->is_norm ? 1.0f : 0.0f, spread = t->is_norm ? 0.1f : 0.02f;
    for (uint64_t j = 0; j < n; j++)
        vals[j] = center + spread * unit_noise(key, job->first + begin + j);
    unsigned size = smelt_dtype_size(job->dtype);
    uint8_t *dst = job->out + begin * size;
    smelt_encode(job->k, dst, vals, job->dtype, (size_t)n);
    if (!job->opts->has_base)
        return;
    /* A fine-tune: the base exactly as stored, plus a seeded perturbation. */
    smelt_decode(job->k, vals, dst, job->dtype, (size_t)n);
    uint64_t fkey = tensor_key(job->opts->seed ^ 0x5DEECE66Dull, job->tensor_index);
    float delta = (float)job->opts->delta * spread / 0.02f;
    for (uint64_t j = 0; j < n; j++)
        vals[j] += delta * unit_noise(fkey, job->first + begin + j);
    smelt_encode(job->k, dst, vals, job->dtype, (size_t)n);
}

static int write_json(smelt_ctx *ctx, const char *dir, const char *name, json_t *obj)
{
    char *text = json_dumps(obj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(obj);
    char *path = smelt_path_join(dir, name);
    int rc = text && path ? smelt_write_file_atomic(ctx, path, text, strlen(text))
                          : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    free(text);
    free(path);
    return rc;
}

static int write_side_files(smelt_ctx *ctx, const char *dir, const synth_arch *a, smelt_dtype dt)
{
    json_t *config = json_pack(
        "{s:[s], s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:s, s:b, s:f, s:I, s:I, s:s}",
        "architectures", "LlamaForCausalLM", "model_type", "llama", "hidden_size",
        (json_int_t)a->hidden, "intermediate_size", (json_int_t)a->intermediate,
        "num_hidden_layers", (json_int_t)a->layers, "num_attention_heads", (json_int_t)a->heads,
        "num_key_value_heads", (json_int_t)a->kv_heads, "vocab_size", (json_int_t)a->vocab,
        "max_position_embeddings", (json_int_t)4096, "rms_norm_eps", 1e-5, "hidden_act", "silu",
        "tie_word_embeddings", a->tied, "rope_theta", 10000.0, "bos_token_id", (json_int_t)1,
        "eos_token_id", (json_int_t)2, "torch_dtype", smelt_dtype_torch_name(dt));
    json_t *tok = json_pack("{s:s, s:s, s:s, s:I, s:b}", "tokenizer_class", "LlamaTokenizer",
                            "bos_token", "<s>", "eos_token", "</s>", "model_max_length",
                            (json_int_t)4096, "add_bos_token", 1);
    json_t *gen = json_pack("{s:I, s:I}", "bos_token_id", (json_int_t)1, "eos_token_id",
                            (json_int_t)2);
    if (!config || !tok || !gen) {
        json_decref(config);
        json_decref(tok);
        json_decref(gen);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    int rc = write_json(ctx, dir, "config.json", config);
    int rc2 = write_json(ctx, dir, "tokenizer_config.json", tok);
    int rc3 = write_json(ctx, dir, "generation_config.json", gen);
    return rc ? rc : rc2 ? rc2 : rc3;
}

/* Writes the tensors [first, first + n) of the list to one shard file. */
static int write_shard(smelt_ctx *ctx, const smelt_synth_options *opts, smelt_dtype dt,
                       const synth_tensor *tensors, size_t first, size_t n, const char *path,
                       smelt_pool *pool, uint8_t *buf, float *scratch)
{
    smelt_st_out_tensor *descs = calloc(n, sizeof *descs);
    uint64_t *offsets = calloc(n, sizeof *offsets);
    uint8_t *header = NULL;
    size_t header_len;
    uint64_t file_size;
    smelt_out_file file = {.fd = -1};
    int rc = SMELT_OK;
    if (!descs || !offsets) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    unsigned size = smelt_dtype_size(dt);
    for (size_t i = 0; i < n; i++) {
        const synth_tensor *t = &tensors[first + i];
        descs[i] = (smelt_st_out_tensor){t->name, dt, t->ndim, t->shape, t->numel * size};
    }
    if ((rc = smelt_st_layout(ctx, descs, n, &header, &header_len, offsets, &file_size)) ||
        (rc = smelt_out_create(ctx, &file, path, file_size)) ||
        (rc = smelt_out_write(ctx, &file, header, header_len, 0)))
        goto out;
    for (size_t i = 0; i < n && rc == SMELT_OK; i++) {
        const synth_tensor *t = &tensors[first + i];
        for (uint64_t at = 0; at < t->numel && rc == SMELT_OK; at += SYNTH_CHUNK) {
            uint64_t count = t->numel - at < SYNTH_CHUNK ? t->numel - at : SYNTH_CHUNK;
            synth_job job = {opts, smelt_kernels_get(), dt, t, first + i, buf, at, count, scratch};
            smelt_pool_run(pool, (size_t)((count + SYNTH_TASK - 1) / SYNTH_TASK), synth_task, &job);
            rc = smelt_out_write(ctx, &file, buf, count * size, offsets[i] + at * size);
        }
    }
    if (rc == SMELT_OK && (rc = smelt_out_finish(ctx, &file)) == SMELT_OK)
        rc = smelt_out_commit(ctx, &file);
out:
    if (rc == SMELT_OK)
        smelt_out_release(&file);
    else
        smelt_out_discard(&file);
    free(header);
    free(descs);
    free(offsets);
    return rc;
}

int smelt_synth(smelt_ctx *ctx, const char *out_dir, const smelt_synth_options *opts)
{
    smelt_dtype dt = smelt_dtype_from_torch_name(opts->dtype ? opts->dtype : "bfloat16");
    if (dt == SMELT_DT_INVALID)
        return smelt_fail(ctx, SMELT_E_ARG, "synth: dtype '%s' is not bfloat16, float16 or float32",
                          opts->dtype);
    if (opts->size < 4096)
        return smelt_fail(ctx, SMELT_E_ARG, "synth: a size of at least 4K is needed");
    if (opts->has_base && !(opts->delta >= 0 && opts->delta < 1e6))
        return smelt_fail(ctx, SMELT_E_ARG, "synth: delta %g is out of range", opts->delta);
    uint64_t shard_limit = opts->shard_size ? opts->shard_size : 1000000000ull;
    if (opts->layers > 4096)
        return smelt_fail(ctx, SMELT_E_ARG, "synth: %u layers is more than 4096", opts->layers);
    synth_arch arch = {0};
    int arc = explicit_arch(ctx, opts, opts->size / smelt_dtype_size(dt), &arch);
    if (arc != SMELT_OK)
        return arc;
    /* The vocabulary may be set apart from the size: fine-tunes that added tokens have more
     * embedding rows than their base (the first rows keep the same values). */
    if (opts->vocab)
        arch.vocab = opts->vocab;
    arch.tied = opts->tied != 0;
    size_t ntensors = 9 * arch.layers + 3 - (size_t)arch.tied;
    synth_tensor *tensors = calloc(ntensors, sizeof *tensors);
    if (!tensors)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    ntensors = list_tensors(&arch, tensors);

    int rc = smelt_mkdir_p(ctx, out_dir);
    smelt_pool *pool = rc == SMELT_OK ? smelt_pool_new(opts->threads) : NULL;
    uint8_t *buf = smelt_aligned_alloc(4096, (size_t)SYNTH_CHUNK * 4);
    float *scratch = pool ? smelt_aligned_alloc(64, (size_t)smelt_pool_threads(pool) * SYNTH_TASK * 4)
                          : NULL;
    size_t *shard_first = calloc(ntensors + 1, sizeof *shard_first);
    const char **names = calloc(ntensors, sizeof *names), **files = calloc(ntensors, sizeof *files);
    char (*shard_names)[64] = calloc(ntensors, sizeof *shard_names);
    if (rc == SMELT_OK && (!pool || !buf || !scratch || !shard_first || !names || !files || !shard_names))
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    /* Shards: greedy in tensor order, as the merge output is laid out. */
    size_t nshards = 0;
    uint64_t in_shard = 0;
    for (size_t i = 0; rc == SMELT_OK && i < ntensors; i++) {
        uint64_t bytes = tensors[i].numel * smelt_dtype_size(dt);
        if (i == 0 || (in_shard > 0 && in_shard + bytes > shard_limit)) {
            shard_first[nshards++] = i;
            in_shard = 0;
        }
        in_shard += bytes;
    }
    if (rc == SMELT_OK)
        shard_first[nshards] = ntensors;
    for (size_t s = 0; rc == SMELT_OK && s < nshards; s++) {
        smelt_shard_name(shard_names[s], sizeof shard_names[s], (unsigned)s, (unsigned)nshards);
        char *path = smelt_path_join(out_dir, shard_names[s]);
        rc = path ? write_shard(ctx, opts, dt, tensors, shard_first[s],
                                shard_first[s + 1] - shard_first[s], path, pool, buf, scratch)
                  : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        free(path);
        for (size_t i = shard_first[s]; i < shard_first[s + 1]; i++) {
            names[i] = tensors[i].name;
            files[i] = shard_names[s];
        }
    }
    if (rc == SMELT_OK)
        rc = write_side_files(ctx, out_dir, &arch, dt);
    if (rc == SMELT_OK && nshards > 1) {
        uint64_t total = 0;
        for (size_t i = 0; i < ntensors; i++)
            total += tensors[i].numel * smelt_dtype_size(dt);
        rc = smelt_write_index(ctx, out_dir, names, files, ntensors, total);
    }
    smelt_pool_free(pool);
    free(buf);
    free(scratch);
    free(shard_first);
    free(names);
    free(files);
    free(shard_names);
    free(tensors);
    return rc;
}
