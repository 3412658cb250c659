/* The merge kernels: one dispatch table of function pointers per SIMD level.
 *
 * kernels_scalar.c is the readable reference and is always built; kernels_avx2.c,
 * kernels_avx512.c and kernels_neon.c are separate translation units compiled with their own
 * flags. Every entry of every level gives results bit-identical to the scalar reference, for
 * every input including NaN, ±Inf, ±0 and subnormals (the one canonical quiet NaN is produced
 * on encode). No FMA: the reference rounds after the multiply and after the add.
 *
 * All pointers may be unaligned; n may be any size including 0. Kernels are pure functions of
 * their arguments: safe to call from any number of threads on disjoint outputs. An output may be
 * the very same array as an input of the same type (in place), never a partial overlap. Nothing
 * is allocated or kept: the caller owns every buffer. The tables are immutable. */
#ifndef SMELT_KERNELS_H
#define SMELT_KERNELS_H

#include "common/dtype.h"
#include "common/ggml_type.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The canonical quiet NaN written for any NaN input (PyTorch's scalar cast gives these). */
#define SMELT_BF16_NAN 0x7FC0u
#define SMELT_F16_NAN 0x7E00u
/* The canonical quiet NaN of f32 outputs (encode_f32). */
#define SMELT_F32_NAN 0x7FC00000u

/* The most elements one reduction call (dot_f64, sumsq_f64, sum_abs_f64) may be given. Callers
 * cut longer arrays at fixed multiples of it and add the block results in order, so a sum never
 * depends on thread count or chunk size. */
#define SMELT_REDUCE_BLOCK 65536u

typedef struct smelt_kernels {
    const char *name; /* "scalar", "avx2", "avx512", "neon" */

    /* dst[i] = (float)src[i]: exact. A f16 NaN keeps its sign and payload and comes out quiet
     * (bit 22 set), as F16C and NEON convert it; bf16 is a plain shift. */
    void (*decode_bf16)(float *dst, const uint16_t *src, size_t n);
    void (*decode_f16)(float *dst, const uint16_t *src, size_t n);
    /* dst[i] = round-to-nearest-even(src[i]), subnormals kept, overflow to ±Inf, NaN to the
     * canonical NaN. */
    void (*encode_bf16)(uint16_t *dst, const float *src, size_t n);
    void (*encode_f16)(uint16_t *dst, const float *src, size_t n);

    /* acc[i] = acc[i] + w * x[i] (two roundings). */
    void (*axpy)(float *acc, const float *x, float w, size_t n);
    /* dst[i] = w * x[i]. */
    void (*scale)(float *dst, const float *x, float w, size_t n);

    /* Further entries (task-vector arithmetic, reductions, histograms, random masks) follow;
     * see each declaration. */
#include "kernels/kernels_ops.h"
} smelt_kernels;

/* The table in use. Set once by smelt_kernels_select() (the first smelt_kernels_get() selects
 * the default: the best level this CPU supports that passes its self-test); read-only
 * afterwards. */
const smelt_kernels *smelt_kernels_get(void);

/* Selects a level: NULL or "" = the SMELT_ISA environment variable if set, else the best level
 * this CPU and OS support whose kernels pass smelt_kernels_selftest (a failing level gives one
 * notice on stderr, once per process, and the next lower level is tried). Returns 0, or -1
 * with a message in err when the name is unknown, the CPU lacks it, or a level named
 * explicitly fails its self-test. Not thread-safe; call before starting workers. */
int smelt_kernels_select(const char *isa, char *err, size_t errlen);

/* A specific level's table, or NULL when it is not built or not supported here (for tests and
 * benchmarks that compare levels). */
const smelt_kernels *smelt_kernels_level(const char *isa);

/* Runs every kernel of k on a fixed set of inputs (±0, ±Inf, NaNs with payloads, subnormals,
 * bf16/f16 rounding ties and overflow edges, model-like values; vector bodies and a tail) and
 * compares the results with the scalar reference bit for bit. Returns NULL when they all agree
 * (always for the scalar table itself), else the name of the first kernel that does not.
 * Microseconds; thread-safe. */
const char *smelt_kernels_selftest(const smelt_kernels *k);

/* The first table of chain[0 .. n) (best first) that passes smelt_kernels_selftest, or the
 * scalar reference when none does; for each one that fails, one notice line on `notices`
 * (when not NULL) naming the level, the kernel and the level used instead. The default
 * selection runs it over the usable levels once per process. */
const smelt_kernels *smelt_kernels_first_sound(const smelt_kernels *const *chain, size_t n,
                                               FILE *notices);

/* Converts n elements of any mergeable dtype (F32, F16, BF16, or a block type with n a whole
 * number of blocks) to f32 (F32 is a plain copy; block types go through k's dequant entry for
 * their ggml type, n / block blocks). */
void smelt_decode(const smelt_kernels *k, float *dst, const void *src, smelt_dtype dt, size_t n);

/* Converts n f32 elements to a mergeable dtype; F32 goes through encode_f32, so its NaNs are
 * canonical too. Block types (n whole blocks) go through ggml's reference quantizers
 * (smelt_quantize; only the types smelt_quant_supported names). */
void smelt_encode(const smelt_kernels *k, void *dst, const float *src, smelt_dtype dt, size_t n);

#endif
