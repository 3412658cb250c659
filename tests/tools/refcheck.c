/* See refcheck.h. */
#include "refcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static float from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static float half_to_float(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
    float v = exp == 0 ? ldexpf((float)man, -24)
            : exp == 31 ? (man ? NAN : INFINITY)
                        : ldexpf((float)(man | 1024), exp - 25);
    return sign ? -v : v;
}

static double element(const uint8_t *p, smelt_dtype dt)
{
    uint16_t h;
    uint32_t u;
    switch (dt) {
    case SMELT_DT_BF16: memcpy(&h, p, 2); return from_bits((uint32_t)h << 16);
    case SMELT_DT_F16: memcpy(&h, p, 2); return half_to_float(h);
    case SMELT_DT_F32: memcpy(&u, p, 4); return from_bits(u);
    default: fprintf(stderr, "refcheck: unexpected dtype\n"); exit(2);
    }
}

/* Distance in units in the last place between two encodings of the output dtype. */
static long ulp_distance(const uint8_t *a, const uint8_t *b, smelt_dtype dt)
{
    long x, y;
    if (dt == SMELT_DT_F32) {
        int32_t i, j;
        memcpy(&i, a, 4), memcpy(&j, b, 4);
        x = i < 0 ? INT32_MIN - (long)i : i;
        y = j < 0 ? INT32_MIN - (long)j : j;
    } else {
        int16_t i, j;
        memcpy(&i, a, 2), memcpy(&j, b, 2);
        x = i < 0 ? INT16_MIN - (long)i : i;
        y = j < 0 ? INT16_MIN - (long)j : j;
    }
    return labs(x - y);
}

static void encode(float f, uint8_t *out, smelt_dtype dt)
{
    if (dt == SMELT_DT_F32) {
        memcpy(out, &f, 4);
        return;
    }
    if (dt == SMELT_DT_BF16) {
        uint32_t u = to_bits(f);
        uint16_t h = isnan(f) ? 0x7FC0 : (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
        memcpy(out, &h, 2);
        return;
    }
    /* f16: round |f| to the f16 grid in double (exact there; nearbyint rounds half to even),
     * then assemble the bits from the rounded value. */
    double a = fabs((double)f);
    uint16_t bits;
    if (isnan(f)) {
        bits = 0x7E00;
    } else {
        int e = a > 0 ? (int)floor(log2(a)) : -25;
        double step = e < -14 ? ldexp(1, -24) : ldexp(1, e - 10);
        double v = nearbyint(a / step) * step;
        if (v >= 65520.0 || isinf(f))
            bits = 0x7C00;
        else if (v < ldexp(1, -14))
            bits = (uint16_t)(v / ldexp(1, -24));
        else {
            int ve = (int)floor(log2(v));
            bits = (uint16_t)(((ve + 15) << 10) | (uint16_t)(v / ldexp(1, ve - 10) - 1024));
        }
        if (signbit(f))
            bits |= 0x8000;
    }
    uint16_t h = bits;
    memcpy(out, &h, 2);
}

static uint8_t *read_tensor(const refcheck *rc, const smelt_model *m, const smelt_tensor_info *t)
{
    uint8_t *buf = malloc(t->nbytes ? t->nbytes : 1);
    if (pread(m->files[t->file].fd, buf, t->nbytes, (off_t)t->offset) != (ssize_t)t->nbytes) {
        fprintf(stderr, "%s: cannot read '%s'\n", rc->tool, t->name);
        exit(2);
    }
    return buf;
}

smelt_model *refcheck_open(const refcheck *rc, const char *ref)
{
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_model *m;
    if (smelt_model_open(ctx, ref, &m) != SMELT_OK) {
        fprintf(stderr, "%s: %s\n", rc->tool, smelt_errmsg(ctx));
        exit(2);
    }
    smelt_ctx_free(ctx);
    return m;
}

float *refcheck_read(const refcheck *rc, const smelt_model *m, const char *name, uint64_t *numel)
{
    const smelt_tensor_info *t = smelt_model_find(m, name);
    if (!t || !smelt_dtype_mergeable(t->dtype)) {
        fprintf(stderr, "%s: '%s' is missing or not a float tensor in %s\n", rc->tool, name, m->ref);
        exit(2);
    }
    uint8_t *raw = read_tensor(rc, m, t);
    float *f = malloc((t->numel ? t->numel : 1) * sizeof(float));
    unsigned size = smelt_dtype_size(t->dtype);
    for (uint64_t e = 0; e < t->numel; e++)
        f[e] = (float)element(raw + e * size, t->dtype);
    free(raw);
    *numel = t->numel;
    return f;
}

void refcheck_tensor(refcheck *rc, const smelt_model *out, const smelt_tensor_info *t,
                     const float *want)
{
    uint8_t *got = read_tensor(rc, out, t);
    unsigned osize = smelt_dtype_size(t->dtype);
    int allowed = rc->max_ulp > 0 ? rc->max_ulp : 1;
    for (uint64_t e = 0; e < t->numel; e++) {
        uint8_t w[4];
        encode(want[e], w, t->dtype);
        long d = ulp_distance(w, got + e * osize, t->dtype);
        rc->total++;
        if (d == 0)
            rc->exact++;
        else if (d <= allowed)
            rc->off_by_one++;
        else if (rc->worse++ < 5)
            fprintf(stderr, "%s: '%s'[%llu]: expected %g, got %g (%ld ulp)\n", rc->tool, t->name,
                    (unsigned long long)e, (double)want[e], element(got + e * osize, t->dtype), d);
    }
    rc->tensors++;
    free(got);
}

int refcheck_finish(const refcheck *rc)
{
    double share = rc->total ? 100.0 * (double)rc->exact / (double)rc->total : 100.0;
    printf("%s: %llu elements in %zu tensors: %.4f %% bit-exact, %llu within %d ulp, %llu further\n",
           rc->tool, (unsigned long long)rc->total, rc->tensors, share,
           (unsigned long long)rc->off_by_one, rc->max_ulp > 0 ? rc->max_ulp : 1,
           (unsigned long long)rc->worse);
    return rc->worse == 0 && share >= 99.9 ? 0 : 1;
}
