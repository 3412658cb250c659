#include "common/cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <stddef.h>
#include <stdint.h>

/* XGETBV through inline asm: the _xgetbv intrinsic needs -mxsave, and this file must build with
 * no extension flags at all. */
static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

unsigned smelt_cpu_features(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    /* Without OSXSAVE, XGETBV faults; without AVX the YMM bits mean nothing. */
    if (!osxsave || !avx)
        return 0;
    uint64_t xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) /* XMM and YMM state */
        return 0;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1,
        avx512vl = (b >> 31) & 1;
    unsigned features = 0;
    if (avx2 && fma && f16c)
        features |= SMELT_CPU_AVX2;
    /* opmask, upper ZMM0-15 and ZMM16-31 state */
    if ((features & SMELT_CPU_AVX2) && avx512f && avx512bw && avx512vl && (xcr0 & 0xE0) == 0xE0)
        features |= SMELT_CPU_AVX512;
    return features;
}

#elif defined(__aarch64__)

/* Advanced SIMD is mandatory in AArch64. */
unsigned smelt_cpu_features(void) { return SMELT_CPU_NEON; }

#else

unsigned smelt_cpu_features(void) { return 0; }

#endif
