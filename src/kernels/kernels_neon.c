/* The NEON level (AArch64 Advanced SIMD, always present there). The conversions follow FPCR:
 * Linux starts processes with round-to-nearest-even and no flush-to-zero, which is what the
 * reference does (tests/neon checks it under qemu). */
#include <arm_neon.h>
#include <stdint.h>
#include <string.h>

#define KLEVEL neon
#define KLEVEL_NAME "neon"
#define VL 4
typedef float32x4_t VF;
typedef uint32x4_t VI;
typedef uint16x4_t VH;
typedef uint32x4_t VM;
typedef float64x2_t VD;
#define DL 2

#define VF_LOADU(p) vld1q_f32(p)
#define VF_STOREU(p, v) vst1q_f32((p), (v))
#define VF_SET1(x) vdupq_n_f32(x)
#define VF_ADD(a, b) vaddq_f32((a), (b))
#define VF_SUB(a, b) vsubq_f32((a), (b))
#define VF_MUL(a, b) vmulq_f32((a), (b))
#define VI_SET1(x) vdupq_n_u32((uint32_t)(x))
static const uint32_t k_iota[4] = {0, 1, 2, 3};
#define VI_IOTA vld1q_u32(k_iota)
#define VI_ADD(a, b) vaddq_u32((a), (b))
#define VI_AND(a, b) vandq_u32((a), (b))
#define VI_MIN_U(a, b) vminq_u32((a), (b))
#define VI_XOR(a, b) veorq_u32((a), (b))
#define VI_SRLI(a, k) vshrq_n_u32((a), (k))
#define VI_SLLI(a, k) vshlq_n_u32((a), (k))
#define VI_TO_VF(a) vcvtq_f32_u32(a)
#define VF_AS_VI(a) vreinterpretq_u32_f32(a)
#define VI_AS_VF(a) vreinterpretq_f32_u32(a)
#define VH_LOADU(p) vld1_u16(p)
#define VH_STOREU(p, v) vst1_u16((p), (v))
#define VI_FROM_VH(h) vmovl_u16(h)
#define VH_FROM_VI(a) vmovn_u32(a)
#define VF_FROM_F16(h) vcvt_f32_f16(vreinterpret_f16_u16(h))
#define F16_FROM_VF(v) vreinterpret_u16_f16(vcvt_f16_f32(v))
#define VM_LT(a, b) vcltq_f32((a), (b))
#define VM_GT(a, b) vcgtq_f32((a), (b))
#define VM_UNORD(a) vmvnq_u32(vceqq_f32((a), (a)))
#define VM_AND(a, b) vandq_u32((a), (b))
#define VM_OR(a, b) vorrq_u32((a), (b))
#define VM_ANDNOT(a, b) vbicq_u32((b), (a))
#define VM_EQ_I(a, b) vceqq_u32((a), (b))
#define VM_BITS(m) vaddvq_u32(vandq_u32((m), (uint32x4_t){1, 2, 4, 8}))
#define VF_SELECT(m, a, b) vbslq_f32((m), (a), (b))
#define VI_SELECT(m, a, b) vbslq_u32((m), (a), (b))
#define VD_ZERO vdupq_n_f64(0.0)
#define VD_LOAD_F32(p) vcvt_f64_f32(vld1_f32(p))
#define VD_ADD(a, b) vaddq_f64((a), (b))
#define VD_MUL(a, b) vmulq_f64((a), (b))
#define VD_ABS(a) vabsq_f64(a)
#define VD_STOREU(p, v) vst1q_f64((p), (v))

static inline void k_mulhilo(VI a, VI m, VI *hi, VI *lo)
{
    uint32x4_t p01 = vreinterpretq_u32_u64(vmull_u32(vget_low_u32(a), vget_low_u32(m)));
    uint32x4_t p23 = vreinterpretq_u32_u64(vmull_high_u32(a, m));
    *hi = vuzp2q_u32(p01, p23);
    *lo = vuzp1q_u32(p01, p23);
}

static inline void k_store4(float *p, VF a, VF b, VF c, VF d)
{
    float32x4x4_t v = {{a, b, c, d}};
    vst4q_f32(p, v);
}

/* For the dequantization kernels (kernels_simd.h). */
#define VI_OR(a, b) vorrq_u32((a), (b))
static inline uint8x8_t k_load4_u8(const uint8_t *p)
{
    uint32_t w;
    memcpy(&w, p, 4); /* exactly the 4 bytes of the 4 lanes, any alignment */
    return vreinterpret_u8_u32(vdup_n_u32(w));
}
#define VI_LOAD_U8(p) vmovl_u16(vget_low_u16(vmovl_u8(k_load4_u8(p))))
#define VI_LOAD_I8(p) \
    vreinterpretq_u32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_u8(k_load4_u8(p))))))
#define VI_SRLV(a, c) vshlq_u32((a), vnegq_s32(vreinterpretq_s32_u32(c)))
#define VI_TO_VF_S(a) vcvtq_f32_s32(vreinterpretq_s32_u32(a))

#include "kernels/kernels_ref.h" /* smelt_iq4nl_values */

static inline float k_f16_at(const uint8_t *p)
{
    uint16x4_t h = vdup_n_u16((uint16_t)(p[0] | p[1] << 8));
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(h)), 0);
}

/* A byte table lookup: the three upper index bytes are made out of range (0xFF), so each lane
 * gets its code byte with zeros above, then is sign-extended from 8 bits. */
static inline uint32x4_t k_lut_iq4(uint32x4_t i)
{
    int8x16_t t = vld1q_s8(smelt_iq4nl_values);
    uint8x16_t idx = vreinterpretq_u8_u32(vorrq_u32(i, vdupq_n_u32(0xFFFFFF00u)));
    int32x4_t r = vreinterpretq_s32_s8(vqtbl1q_s8(t, idx));
    return vreinterpretq_u32_s32(vshrq_n_s32(vshlq_n_s32(r, 24), 24));
}

/* For the delta byte planes: NEON's zips and unzips already span the whole vector. */
#define VB 16
typedef uint8x16_t VB_T;
#define VB_LOADU(p) vld1q_u8(p)
#define VB_STOREU(p, v) vst1q_u8((p), (v))
#define VB_XOR(a, b) veorq_u8((a), (b))
#define VB_ZIP(x, y, a, b) ((a) = vzip1q_u8((x), (y)), (b) = vzip2q_u8((x), (y)))
#define VB_UNZIP(a, b, e, o) ((e) = vuzp1q_u8((a), (b)), (o) = vuzp2q_u8((a), (b)))

#include "kernels/kernels_simd.h"
