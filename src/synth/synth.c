/* smelt_synth(): Llama-shaped model directories with deterministic pseudo-random weights, and
 * the parts the GGUF writer (synth_gguf.c) shares with them.
 *
 * Every element is a pure function of (seed, tensor, index), so the generator runs on all cores
 * in any order and a fine-tune never needs to read its base: it recomputes the base's element,
 * rounds it to the dtype (or ggml block type) exactly as the base file holds it, and adds
 * delta × noise. */
#include "synth/synth_internal.h"

#include "common/ggml_type.h"
#include "common/util.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "kernels/kernels.h"
#include "kernels/kernels_quant.h"
#include "out/finalize.h"
#include "out/st_write.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNTH_CHUNK (1u << 20) /* elements generated per task */

void smelt_synth_options_default(smelt_synth_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->delta = 0.01;
    opts->shard_size = 1000000000ull;
}

static uint64_t round_up(uint64_t x, uint64_t m) { return (x + m - 1) / m * m; }

/* Picks the widest hidden size that still leaves room for 8 layers (or the layers asked for),
 * then as many layers as the size asks for. Depends only on the parameter budget, the layer
 * count and the quantum, so a base and its fine-tunes agree. */
static synth_arch choose_arch(uint64_t params, uint64_t want_layers, uint64_t quantum)
{
    synth_arch a = {.hidden = quantum, .layers = 1, .heads = 1};
    uint64_t room = want_layers ? want_layers : 8;
    for (uint64_t h = quantum; h <= 8192; h += quantum) {
        uint64_t inter = round_up(h * 11 / 4, quantum);
        uint64_t per_layer = 4 * h * h + 3 * h * inter + 2 * h;
        if (per_layer * room > params)
            break;
        a.hidden = h;
    }
    a.intermediate = round_up(a.hidden * 11 / 4, quantum);
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
int synth_choose_arch(smelt_ctx *ctx, const smelt_synth_options *o, uint64_t params,
                      uint64_t quantum, synth_arch *out)
{
    synth_arch a = choose_arch(params, o->layers, quantum);
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
    a.intermediate = o->intermediate ? o->intermediate : round_up(a.hidden * 11 / 4, quantum);
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

size_t synth_tensor_count(const synth_arch *a)
{
    return SYNTH_PER_LAYER * a->layers + 3 - (size_t)(a->tied != 0);
}

size_t synth_list_tensors(const synth_arch *a, synth_tensor *out)
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
        t->rope_heads = 0;                                                                    \
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

float synth_unit_noise(uint64_t key, uint64_t index)
{
    uint64_t r = splitmix64(key ^ splitmix64(index));
    return (float)((double)(r >> 40) * (1.0 / 8388608.0) - 1.0);
}

uint64_t synth_tensor_key(uint64_t seed, size_t tensor) { return splitmix64(seed * 0x100000001B3ull + tensor); }

uint64_t synth_codec_bytes(synth_codec c, uint64_t n)
{
    if (c.dt != SMELT_DT_INVALID)
        return n * smelt_dtype_size(c.dt);
    const smelt_ggml_type *t = smelt_ggml_type_get(c.qtype);
    return n / t->block * t->bytes;
}

/* Encoders: quantizing to a block type rounds as a GGUF file holds it, as dtype rounding does
 * for safetensors; n is a whole number of blocks (tasks start at multiples of SYNTH_TASK). */
static void codec_encode(synth_codec c, void *dst, const float *src, size_t n)
{
    if (c.dt != SMELT_DT_INVALID)
        smelt_encode(smelt_kernels_get(), dst, src, c.dt, n);
    else
        smelt_quantize(c.qtype, dst, src, n);
}

static void codec_decode(synth_codec c, float *dst, const void *src, size_t n)
{
    if (c.dt != SMELT_DT_INVALID)
        smelt_decode(smelt_kernels_get(), dst, src, c.dt, n);
    else
        smelt_dequantize(c.qtype, dst, src, n);
}

typedef struct synth_job {
    const smelt_synth_options *opts;
    synth_codec codec;
    const synth_tensor *tensor;
    size_t tensor_index;
    uint8_t *out;         /* the whole chunk's encoded bytes */
    uint64_t first;       /* element index of out[0] */
    uint64_t count;
    float *scratch;       /* per worker: SYNTH_CHUNK / tasks floats */
} synth_job;

#define SYNTH_TASK 65536u

/* The element whose value element e of t takes: itself, or for a rope-permuted q/k tensor the
 * element of the Hugging Face layout that convert_hf_to_gguf.py moves to e. Row r of head h
 * (r = h * d + 2 * i + j, d the head size) comes from row h * d + j * d / 2 + i. */
static uint64_t source_index(const synth_tensor *t, uint64_t e)
{
    if (!t->rope_heads)
        return e;
    uint64_t cols = t->shape[1], d = t->shape[0] / t->rope_heads;
    uint64_t row = e / cols, in_head = row % d;
    uint64_t src = row - in_head + (in_head % 2) * (d / 2) + in_head / 2;
    return src * cols + e % cols;
}

static void synth_task(void *arg, size_t task, unsigned worker)
{
    const synth_job *job = arg;
    float *vals = job->scratch + (size_t)worker * SYNTH_TASK;
    uint64_t begin = (uint64_t)task * SYNTH_TASK;
    uint64_t n = job->count - begin < SYNTH_TASK ? job->count - begin : SYNTH_TASK;
    const synth_tensor *t = job->tensor;
    uint64_t base_seed = job->opts->has_base ? job->opts->base_seed : job->opts->seed;
    uint64_t key = synth_tensor_key(base_seed, job->tensor_index);
    float center = t->is_norm ? 1.0f : 0.0f, spread = t->is_norm ? 0.1f : 0.02f;
    for (uint64_t j = 0; j < n; j++)
        vals[j] = center + spread * synth_unit_noise(key, source_index(t, job->first + begin + j));
    uint8_t *dst = job->out + synth_codec_bytes(job->codec, begin);
    codec_encode(job->codec, dst, vals, (size_t)n);
    if (!job->opts->has_base)
        return;
    /* A fine-tune: the base exactly as stored, plus a seeded perturbation. */
    codec_decode(job->codec, vals, dst, (size_t)n);
    uint64_t fkey = synth_tensor_key(job->opts->seed ^ 0x5DEECE66Dull, job->tensor_index);
    float delta = (float)job->opts->delta * spread / 0.02f;
    for (uint64_t j = 0; j < n; j++)
        vals[j] += delta * synth_unit_noise(fkey, source_index(t, job->first + begin + j));
    codec_encode(job->codec, dst, vals, (size_t)n);
}

int synth_workers_init(smelt_ctx *ctx, const smelt_synth_options *opts, synth_workers *w)
{
    w->pool = smelt_pool_new(opts->threads);
    w->buf = smelt_aligned_alloc(4096, (size_t)SYNTH_CHUNK * 4);
    w->scratch = w->pool ? smelt_aligned_alloc(64, (size_t)smelt_pool_threads(w->pool) *
                                                       SYNTH_TASK * 4)
                         : NULL;
    if (!w->pool || !w->buf || !w->scratch) {
        synth_workers_free(w);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    return SMELT_OK;
}

void synth_workers_free(synth_workers *w)
{
    smelt_pool_free(w->pool);
    free(w->buf);
    free(w->scratch);
    *w = (synth_workers){0};
}

int synth_write_tensor(smelt_ctx *ctx, smelt_out_file *file, uint64_t offset,
                       const smelt_synth_options *opts, synth_codec c,
                       const synth_tensor *tensors, size_t index, synth_workers *w)
{
    const synth_tensor *t = &tensors[index];
    int rc = SMELT_OK;
    for (uint64_t at = 0; at < t->numel && rc == SMELT_OK; at += SYNTH_CHUNK) {
        uint64_t count = t->numel - at < SYNTH_CHUNK ? t->numel - at : SYNTH_CHUNK;
        synth_job job = {opts, c, t, index, w->buf, at, count, w->scratch};
        smelt_pool_run(w->pool, (size_t)((count + SYNTH_TASK - 1) / SYNTH_TASK), synth_task, &job);
        rc = smelt_out_write(ctx, file, w->buf, (size_t)synth_codec_bytes(c, count),
                             offset + synth_codec_bytes(c, at));
    }
    return rc;
}

int synth_write_json(smelt_ctx *ctx, const char *dir, const char *name, json_t *obj)
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
    int rc = synth_write_json(ctx, dir, "config.json", config);
    int rc2 = synth_write_json(ctx, dir, "tokenizer_config.json", tok);
    int rc3 = synth_write_json(ctx, dir, "generation_config.json", gen);
    return rc ? rc : rc2 ? rc2 : rc3;
}

/* One shard's tensors, for smelt_st_write_file. */
typedef struct shard_job {
    const smelt_synth_options *opts;
    smelt_dtype dt;
    const synth_tensor *tensors;
    size_t first;
    synth_workers *w;
} shard_job;

static int write_shard_tensor(smelt_ctx *ctx, void *user, smelt_out_file *file, size_t i,
                              uint64_t offset)
{
    const shard_job *job = user;
    return synth_write_tensor(ctx, file, offset, job->opts, (synth_codec){job->dt, 0},
                              job->tensors, job->first + i, job->w);
}

/* Writes the tensors [first, first + n) of the list to one shard file. */
static int write_shard(smelt_ctx *ctx, const smelt_synth_options *opts, smelt_dtype dt,
                       const synth_tensor *tensors, size_t first, size_t n, const char *path,
                       synth_workers *w)
{
    smelt_st_out_tensor *descs = calloc(n, sizeof *descs);
    if (!descs)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    unsigned size = smelt_dtype_size(dt);
    for (size_t i = 0; i < n; i++) {
        const synth_tensor *t = &tensors[first + i];
        descs[i] = (smelt_st_out_tensor){t->name, dt, t->ndim, t->shape, t->numel * size};
    }
    shard_job job = {opts, dt, tensors, first, w};
    int rc = smelt_st_write_file(ctx, path, descs, n, write_shard_tensor, &job, NULL);
    free(descs);
    return rc;
}

int synth_st_arch(smelt_ctx *ctx, const smelt_synth_options *opts, smelt_dtype *dt,
                  synth_arch *arch)
{
    *dt = smelt_dtype_from_torch_name(opts->dtype ? opts->dtype : "bfloat16");
    if (*dt == SMELT_DT_INVALID)
        return smelt_fail(ctx, SMELT_E_ARG, "synth: dtype '%s' is not bfloat16, float16 or float32",
                          opts->dtype);
    *arch = (synth_arch){0};
    int rc = synth_choose_arch(ctx, opts, opts->size / smelt_dtype_size(*dt), 64, arch);
    if (rc != SMELT_OK)
        return rc;
    /* The vocabulary may be set apart from the size: fine-tunes that added tokens have more
     * embedding rows than their base (the first rows keep the same values). */
    if (opts->vocab)
        arch->vocab = opts->vocab;
    arch->tied = opts->tied != 0;
    return SMELT_OK;
}

/* Writes the safetensors directory. */
static int synth_safetensors(smelt_ctx *ctx, const char *out_dir, const smelt_synth_options *opts)
{
    smelt_dtype dt;
    synth_arch arch;
    int arc = synth_st_arch(ctx, opts, &dt, &arch);
    if (arc != SMELT_OK)
        return arc;
    uint64_t shard_limit = opts->shard_size ? opts->shard_size : 1000000000ull;
    size_t ntensors = synth_tensor_count(&arch);
    synth_tensor *tensors = calloc(ntensors, sizeof *tensors);
    if (!tensors)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    ntensors = synth_list_tensors(&arch, tensors);

    synth_workers w = {0};
    int rc = smelt_mkdir_p(ctx, out_dir);
    if (rc == SMELT_OK)
        rc = synth_workers_init(ctx, opts, &w);
    size_t *shard_first = calloc(ntensors + 1, sizeof *shard_first);
    const char **names = calloc(ntensors, sizeof *names), **files = calloc(ntensors, sizeof *files);
    char (*shard_names)[64] = calloc(ntensors, sizeof *shard_names);
    if (rc == SMELT_OK && (!shard_first || !names || !files || !shard_names))
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
                                shard_first[s + 1] - shard_first[s], path, &w)
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
    synth_workers_free(&w);
    free(shard_first);
    free(names);
    free(files);
    free(shard_names);
    free(tensors);
    return rc;
}

int smelt_synth(smelt_ctx *ctx, const char *out, const smelt_synth_options *opts)
{
    if (opts->size < 4096)
        return smelt_fail(ctx, SMELT_E_ARG, "synth: a size of at least 4K is needed");
    if (opts->has_base && !(opts->delta >= 0 && opts->delta < 1e6))
        return smelt_fail(ctx, SMELT_E_ARG, "synth: delta %g is out of range", opts->delta);
    if (opts->layers > 4096)
        return smelt_fail(ctx, SMELT_E_ARG, "synth: %u layers is more than 4096", opts->layers);
    if (opts->lora_rank) {
        if ((opts->format && strcmp(opts->format, "safetensors")) || smelt_gguf_is_path(out))
            return smelt_fail(ctx, SMELT_E_ARG, "synth: --lora writes a PEFT adapter directory "
                              "for a safetensors model, not '%s'", out);
        return synth_lora(ctx, out, opts);
    }
    const char *format = opts->format ? opts->format : smelt_gguf_is_path(out) ? "gguf"
                                                                              : "safetensors";
    if (!strcmp(format, "safetensors"))
        return synth_safetensors(ctx, out, opts);
    if (strcmp(format, "gguf"))
        return smelt_fail(ctx, SMELT_E_ARG, "synth: format '%s' is not safetensors or gguf",
                          format);
    if (!smelt_gguf_is_path(out))
        return smelt_fail(ctx, SMELT_E_ARG, "synth: a GGUF output is a file whose name ends in "
                                            "'.gguf', not '%s'", out);
    return synth_gguf(ctx, out, opts);
}
