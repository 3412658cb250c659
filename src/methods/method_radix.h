/* Exact rank selection by radix histograms, shared by the methods that need an order statistic
 * of a whole tensor in bounded memory (ties, breadcrumbs and sce's rank ranges; arcee_fusion's
 * quartiles), and the radix sort of short rows (DELLA's ranks within a row).
 *
 * A method maps each element to an unsigned integer key whose order is the order it ranks by
 * (magnitude bit patterns for the task-vector methods; a sign-folded float pattern for signed
 * values), and finds the key at ascending position `rank` digit by digit, most significant
 * first: each statistics pass histograms one digit of the keys that share the digits found so
 * far (`prefix`), and smelt_radix_narrow() picks the bin holding the position. After the last
 * digit, `prefix` is the key itself and `rank` the position among the elements equal to it.
 * Histograms are per-task or per-worker partials, and counts add exactly, so the key
 * found does not depend on how the tensor was cut. */
#ifndef SMELT_METHOD_RADIX_H
#define SMELT_METHOD_RADIX_H

#include <stddef.h>
#include <stdint.h>

/* Bins of an 11-bit digit (arcee_fusion's widest; the task-vector methods count 16-bit digits
 * per worker). */
#define SMELT_RADIX_BINS 2048u

/* Picks the bin of `hist` (1 << bits bins: the folded counts of one digit, among the keys that
 * match `prefix`) that holds ascending position *rank; subtracts the elements of the lower bins
 * from *rank, appends the bin to *prefix as its low `bits` bits, and clears the histogram for
 * the next digit (its 1 << bits bins). */
void smelt_radix_narrow(uint64_t *hist, unsigned bits, uint64_t *rank, uint32_t *prefix);

/* The same over 32-bit counts. */
void smelt_radix_narrow_u32(uint32_t *hist, unsigned bits, uint64_t *rank, uint32_t *prefix);

/* For a radix select that guesses its next digit from a sample: the bins of `hist` (`bins` of
 * them, the sample's counts of the current digit) that hold ascending positions
 * [rank - margin, rank + margin] of the sample, as *nbins bins from *first_bin; at most
 * max_bins of them, centred on the bin of `rank` when the range spans more. The bin of `rank`
 * is always among them (the top counted bin when rank is past the sample). */
void smelt_radix_window(const uint64_t *hist, unsigned bins, double rank, double margin,
                        unsigned max_bins, uint32_t *first_bin, uint32_t *nbins);

/* Stable LSD radix sort of n <= 65536 31-bit keys carrying their positions (DELLA's ranks
 * within a row): key2 and idx2 are scratch of n entries each; idx's initial content does not
 * matter. Returns the positions (idx or idx2) in ascending (key, position) order; key and key2
 * are overwritten. */
const uint16_t *smelt_radix_sort_rows(uint32_t *key, uint32_t *key2, uint16_t *idx,
                                      uint16_t *idx2, size_t n);

/* The order key of an f32 value for a signed ranking: ascending keys are ascending values, -0
 * just below +0, and every NaN above +Inf (where torch.sort puts NaNs). */
uint32_t smelt_radix_signed_key(float x);

/* The value whose key is `key` (the inverse of smelt_radix_signed_key except for NaNs, which
 * all come back as one NaN). */
float smelt_radix_signed_value(uint32_t key);

#endif
