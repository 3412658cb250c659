/* The start-up self-test: every kernel of a SIMD level, run on a fixed set of inputs, against
 * the scalar reference. The unit tests prove the SIMD levels bit-exact on the machines that run
 * them; a level dispatched on a machine the tests never ran on (AVX-512 variants, a compiler
 * that miscompiled an intrinsic) gets this cheap check instead (some tens of microseconds: about
 * 20 kernels over 67 elements or bytes, and each dequant entry over 3 K-quant or 24 small blocks with
 * edge scales), so a wrong kernel costs speed, never a wrong merge.
 *
 * Adding a kernel to the table means adding one probe below: a function that runs it on the
 * shared inputs into an output buffer, and the kind of that output. */
#include "kernels/kernels_ref.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* 64 elements of vector bodies (4 AVX-512 f32 vectors, 8 of AVX2) and a 3-element tail. */
#define PROBE_N 67
/* Dequant probes: 768 elements, 3 blocks of the 256-element types or 24 of the 32-element ones
 * (the most bytes: 24 Q8_0 blocks of 34; 3 Q6_K blocks take 630). */
#define PROBE_DQ_N 768
#define PROBE_DQ_BYTES (24 * 34)

typedef struct probe_in {
    float a[PROBE_N], b[PROBE_N], c[PROBE_N]; /* f32 values: the specials first */
    uint16_t h[PROBE_N];                      /* half patterns: bf16 and f16 specials first */
    float w;
    uint8_t qb[PROBE_DQ_BYTES];               /* block bytes; each probe sets its scales */
} probe_in;

/* What a probe wrote: compared bit for bit, except that with OUT_F32_ANY_NAN any NaN matches any
 * NaN (arithmetic kernels do not promise a NaN payload; encoders and decoders do). */
typedef enum probe_out {
    OUT_F32, OUT_F32_ANY_NAN, OUT_U16, OUT_F64, OUT_U32, OUT_DQ, OUT_BYTES
} probe_out;

typedef struct probe_buf {
    float f[2][PROBE_N];  /* two f32 outputs (masked_accum has two) */
    uint16_t u16[PROBE_N];
    double d[3];
    uint32_t u32[256];
    float dq[PROBE_DQ_N];
    uint8_t bytes[8 * PROBE_N];
} probe_buf;

typedef struct probe {
    const char *name;
    probe_out kind;
    void (*run)(const smelt_kernels *k, const probe_in *in, probe_buf *out);
} probe;

static void p_decode_bf16(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    k->decode_bf16(o->f[0], in->h, PROBE_N);
}
static void p_decode_f16(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    k->decode_f16(o->f[0], in->h, PROBE_N);
}
static void p_encode_bf16(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    k->encode_bf16(o->u16, in->a, PROBE_N);
}
static void p_encode_f16(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    k->encode_f16(o->u16, in->a, PROBE_N);
}
static void p_encode_f32(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    k->encode_f32(o->f[0], in->a, PROBE_N);
}
static void p_axpy(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    memcpy(o->f[0], in->b, sizeof in->b);
    k->axpy(o->f[0], in->a, in->w, PROBE_N);
}
static void p_scale(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    k->scale(o->f[0], in->a, in->w, PROBE_N);
}
static void p_axpy_bf16(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    memcpy(o->f[0], in->b, sizeof in->b);
    k->axpy_bf16(o->f[0], in->h, in->w, PROBE_N);
}
static void p_axpy_f16(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    memcpy(o->f[0], in->b, sizeof in->b);
    k->axpy_f16(o->f[0], in->h, in->w, PROBE_N);
}
static void p_scale_bf16(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    k->scale_bf16(o->f[0], in->h, in->w, PROBE_N);
}
static void p_scale_f16(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    k->scale_f16(o->f[0], in->h, in->w, PROBE_N);
}
static void p_axpy_bf16_encode(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    k->axpy_bf16_encode(o->u16, in->b, in->h, in->w, PROBE_N);
}
static void p_lora_delta(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    /* rank 3 over overlapping rows of a (row k starts at a + k, specials included): 64
     * elements fill AVX-512's four-vector block; coefficients from b. */
    k->lora_delta(o->f[0], 0, in->b, 3, 1, in->a, 1, 3, 64);
    /* four rows of 16 (the four-row loop and its tails), overlapping coefficients */
    k->lora_delta(o->f[1], 16, in->c, 5, 4, in->a, 2, 3, 16);
}
static void p_sub(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    k->sub(o->f[0], in->a, in->b, PROBE_N);
}
static void p_masked_accum(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    memcpy(o->f[0], in->b, sizeof in->b);
    memcpy(o->f[1], in->c, sizeof in->c);
    k->masked_accum(o->f[0], o->f[1], in->a, in->c, in->w, PROBE_N);
}
/* The delta byte planes of 67 elements (a 64-element body on every level, then a tail) of units
 * 4, 2 and 1, with and without a base, over the block bytes (misaligned by one for unit 1). */
static void p_delta_join(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    k->delta_join(o->bytes, in->qb, PROBE_N, PROBE_N, 4, in->qb + 4 * PROBE_N);
    k->delta_join(o->bytes + 4 * PROBE_N, in->qb + 3, PROBE_N + 5, PROBE_N, 2, NULL);
    k->delta_join(o->bytes + 6 * PROBE_N, in->qb + 1, PROBE_N, PROBE_N, 1, in->qb + 300);
}
static void p_delta_split(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    k->delta_split(o->bytes, PROBE_N, in->qb, PROBE_N, 4, in->qb + 4 * PROBE_N);
    k->delta_split(o->bytes + 4 * PROBE_N, PROBE_N, in->qb + 3, PROBE_N, 2, NULL);
    k->delta_split(o->bytes + 6 * PROBE_N, PROBE_N, in->qb + 1, PROBE_N, 1, in->qb + 300);
}
static void p_reductions(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    /* On the finite values only: a NaN or Inf would hide every other difference in the sum. */
    o->d[0] = k->dot_f64(in->b, in->c, PROBE_N);
    o->d[1] = k->sumsq_f64(in->b, PROBE_N);
    o->d[2] = k->sum_abs_f64(in->b, PROBE_N);
}
static void p_hist_mag(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    memset(o->u32, 0, sizeof o->u32);
    k->hist_mag(o->u32, in->a, PROBE_N, 0, 32, 23, 8); /* exponent histogram, no prefix */
    k->hist_mag(o->u32, in->b, PROBE_N, 0x7F, 23, 15, 8); /* within one exponent */
}
static void p_mask_mag_range(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    /* Around the magnitude of a finite value, both ends tied; then open ends. Counts and tied
     * positions in u32[0..136), every keep mask folded into u32[200..256) (a wrong mask
     * changes its slot by -(i + 1)). */
    uint32_t m, keep[2 * PROBE_N];
    memcpy(&m, &in->b[PROBE_N / 2], sizeof m);
    m &= 0x7FFFFFFFu;
    memset(o->u32, 0, sizeof o->u32);
    o->u32[0] = (uint32_t)k->mask_mag_range(keep, o->u32 + 2, in->b, PROBE_N, m >> 1, m, m >> 1, m);
    o->u32[1] = (uint32_t)k->mask_mag_range(keep + PROBE_N, o->u32 + 2 + o->u32[0], in->a,
                                            PROBE_N, 0x7F800000u, UINT32_MAX, 0x7F800000u,
                                            UINT32_MAX);
    for (uint32_t i = 0; i < 2 * PROBE_N; i++)
        o->u32[200 + i % 56] ^= keep[i] * (i + 1);
}
static void p_philox_uniform(const smelt_kernels *k, const probe_in *in, probe_buf *o)
{
    (void)in;
    k->philox_uniform(o->f[0], 0x0123456789ABCDEFull, 0x00000000FFFFFFF0ull, PROBE_N); /* crosses 2^32 */
}

/* fp16 scale fields, block by block: a typical scale, then the edges (NaN with a payload, ±0,
 * the smallest subnormal, the largest normal, -Inf, the smallest normal, the largest
 * subnormal, negative ones). */
static const uint16_t dq_scales[] = {0x211F, 0x7D55, 0x8000, 0x0001, 0x7BFF, 0xFC00, 0x0400,
                                     0x03FF, 0xBC00, 0xA11F, 0x0000, 0x2E66, 0xFBFF};

/* Dequantizes the shared block bytes as `type`, its fp16 fields set from dq_scales (d and dmin
 * of one block take consecutive entries). */
static void p_dequant(const smelt_kernels *k, uint32_t type, const probe_in *in, probe_buf *o)
{
    const smelt_ggml_type *t = smelt_ggml_type_get(type);
    uint8_t b[PROBE_DQ_BYTES];
    size_t nb = PROBE_DQ_N / t->block, at = 0;
    if (nb * t->bytes > sizeof b)
        return; /* cannot happen with the types of SMELT_DEQUANT_TYPES */
    int off[2], nf = smelt_ref_dequant_f16_fields(type, off);
    memcpy(b, in->qb, sizeof b);
    for (size_t i = 0; i < nb; i++)
        for (int f = 0; f < nf; f++, at++) {
            uint16_t h = dq_scales[at % (sizeof dq_scales / sizeof dq_scales[0])];
            b[i * t->bytes + (size_t)off[f]] = (uint8_t)h;
            b[i * t->bytes + (size_t)off[f] + 1] = (uint8_t)(h >> 8);
        }
    k->dequant[type](o->dq, b, nb);
}
#define DQ_PROBE(name, TYPE)                                                                    \
    static void p_dq_##name(const smelt_kernels *k, const probe_in *in, probe_buf *o)           \
    {                                                                                           \
        p_dequant(k, SMELT_GGML_##TYPE, in, o);                                                 \
    }
SMELT_DEQUANT_TYPES(DQ_PROBE)
#undef DQ_PROBE

/* One probe per table entry (the reductions share one). */
static const probe probes[] = {
    {"decode_bf16", OUT_F32, p_decode_bf16},
    {"decode_f16", OUT_F32, p_decode_f16},
    {"encode_bf16", OUT_U16, p_encode_bf16},
    {"encode_f16", OUT_U16, p_encode_f16},
    {"encode_f32", OUT_F32, p_encode_f32},
    {"axpy", OUT_F32_ANY_NAN, p_axpy},
    {"scale", OUT_F32_ANY_NAN, p_scale},
    {"axpy_bf16", OUT_F32_ANY_NAN, p_axpy_bf16},
    {"axpy_f16", OUT_F32_ANY_NAN, p_axpy_f16},
    {"scale_bf16", OUT_F32_ANY_NAN, p_scale_bf16},
    {"scale_f16", OUT_F32_ANY_NAN, p_scale_f16},
    {"axpy_bf16_encode", OUT_U16, p_axpy_bf16_encode},
    {"sub", OUT_F32_ANY_NAN, p_sub},
    {"lora_delta", OUT_F32_ANY_NAN, p_lora_delta},
    {"masked_accum", OUT_F32_ANY_NAN, p_masked_accum},
    {"dot_f64/sumsq_f64/sum_abs_f64", OUT_F64, p_reductions},
    {"hist_mag", OUT_U32, p_hist_mag},
    {"mask_mag_range", OUT_U32, p_mask_mag_range},
    {"philox_uniform", OUT_F32, p_philox_uniform},
    {"delta_join", OUT_BYTES, p_delta_join},
    {"delta_split", OUT_BYTES, p_delta_split},
#define DQ_ROW(name, TYPE) {"dequant_" #name, OUT_DQ, p_dq_##name},
    SMELT_DEQUANT_TYPES(DQ_ROW)
#undef DQ_ROW
};

/* f32 values at the edges of every cast and of the arithmetic. */
static const uint32_t f32_specials[] = {
    0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u,             /* ±0, ±Inf */
    0x7FC00000u, 0xFFC12345u, 0x7F800001u, 0xFFBFFFFFu,             /* quiet and signalling NaNs */
    0x00000001u, 0x807FFFFFu, 0x00400000u,                          /* subnormals */
    0x00008000u, 0x00018000u,                                       /* subnormal bf16 ties */
    0x33000000u, 0x33400000u, 0x387FE000u, 0x38800000u,             /* f16 subnormal edges */
    0x3F808000u, 0x3F818000u, 0xBF808000u, 0x3F808001u,             /* bf16 ties around 1 */
    0x3F801000u, 0x3F803000u, 0xBF803000u, 0x3F801001u,             /* f16 ties around 1 */
    0x477FF000u, 0x477FEFFFu, 0x47800000u,                          /* f16 overflow edge */
    0x7F7F8000u, 0x7F7F7FFFu, 0x7F7FFFFFu,                          /* bf16 overflow edge */
};
/* Half patterns: bf16 and f16 zeros, infinities, NaNs (quiet, signalling, payloads),
 * subnormals, the largest finite values. */
static const uint16_t half_specials[] = {
    0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFC1, 0x0001, 0x807F, 0x7F7F,
    0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFD55, 0x03FF, 0x8001, 0x7BFF, 0x3C00, 0xBC00,
};
#define COUNT(a) (sizeof a / sizeof a[0])

static uint32_t lcg(uint32_t *s) { return *s = *s * 1664525u + 1013904223u; }

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void make_inputs(probe_in *in)
{
    uint32_t s = 12345;
    for (size_t i = 0; i < PROBE_N; i++) {
        /* Model-like values: a mantissa from the generator, exponents from 2^-20 to 2^12. */
        float like = ldexpf((float)(int32_t)lcg(&s) * 0x1p-31f, (int)(lcg(&s) >> 27) - 20);
        in->a[i] = i < COUNT(f32_specials) ? from_bits(f32_specials[i]) : like;
        in->b[i] = ldexpf((float)(int32_t)lcg(&s) * 0x1p-31f, (int)(lcg(&s) >> 28) - 8);
        in->c[i] = i % 5 == 0 ? -in->b[i] : ldexpf((float)(int32_t)lcg(&s) * 0x1p-31f, -3);
        in->h[i] = i < COUNT(half_specials) ? half_specials[i] : (uint16_t)(lcg(&s) >> 16);
    }
    in->w = -0.3f;
    for (size_t i = 0; i < PROBE_DQ_BYTES; i++)
        in->qb[i] = (uint8_t)(lcg(&s) >> 24);
}

static int same(probe_out kind, const probe_buf *x, const probe_buf *y)
{
    switch (kind) {
    case OUT_F32:
        return memcmp(x->f, y->f, sizeof x->f) == 0;
    case OUT_F32_ANY_NAN:
        for (size_t j = 0; j < 2; j++)
            for (size_t i = 0; i < PROBE_N; i++) {
                float a = x->f[j][i], b = y->f[j][i];
                if (!(isnan(a) && isnan(b)) && memcmp(&a, &b, sizeof a) != 0)
                    return 0;
            }
        return 1;
    case OUT_U16:
        return memcmp(x->u16, y->u16, sizeof x->u16) == 0;
    case OUT_F64:
        return memcmp(x->d, y->d, sizeof x->d) == 0;
    case OUT_U32:
        return memcmp(x->u32, y->u32, sizeof x->u32) == 0;
    case OUT_DQ:
        return memcmp(x->dq, y->dq, sizeof x->dq) == 0;
    case OUT_BYTES:
        return memcmp(x->bytes, y->bytes, sizeof x->bytes) == 0;
    }
    return 0;
}

const char *smelt_kernels_selftest(const smelt_kernels *k)
{
    if (k == &smelt_kernels_scalar)
        return NULL; /* the reference itself */
    probe_in in;
    make_inputs(&in);
    probe_buf want, got;
    for (size_t p = 0; p < COUNT(probes); p++) {
        /* Zeroed first so that unwritten slots compare equal, whatever the probe fills. */
        memset(&want, 0, sizeof want);
        memset(&got, 0, sizeof got);
        probes[p].run(&smelt_kernels_scalar, &in, &want);
        probes[p].run(k, &in, &got);
        if (!same(probes[p].kind, &want, &got))
            return probes[p].name;
    }
    return NULL;
}

const smelt_kernels *smelt_kernels_first_sound(const smelt_kernels *const *chain, size_t n,
                                               FILE *notices)
{
    for (size_t i = 0; i < n; i++) {
        const char *bad = smelt_kernels_selftest(chain[i]);
        if (!bad)
            return chain[i];
        const char *next = i + 1 < n ? chain[i + 1]->name : smelt_kernels_scalar.name;
        if (notices)
            fprintf(notices, "smelt: notice: the %s kernel '%s' disagrees with the scalar "
                    "reference on this machine; using %s kernels instead\n", chain[i]->name,
                    bad, next);
    }
    return &smelt_kernels_scalar;
}
