# arcee_fusion end to end: merges checked bit for bit against arcee_fusion_ref (an independent
# whole-tensor computation whose quartiles come from a full sort) on bf16 and f32 inputs and
# outputs, on tensors many times larger than the budget (streamed, read 4 times) and under the
# default budget (resident); byte-identical outputs across threads, budgets and SIMD levels;
# every plan-time error with no output left behind.
source "$(dirname "$0")/lib.sh"
REF=$SMELT_TEST_HELPERS/arcee_fusion_ref

# synth's deltas are uniform, and |uniform| has no outliers: median + 1.5 IQR lies above its
# maximum and nothing would be kept. So the fine-tunes here are merges of synth models: the sum
# of three uniform task vectors (close to Gaussian: a few percent lie above the threshold) and
# TIES-sparsified ones (mostly zero deltas, so the quartiles sit on long runs of equal values; at
# density 0.2 the threshold is 0 and everything is kept).
$SMELT synth "$work/base" --size 3M --layers 1 --seed 1 --shard-size 1M
$SMELT synth "$work/a" --size 3M --layers 1 --base-seed 1 --seed 2
$SMELT synth "$work/b" --size 3M --layers 1 --base-seed 1 --seed 3 --delta 0.02
$SMELT synth "$work/c" --size 3M --layers 1 --base-seed 1 --seed 4
$SMELT synth "$work/base32" --size 6M --layers 1 --seed 1 --dtype float32
$SMELT synth "$work/a32" --size 6M --layers 1 --base-seed 1 --seed 2 --dtype float32
$SMELT synth "$work/b32" --size 6M --layers 1 --base-seed 1 --seed 3 --dtype float32

# derive OUT METHOD BASE OUT_DTYPE "MODEL:NAME=VALUE,NAME=VALUE ..."
derive() {
  local out=$1 method=$2 base=$3 dtype=$4 models=$5
  { echo "merge_method: $method"; echo "base_model: $work/$base"; echo "out_dtype: $dtype"
    echo "models:"
    for spec in $models; do
      printf '  - model: %s\n    parameters: {%s}\n' "$work/${spec%%:*}" \
        "$(sed 's/=/: /g; s/,/, /g' <<<"${spec#*:}")"
    done; } > "$work/derive.yml"
  $SMELT merge "$work/derive.yml" "$work/$out" -q
}
derive gauss task_arithmetic base bfloat16 "a:weight=1 b:weight=1 c:weight=1"
derive sparse ties base bfloat16 "b:weight=1,density=0.4"
derive sparse20 ties base bfloat16 "a:weight=1,density=0.2"
derive gauss32 task_arithmetic base32 float32 "a32:weight=1 b32:weight=0.7"

config() { # config FILE BASE MODEL OUT_DTYPE
  printf 'merge_method: arcee_fusion\nbase_model: %s\nout_dtype: %s\nmodels:\n  - model: %s\n' \
    "$work/$2" "$4" "$work/$3" > "$1"
}

# check NAME BASE MODEL OUT_DTYPE MERGE-FLAGS: merge, compare, and say how much was kept.
check() {
  local name=$1 base=$2 model=$3 dtype=$4 flags=$5
  config "$work/$name.yml" "$base" "$model" "$dtype"
  rm -rf "$work/out-$name"
  if ! $SMELT merge "$work/$name.yml" "$work/out-$name" -q $flags; then
    fail "$name: merge failed"; return
  fi
  if "$REF" "$work/out-$name" "$work/$base" "$work/$model" > "$work/$name.ref"; then
    pass "$name matches the reference: $(head -1 "$work/$name.ref")"
  else
    cat "$work/$name.ref"; fail "$name differs from the reference"
  fi
}
# kept NAME: the count the reference printed, and the total.
kept() { sed -n 's/.*kept \([0-9]*\) of \([0-9]*\).*/\1 \2/p' "$work/$1.ref"; }

small="--max-memory 2560Ki"
check gauss base gauss float32 "$small"
check gauss_bf16 base gauss bfloat16 "$small"
check sparse base sparse float32 "$small"
check sparse20 base sparse20 bfloat16 ""
check gauss32 base32 gauss32 float32 "--max-memory 3Mi"
check gauss32_bf16 base32 gauss32 bfloat16 ""
check synth base a float32 "" # uniform deltas: nothing kept
read k n <<<"$(kept gauss)"
[ "$k" -gt 0 ] && [ "$k" -lt $((n / 10)) ] && pass "gauss keeps $k of $n (a few percent)" \
  || fail "gauss keeps $k of $n"
read k n <<<"$(kept sparse20)"
[ "$k" = "$n" ] && pass "sparse20: threshold 0 keeps all $n" || fail "sparse20 keeps $k of $n"
read k n <<<"$(kept synth)"
[ "$k" = 0 ] && pass "uniform deltas: nothing kept" || fail "uniform deltas keep $k of $n"
# The output is not the model itself where the mask drops deltas, nor the base where it keeps them.
cmp -s "$work/out-gauss_bf16/model.safetensors" "$work/gauss/model.safetensors" \
  && fail "gauss_bf16 equals the model" || pass "gauss_bf16 differs from the model"

# Determinism: identical bytes for any thread count, budget, SIMD level.
for name in gauss gauss_bf16 sparse gauss32; do
  check_invariant "$name" "$work/$name.yml" "$work/out-$name" "--threads 3"
done

# Tensors far larger than the budget: 25 M parameters in one layer, 11 MB MLP matrices in bf16
# (rows of 3872 elements, so tasks of 16 rows) against --max-memory 1200Ki, where the plan
# streams them and reads them 4 times; then under the default budget, resident.
$SMELT synth "$work/bigbase" --size 50M --layers 1 --seed 5
$SMELT synth "$work/biga" --size 50M --layers 1 --base-seed 5 --seed 6
$SMELT synth "$work/bigb" --size 50M --layers 1 --base-seed 5 --seed 7
derive bigft task_arithmetic bigbase bfloat16 "biga:weight=1 bigb:weight=1"
config "$work/big.yml" bigbase bigft bfloat16
# Captured first: with pipefail, grep -q leaving early would fail plan with SIGPIPE.
$SMELT plan "$work/big.yml" --max-memory 1200Ki > "$work/big.plan"
grep -q "streamed, read 4x" "$work/big.plan" \
  && pass "big: the plan streams the large tensors" || fail "big: no tensor is streamed"
for budget in "--max-memory 1200Ki" ""; do
  rm -rf "$work/bigout"
  $SMELT merge "$work/big.yml" "$work/bigout" -q $budget --threads 2
  "$REF" "$work/bigout" "$work/bigbase" "$work/bigft" \
    && pass "arcee_fusion: 11 MB tensors ${budget:-under the default budget} match" \
    || fail "arcee_fusion: large tensors ${budget:-under the default budget} differ"
done
rm -rf "$work/bigbase" "$work/biga" "$work/bigb" "$work/bigft" "$work/bigout"

# Plan-time errors name the method, tensor and rule, and leave no output.
bad() { # bad NAME PHRASE CONFIG-TEXT
  printf '%s\n' "$3" > "$work/bad.yml"
  rm -rf "$work/badout"
  expect_error "$1" "$2" $SMELT merge "$work/bad.yml" "$work/badout"
  no_model_output "$work/badout"
}
bad "no base" "method 'arcee_fusion' needs a base_model" "merge_method: arcee_fusion
models:
  - model: $work/a"
bad "two models" "method 'arcee_fusion' takes exactly 1 model besides the base, but the config lists 2" "merge_method: arcee_fusion
base_model: $work/base
models:
  - model: $work/a
  - model: $work/b"
bad "no model" "method 'arcee_fusion' takes exactly 1 model besides the base, but the config lists 0" "merge_method: arcee_fusion
base_model: $work/base
models:
  - model: $work/base"
# A row longer than 65536 elements: one f32 tensor of shape [2, 70000] in two .safetensors files.
long_row() {
  local hdr='{"w":{"dtype":"F32","shape":[2,70000],"data_offsets":[0,560000]}}'
  while [ $(( ${#hdr} % 8 )) -ne 0 ]; do hdr="$hdr "; done
  { printf "$(printf '\\x%02x' $(( ${#hdr} & 255 )) $(( ${#hdr} >> 8 )) 0 0 0 0 0 0)"
    printf '%s' "$hdr"; head -c 560000 /dev/zero; } > "$1"
}
long_row "$work/long0.safetensors"; long_row "$work/long1.safetensors"
bad "row too long" "method 'arcee_fusion': tensor 'w': its rows of 70000 elements are longer than the 65536" "merge_method: arcee_fusion
base_model: $work/long0.safetensors
models:
  - model: $work/long1.safetensors"
finish
