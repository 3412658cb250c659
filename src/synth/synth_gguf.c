/* smelt synth --format gguf: a small llama model as one GGUF v3 file that llama.cpp loads.
 *
 * The tensors are synth's (synth_internal.h) under llama.cpp's names, with ne = the torch shape
 * reversed and q/k rows in llama.cpp's rotary order, so the F32 file is what
 * convert_hf_to_gguf.py makes of the float32 safetensors model. The metadata is what llama.cpp's
 * loader needs for arch llama (llama-model.cpp: hparams as u32, the RMS epsilon; llama-vocab.cpp:
 * an SPM vocabulary with scores and token types, bos/eos/unk ids). */
#include "synth/synth_internal.h"

#include "common/ggml_type.h"
#include "format/gguf_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long long ull;

/* llama.cpp's llama_ftype numbers (general.file_type: informational, shown by its loader). */
enum { FTYPE_F32 = 0, FTYPE_F16 = 1, FTYPE_Q8_0 = 7, FTYPE_Q4_K_S = 14, FTYPE_Q4_K_M = 15,
       FTYPE_BF16 = 32 };

typedef struct gguf_dtype {
    const char *name, *alias; /* --dtype spellings */
    uint32_t type;            /* the matrices' ggml type */
    uint32_t ftype;
    int q4_k_m;               /* llama-quantize's Q4_K_M choice of Q6_K tensors */
} gguf_dtype;

static const gguf_dtype dtypes[] = {
    {"f32", "float32", SMELT_GGML_F32, FTYPE_F32, 0},
    {"f16", "float16", SMELT_GGML_F16, FTYPE_F16, 0},
    {"bf16", "bfloat16", SMELT_GGML_BF16, FTYPE_BF16, 0},
    {"q8_0", NULL, SMELT_GGML_Q8_0, FTYPE_Q8_0, 0},
    {"q4_k", NULL, SMELT_GGML_Q4_K, FTYPE_Q4_K_S, 0},
    {"q4_k_m", NULL, SMELT_GGML_Q4_K, FTYPE_Q4_K_M, 1},
};

static const gguf_dtype *find_dtype(const char *name)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(name, dtypes[i].name) || (dtypes[i].alias && !strcmp(name, dtypes[i].alias)))
            return &dtypes[i];
    return NULL;
}

/* llama.cpp's use_more_bits (llama-quant.cpp): the layers whose attn_v and ffn_down Q4_K_M
 * stores in Q6_K: the first and last eighth, and every third one between. */
static int use_more_bits(uint64_t i, uint64_t n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static const char *const layer_names[SYNTH_PER_LAYER] = {
    "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
    "ffn_down"};

/* The GGUF name of tensor i of synth's list and its ggml type under dtype d. */
static uint32_t gguf_name_type(const synth_arch *a, const synth_tensor *t, size_t i,
                               const gguf_dtype *d, char *name, size_t cap)
{
    size_t nlayer = SYNTH_PER_LAYER * (size_t)a->layers;
    uint64_t layer = i ? (i - 1) / SYNTH_PER_LAYER : 0;
    size_t slot = i ? (i - 1) % SYNTH_PER_LAYER : 0;
    int is_output = 0;
    if (i == 0)
        snprintf(name, cap, "token_embd.weight");
    else if (i <= nlayer)
        snprintf(name, cap, "blk.%llu.%s.weight", (ull)layer, layer_names[slot]);
    else if (i == nlayer + 1)
        snprintf(name, cap, "output_norm.weight");
    else {
        snprintf(name, cap, "output.weight");
        is_output = 1;
    }
    if (t->ndim == 1) /* llama.cpp computes norms in f32 and wants them stored so */
        return SMELT_GGML_F32;
    if (d->q4_k_m) {
        /* Tied: the embedding is the output projection and gets the output's type. */
        if (is_output || (i == 0 && a->tied))
            return SMELT_GGML_Q6_K;
        if (i > 0 && i <= nlayer && (slot == 3 || slot == 8) && use_more_bits(layer, a->layers))
            return SMELT_GGML_Q6_K;
    }
    return d->type;
}

static synth_codec codec_of(uint32_t type)
{
    switch (type) {
    case SMELT_GGML_F32: return (synth_codec){SMELT_DT_F32, 0};
    case SMELT_GGML_F16: return (synth_codec){SMELT_DT_F16, 0};
    case SMELT_GGML_BF16: return (synth_codec){SMELT_DT_BF16, 0};
    default: return (synth_codec){SMELT_DT_INVALID, type};
    }
}

/* The vocabulary: <unk> <s> </s>, then the byte tokens <0x00>...<0xFF>, then pieces
 * "▁w<id>" with SPM scores falling with the id. Token types are llama.cpp's: 1 normal,
 * 2 unknown, 3 control, 6 byte. */
typedef struct vocab {
    char **tokens;
    float *scores;
    int32_t *types;
    uint64_t n;
} vocab;

static void vocab_free(vocab *v)
{
    for (uint64_t i = 0; v->tokens && i < v->n; i++)
        free(v->tokens[i]);
    free(v->tokens);
    free(v->scores);
    free(v->types);
}

static int vocab_make(smelt_ctx *ctx, uint64_t n, vocab *v)
{
    v->n = n;
    v->tokens = calloc(n, sizeof *v->tokens);
    v->scores = calloc(n, sizeof *v->scores);
    v->types = calloc(n, sizeof *v->types);
    if (!v->tokens || !v->scores || !v->types)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    static const char *const special[3] = {"<unk>", "<s>", "</s>"};
    for (uint64_t i = 0; i < n; i++) {
        char buf[32];
        if (i < 3) {
            snprintf(buf, sizeof buf, "%s", special[i]);
            v->types[i] = i == 0 ? 2 : 3;
        } else if (i < 3 + 256) {
            snprintf(buf, sizeof buf, "<0x%02X>", (unsigned)(i - 3));
            v->types[i] = 6;
        } else {
            snprintf(buf, sizeof buf, "\xe2\x96\x81w%llu", (ull)i);
            v->types[i] = 1;
            v->scores[i] = -(float)(i - 3 - 256);
        }
        if (!(v->tokens[i] = strdup(buf)))
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    return SMELT_OK;
}

static int add_metadata(smelt_ctx *ctx, smelt_gguf_kvbuf *kb, const smelt_synth_options *o,
                        const synth_arch *a, const gguf_dtype *d, const vocab *v)
{
    char name[160];
    if (o->has_base)
        snprintf(name, sizeof name, "smelt synth: fine-tune (seed %llu, delta %g) of seed %llu",
                 (ull)o->seed, o->delta, (ull)o->base_seed);
    else
        snprintf(name, sizeof name, "smelt synth: seed %llu", (ull)o->seed);
    int rc;
#define TRY(call)                  \
    do {                           \
        if ((rc = (call)))         \
            return rc;             \
    } while (0)
    TRY(smelt_gguf_kvbuf_add_str(ctx, kb, "general.architecture", "llama", 5));
    TRY(smelt_gguf_kvbuf_add_str(ctx, kb, "general.name", name, strlen(name)));
    TRY(smelt_gguf_kvbuf_add_u32(ctx, kb, "general.file_type", d->ftype));
    if (smelt_ggml_type_get(d->type)->block > 1) /* as llama-quantize writes it */
        TRY(smelt_gguf_kvbuf_add_u32(ctx, kb, "general.quantization_version", 2));
    TRY(smelt_gguf_kvbuf_add_u32(ctx, kb, "llama.vocab_size", (uint32_t)a->vocab));
    TRY(smelt_gguf_kvbuf_add_u32(ctx, kb, "llama.context_length", 4096));
    TRY(smelt_gguf_kvbuf_add_u32(ctx, kb, "llama.embedding_length", (uint32_t)a->hidden));
    TRY(smelt_gguf_kvbuf_add_u32(ctx, kb, "llama.block_count", (uint32_t)a->layers));
    TRY(smelt_gguf_kvbuf_add_u32(ctx, kb, "llama.feed_forward_length", (uint32_t)a->intermediate));
    TRY(smelt_gguf_kvbuf_add_u32(ctx, kb, "llama.attention.head_count", (uint32_t)a->heads));
    TRY(smelt_gguf_kvbuf_add_u32(ctx, kb, "llama.attention.head_count_kv", (uint32_t)a->kv_heads));
    TRY(smelt_gguf_kvbuf_add_u32(ctx, kb, "llama.rope.dimension_count",
                                 (uint32_t)(a->hidden / a->heads)));
    /* The values of the safetensors model's config.json (rms_norm_eps, rope_theta). */
    TRY(smelt_gguf_kvbuf_add_f32(ctx, kb, "llama.attention.layer_norm_rms_epsilon", 1e-5f));
    TRY(smelt_gguf_kvbuf_add_f32(ctx, kb, "llama.rope.freq_base", 10000.0f));
    TRY(smelt_gguf_kvbuf_add_str(ctx, kb, "tokenizer.ggml.model", "llama", 5));
    TRY(smelt_gguf_kvbuf_add_str_array(ctx, kb, "tokenizer.ggml.tokens",
                                       (const char *const *)v->tokens, (size_t)v->n));
    TRY(smelt_gguf_kvbuf_add_f32_array(ctx, kb, "tokenizer.ggml.scores", v->scores, (size_t)v->n));
    TRY(smelt_gguf_kvbuf_add_i32_array(ctx, kb, "tokenizer.ggml.token_type", v->types,
                                       (size_t)v->n));
    TRY(smelt_gguf_kvbuf_add_u32(ctx, kb, "tokenizer.ggml.bos_token_id", 1));
    TRY(smelt_gguf_kvbuf_add_u32(ctx, kb, "tokenizer.ggml.eos_token_id", 2));
    TRY(smelt_gguf_kvbuf_add_u32(ctx, kb, "tokenizer.ggml.unknown_token_id", 0));
    TRY(smelt_gguf_kvbuf_add_bool(ctx, kb, "tokenizer.ggml.add_bos_token", 1));
    TRY(smelt_gguf_kvbuf_add_bool(ctx, kb, "tokenizer.ggml.add_eos_token", 0));
#undef TRY
    return SMELT_OK;
}

/* Refuses shapes llama.cpp or the block type cannot take, naming the options to change. */
static int check_shapes(smelt_ctx *ctx, const synth_arch *a, const gguf_dtype *d)
{
    uint32_t block = smelt_ggml_type_get(d->type)->block;
    if (d->q4_k_m)
        block = 256; /* Q6_K too */
    if (a->hidden % block || a->intermediate % block)
        return smelt_fail(ctx, SMELT_E_ARG,
                          "synth: %s stores rows in blocks of %u, but hidden is %llu and "
                          "intermediate %llu (give --hidden and --intermediate as multiples of %u)",
                          d->name, block, (ull)a->hidden, (ull)a->intermediate, block);
    if ((a->hidden / a->heads) % 2)
        return smelt_fail(ctx, SMELT_E_ARG,
                          "synth: a head size of %llu is odd: llama's rotary embedding rotates "
                          "pairs", (ull)(a->hidden / a->heads));
    /* llama.cpp's SPM tokenizer looks byte tokens up and throws when one is missing. */
    if (a->vocab < 3 + 256)
        return smelt_fail(ctx, SMELT_E_ARG,
                          "synth: a vocabulary of %llu tokens: a GGUF one needs at least 259 "
                          "(<unk>, <s>, </s> and the 256 byte tokens; give --vocab)",
                          (ull)a->vocab);
    if (a->vocab > UINT32_MAX || a->intermediate > UINT32_MAX)
        return smelt_fail(ctx, SMELT_E_ARG, "synth: shapes past 32 bits");
    return SMELT_OK;
}

int synth_gguf(smelt_ctx *ctx, const char *path, const smelt_synth_options *opts)
{
    const gguf_dtype *d = find_dtype(opts->dtype ? opts->dtype : "f16");
    if (!d)
        return smelt_fail(ctx, SMELT_E_ARG,
                          "synth: GGUF dtype '%s' is not f32, f16, bf16, q8_0, q4_k or q4_k_m",
                          opts->dtype);
    const smelt_ggml_type *mt = smelt_ggml_type_get(d->type);
    synth_arch arch = {0};
    int rc = synth_choose_arch(ctx, opts, opts->size / mt->bytes * mt->block,
                               mt->block == 256 ? 256 : 64, &arch);
    if (rc)
        return rc;
    if (opts->vocab)
        arch.vocab = opts->vocab;
    arch.tied = opts->tied != 0;
    if ((rc = check_shapes(ctx, &arch, d)))
        return rc;

    size_t n = synth_tensor_count(&arch);
    synth_tensor *tensors = calloc(n, sizeof *tensors);
    smelt_gguf_out_tensor *out = calloc(n, sizeof *out);
    char (*names)[SMELT_GGUF_MAX_NAME + 1] = calloc(n, sizeof *names);
    uint64_t *offsets = calloc(n, sizeof *offsets);
    vocab v = {0};
    smelt_gguf_kvbuf kb;
    smelt_gguf_kvbuf_init(&kb);
    uint8_t *header = NULL;
    size_t header_len = 0;
    uint64_t file_size = 0;
    smelt_out_file file = {.fd = -1};
    synth_workers w = {0};
    if (!tensors || !out || !names || !offsets) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto done;
    }
    n = synth_list_tensors(&arch, tensors);
    for (size_t i = 0; i < n; i++) {
        synth_tensor *t = &tensors[i];
        size_t slot = i ? (i - 1) % SYNTH_PER_LAYER : 0;
        if (i && i <= SYNTH_PER_LAYER * arch.layers && (slot == 1 || slot == 2))
            t->rope_heads = (uint32_t)(slot == 1 ? arch.heads : arch.kv_heads);
        out[i].name = names[i];
        out[i].type = gguf_name_type(&arch, t, i, d, names[i], sizeof names[i]);
        out[i].ndim = t->ndim;
        out[i].ne[0] = t->ndim == 1 ? t->shape[0] : t->shape[1];
        out[i].ne[1] = t->ndim == 1 ? 1 : t->shape[0];
    }
    if ((rc = vocab_make(ctx, arch.vocab, &v)) ||
        (rc = add_metadata(ctx, &kb, opts, &arch, d, &v)) ||
        (rc = smelt_gguf_layout(ctx, &kb, out, n, 0, &header, &header_len, offsets, NULL,
                                &file_size)) ||
        (rc = synth_workers_init(ctx, opts, &w)) ||
        (rc = smelt_out_create(ctx, &file, path, file_size)) ||
        (rc = smelt_out_write(ctx, &file, header, header_len, 0)))
        goto done;
    for (size_t i = 0; i < n && rc == SMELT_OK; i++)
        rc = synth_write_tensor(ctx, &file, offsets[i], opts, codec_of(out[i].type), tensors, i,
                                &w);
    if (rc == SMELT_OK && (rc = smelt_out_finish(ctx, &file)) == SMELT_OK)
        rc = smelt_out_commit(ctx, &file);
done:
    if (rc == SMELT_OK)
        smelt_out_release(&file);
    else
        smelt_out_discard(&file);
    synth_workers_free(&w);
    free(header);
    smelt_gguf_kvbuf_free(&kb);
    vocab_free(&v);
    free(offsets);
    free(names);
    free(out);
    free(tensors);
    return rc;
}
