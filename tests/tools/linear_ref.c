/* Checks a merged model against an independent computation of the linear merge:
 *   out = Σ w_i θ_i / Σ w_i   in f32, rounded to the output dtype with this file's own RNE.
 * usage: linear_ref OUT_DIR W1:MODEL1 W2:MODEL2 ... [--no-normalize]
 * Prints the share of elements that match bit for bit and exits non-zero when fewer than 99.9 %
 * do or any element is more than one unit in the last place away. */
#include "format/safetensors.h"

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
    default: fprintf(stderr, "linear_ref: unexpected dtype\n"); exit(2);
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

static uint8_t *read_tensor(const smelt_model *m, const smelt_tensor_info *t)
{
    uint8_t *buf = malloc(t->nbytes ? t->nbytes : 1);
    if (pread(m->files[t->file].fd, buf, t->nbytes, (off_t)t->offset) != (ssize_t)t->nbytes) {
        fprintf(stderr, "linear_ref: cannot read '%s'\n", t->name);
        exit(2);
    }
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: linear_ref OUT_DIR W1:MODEL1 ... [--no-normalize]\n");
        return 2;
    }
    int normalize = strcmp(argv[argc - 1], "--no-normalize") != 0;
    int nmodels = argc - 2 - !normalize;
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_model *out, *models[nmodels];
    float weights[nmodels];
    double wsum = 0;
    if (smelt_model_open(ctx, argv[1], &out) != SMELT_OK) {
        fprintf(stderr, "linear_ref: %s\n", smelt_errmsg(ctx));
        return 2;
    }
    for (int i = 0; i < nmodels; i++) {
        char *colon = strchr(argv[2 + i], ':');
        if (!colon)
            return 2;
        weights[i] = strtof(argv[2 + i], NULL);
        wsum += weights[i];
        if (smelt_model_open(ctx, colon + 1, &models[i]) != SMELT_OK) {
            fprintf(stderr, "linear_ref: %s\n", smelt_errmsg(ctx));
            return 2;
        }
    }
    uint64_t total = 0, exact = 0, off_by_one = 0, worse = 0;
    for (size_t t = 0; t < out->ntensors; t++) {
        const smelt_tensor_info *ot = &out->tensors[t];
        uint8_t *got = read_tensor(out, ot);
        uint8_t *src[nmodels];
        const smelt_tensor_info *it[nmodels];
        for (int i = 0; i < nmodels; i++) {
            it[i] = smelt_model_find(models[i], ot->name);
            if (!it[i] || it[i]->numel != ot->numel) {
                fprintf(stderr, "linear_ref: '%s' missing or resized in input %d\n", ot->name, i);
                return 1;
            }
            src[i] = read_tensor(models[i], it[i]);
        }
        unsigned osize = smelt_dtype_size(ot->dtype);
        for (uint64_t e = 0; e < ot->numel; e++) {
            float acc = 0;
            for (int i = 0; i < nmodels; i++)
                acc += weights[i] * (float)element(src[i] + e * smelt_dtype_size(it[i]->dtype),
                                                   it[i]->dtype);
            if (normalize)
                acc = (float)(acc / wsum);
            uint8_t want[4];
            encode(acc, want, ot->dtype);
            long d = ulp_distance(want, got + e * osize, ot->dtype);
            total++;
            if (d == 0)
                exact++;
            else if (d == 1)
                off_by_one++;
            else if (worse++ < 5)
                fprintf(stderr, "linear_ref: '%s'[%llu]: expected %g, got %g (%ld ulp)\n",
                        ot->name, (unsigned long long)e, (double)acc,
                        element(got + e * osize, ot->dtype), d);
        }
        free(got);
        for (int i = 0; i < nmodels; i++)
            free(src[i]);
    }
    double share = total ? 100.0 * (double)exact / (double)total : 100.0;
    printf("linear_ref: %llu elements in %zu tensors: %.4f %% bit-exact, %llu one ulp off, "
           "%llu further\n", (unsigned long long)total, out->ntensors, share,
           (unsigned long long)off_by_one, (unsigned long long)worse);
    for (int i = 0; i < nmodels; i++)
        smelt_model_close(models[i]);
    smelt_model_close(out);
    smelt_ctx_free(ctx);
    return worse == 0 && share >= 99.9 ? 0 : 1;
}
