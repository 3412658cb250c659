/* The scalar reference: every other level must match it bit for bit. Written for reading, not
 * speed; -ffp-contract=off keeps each multiply and add rounded separately. */
#include "kernels/kernels_ref.h"

#include <math.h>
#include <string.h>

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static int bits_are_nan(uint32_t u) { return (u & 0x7FFFFFFFu) > 0x7F800000u; }

static float bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0x1F) /* Inf, or NaN made quiet as the hardware conversions do */
        return f32_from_bits(sign | 0x7F800000u | (m << 13) | (m ? 0x400000u : 0));
    if (e != 0)
        return f32_from_bits(sign | ((e + 112) << 23) | (m << 13));
    if (m == 0)
        return f32_from_bits(sign);
    /* A subnormal half is a normal float: move the leading one up to the implicit bit. */
    uint32_t shift = 0;
    while (!(m & 0x400u)) {
        m <<= 1;
        shift++;
    }
    return f32_from_bits(sign | ((113 - shift) << 23) | ((m & 0x3FFu) << 13));
}

/* Keeps the high bits of value above `drop` low bits, rounding to nearest, ties to even. A carry
 * out of the mantissa correctly bumps the exponent field above it. */
static uint32_t round_shift_rne(uint32_t value, unsigned drop)
{
    uint32_t kept = value >> drop, rest = value & ((1u << drop) - 1), half = 1u << (drop - 1);
    if (rest > half || (rest == half && (kept & 1)))
        kept++;
    return kept;
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if (bits_are_nan(u))
        return SMELT_BF16_NAN;
    /* The largest finite values round up into the Inf pattern, as IEEE overflow requires. */
    return (uint16_t)round_shift_rne(u, 16);
}

static uint16_t f32_to_f16(float f)
{
    uint32_t u = f32_bits(f), a = u & 0x7FFFFFFFu;
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    if (a > 0x7F800000u)
        return SMELT_F16_NAN;
    if (a >= 0x477FF000u) /* 65520 and above round past 65504: Inf */
        return sign | 0x7C00u;
    uint32_t e = a >> 23, m = (a & 0x7FFFFFu) | 0x800000u;
    if (a >= 0x38800000u) /* at least 2^-14: a normal half; rebias 127 -> 15 */
        return sign | (uint16_t)round_shift_rne(((e - 112) << 23) | (m & 0x7FFFFFu), 13);
    /* A subnormal half counts units of 2^-24; m * 2^(e-150) = (m >> (126 - e)) units. Below
     * 2^-25 (e < 102) everything rounds to zero, f32 subnormals included. */
    if (e < 102)
        return sign;
    return sign | (uint16_t)round_shift_rne(m, 126 - e);
}

void smelt_ref_decode_bf16(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = bf16_to_f32(src[i]);
}

void smelt_ref_decode_f16(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = f16_to_f32(src[i]);
}

void smelt_ref_encode_bf16(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = f32_to_bf16(src[i]);
}

void smelt_ref_encode_f16(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = f32_to_f16(src[i]);
}

void smelt_ref_encode_f32(float *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = f32_bits(src[i]);
        dst[i] = f32_from_bits(bits_are_nan(u) ? SMELT_F32_NAN : u);
    }
}

void smelt_ref_axpy(float *acc, const float *x, float w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        acc[i] = acc[i] + w * x[i];
}

void smelt_ref_lora_delta(float *delta, size_t delta_stride, const float *coef,
                          size_t coef_stride, size_t nrows, const float *rows, size_t row_stride,
                          size_t rank, size_t n)
{
    for (size_t i = 0; i < nrows; i++) {
        float *d = delta + i * delta_stride;
        for (size_t j = 0; j < n; j++)
            d[j] = 0.0f;
        for (size_t k = 0; k < rank; k++)
            smelt_ref_axpy(d, rows + k * row_stride, coef[k * coef_stride + i], n);
    }
}

void smelt_ref_scale(float *dst, const float *x, float w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = w * x[i];
}

void smelt_ref_axpy_bf16(float *acc, const uint16_t *x, float w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        acc[i] = acc[i] + w * bf16_to_f32(x[i]);
}

void smelt_ref_axpy_f16(float *acc, const uint16_t *x, float w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        acc[i] = acc[i] + w * f16_to_f32(x[i]);
}

void smelt_ref_scale_bf16(float *dst, const uint16_t *x, float w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = w * bf16_to_f32(x[i]);
}

void smelt_ref_scale_f16(float *dst, const uint16_t *x, float w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = w * f16_to_f32(x[i]);
}

void smelt_ref_axpy_bf16_encode(uint16_t *out, const float *acc, const uint16_t *x, float w,
                                size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = f32_to_bf16(acc[i] + w * bf16_to_f32(x[i]));
}

void smelt_ref_sub(float *dst, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = a[i] - b[i];
}

void smelt_ref_masked_accum(float *mixed, float *div, const float *wd, const float *vote, float w,
                            size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float d = wd[i];
        int agree = vote[i] < 0.0f ? d < 0.0f : d > 0.0f;
        if (agree || d != d) {
            mixed[i] = mixed[i] + d;
            div[i] = div[i] + w;
        }
    }
}

void smelt_ref_dot_lanes(double *lanes, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        lanes[i % SMELT_REDUCE_LANES] += (double)a[i] * (double)b[i];
}

void smelt_ref_sumsq_lanes(double *lanes, const float *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        lanes[i % SMELT_REDUCE_LANES] += (double)a[i] * (double)a[i];
}

void smelt_ref_sum_abs_lanes(double *lanes, const float *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        lanes[i % SMELT_REDUCE_LANES] += fabs((double)a[i]);
}

double smelt_ref_reduce_combine(double *lanes)
{
    for (unsigned width = SMELT_REDUCE_LANES / 2; width >= 1; width /= 2)
        for (unsigned j = 0; j < width; j++)
            lanes[j] += lanes[j + width];
    return lanes[0];
}

double smelt_ref_dot_f64(const float *a, const float *b, size_t n)
{
    double lanes[SMELT_REDUCE_LANES] = {0};
    smelt_ref_dot_lanes(lanes, a, b, n);
    return smelt_ref_reduce_combine(lanes);
}

double smelt_ref_sumsq_f64(const float *a, size_t n)
{
    double lanes[SMELT_REDUCE_LANES] = {0};
    smelt_ref_sumsq_lanes(lanes, a, n);
    return smelt_ref_reduce_combine(lanes);
}

double smelt_ref_sum_abs_f64(const float *a, size_t n)
{
    double lanes[SMELT_REDUCE_LANES] = {0};
    smelt_ref_sum_abs_lanes(lanes, a, n);
    return smelt_ref_reduce_combine(lanes);
}

void smelt_ref_hist_mag(uint32_t *hist, const float *x, size_t n, uint32_t prefix,
                        unsigned prefix_shift, unsigned shift, unsigned bits)
{
    uint32_t mask = (1u << bits) - 1;
    for (size_t i = 0; i < n; i++) {
        uint32_t m = f32_bits(x[i]) & 0x7FFFFFFFu;
        if (prefix_shift >= 32 || (m >> prefix_shift) == prefix)
            hist[(m >> shift) & mask]++;
    }
}

size_t smelt_ref_mask_mag_range(uint32_t *keep, uint32_t *at, const float *x, size_t n,
                                uint32_t lo, uint32_t hi, uint32_t lo_eq, uint32_t hi_eq)
{
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t m = f32_bits(x[i]) & 0x7FFFFFFFu;
        keep[i] = lo <= m && m <= hi ? UINT32_MAX : 0;
        if (m == lo_eq || m == hi_eq)
            at[found++] = (uint32_t)i;
    }
    return found;
}

static void mulhilo32(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo)
{
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

void smelt_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t x0 = ctr[0], x1 = ctr[1], x2 = ctr[2], x3 = ctr[3], k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        if (round > 0) { /* the key schedule bumps before every round but the first */
            k0 += SMELT_PHILOX_W0;
            k1 += SMELT_PHILOX_W1;
        }
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo32(SMELT_PHILOX_M0, x0, &hi0, &lo0);
        mulhilo32(SMELT_PHILOX_M1, x2, &hi1, &lo1);
        x0 = hi1 ^ x1 ^ k0;
        x1 = lo1;
        x2 = hi0 ^ x3 ^ k1;
        x3 = lo0;
    }
    out[0] = x0;
    out[1] = x1;
    out[2] = x2;
    out[3] = x3;
}

void smelt_ref_philox_uniform(float *dst, uint64_t key, uint64_t index0, size_t n)
{
    const uint32_t k[2] = {(uint32_t)key, (uint32_t)(key >> 32)};
    for (size_t i = 0; i < n; i++) {
        uint64_t j = index0 + i, c = j >> 2;
        const uint32_t ctr[4] = {(uint32_t)c, (uint32_t)(c >> 32), 0, 0};
        uint32_t r[4];
        smelt_philox4x32_10(ctr, k, r);
        /* 24 bits fit a float exactly, and the scale is a power of two: no rounding. */
        dst[i] = (float)(r[j & 3] >> 8) * 0x1p-24f;
    }
}

void smelt_ref_delta_join(uint8_t *out, const uint8_t *planes, size_t stride, size_t n,
                          unsigned unit, const uint8_t *base)
{
    for (unsigned p = 0; p < unit; p++) {
        const uint8_t *src = planes + (size_t)p * stride;
        const unsigned byte = unit - 1 - p;
        for (size_t j = 0; j < n; j++)
            out[j * unit + byte] = (uint8_t)(src[j] ^ (base ? base[j * unit + byte] : 0));
    }
}

void smelt_ref_delta_split(uint8_t *planes, size_t stride, const uint8_t *elems, size_t n,
                           unsigned unit, const uint8_t *base)
{
    for (unsigned p = 0; p < unit; p++) {
        uint8_t *dst = planes + (size_t)p * stride;
        const unsigned byte = unit - 1 - p;
        for (size_t j = 0; j < n; j++)
            dst[j] = (uint8_t)(elems[j * unit + byte] ^ (base ? base[j * unit + byte] : 0));
    }
}

const smelt_kernels smelt_kernels_scalar = {
    .name = "scalar",
    .decode_bf16 = smelt_ref_decode_bf16,
    .decode_f16 = smelt_ref_decode_f16,
    .encode_bf16 = smelt_ref_encode_bf16,
    .encode_f16 = smelt_ref_encode_f16,
    .axpy = smelt_ref_axpy,
    .scale = smelt_ref_scale,
    .lora_delta = smelt_ref_lora_delta,
    .encode_f32 = smelt_ref_encode_f32,
    .axpy_bf16 = smelt_ref_axpy_bf16,
    .axpy_f16 = smelt_ref_axpy_f16,
    .scale_bf16 = smelt_ref_scale_bf16,
    .scale_f16 = smelt_ref_scale_f16,
    .axpy_bf16_encode = smelt_ref_axpy_bf16_encode,
    .sub = smelt_ref_sub,
    .masked_accum = smelt_ref_masked_accum,
    .dot_f64 = smelt_ref_dot_f64,
    .sumsq_f64 = smelt_ref_sumsq_f64,
    .sum_abs_f64 = smelt_ref_sum_abs_f64,
    .hist_mag = smelt_ref_hist_mag,
    .mask_mag_range = smelt_ref_mask_mag_range,
    .philox_uniform = smelt_ref_philox_uniform,
    .delta_join = smelt_ref_delta_join,
    .delta_split = smelt_ref_delta_split,
    /* The dequantization reference lives in kernels_quant.c, next to ggml's block layouts. */
#define REF_ENTRY(name, TYPE) [SMELT_GGML_##TYPE] = smelt_ref_dequant_##name,
    .dequant = {SMELT_DEQUANT_TYPES(REF_ENTRY)},
#undef REF_ENTRY
};
