/* Kernel throughput per SIMD level: GB/s (bytes read + bytes written, per second, one core) on an
 * L2-resident tile and on DRAM-sized buffers, next to memcpy moving bytes the same way; then the
 * 3-model bf16 linear merge (out = encode(w0*x0 + w1*x1 + w2*x2) in 1024-element tiles) as a
 * share of memcpy; then the dequantization entries in Gelem/s (f32 elements out per second) per
 * ggml block type and level, on an L2-resident tile and streaming a DRAM-sized quantized source
 * through 1024-element tiles, as smelt_decode runs in the engine. Prints figures only; never
 * passes or fails.
 *
 * Usage: bench_kernels [DRAM MiB per f32 array, default 256]
 * Standalone: gcc -std=c11 -O2 -D_GNU_SOURCE -ffp-contract=off -Iinclude -Isrc
 *   benchmarks/bench_kernels.c src/kernels/kernels*.c (SIMD files with their flags)
 *   src/common/{cpu,errors,dtype}.c -DSMELT_HAVE_X86_KERNELS=1 -lm */
#include "kernels/kernels.h"
#include "kernels/kernels_ref.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct bufs {
    size_t n;
    float *a, *b, *c, *d;
    uint16_t *h, *g, *x0, *x1, *x2, *out;
} bufs;

static volatile double sink;

enum op {
    OP_MEMCPY, OP_DECODE_BF16, OP_DECODE_F16, OP_ENCODE_BF16, OP_ENCODE_F16, OP_ENCODE_F32,
    OP_AXPY, OP_SCALE, OP_AXPY_BF16, OP_AXPY_F16, OP_SCALE_BF16, OP_AXPY_BF16_ENCODE, OP_SUB,
    OP_MASKED_ACCUM, OP_DOT, OP_SUMSQ, OP_SUM_ABS, OP_HIST, OP_PHILOX,
    OP_DELTA_JOIN_BF16, OP_DELTA_SPLIT_BF16, OP_DELTA_JOIN_F32, OP_COUNT
};
static const struct { const char *name; unsigned bytes; } ops[OP_COUNT] = {
    [OP_MEMCPY] = {"memcpy f32", 8},           [OP_DECODE_BF16] = {"decode_bf16", 6},
    [OP_DECODE_F16] = {"decode_f16", 6},       [OP_ENCODE_BF16] = {"encode_bf16", 6},
    [OP_ENCODE_F16] = {"encode_f16", 6},       [OP_ENCODE_F32] = {"encode_f32", 8},
    [OP_AXPY] = {"axpy", 12},                  [OP_SCALE] = {"scale", 8},
    [OP_AXPY_BF16] = {"axpy_bf16", 10},        [OP_AXPY_F16] = {"axpy_f16", 10},
    [OP_SCALE_BF16] = {"scale_bf16", 6},       [OP_AXPY_BF16_ENCODE] = {"axpy_bf16_encode", 8},
    [OP_SUB] = {"sub", 12},                    [OP_MASKED_ACCUM] = {"masked_accum", 24},
    [OP_DOT] = {"dot_f64", 8},                 [OP_SUMSQ] = {"sumsq_f64", 4},
    [OP_SUM_ABS] = {"sum_abs_f64", 4},         [OP_HIST] = {"hist_mag (11 bits)", 4},
    [OP_PHILOX] = {"philox_uniform", 4},
    [OP_DELTA_JOIN_BF16] = {"delta_join (2 planes ^ base)", 6},
    [OP_DELTA_SPLIT_BF16] = {"delta_split (bf16 ^ base)", 6},
    [OP_DELTA_JOIN_F32] = {"delta_join (4 planes ^ base)", 12},
};

static uint32_t hist[1u << 11];

static void run_op(const smelt_kernels *k, enum op op, const bufs *B)
{
    size_t n = B->n;
    switch (op) {
    case OP_MEMCPY: memcpy(B->b, B->a, n * 4); break;
    case OP_DECODE_BF16: k->decode_bf16(B->b, B->h, n); break;
    case OP_DECODE_F16: k->decode_f16(B->b, B->h, n); break;
    case OP_ENCODE_BF16: k->encode_bf16(B->g, B->a, n); break;
    case OP_ENCODE_F16: k->encode_f16(B->g, B->a, n); break;
    case OP_ENCODE_F32: k->encode_f32(B->b, B->a, n); break;
    case OP_AXPY: k->axpy(B->b, B->a, 0.5f, n); break;
    case OP_SCALE: k->scale(B->b, B->a, 0.5f, n); break;
    case OP_AXPY_BF16: k->axpy_bf16(B->b, B->h, 0.5f, n); break;
    case OP_AXPY_F16: k->axpy_f16(B->b, B->h, 0.5f, n); break;
    case OP_SCALE_BF16: k->scale_bf16(B->b, B->h, 0.5f, n); break;
    case OP_AXPY_BF16_ENCODE: k->axpy_bf16_encode(B->g, B->a, B->h, 0.5f, n); break;
    case OP_SUB: k->sub(B->c, B->a, B->b, n); break;
    case OP_MASKED_ACCUM: k->masked_accum(B->b, B->c, B->a, B->d, 0.5f, n); break;
    case OP_DOT: case OP_SUMSQ: case OP_SUM_ABS: {
        double s = 0;
        for (size_t at = 0; at < n; at += SMELT_REDUCE_BLOCK) {
            size_t m = n - at < SMELT_REDUCE_BLOCK ? n - at : SMELT_REDUCE_BLOCK;
            s += op == OP_DOT     ? k->dot_f64(B->a + at, B->b + at, m)
                 : op == OP_SUMSQ ? k->sumsq_f64(B->a + at, m)
                                  : k->sum_abs_f64(B->a + at, m);
        }
        sink = s;
        break;
    }
    case OP_HIST: k->hist_mag(hist, B->a, n, 0, 32, 20, 11); break;
    case OP_PHILOX: k->philox_uniform(B->b, 42, 0, n); break;
    case OP_DELTA_JOIN_BF16:
        k->delta_join((uint8_t *)B->g, (const uint8_t *)B->a, n, n, 2, (const uint8_t *)B->h);
        break;
    case OP_DELTA_SPLIT_BF16:
        k->delta_split((uint8_t *)B->b, n, (const uint8_t *)B->h, n, 2, (const uint8_t *)B->g);
        break;
    case OP_DELTA_JOIN_F32:
        k->delta_join((uint8_t *)B->b, (const uint8_t *)B->a, n, n, 4, (const uint8_t *)B->c);
        break;
    default: break;
    }
}

/* The bf16 linear merge of three models, tile by tile, as the engine's apply would run it. */
static void linear3(const smelt_kernels *k, const bufs *B, int fused)
{
    enum { TILE = 1024 };
    float t[TILE];
    for (size_t at = 0; at < B->n; at += TILE) {
        size_t m = B->n - at < TILE ? B->n - at : TILE;
        k->scale_bf16(t, B->x0 + at, 0.5f, m);
        k->axpy_bf16(t, B->x1 + at, 0.3f, m);
        if (fused) {
            k->axpy_bf16_encode(B->out + at, t, B->x2 + at, 0.2f, m);
        } else {
            k->axpy_bf16(t, B->x2 + at, 0.2f, m);
            k->encode_bf16(B->out + at, t, m);
        }
    }
}

/* Best of several runs, in GB/s of bytes moved. */
static double rate(const smelt_kernels *k, int what, const bufs *B, double bytes, double min_s)
{
    double best = 1e30, spent = 0;
    int runs = 0;
    while (runs < 3 || spent < min_s) {
        double t0 = now();
        if (what >= 0)
            run_op(k, (enum op)what, B);
        else
            linear3(k, B, what == -2);
        double dt = now() - t0;
        spent += dt;
        if (dt < best)
            best = dt;
        if (++runs >= 2000)
            break;
    }
    return bytes / best / 1e9;
}

static void *alloc_filled(size_t bytes, int pattern)
{
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "bench_kernels: out of memory\n");
        exit(1);
    }
    memset(p, pattern, bytes); /* touch every page before timing */
    return p;
}

static bufs make(size_t n)
{
    bufs B = {.n = n};
    B.a = alloc_filled(n * 4, 0x3E), B.b = alloc_filled(n * 4, 0x3D);
    B.c = alloc_filled(n * 4, 0x3C), B.d = alloc_filled(n * 4, 0xBD);
    B.h = alloc_filled(n * 2, 0x3F), B.g = alloc_filled(n * 2, 0);
    B.x0 = alloc_filled(n * 2, 0x3E), B.x1 = alloc_filled(n * 2, 0x3F);
    B.x2 = alloc_filled(n * 2, 0xBE), B.out = alloc_filled(n * 2, 0);
    for (size_t i = 0; i < n; i++) /* varied values, so no path is trivially predictable */
        B.a[i] = (float)(i % 1000) * 0.001f - 0.5f;
    return B;
}

static void unmake(bufs *B)
{
    free(B->a), free(B->b), free(B->c), free(B->d), free(B->h), free(B->g);
    free(B->x0), free(B->x1), free(B->x2), free(B->out);
}

/* nb blocks of `type`: random quant bytes, model-like fp16 scales (normal results, no
 * subnormal slow paths). */
static uint8_t *make_blocks(uint32_t type, size_t nb)
{
    const smelt_ggml_type *t = smelt_ggml_type_get(type);
    uint8_t *x = alloc_filled(nb * t->bytes, 0);
    uint64_t r = 88172645463325252ull;
    int off[2], nf = smelt_ref_dequant_f16_fields(type, off);
    for (size_t i = 0; i < nb * t->bytes; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        x[i] = (uint8_t)(r >> 24);
    }
    for (size_t b = 0; b < nb; b++)
        for (int f = 0; f < nf; f++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            uint16_t h = (uint16_t)(0x1C00 + (r >> 20) % 0x0C00); /* about 2^-8 .. 2^-5 */
            x[b * t->bytes + (size_t)off[f]] = (uint8_t)h;
            x[b * t->bytes + (size_t)off[f] + 1] = (uint8_t)(h >> 8);
        }
    return x;
}

/* Best of several runs of dequantizing n elements from src, in Gelem/s; tile = 0: into one
 * n-element dst, else tile by tile into the same tile-sized dst. */
static double dq_rate(const smelt_kernels *k, uint32_t type, const uint8_t *src, float *dst,
                      size_t n, size_t tile, double min_s)
{
    const smelt_ggml_type *t = smelt_ggml_type_get(type);
    double best = 1e30, spent = 0;
    int runs = 0;
    while (runs < 3 || spent < min_s) {
        double t0 = now();
        if (!tile)
            k->dequant[type](dst, src, n / t->block);
        else
            for (size_t at = 0; at < n; at += tile)
                k->dequant[type](dst, src + at / t->block * t->bytes, tile / t->block);
        double dt = now() - t0;
        spent += dt;
        if (dt < best)
            best = dt;
        if (++runs >= 2000)
            break;
    }
    return (double)n / best / 1e9;
}

static void bench_dequant(const smelt_kernels *const *lv, int nl, size_t dram_mib)
{
    static const uint32_t types[] = {SMELT_GGML_Q4_0, SMELT_GGML_Q4_1, SMELT_GGML_Q5_0,
                                     SMELT_GGML_Q5_1, SMELT_GGML_Q8_0, SMELT_GGML_Q2_K,
                                     SMELT_GGML_Q3_K, SMELT_GGML_Q4_K, SMELT_GGML_Q5_K,
                                     SMELT_GGML_Q6_K, SMELT_GGML_IQ4_NL, SMELT_GGML_IQ4_XS};
    size_t small = 16384, big = dram_mib * 1024 * 1024 / 4, tile = 1024;
    big -= big % 256;
    float *dst = alloc_filled(small * 4, 0);
    printf("\ndequant: Gelem/s = f32 elements out / s, one core; L2: %zu elements (source and f32 "
           "out resident); stream: %zu elements from DRAM in %zu-element tiles into one L1 tile\n",
           small, big, tile);
    printf("%-10s %6s", "type", "B/elem");
    for (int where = 0; where < 2; where++)
        for (int l = 0; l < nl; l++) {
            char head[32];
            snprintf(head, sizeof head, "%s %s", where ? "stream" : "L2", lv[l]->name);
            printf(" %13s", head);
        }
    printf("\n");
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const smelt_ggml_type *t = smelt_ggml_type_get(types[i]);
        printf("%-10s %6.3f", t->name, (double)t->bytes / t->block);
        uint8_t *s_small = make_blocks(types[i], small / t->block);
        for (int l = 0; l < nl; l++)
            printf(" %13.2f", dq_rate(lv[l], types[i], s_small, dst, small, 0, 0.05));
        free(s_small);
        uint8_t *s_big = make_blocks(types[i], big / t->block);
        for (int l = 0; l < nl; l++)
            printf(" %13.2f", dq_rate(lv[l], types[i], s_big, dst, big, tile, 0.0));
        free(s_big);
        printf("\n");
        fflush(stdout);
    }
    free(dst);
}

/* The LoRA product as the engine runs it (engine/source.c): rows four at a time, 512 columns
 * per call, over a 64 x 4096 block of a weight; G element-ranks/s = elements x rank / s, one
 * core. */
static void bench_lora(const smelt_kernels *const *lv, int nl)
{
    enum { ROWS = 64, COLS = 4096, CB = 512 };
    static const size_t ranks[] = {8, 16, 64};
    printf("\nlora_delta: G element-ranks/s (elements x rank / s) over %d x %d, 4 rows x %d "
           "columns per call, one core\n%-20s", ROWS, COLS, CB, "rank");
    for (int l = 0; l < nl; l++)
        printf(" %9s", lv[l]->name);
    printf("\n");
    for (size_t ri = 0; ri < sizeof ranks / sizeof ranks[0]; ri++) {
        size_t rank = ranks[ri];
        float *left = alloc_filled(rank * ROWS * 4, 1), *right = alloc_filled(rank * COLS * 4, 2);
        float *delta = alloc_filled(4 * CB * 4, 3);
        for (size_t i = 0; i < rank * COLS; i++) /* model-like values: no subnormal products */
            right[i] = (float)((int)(i % 97) - 48) * 1e-3f;
        for (size_t i = 0; i < rank * ROWS; i++)
            left[i] = (float)((int)(i % 89) - 44) * 1e-2f;
        printf("%-20zu", rank);
        for (int l = 0; l < nl; l++) {
            double best = 1e30, spent = 0;
            for (int runs = 0; runs < 3 || spent < 0.05; runs++) {
                double t0 = now();
                for (size_t r = 0; r < ROWS; r += 4)
                    for (size_t c = 0; c < COLS; c += CB)
                        lv[l]->lora_delta(delta, CB, left + r, ROWS, 4, right + c, COLS, rank, CB);
                double dt = now() - t0;
                spent += dt;
                best = dt < best ? dt : best;
            }
            sink = delta[7];
            printf(" %9.2f", (double)ROWS * COLS * rank / best / 1e9);
        }
        printf("\n");
        free(left), free(right), free(delta);
    }
}

int main(int argc, char **argv)
{
    size_t dram_mib = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 256;
    const char *names[] = {"scalar", "avx2", "avx512", "neon"};
    const smelt_kernels *lv[4];
    int nl = 0;
    for (int i = 0; i < 4; i++)
        if ((lv[nl] = smelt_kernels_level(names[i])))
            nl++;
    size_t sizes[2] = {16384, dram_mib * 1024 * 1024 / 4};
    const char *where[2] = {"L2 (64 KiB f32 tile)", "DRAM"};
    double lin[2][4][2], mc[2];
    for (int s = 0; s < 2; s++) {
        bufs B = make(sizes[s]);
        double min_s = s == 0 ? 0.05 : 0.0;
        printf("\n%s: n = %zu elements (%zu KiB per f32 array); GB/s = (read + written) / s\n",
               where[s], B.n, B.n * 4 >> 10);
        printf("%-20s %6s", "kernel", "B/elem");
        for (int l = 0; l < nl; l++)
            printf(" %9s", lv[l]->name);
        printf("\n");
        for (int op = 0; op < OP_COUNT; op++) {
            printf("%-20s %6u", ops[op].name, ops[op].bytes);
            for (int l = 0; l < nl; l++) {
                if (op == OP_MEMCPY && l > 0) {
                    printf(" %9s", "");
                    continue;
                }
                double r = rate(lv[l], op, &B, (double)ops[op].bytes * (double)B.n, min_s);
                if (op == OP_MEMCPY)
                    mc[s] = r;
                printf(" %9.2f", r);
            }
            printf("\n");
        }
        for (int fused = 0; fused < 2; fused++) {
            printf("%-20s %6u", fused ? "linear3 bf16 fused" : "linear3 bf16", 8);
            for (int l = 0; l < nl; l++) {
                lin[s][l][fused] = rate(lv[l], fused ? -2 : -1, &B, 8.0 * (double)B.n, min_s);
                printf(" %9.2f", lin[s][l][fused]);
            }
            printf("\n");
        }
        unmake(&B);
    }
    printf("\n3-model bf16 linear merge (3 inputs read + 1 output written, 8 B/element, 1024-element"
           " tiles, one core) as %% of memcpy moving the same bytes:\n");
    for (int s = 0; s < 2; s++)
        for (int l = 0; l < nl; l++)
            printf("  %-22s %-7s unfused %6.2f GB/s = %5.1f%%   fused encode %6.2f GB/s = %5.1f%%"
                   "   (memcpy %.2f GB/s)\n",
                   where[s], lv[l]->name, lin[s][l][0], 100 * lin[s][l][0] / mc[s], lin[s][l][1],
                   100 * lin[s][l][1] / mc[s], mc[s]);
    bench_dequant(lv, nl, dram_mib);
    bench_lora(lv, nl);
    return 0;
}
