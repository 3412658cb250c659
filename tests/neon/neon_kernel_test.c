/* The NEON level against the scalar reference, bit for bit: the same comparisons as
 * tests/unit/test_kernels.c (kernel_equiv.h), as a plain program that is cross-built statically
 * for AArch64 and run under qemu by tests/e2e/test_neon_kernels.sh. Exit 0 when all pass. */
#include "kernel_equiv.h"
#include "kernels/kernels_ref.h"

int main(void)
{
    keq q = {0};
    keq_all(&q, &smelt_kernels_scalar, &smelt_kernels_neon);
    keq_encode_formulas(&q, &smelt_kernels_scalar, 1u << 16);
    /* The start-up self-test (every entry, the dequant ones included) passes on NEON. */
    const char *bad = smelt_kernels_selftest(&smelt_kernels_neon);
    q.checks++;
    if (bad)
        KEQ_FAIL(&q, "neon: the start-up self-test fails on '%s'", bad);
    if (q.failed) {
        fprintf(stderr, "neon_kernel_test: %lu of %lu checks failed; first: %s\n", q.failed,
                q.checks, q.msg);
        return 1;
    }
    printf("neon_kernel_test: %lu checks passed (neon vs scalar)\n", q.checks);
    return 0;
}
