/* Entries of smelt_kernels beyond the basic casts (included inside the struct). The rules of
 * kernels.h hold for each: any n, unaligned pointers, in place allowed, thread-safe, and every
 * level bit-identical to the scalar reference (arithmetic results may differ only in the payload
 * of a NaN, which encode then canonicalizes). */

/* dst[i] = src[i], except that any NaN becomes SMELT_F32_NAN: f32 outputs then never carry a
 * payload that depends on the SIMD level or on the compiler's operand order. */
void (*encode_f32)(float *dst, const float *src, size_t n);

/* acc[i] = acc[i] + w * decode(x[i]): the linear-merge step without a decoded tile. Equal to
 * decode_bf16/decode_f16 followed by axpy, bit for bit. */
void (*axpy_bf16)(float *acc, const uint16_t *x, float w, size_t n);
void (*axpy_f16)(float *acc, const uint16_t *x, float w, size_t n);
/* dst[i] = w * decode(x[i]); equal to decode followed by scale. */
void (*scale_bf16)(float *dst, const uint16_t *x, float w, size_t n);
void (*scale_f16)(float *dst, const uint16_t *x, float w, size_t n);
/* out[i] = encode_bf16(acc[i] + w * decode_bf16(x[i])): the last model of a bf16 linear merge,
 * fused so the f32 sum never goes back to memory. Equal to axpy_bf16 then encode_bf16. out may
 * not overlap acc or x. */
void (*axpy_bf16_encode)(uint16_t *out, const float *acc, const uint16_t *x, float w, size_t n);

/* The LoRA product for n consecutive columns of nrows consecutive rows of B @ A
 * (engine/source.c): delta[i * delta_stride + j] = sum over k < rank of
 * coef[k * coef_stride + i] * rows[k * row_stride + j], for i < nrows and j < n, added in the
 * order k = 0, 1, ... to an accumulator that starts at +0, each product rounded to f32 and then
 * added (no fused multiply-add), so the sum is the same on every level. Rows of four share each
 * load of `rows`. delta may not overlap coef or rows. */
void (*lora_delta)(float *delta, size_t delta_stride, const float *coef, size_t coef_stride,
                   size_t nrows, const float *rows, size_t row_stride, size_t rank, size_t n);

/* dst[i] = a[i] - b[i] (task vectors). */
void (*sub)(float *dst, const float *a, const float *b, size_t n);

/* One model's step of TIES sign consensus. vote[i] is the sum over models of the weighted task
 * vectors; its sign s is +1 when vote[i] >= 0 (so +0, -0 and NaN votes count as +1) and -1 when
 * vote[i] < 0. wd[i] = w * d[i] is this model's weighted task vector. Where wd[i] agrees with s
 * (wd[i] > 0 and s = +1, or wd[i] < 0 and s = -1) mixed[i] += wd[i] and div[i] += w; elsewhere
 * both stay untouched (bit for bit: no "+ 0" that would turn -0 into +0). A NaN wd[i] agrees with
 * either sign, so a NaN in an input shows in the output instead of vanishing. */
void (*masked_accum)(float *mixed, float *div, const float *wd, const float *vote, float w,
                     size_t n);

/* Reductions in f64 with one fixed association, so every level returns the identical double:
 * element i goes to lane i % 16 of 16 f64 accumulators (each term computed exactly in f64 from
 * the f32 values), the lanes are added in order, and at the end lane[j] += lane[j + 8], then
 * + 4, + 2, + 1 (j ascending); lane 0 is the result. n <= SMELT_REDUCE_BLOCK. */
double (*dot_f64)(const float *a, const float *b, size_t n); /* sum a[i] * b[i] */
double (*sumsq_f64)(const float *a, size_t n);               /* sum a[i]^2 */
double (*sum_abs_f64)(const float *a, size_t n);             /* sum |a[i]| */

/* Radix-select histogram over magnitude bit patterns m = bits(x[i]) & 0x7FFFFFFF (magnitudes
 * order like their bit patterns; NaN magnitudes sort above Inf). For each element with
 * prefix_shift >= 32 or (m >> prefix_shift) == prefix, hist[(m >> shift) & ((1 << bits) - 1)]
 * is incremented. hist has 1 << bits entries (1 <= bits <= 24), is not cleared, and is owned by
 * the caller (one per thread); counts wrap at 2^32, so add them up per block. The SIMD levels
 * find the elements that match a prefix a vector at a time; the increments stay scalar. */
void (*hist_mag)(uint32_t *hist, const float *x, size_t n, uint32_t prefix,
                 unsigned prefix_shift, unsigned shift, unsigned bits);

/* The mask of a rank range over magnitude patterns m = bits(x[i]) & 0x7FFFFFFF (TIES,
 * breadcrumbs, sce): keep[i] = all ones when lo <= m <= hi, else 0 (a lane mask, to AND with
 * the element's bits). The positions i where m == lo_eq or
 * m == hi_eq go to at[], ascending (at has room for n), and their number is returned: the
 * elements tied with a bound's key, which the caller numbers by index. An _eq of UINT32_MAX
 * matches nothing (no magnitude has bit 31 set), for an open end. */
size_t (*mask_mag_range)(uint32_t *keep, uint32_t *at, const float *x, size_t n, uint32_t lo,
                         uint32_t hi, uint32_t lo_eq, uint32_t hi_eq);

/* Counter-based uniform numbers in [0, 1): Philox4x32-10 (Salmon et al., SC'11). The element of
 * global index j = index0 + i is output word j & 3 of the block with counter
 * (c0, c1, c2, c3) = (low 32 of j >> 2, high 32 of j >> 2, 0, 0) under key (low 32, high 32 of
 * key), mapped r -> (r >> 8) * 2^-24. It depends only on (key, j): never on n, on index0's
 * alignment, or on the level. */
void (*philox_uniform)(float *dst, uint64_t key, uint64_t index0, size_t n);

/* The byte planes of the delta container (format/delta.h), fused with the XOR against the base
 * they were made from. n elements of `unit` bytes (1..8); plane p (p = 0 .. unit-1) holds byte
 * unit-1-p of every element (plane 0 is the most significant byte), planes `stride` bytes apart
 * (stride >= n; plane p's element j at planes[p * stride + j]). base may be NULL (nothing to XOR).
 *   delta_join:  out[j * unit + unit-1-p] = planes[p * stride + j] ^ base[j * unit + unit-1-p]
 *   delta_split: planes[p * stride + j] = elems[j * unit + unit-1-p] ^ base[j * unit + unit-1-p]
 * Pure byte moves, so every level is bit-exact by construction; the levels shuffle units 1, 2
 * and 4 (bf16/f16, f32) in vectors and hand other units and the tails to the reference. The
 * output may be base itself (in place), never planes/elems or a partial overlap. */
void (*delta_join)(uint8_t *out, const uint8_t *planes, size_t stride, size_t n, unsigned unit,
                   const uint8_t *base);
void (*delta_split)(uint8_t *planes, size_t stride, const uint8_t *elems, size_t n,
                    unsigned unit, const uint8_t *base);

/* Dequantization of ggml's block types, one entry per ggml type number (common/ggml_type.h):
 * dequant[t](dst, src, nblocks) decodes nblocks whole blocks of type t, stored at src in ggml's
 * block layout (any alignment), into nblocks * block f32 at dst. The entry is NULL for every
 * type that is not a block type smelt decodes (F32, F16 and BF16 go through decode_*); the
 * types with an entry are those of SMELT_DEQUANT_TYPES (kernels_ref.h): Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS. The scalar entries are the reference
 * (kernels_quant.c, bit for bit ggml's dequantize_row_*): each element is q * scale, or
 * q * scale - min, with the sub-block's scale (and min) computed first exactly as ggml does;
 * every level gives the same f32 bits, NaN payloads, -0 and subnormals included. A level
 * without a vector version of a type points at the scalar entry. dst may not overlap src. */
void (*dequant[SMELT_GGML_TYPE_COUNT])(float *dst, const void *src, size_t nblocks);
