/* PEFT LoRA adapters: adapter_config.json and adapter_model.safetensors, read as PEFT's
 * LoraModel reads them (peft/tuners/lora/config.py, model.py, layer.py; peft/utils/other.py
 * get_pattern_key; peft/utils/save_and_load.py for the saved key names), so that a model
 * reference "BASE+ADAPTER" is the base with every targeted weight W replaced by
 * W + scale * (B @ A), computed on the fly by the engine. */
#ifndef SMELT_LORA_H
#define SMELT_LORA_H

#include "format/safetensors.h"

/* One adapted module: its base weight gains delta = scale * (B @ A), transposed when the base
 * stores the weight as [in, out] (fan_in_fan_out: transformers' Conv1D) or is an embedding
 * ([vocab, dim], PEFT's lora_embedding_A is [r, vocab] and lora_embedding_B [dim, r]). With
 * DoRA (use_dora) the adapted weight is then rescaled per output feature: each row (each
 * column when transposed) of V = W + delta becomes magnitude[j] / ||V_j|| * V_j.
 *
 * In both cases delta[row][col] = scale * sum over k of left[k][row] * right[k][col], with left
 * = B^T and right = A for a plain linear weight, and left = A, right = B^T for the transposed
 * kinds: the engine keeps left and right as r rows of f32 (engine/source.c). */
typedef struct smelt_lora_module {
    char *target;                  /* the base tensor it changes: "<module>.weight" */
    const smelt_tensor_info *a;    /* lora_A / lora_embedding_A, in the adapter's weights */
    const smelt_tensor_info *b;    /* lora_B / lora_embedding_B */
    const smelt_tensor_info *magnitude; /* DoRA's lora_magnitude_vector, or NULL */
    uint32_t rank;
    double alpha;                  /* lora_alpha, or alpha_pattern's value for this module */
    float scale;                   /* alpha / rank (alpha / sqrt(rank) with use_rslora), rounded
                                      to f32 as PyTorch does when it multiplies an f32 tensor */
    int transposed;                /* the base stores [in, out] (Conv1D), or an embedding; set
                                      by smelt_lora_attach from the base's shape */
    int embedding;
    uint64_t rows, cols;           /* the base weight's shape */
} smelt_lora_module;

/* An opened adapter. Read-only once opened; may be shared between threads. */
typedef struct smelt_lora {
    char *ref;                     /* as the user wrote it */
    char *config_path;
    smelt_model *weights;          /* adapter_model.safetensors */
    smelt_lora_module *modules;    /* sorted by target */
    size_t nmodules;
    /* Tensors the adapter stores whole (modules_to_save, trained biases): they replace the
     * base's tensor of the same name. `replacements[i].name` is the base name; the info's file
     * index counts in the base model's files after smelt_lora_attach. */
    smelt_tensor_info *replacements; /* sorted by name */
    size_t nreplacements;
    int use_rslora, fan_in_fan_out, use_dora;
    double lora_alpha;
    uint32_t r;
} smelt_lora;

/* Opens an adapter reference: a PEFT directory (adapter_config.json + adapter_model.safetensors),
 * a hub id of one in the Hugging Face cache (never downloaded), or a lone adapter .safetensors
 * file with adapter_config.json beside it. Validates the config (peft_type LORA; r, lora_alpha,
 * rank_pattern, alpha_pattern, fan_in_fan_out, use_rslora, use_dora, modules_to_save; keys
 * that change the math in ways smelt does not compute, such as lora_bias, are errors naming the
 * key) and pairs every lora_A with its lora_B and, with use_dora, its magnitude vector (a
 * missing partner or ranks that disagree are errors naming the module). SMELT_OK and *out (smelt_lora_close), or an error naming the file,
 * the module or key, and the rule. */
int smelt_lora_open(smelt_ctx *ctx, const char *ref, smelt_lora **out);

void smelt_lora_close(smelt_lora *lora);

/* Whether rank_pattern / alpha_pattern key `pattern` applies to module name `module` (e.g.
 * "model.layers.0.self_attn.q_proj"): PEFT's re.match(rf"(.*\.)?({pattern})$", module)
 * (peft/utils/other.py get_pattern_key), as a POSIX extended expression. 1 or 0; -1 when the
 * pattern does not compile (or out of memory). Thread-safe. */
int smelt_lora_pattern_matches(const char *pattern, const char *module);

/* Checks the adapter against its base and attaches it (the base takes ownership of lora, also
 * on failure): every module's target must be a 2-D tensor of the base with the shape the
 * adapter implies (errors name the module and both shapes), every replacement a tensor of the
 * base with its shape. A linear module's orientation comes from the base's shape, as PEFT's
 * comes from the layer's type (peft/tuners/lora/model.py forces fan_in_fan_out off for
 * nn.Linear, on for Conv1D, whatever the config says): [out, in] is plain, [in, out]
 * transposed, and only a square weight follows the config's fan_in_fan_out. A DoRA magnitude
 * vector must have one entry per output feature. The adapter's weight files are appended to base->files so that the
 * replacements read like any tensor of the model. */
int smelt_lora_attach(smelt_ctx *ctx, smelt_model *base, smelt_lora *lora);

/* The module that adapts base tensor `name`, or NULL. Thread-safe. */
const smelt_lora_module *smelt_lora_find(const smelt_lora *lora, const char *name);

/* The adapter's whole tensor that replaces base tensor `name`, or NULL. Thread-safe. */
const smelt_tensor_info *smelt_lora_replacement(const smelt_lora *lora, const char *name);

#endif
