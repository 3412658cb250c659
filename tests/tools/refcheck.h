/* The harness the reference tools share: read a model's tensors as f32 with decoders written
 * here (independent of smelt's kernels), round expected values with this file's own RNE, and
 * count how many output elements match bit for bit, are one ulp off, or are further away.
 *
 * A reference tool computes the method straightforwardly over whole tensors in f32 and hands
 * each expected tensor to refcheck_tensor(); refcheck_finish() prints the tally and gives the
 * exit status (0 when >= 99.9 % are bit-exact and none is more than one ulp away). */
#ifndef SMELT_REFCHECK_H
#define SMELT_REFCHECK_H

#include "format/safetensors.h"

#include <stdint.h>

typedef struct refcheck {
    const char *tool;     /* program name for messages */
    uint64_t total, exact, off_by_one, worse;
    size_t tensors;
    int max_ulp;          /* allowed distance (default 1) */
} refcheck;

/* Opens a model or exits with status 2 and a message. */
smelt_model *refcheck_open(const refcheck *rc, const char *ref);

/* The tensor `name` of `m` as a malloc'd f32 array (numel elements), or exits when it is
 * missing or not F32/F16/BF16. */
float *refcheck_read(const refcheck *rc, const smelt_model *m, const char *name, uint64_t *numel);

/* Compares the output tensor `t` of `out` with `want` (t->numel values) rounded to t's dtype. */
void refcheck_tensor(refcheck *rc, const smelt_model *out, const smelt_tensor_info *t,
                     const float *want);

/* Prints the tally; returns the exit status. */
int refcheck_finish(const refcheck *rc);

#endif
