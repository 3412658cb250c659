/* ggml's block formats, decoded and encoded (see kernels_quant.h). Written after ggml's
 * ggml-quants.c; the block layouts are ggml's block_* structs (ggml-common.h).
 *
 * Every supported block type decodes in one shape: a type-specific unpack turns a block into
 * small integers q[] plus one scale (and, for the affine types, one min) per sub-block, and a
 * shared stage computes q * scale - min. ggml's expressions all reduce to that form with the
 * same roundings: its scale is always computed first (d * sc), a product commutes, and
 * x + m equals x - (-m) exactly, so types that add a min store its negation. The stage never
 * adds a zero min, which would turn -0 into +0.
 *
 * The scalar dequant entries of the kernel table (smelt_ref_dequant_*, kernels_ops.h) are the
 * unpack functions below followed by that stage; smelt_dequantize goes through the same table.
 * The SIMD levels (kernels_simd.h) compute the same scales with the same expressions and the
 * same q * scale - min per element, and are tested against these bit for bit. */
#include "kernels/kernels_quant.h"

#include "common/ggml_type.h"
#include "kernels/kernels_ref.h"

#include <math.h>
#include <string.h>

#define QK 32
#define QK_K 256

/* One unpacked block: up to 256 quants, and sub-blocks of `sub` elements. */
typedef struct unpacked {
    int16_t q[QK_K];
    float scale[QK_K / 16];
    float min[QK_K / 16];
} unpacked;

typedef struct qkind {
    unsigned sub;     /* elements per sub-block */
    int has_min;      /* y = q * scale - min, else y = q * scale */
    int d_off, m_off; /* byte offsets of the fp16 d and dmin (or min) in a block; -1: none */
    void (*unpack)(unpacked *u, const uint8_t *b);
    void (*pack)(uint8_t *b, const float *x); /* NULL: no reference quantizer here */
} qkind;

static float fp16(const uint8_t *p)
{
    uint16_t h = (uint16_t)(p[0] | p[1] << 8);
    float f;
    smelt_ref_decode_f16(&f, &h, 1);
    return f;
}

static void put_fp16(uint8_t *p, float f)
{
    uint16_t h;
    smelt_ref_encode_f16(&h, &f, 1);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The 32-element layout of Q4_0 .. Q5_1 and IQ4_NL: element j is the low nibble of qs[j],
 * element j + 16 the high nibble; qh (or 0) supplies a fifth bit, bit j for element j. */
static void nibbles32(int16_t *q, const uint8_t *qs, uint32_t qh, int bias)
{
    for (int j = 0; j < 16; j++) {
        q[j] = (int16_t)(((qs[j] & 0x0F) | (((qh >> j) & 1) << 4)) - bias);
        q[j + 16] = (int16_t)(((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - bias);
    }
}

static void unpack_q4_0(unpacked *u, const uint8_t *b)
{
    u->scale[0] = fp16(b);
    nibbles32(u->q, b + 2, 0, 8);
}

static void unpack_q4_1(unpacked *u, const uint8_t *b)
{
    u->scale[0] = fp16(b);
    u->min[0] = -fp16(b + 2);
    nibbles32(u->q, b + 4, 0, 0);
}

static void unpack_q5_0(unpacked *u, const uint8_t *b)
{
    u->scale[0] = fp16(b);
    nibbles32(u->q, b + 6, le32(b + 2), 16);
}

static void unpack_q5_1(unpacked *u, const uint8_t *b)
{
    u->scale[0] = fp16(b);
    u->min[0] = -fp16(b + 2);
    nibbles32(u->q, b + 8, le32(b + 4), 0);
}

static void unpack_q8_0(unpacked *u, const uint8_t *b)
{
    u->scale[0] = fp16(b);
    for (int j = 0; j < QK; j++)
        u->q[j] = (int8_t)b[2 + j];
}

const int8_t smelt_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                       1,    13,   25,  38,  53,  69,  89,  113};

static void iq4_lookup(int16_t *q, const uint8_t *qs)
{
    for (int j = 0; j < 16; j++) {
        q[j] = smelt_iq4nl_values[qs[j] & 0x0F];
        q[j + 16] = smelt_iq4nl_values[qs[j] >> 4];
    }
}

static void unpack_iq4_nl(unpacked *u, const uint8_t *b)
{
    u->scale[0] = fp16(b);
    iq4_lookup(u->q, b + 2);
}

/* block_iq4_xs: d, u16 scales_h, u8 scales_l[4], qs[128]; 6-bit scales per 32, biased by 32. */
static void unpack_iq4_xs(unpacked *u, const uint8_t *b)
{
    float d = fp16(b);
    unsigned sh = (unsigned)(b[2] | b[3] << 8);
    for (int ib = 0; ib < QK_K / 32; ib++) {
        u->scale[ib] = d * (float)smelt_iq4xs_scale(ib, sh, b + 4);
        iq4_lookup(u->q + 32 * ib, b + 8 + 16 * ib);
    }
}

/* block_q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin. 2-bit quants:
 * each 128 elements come from 32 bytes, four shifts of 32 elements each. */
static void unpack_q2_k(unpacked *u, const uint8_t *b)
{
    const uint8_t *sc = b, *qs = b + 16;
    float d = fp16(b + 80), dmin = fp16(b + 82);
    for (int i = 0; i < 16; i++) {
        u->scale[i] = d * (float)(sc[i] & 0xF);
        u->min[i] = dmin * (float)(sc[i] >> 4);
    }
    for (int n = 0; n < 2; n++)
        for (int shift = 0; shift < 8; shift += 2)
            for (int l = 0; l < 32; l++)
                u->q[128 * n + 16 * shift + l] = (qs[32 * n + l] >> shift) & 3;
}

/* block_q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit scales biased by 32), d. A clear
 * hmask bit subtracts 4 from the 2-bit quant. */
static void unpack_q3_k(unpacked *u, const uint8_t *b)
{
    const uint8_t *hm = b, *qs = b + 32, *s = b + 96;
    float d = fp16(b + 108);
    for (int i = 0; i < 16; i++)
        u->scale[i] = d * (float)smelt_q3k_scale(i, s);
    for (int n = 0; n < 2; n++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) {
                int e = 128 * n + 32 * j + l;
                int q = (qs[32 * n + l] >> (2 * j)) & 3;
                u->q[e] = (int16_t)(q - ((hm[l] >> (4 * n + j)) & 1 ? 0 : 4));
            }
}

static void k4_scales(unpacked *u, const uint8_t *b)
{
    float d = fp16(b), dmin = fp16(b + 2);
    for (int i = 0; i < 8; i++) {
        int sc, m;
        smelt_k4_scale_min(i, b + 4, &sc, &m);
        u->scale[i] = d * (float)sc;
        u->min[i] = dmin * (float)m;
    }
}

/* block_q4_K: d, dmin, scales[12], qs[128]; each 64 elements are 32 low nibbles, then the same
 * 32 bytes' high nibbles. */
static void unpack_q4_k(unpacked *u, const uint8_t *b)
{
    k4_scales(u, b);
    const uint8_t *qs = b + 16;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            u->q[64 * c + l] = qs[32 * c + l] & 0xF;
            u->q[64 * c + 32 + l] = qs[32 * c + l] >> 4;
        }
}

/* block_q5_K: Q4_K plus qh[32]: bit 2c (2c + 1) of qh[l] is the fifth bit of the low (high)
 * nibble element l of chunk c. */
static void unpack_q5_k(unpacked *u, const uint8_t *b)
{
    k4_scales(u, b);
    const uint8_t *qh = b + 16, *qs = b + 48;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            u->q[64 * c + l] = (int16_t)((qs[32 * c + l] & 0xF) | ((qh[l] >> (2 * c)) & 1) << 4);
            u->q[64 * c + 32 + l] =
                (int16_t)((qs[32 * c + l] >> 4) | ((qh[l] >> (2 * c + 1)) & 1) << 4);
        }
}

/* block_q6_K: ql[128], qh[64], int8 scales[16], d; 6-bit quants biased by 32. */
static void unpack_q6_k(unpacked *u, const uint8_t *b)
{
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = fp16(b + 208);
    for (int i = 0; i < 16; i++)
        u->scale[i] = d * (float)sc[i];
    for (int n = 0; n < 2; n++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *L = ql + 64 * n, *H = qh + 32 * n;
            int16_t *q = u->q + 128 * n;
            q[l] = (int16_t)(((L[l] & 0xF) | ((H[l] >> 0) & 3) << 4) - 32);
            q[l + 32] = (int16_t)(((L[l + 32] & 0xF) | ((H[l] >> 2) & 3) << 4) - 32);
            q[l + 64] = (int16_t)(((L[l] >> 4) | ((H[l] >> 4) & 3) << 4) - 32);
            q[l + 96] = (int16_t)(((L[l + 32] >> 4) | ((H[l] >> 6) & 3) << 4) - 32);
        }
}

/* ---- reference quantizers (ggml's quantize_row_*_ref) ---- */

/* The value of largest magnitude (the first one on ties) and that magnitude. */
static float signed_absmax(const float *x, float *amax)
{
    float a = 0.0f, m = 0.0f;
    for (int j = 0; j < QK; j++)
        if (a < fabsf(x[j])) {
            a = fabsf(x[j]);
            m = x[j];
        }
    *amax = a;
    return m;
}

static void min_max(const float *x, float *mn, float *mx)
{
    float lo = INFINITY, hi = -INFINITY;
    /* ggml starts from +-FLT_MAX; the same for finite inputs. */
    for (int j = 0; j < QK; j++) {
        if (x[j] < lo)
            lo = x[j];
        if (x[j] > hi)
            hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

static void pack_q8_0(uint8_t *b, const float *x)
{
    float amax;
    signed_absmax(x, &amax);
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    put_fp16(b, d);
    for (int j = 0; j < QK; j++)
        b[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

/* Q4_0 and Q5_0: d = (signed absmax) / -2^(bits-1), q = min(top, (int8)(x / d + bias + 0.5)). */
static void pack_sym(uint8_t *b, const float *x, int bits)
{
    float amax, max = signed_absmax(x, &amax);
    float d = max / (float)-(1 << (bits - 1)), id = d != 0.0f ? 1.0f / d : 0.0f;
    float add = (float)(1 << (bits - 1)) + 0.5f;
    int top = (1 << bits) - 1;
    uint32_t qh = 0;
    put_fp16(b, d);
    uint8_t *qs = b + (bits == 5 ? 6 : 2);
    for (int j = 0; j < 16; j++) {
        int q0 = (int8_t)(x[j] * id + add), q1 = (int8_t)(x[16 + j] * id + add);
        q0 = q0 < top ? q0 : top;
        q1 = q1 < top ? q1 : top;
        qs[j] = (uint8_t)((q0 & 0xF) | (q1 & 0xF) << 4);
        qh |= (uint32_t)((q0 >> 4) & 1) << j | (uint32_t)((q1 >> 4) & 1) << (j + 16);
    }
    if (bits == 5)
        for (int k = 0; k < 4; k++)
            b[2 + k] = (uint8_t)(qh >> 8 * k);
}

/* Q4_1 and Q5_1: d = (max - min) / (2^bits - 1), m = min, q = (x - min) / d + 0.5 truncated.
 * ggml clamps Q4_1's quants to 15 and leaves Q5_1's unclamped; so does this. */
static void pack_affine(uint8_t *b, const float *x, int bits)
{
    float mn, mx;
    min_max(x, &mn, &mx);
    float d = (mx - mn) / (float)((1 << bits) - 1), id = d != 0.0f ? 1.0f / d : 0.0f;
    uint32_t qh = 0;
    put_fp16(b, d);
    put_fp16(b + 2, mn);
    uint8_t *qs = b + (bits == 5 ? 8 : 4);
    for (int j = 0; j < 16; j++) {
        float x0 = (x[j] - mn) * id, x1 = (x[16 + j] - mn) * id;
        int q0, q1;
        if (bits == 4) {
            q0 = (int8_t)(x0 + 0.5f);
            q1 = (int8_t)(x1 + 0.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
        } else {
            q0 = (uint8_t)(x0 + 0.5f);
            q1 = (uint8_t)(x1 + 0.5f);
        }
        qs[j] = (uint8_t)((q0 & 0xF) | (q1 & 0xF) << 4);
        qh |= (uint32_t)((q0 >> 4) & 1) << j | (uint32_t)((q1 >> 4) & 1) << (j + 16);
    }
    if (bits == 5)
        for (int k = 0; k < 4; k++)
            b[4 + k] = (uint8_t)(qh >> 8 * k);
}

static void pack_q4_0(uint8_t *b, const float *x) { pack_sym(b, x, 4); }
static void pack_q5_0(uint8_t *b, const float *x) { pack_sym(b, x, 5); }
static void pack_q4_1(uint8_t *b, const float *x) { pack_affine(b, x, 4); }
static void pack_q5_1(uint8_t *b, const float *x) { pack_affine(b, x, 5); }

/* ---- K-quant reference quantizers (ggml's quantize_row_q{4,5,6}_K_ref) ----
 * Each sub-block's scale (and min) comes from ggml's iterative fits, then the block's scales
 * are themselves quantized to 6 or 8 bits and every element requantized against the stored
 * fp16 values. The expressions keep ggml's evaluation order: every rounding is part of the
 * result. */

/* ggml's nearest_int: round half to even through the float mantissa (|f| <= 2^22). */
static int nearest_int(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

#define GROUP_MAX_EPS 1e-15f

/* ggml's make_qkx2_quants: an affine fit x ~ scale * L + min (min <= 0) of n values to
 * 0..nmax, trying nstep + 1 inverse scales; weighted squared error. Returns the scale and
 * stores -min. */
static float fit_affine(int n, int nmax, const float *x, const float *w, uint8_t *L,
                        float *the_min, float rmin, float rdelta, int nstep)
{
    uint8_t Laux[32];
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        float diff = scale * (float)L[i] + min - x[i];
        best += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float err = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                err += w[i] * (diff * diff);
            }
            if (err < best) {
                memcpy(L, Laux, (size_t)n);
                best = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Q4_K (nmax 15) and Q5_K (nmax 31): 8 sub-blocks of 32 fitted, 6-bit scales and mins, then
 * the quants L[256] in 0..nmax requantized; the caller packs L. */
static void fit_k4(uint8_t *b, const float *x, int nmax, float rmin, int nstep, uint8_t *L)
{
    float scales[8], mins[8], w[32], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            w[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = fit_affine(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j], rmin, 0.1f, nstep);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t *sc = b + 4;
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (uint8_t)((ls & 0xF) | (lm & 0xF) << 4);
            sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
            sc[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    put_fp16(b, max_scale / 63.f);
    put_fp16(b + 2, max_min / 63.f);
    float d_all = fp16(b), m_all = fp16(b + 2);
    for (int j = 0; j < 8; j++) {
        int s, m;
        smelt_k4_scale_min(j, sc, &s, &m);
        float d = d_all * (float)s;
        if (d == 0.0f)
            continue; /* ggml keeps the fit's quants */
        float dm = m_all * (float)m;
        for (int i = 0; i < 32; i++) {
            int l = nearest_int((x[32 * j + i] + dm) / d);
            L[32 * j + i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        }
    }
}

static void pack_q4_k(uint8_t *b, const float *x)
{
    uint8_t L[QK_K];
    fit_k4(b, x, 15, -1.f, 20, L);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            b[16 + 32 * c + l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
}

static void pack_q5_k(uint8_t *b, const float *x)
{
    uint8_t L[QK_K];
    fit_k4(b, x, 31, -0.5f, 15, L);
    uint8_t *qh = b + 16, *qs = b + 48;
    memset(qh, 0, 32);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
            qh[l] |= (uint8_t)((lo >> 4) << (2 * c) | (hi >> 4) << (2 * c + 1));
            qs[32 * c + l] = (uint8_t)((lo & 0xF) | (hi & 0xF) << 4);
        }
}

/* ggml's make_qx_quants with rmse_type 1 and no weights (w = x^2): a symmetric fit of n
 * values to -nmax..nmax-1 (stored biased by nmax), trying 19 inverse scales. */
static float fit_sym(int n, int nmax, const float *x, uint8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)-nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (uint8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = nearest_int(iscale * x[i]);
                L[i] = (uint8_t)(nmax + (l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

static void pack_q6_k(uint8_t *b, const float *x)
{
    uint8_t L[QK_K];
    float scales[16], max_scale = 0, max_abs = 0;
    for (int ib = 0; ib < 16; ib++) {
        scales[ib] = fit_sym(16, 32, x + 16 * ib, L + 16 * ib);
        if (fabsf(scales[ib]) > max_abs) {
            max_abs = fabsf(scales[ib]);
            max_scale = scales[ib];
        }
    }
    memset(b, 0, 210);
    if (max_abs < GROUP_MAX_EPS)
        return; /* all zero, d = +0 */
    float iscale = -128.f / max_scale;
    int8_t *sc = (int8_t *)(b + 192);
    put_fp16(b + 208, 1 / iscale);
    float d_all = fp16(b + 208);
    for (int ib = 0; ib < 16; ib++) {
        int l = nearest_int(iscale * scales[ib]);
        sc[ib] = (int8_t)(l < 127 ? l : 127);
    }
    for (int j = 0; j < 16; j++) {
        float d = d_all * (float)sc[j];
        if (d == 0.0f)
            continue;
        for (int i = 0; i < 16; i++) {
            int l = nearest_int(x[16 * j + i] / d);
            L[16 * j + i] = (uint8_t)((l < -32 ? -32 : l > 31 ? 31 : l) + 32);
        }
    }
    for (int n = 0; n < 2; n++) {
        const uint8_t *q = L + 128 * n;
        uint8_t *ql = b + 64 * n, *qh = b + 128 + 32 * n;
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((q[l] & 0xF) | (q[l + 64] & 0xF) << 4);
            ql[l + 32] = (uint8_t)((q[l + 32] & 0xF) | (q[l + 96] & 0xF) << 4);
            qh[l] = (uint8_t)(q[l] >> 4 | (q[l + 32] >> 4) << 2 | (q[l + 64] >> 4) << 4 |
                              (q[l + 96] >> 4) << 6);
        }
    }
}

static const qkind kinds[SMELT_GGML_TYPE_COUNT] = {
    [SMELT_GGML_Q4_0] = {32, 0, 0, -1, unpack_q4_0, pack_q4_0},
    [SMELT_GGML_Q4_1] = {32, 1, 0, 2, unpack_q4_1, pack_q4_1},
    [SMELT_GGML_Q5_0] = {32, 0, 0, -1, unpack_q5_0, pack_q5_0},
    [SMELT_GGML_Q5_1] = {32, 1, 0, 2, unpack_q5_1, pack_q5_1},
    [SMELT_GGML_Q8_0] = {32, 0, 0, -1, unpack_q8_0, pack_q8_0},
    [SMELT_GGML_Q2_K] = {16, 1, 80, 82, unpack_q2_k, NULL},
    [SMELT_GGML_Q3_K] = {16, 0, 108, -1, unpack_q3_k, NULL},
    [SMELT_GGML_Q4_K] = {32, 1, 0, 2, unpack_q4_k, pack_q4_k},
    [SMELT_GGML_Q5_K] = {32, 1, 0, 2, unpack_q5_k, pack_q5_k},
    [SMELT_GGML_Q6_K] = {16, 0, 208, -1, unpack_q6_k, pack_q6_k},
    [SMELT_GGML_IQ4_NL] = {32, 0, 0, -1, unpack_iq4_nl, NULL},
    [SMELT_GGML_IQ4_XS] = {32, 0, 0, -1, unpack_iq4_xs, NULL},
};

static const qkind *kind_of(uint32_t type)
{
    return type < SMELT_GGML_TYPE_COUNT && kinds[type].unpack ? &kinds[type] : NULL;
}

/* The reference dequantization: per block, the type's unpack, then q * scale (- min). */
static void dequant_blocks(uint32_t type, float *dst, const void *src, size_t nblocks)
{
    const qkind *k = &kinds[type];
    const smelt_ggml_type *t = smelt_ggml_type_get(type);
    const uint8_t *s = src;
    unpacked u;
    for (size_t blk = 0; blk < nblocks; blk++, s += t->bytes, dst += t->block) {
        k->unpack(&u, s);
        for (unsigned i = 0; i < t->block; i++) {
            float y = (float)u.q[i] * u.scale[i / k->sub];
            dst[i] = k->has_min ? y - u.min[i / k->sub] : y;
        }
    }
}

#define REF_DEQUANT(name, TYPE)                                                                \
    void smelt_ref_dequant_##name(float *dst, const void *src, size_t nblocks)                 \
    {                                                                                          \
        dequant_blocks(SMELT_GGML_##TYPE, dst, src, nblocks);                                  \
    }
SMELT_DEQUANT_TYPES(REF_DEQUANT)
#undef REF_DEQUANT

int smelt_ref_dequant_f16_fields(uint32_t type, int off[2])
{
    const qkind *k = kind_of(type);
    if (!k)
        return 0;
    off[0] = k->d_off;
    off[1] = k->m_off;
    return k->m_off >= 0 ? 2 : 1;
}

static int is_plain(uint32_t type)
{
    return type == SMELT_GGML_F32 || type == SMELT_GGML_F16 || type == SMELT_GGML_BF16;
}

int smelt_dequant_supported(uint32_t type)
{
    return is_plain(type) || kind_of(type) != NULL;
}

int smelt_quant_supported(uint32_t type)
{
    const qkind *k = kind_of(type);
    return k && k->pack;
}

int smelt_dequantize(uint32_t type, float *dst, const void *src, size_t n)
{
    const uint8_t *s = src;
    if (type == SMELT_GGML_F32) {
        memcpy(dst, src, n * sizeof *dst); /* ggml copies F32 rows as they are */
        return 0;
    }
    if (type == SMELT_GGML_F16 || type == SMELT_GGML_BF16) {
        for (size_t i = 0; i < n; i++) { /* src may be unaligned */
            uint16_t h = (uint16_t)(s[2 * i] | s[2 * i + 1] << 8);
            if (type == SMELT_GGML_F16)
                smelt_ref_decode_f16(&dst[i], &h, 1);
            else
                smelt_ref_decode_bf16(&dst[i], &h, 1);
        }
        return 0;
    }
    if (!kind_of(type) || n % smelt_ggml_type_get(type)->block)
        return -1;
    /* The scalar table's entry is the reference (and the code below, dequant_blocks). */
    smelt_kernels_scalar.dequant[type](dst, src, n / smelt_ggml_type_get(type)->block);
    return 0;
}

int smelt_quantize(uint32_t type, void *dst, const float *src, size_t n)
{
    const qkind *k = kind_of(type);
    if (!k || !k->pack)
        return -1;
    const smelt_ggml_type *t = smelt_ggml_type_get(type);
    if (n % t->block)
        return -1;
    uint8_t *d = dst;
    for (size_t blk = 0; blk < n / t->block; blk++)
        k->pack(d + blk * t->bytes, src + blk * t->block);
    return 0;
}
