/* CPU feature detection for the kernel dispatch. Built without any instruction-set flags, so it
 * runs on every CPU of the architecture (the xxHash way: cpuid for what the CPU has, XGETBV for
 * what the OS saves on a context switch; both must agree before a level is usable). */
#ifndef SMELT_CPU_H
#define SMELT_CPU_H

enum smelt_cpu_feature {
    SMELT_CPU_AVX2 = 1u << 0,   /* AVX2 + FMA + F16C, and the OS saves YMM state */
    SMELT_CPU_AVX512 = 1u << 1, /* AVX512 F/BW/VL on top of SMELT_CPU_AVX2, OS saves ZMM state */
    SMELT_CPU_NEON = 1u << 2    /* AArch64 Advanced SIMD (always present there) */
};

/* The smelt_cpu_feature bits this CPU and OS support. Pure (queries the CPU each call; cheap
 * enough for start-up and thread-safe). */
unsigned smelt_cpu_features(void);

#endif
