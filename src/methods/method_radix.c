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
