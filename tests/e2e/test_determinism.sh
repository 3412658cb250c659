# The output is byte-identical whatever the I/O path (io_uring or pread), thread count, memory
# budget or SIMD level.
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/base" --size 16M --seed 1 --shard-size 6M
$SMELT synth "$work/a" --size 16M --base-seed 1 --seed 2
$SMELT synth "$work/b" --size 16M --base-seed 1 --seed 3 --dtype bfloat16
linear_config "$work/c.yml" "$work/base" 0.5 "$work/base" 0.3 "$work/a" 0.2 "$work/b"

$SMELT merge "$work/c.yml" "$work/ref" -q
ref_sum=$(cat "$work/ref"/model*.safetensors | sha256sum)

run_variant() {
  local name=$1; shift
  rm -rf "$work/v"
  if ! "$@" "$work/v" -q; then fail "$name: merge failed"; return; fi
  local sum
  sum=$(cat "$work/v"/model*.safetensors | sha256sum)
  [ "$sum" = "$ref_sum" ] && pass "$name: identical" || fail "$name: output differs"
}

run_variant "SMELT_IO=pread" env SMELT_IO=pread $SMELT merge "$work/c.yml"
run_variant "SMELT_IO=uring" env SMELT_IO=uring $SMELT merge "$work/c.yml"
for t in 1 2 7; do run_variant "--threads $t" $SMELT merge "$work/c.yml" --threads "$t"; done
# 3 MiB: chunks of one task (64Ki elements), so large tensors are split many times.
for m in 3Mi 5M 64M 1G; do run_variant "--max-memory $m" $SMELT merge "$work/c.yml" --max-memory "$m"; done
for isa in scalar avx2 avx512 neon; do
  if SMELT_ISA=$isa $SMELT version >/dev/null 2>&1; then
    run_variant "SMELT_ISA=$isa" env SMELT_ISA=$isa $SMELT merge "$work/c.yml" --threads 3
  else
    echo "skip: SMELT_ISA=$isa is not supported on this machine"
  fi
done
expect_error "unknown SMELT_IO" "SMELT_IO=fast" env SMELT_IO=fast $SMELT merge "$work/c.yml" "$work/x"
expect_error "unknown SMELT_ISA" "SMELT_ISA" env SMELT_ISA=sse9 $SMELT version
finish
