/* What the two synth writers share: the architecture, the tensor list (Hugging Face names and
 * torch shapes), the element generator and the encoders. synth.c writes safetensors directories,
 * synth_gguf.c llama.cpp GGUF files; both draw every element from the same function of (seed,
 * tensor index, element index), so a GGUF model is the safetensors model of the same options,
 * converted as llama.cpp's convert_hf_to_gguf.py would. */
#ifndef SMELT_SYNTH_INTERNAL_H
#define SMELT_SYNTH_INTERNAL_H

#include "smelt.h"

#include "common/dtype.h"
#include "common/pool.h"
#include "io/writer.h"

#include <stddef.h>
#include <stdint.h>

typedef struct synth_arch {
    uint64_t hidden, intermediate, vocab, layers, heads, kv_heads;
    int tied; /* no lm_head: the output projection is the embedding */
} synth_arch;

/* The tensors per decoder layer, in list order: input_layernorm, q, k, v, o,
 * post_attention_layernorm, gate, up, down. */
#define SYNTH_PER_LAYER 9

typedef struct synth_tensor {
    char name[96];
    uint32_t ndim;
    uint64_t shape[2];   /* torch order: [out, in] */
    uint64_t numel;
    int is_norm;         /* norms hover around 1, weights around 0 */
    /* For llama.cpp's layout of q_proj / k_proj: the number of heads whose rows are permuted
     * (convert_hf_to_gguf.py's permute: each head's two rotary halves interleaved), else 0.
     * Element e of the written tensor takes the value of the unpermuted element. */
    uint32_t rope_heads;
} synth_tensor;

/* How the generated values are stored: a safetensors dtype (qtype unused), or, when dt is
 * SMELT_DT_INVALID, a ggml block type through the quantizers (kernels_quant.h). */
typedef struct synth_codec {
    smelt_dtype dt;
    uint32_t qtype;
} synth_codec;

/* Bytes that n elements (whole blocks) take in the codec. */
uint64_t synth_codec_bytes(synth_codec c, uint64_t n);

/* The architecture for these options and a parameter budget: explicit shapes where the options
 * give them, the rest derived. `quantum` is what derived hidden and intermediate sizes are
 * multiples of (64; 256 for ggml's k-quants, whose rows are whole 256-element blocks). Returns
 * SMELT_OK or SMELT_E_ARG with a message. */
int synth_choose_arch(smelt_ctx *ctx, const smelt_synth_options *o, uint64_t params,
                      uint64_t quantum, synth_arch *out);

/* Fills out (room for synth_tensor_count(a)) with the model's tensors in file order; returns the
 * count. */
size_t synth_tensor_count(const synth_arch *a);
size_t synth_list_tensors(const synth_arch *a, synth_tensor *out);

/* A uniform value in [-1, 1) for (key, index): every generated element is one of these. */
float synth_unit_noise(uint64_t key, uint64_t index);

/* The noise key of tensor `tensor` (its index in the list) under `seed`. */
uint64_t synth_tensor_key(uint64_t seed, size_t tensor);

/* The safetensors dtype (opts->dtype, default bfloat16) and the architecture of the model
 * directory these options describe; the adapter writer (synth_lora.c) shapes its tensors by the
 * same architecture. SMELT_OK or SMELT_E_ARG with a message. */
int synth_st_arch(smelt_ctx *ctx, const smelt_synth_options *opts, smelt_dtype *dt,
                  synth_arch *arch);

struct json_t;

/* Writes dir/name atomically as indented JSON and releases obj (also on failure). */
int synth_write_json(smelt_ctx *ctx, const char *dir, const char *name, struct json_t *obj);

/* Generator threads and their buffers. */
typedef struct synth_workers {
    smelt_pool *pool;
    uint8_t *buf;    /* one chunk's encoded bytes */
    float *scratch;  /* per worker: one task's values */
} synth_workers;

/* Starts the threads (opts->threads) and allocates the buffers. SMELT_OK or SMELT_E_NOMEM. */
int synth_workers_init(smelt_ctx *ctx, const smelt_synth_options *opts, synth_workers *w);
void synth_workers_free(synth_workers *w);

/* Generates tensors[index] in codec c, chunk by chunk, and writes it to `file` at `offset`. */
int synth_write_tensor(smelt_ctx *ctx, smelt_out_file *file, uint64_t offset,
                       const smelt_synth_options *opts, synth_codec c,
                       const synth_tensor *tensors, size_t index, synth_workers *w);

/* smelt_synth for opts->format "gguf": one llama GGUF file at `path` (synth_gguf.c). */
int synth_gguf(smelt_ctx *ctx, const char *path, const smelt_synth_options *opts);

/* smelt_synth with opts->lora_rank: a PEFT LoRA adapter directory for the safetensors model of
 * the same options (synth_lora.c). */
int synth_lora(smelt_ctx *ctx, const char *dir, const smelt_synth_options *opts);

#endif
