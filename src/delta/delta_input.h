/* "BASE+DELTA" model references: a fine-tune read as its base plus a smelt delta (format/delta.h),
 * XORed in frame by frame as the engine reads the base (engine/source.h), so a merge reads the
 * base and the compressed delta instead of the fine-tune's files. */
#ifndef SMELT_DELTA_INPUT_H
#define SMELT_DELTA_INPUT_H

#include "format/delta.h"
#include "format/safetensors.h"

/* Whether `ref` (the part after '+') names a delta rather than a LoRA adapter: a directory
 * holding SMELT_DELTA_FILE_NAME, or that file itself. */
int smelt_delta_is_ref(const char *ref);

/* Checks that base is the model the delta was made against: the same safetensors files, each
 * header's XXH3-128 equal to the one the delta recorded. `base_ref` names it in messages.
 * SMELT_OK or SMELT_E_PLAN naming the file and both hashes. */
int smelt_delta_check_base(smelt_ctx *ctx, const smelt_delta *d, const smelt_model *base,
                           const char *base_ref);

/* Opens the delta at `ref`, checks it against base (smelt_delta_check_base) and attaches it:
 * base->delta, and the delta's file joins base->files (so the merge's identity, journal and
 * the inputs-in-output rule cover it). The model then presents the fine-tune's tensors: a XOR
 * entry is the base's tensor (read, then XORed with the frames), an entry stored whole (the
 * fine-tune's dtype or shape differs from the base's, or the base lacks the tensor) a tensor
 * of the delta's file that is decoded from its frames alone, and a base tensor the fine-tune
 * lacks is not there; the plan's ordinary rules (shapes agreeing across a merge's inputs)
 * apply to them as to any model. SMELT_OK, or an error (SMELT_E_FORMAT for a XOR entry that
 * does not match the base's tensor), after which the caller closes base, which may hold the
 * delta. */
int smelt_delta_attach(smelt_ctx *ctx, smelt_model *base, const char *ref);

#endif
