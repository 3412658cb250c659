/* See method_radix.h. */
#include "methods/method_radix.h"

#include <math.h>
#include <string.h>

/* One body for both count widths. */
#define RADIX_NARROW(hist, bits, rank, prefix)                                                 \
    do {                                                                                       \
        uint64_t below = 0;                                                                    \
        unsigned bins = 1u << (bits), j = 0;                                                   \
        /* The last bin takes whatever is left, so a rank at or past the count cannot run   \
         * off. */                                                                             \
        for (; j + 1 < bins && below + (hist)[j] <= *(rank); j++)                              \
            below += (hist)[j];                                                                \
        *(rank) -= below;                                                                      \
        *(prefix) = (*(prefix) << (bits)) | j;                                                 \
        memset((hist), 0, bins * sizeof *(hist));                                              \
    } while (0)

void smelt_radix_narrow(uint64_t *hist, unsigned bits, uint64_t *rank, uint32_t *prefix)
{
    RADIX_NARROW(hist, bits, rank, prefix);
}

void smelt_radix_narrow_u32(uint32_t *hist, unsigned bits, uint64_t *rank, uint32_t *prefix)
{
    RADIX_NARROW(hist, bits, rank, prefix);
}

#define SMALL_ROW 64u

/* See method_radix.h: low byte first, every pass stable. */
const uint16_t *smelt_radix_sort_rows(uint32_t *key, uint32_t *key2, uint16_t *idx,
                                      uint16_t *idx2, size_t n)
{
    for (size_t j = 0; j < n; j++)
        idx[j] = (uint16_t)j;
    if (n <= SMALL_ROW) {
        /* Short rows: insertion sort, moving only past strictly larger keys (stable), beats
         * four counting passes over 256-bin byte digits. */
        for (size_t j = 1; j < n; j++) {
            uint32_t k = key[j];
            size_t at = j;
            for (; at > 0 && key[at - 1] > k; at--) {
                key[at] = key[at - 1];
                idx[at] = idx[at - 1];
            }
            key[at] = k;
            idx[at] = (uint16_t)j;
        }
        return idx;
    }
    /* Byte digits: a row is short (<= 65536), so clearing and scanning 256 counters per pass
     * costs less than the rank selection's 16-bit digits. Any digit width gives the same stable
     * order. All four digits are counted in one read of the keys, each into two alternating
     * copies (bf16-derived keys repeat digit values, and one counter hit by every element is a
     * chain of dependent increments); a digit that has one value everywhere is skipped. */
    uint32_t count[4][2][256];
    memset(count, 0, sizeof count);
    size_t j = 0;
    for (; j + 1 < n; j += 2) {
        uint32_t k0 = key[j], k1 = key[j + 1];
        count[0][0][k0 & 255]++, count[0][1][k1 & 255]++;
        count[1][0][k0 >> 8 & 255]++, count[1][1][k1 >> 8 & 255]++;
        count[2][0][k0 >> 16 & 255]++, count[2][1][k1 >> 16 & 255]++;
        count[3][0][k0 >> 24]++, count[3][1][k1 >> 24]++;
    }
    for (; j < n; j++)
        for (unsigned d = 0; d < 4; d++)
            count[d][0][key[j] >> (8 * d) & 255]++;
    for (unsigned d = 0; d < 4; d++) {
        unsigned shift = 8 * d;
        uint32_t *start = count[d][0];
        for (unsigned b = 0; b < 256; b++)
            start[b] += count[d][1][b];
        if (start[key[0] >> shift & 255] == n)
            continue; /* one digit value: the order stands */
        uint32_t at = 0;
        for (unsigned b = 0; b < 256; b++) {
            uint32_t c = start[b];
            start[b] = at;
            at += c;
        }
        for (size_t i = 0; i < n; i++) {
            uint32_t to = start[key[i] >> shift & 255]++;
            key2[to] = key[i];
            idx2[to] = idx[i];
        }
        uint32_t *tk = key;
        key = key2, key2 = tk;
        uint16_t *ti = idx;
        idx = idx2, idx2 = ti;
    }
    return idx;
}

void smelt_radix_window(const uint64_t *hist, unsigned bins, double rank, double margin,
                        unsigned max_bins, uint32_t *first_bin, uint32_t *nbins)
{
    double lo = rank - margin > 0 ? rank - margin : 0, hi = rank + margin;
    uint64_t below = 0;
    uint32_t first = bins, last = 0, at = bins, top = 0;
    for (unsigned j = 0; j < bins; j++) {
        uint64_t next = below + hist[j];
        if (hist[j]) {
            top = j;
            if (at == bins && rank < (double)next)
                at = j; /* the bin holding the position */
            if ((double)next > lo && (double)below <= hi) {
                first = first < j ? first : j;
                last = j;
            }
        }
        below = next;
    }
    if (at == bins)
        at = top; /* past every counted element: the top bin holds it */
    if (first > last)
        first = last = at;
    if (last - first + 1 > max_bins) {
        first = at >= max_bins / 2 ? at - max_bins / 2 : 0;
        last = first + max_bins - 1 < bins ? first + max_bins - 1 : bins - 1;
        first = last + 1 - max_bins;
    }
    *first_bin = first;
    *nbins = last - first + 1;
}

uint32_t smelt_radix_signed_key(float x)
{
    if (isnan(x))
        return UINT32_MAX;
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    /* Negative values order by descending pattern, so flip all their bits; positive ones go
     * above every negative one by setting the top bit. */
    return u & 0x80000000u ? ~u : u | 0x80000000u;
}

float smelt_radix_signed_value(uint32_t key)
{
    if (key == UINT32_MAX)
        return NAN;
    uint32_t u = key & 0x80000000u ? key & 0x7FFFFFFFu : ~key;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
