/* Kernel dispatch: which table the process uses, chosen once from the CPU and SMELT_ISA. */
#include "kernels/kernels_ref.h"

#include "common/cpu.h"
#include "common/errors.h"
#include "kernels/kernels_quant.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct level {
    const char *name;
    const smelt_kernels *table; /* NULL: not built for this architecture */
    unsigned needs;             /* smelt_cpu_feature bits */
} level;

/* Every known level, worst to best; the best supported one is the default. */
static const level levels[] = {
    {"scalar", &smelt_kernels_scalar, 0},
#ifdef SMELT_HAVE_X86_KERNELS
    {"avx2", &smelt_kernels_avx2, SMELT_CPU_AVX2},
    {"avx512", &smelt_kernels_avx512, SMELT_CPU_AVX512},
#else
    {"avx2", NULL, SMELT_CPU_AVX2},
    {"avx512", NULL, SMELT_CPU_AVX512},
#endif
#ifdef SMELT_HAVE_NEON_KERNELS
    {"neon", &smelt_kernels_neon, SMELT_CPU_NEON},
#else
    {"neon", NULL, SMELT_CPU_NEON},
#endif
};
#define NLEVELS (sizeof levels / sizeof levels[0])

/* Atomic so that a first smelt_kernels_get() racing in several threads is still well defined:
 * they all compute and store the same default. */
static _Atomic(const smelt_kernels *) current;

static int usable(const level *l)
{
    return l->table && (smelt_cpu_features() & l->needs) == l->needs;
}

/* The usable levels, best first, down to the first one that passes its self-test. Computed
 * once, so the notice about a failing level is printed once per process. */
static const smelt_kernels *sound_best;
static pthread_once_t sound_once = PTHREAD_ONCE_INIT;

static void find_sound_best(void)
{
    const smelt_kernels *chain[NLEVELS];
    size_t n = 0;
    for (size_t i = NLEVELS; i-- > 0;)
        if (usable(&levels[i]))
            chain[n++] = levels[i].table;
    sound_best = smelt_kernels_first_sound(chain, n, stderr);
}

static const smelt_kernels *best(void)
{
    pthread_once(&sound_once, find_sound_best);
    return sound_best;
}

/* "scalar, avx2": the levels usable here, for error messages. */
static void list_usable(char *buf, size_t len)
{
    buf[0] = '\0';
    size_t at = 0;
    for (size_t i = 0; i < NLEVELS && at < len; i++)
        if (usable(&levels[i]))
            at += (size_t)snprintf(buf + at, len - at, "%s%s", at ? ", " : "", levels[i].name);
}

const smelt_kernels *smelt_kernels_level(const char *isa)
{
    for (size_t i = 0; i < NLEVELS; i++)
        if (isa && strcmp(isa, levels[i].name) == 0)
            return usable(&levels[i]) ? levels[i].table : NULL;
    return NULL;
}

int smelt_kernels_select(const char *isa, char *err, size_t errlen)
{
    const char *from = "";
    if (!isa || !*isa) {
        isa = getenv("SMELT_ISA");
        from = " (from SMELT_ISA)";
    }
    if (!isa || !*isa) {
        atomic_store(&current, best());
        return 0;
    }
    char supported[64];
    list_usable(supported, sizeof supported);
    for (size_t i = 0; i < NLEVELS; i++) {
        if (strcmp(isa, levels[i].name) != 0)
            continue;
        if (!usable(&levels[i])) {
            snprintf(err, errlen, "SIMD level '%s'%s is %s; supported here: %s", isa, from,
                     levels[i].table ? "not supported by this CPU or OS"
                                     : "not built for this architecture",
                     supported);
            return -1;
        }
        /* Named explicitly, a level that fails its self-test is an error, not a quiet
         * fallback: whoever asked for it wants to know. */
        const char *bad = smelt_kernels_selftest(levels[i].table);
        if (bad) {
            snprintf(err, errlen, "SIMD level '%s'%s fails its self-test on this machine (kernel "
                     "'%s' disagrees with the scalar reference); supported here: %s", isa, from,
                     bad, supported);
            return -1;
        }
        atomic_store(&current, levels[i].table);
        return 0;
    }
    snprintf(err, errlen,
             "unknown SIMD level '%s'%s: the levels are scalar, avx2, avx512 and neon; "
             "supported here: %s",
             isa, from, supported);
    return -1;
}

const smelt_kernels *smelt_kernels_get(void)
{
    const smelt_kernels *k = atomic_load(&current);
    if (k)
        return k;
    /* A bad SMELT_ISA is reported by smelt_isa_select(); here it falls back to the best. */
    char err[256];
    if (smelt_kernels_select(NULL, err, sizeof err) != 0)
        atomic_store(&current, best());
    return atomic_load(&current);
}

const char *smelt_isa_name(void) { return smelt_kernels_get()->name; }

int smelt_isa_select(smelt_ctx *ctx, const char *isa)
{
    char err[256];
    if (smelt_kernels_select(isa, err, sizeof err) != 0)
        return smelt_fail(ctx, SMELT_E_ARG, "%s", err);
    return SMELT_OK;
}

void smelt_decode(const smelt_kernels *k, float *dst, const void *src, smelt_dtype dt, size_t n)
{
    switch (dt) {
    case SMELT_DT_BF16: k->decode_bf16(dst, src, n); break;
    case SMELT_DT_F16: k->decode_f16(dst, src, n); break;
    case SMELT_DT_F32: memcpy(dst, src, n * sizeof(float)); break;
    default: {
        /* Block types: n is a whole number of blocks (the engine cuts tiles at block
         * boundaries). */
        int g = smelt_dtype_to_ggml(dt);
        unsigned block = smelt_dtype_block(dt);
        assert(g >= 0 && g < SMELT_GGML_TYPE_COUNT && k->dequant[g] && block && n % block == 0 &&
               "smelt_decode: not a mergeable dtype");
        k->dequant[g](dst, src, n / block);
    }
    }
}

void smelt_encode(const smelt_kernels *k, void *dst, const float *src, smelt_dtype dt, size_t n)
{
    switch (dt) {
    case SMELT_DT_BF16: k->encode_bf16(dst, src, n); break;
    case SMELT_DT_F16: k->encode_f16(dst, src, n); break;
    case SMELT_DT_F32: k->encode_f32(dst, src, n); break;
    default: {
        int rc = smelt_quantize((uint32_t)smelt_dtype_to_ggml(dt), dst, src, n);
        assert(rc == 0 && "smelt_encode: not an output dtype");
        (void)rc;
    }
    }
}
