# The NEON kernels, bit-exact against the scalar reference: cross-built for AArch64 and run under
# qemu-aarch64. Skips (77) where the cross compiler or qemu is missing.
set -euo pipefail
src=${SMELT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
cc=${SMELT_AARCH64_CC:-aarch64-linux-gnu-gcc}
if ! command -v "$cc" >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  echo "skip: needs $cc and qemu-aarch64 (apt-get install gcc-aarch64-linux-gnu qemu-user)"
  exit 77
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/smelt-neon.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$cc" -std=c11 -O2 -D_GNU_SOURCE -Wall -Wextra -Werror -ffp-contract=off -fno-strict-aliasing \
  -static -DSMELT_HAVE_NEON_KERNELS=1 -I"$src/src" -I"$src/include" -I"$src/tests/unit" \
  -o "$work/neon_kernel_test" "$src/tests/neon/neon_kernel_test.c" \
  "$src/src/kernels/kernels_scalar.c" "$src/src/kernels/kernels_neon.c" \
  "$src/src/kernels/kernels_quant.c" "$src/src/kernels/kernels.c" "$src/src/kernels/kernels_selftest.c" \
  "$src/src/common/ggml_type.c" \
  "$src/src/common/dtype.c" "$src/src/common/cpu.c" "$src/src/common/errors.c" -lm
qemu-aarch64 "$work/neon_kernel_test"
