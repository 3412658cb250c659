# ram and ramplus_tl end to end: merges checked bit for bit against ram_ref (an independent
# whole-tensor computation of mergekit's ram.py) on bf16 and f32 inputs and outputs, on tensors
# many times larger than the budget (streamed: ramplus_tl's counting pass re-reads them) and
# under the default budget (resident); byte-identical outputs across threads, budgets and SIMD
# levels; every plan-time error with no output left behind.
source "$(dirname "$0")/lib.sh"
REF=$SMELT_TEST_HELPERS/ram_ref

# Small one-layer models whose deltas are uniform in about +-0.01 (b: +-0.02), so that an
# epsilon of 0.005 leaves every count of contributors from 0 to 3 common.
$SMELT synth "$work/base" --size 3M --layers 1 --seed 1 --shard-size 1M
$SMELT synth "$work/a" --size 3M --layers 1 --base-seed 1 --seed 2
$SMELT synth "$work/b" --size 3M --layers 1 --base-seed 1 --seed 3 --delta 0.02
$SMELT synth "$work/c" --size 3M --layers 1 --base-seed 1 --seed 4
# The same in float32.
$SMELT synth "$work/base32" --size 6M --layers 1 --seed 1 --dtype float32
$SMELT synth "$work/a32" --size 6M --layers 1 --base-seed 1 --seed 2 --dtype float32
$SMELT synth "$work/b32" --size 6M --layers 1 --base-seed 1 --seed 3 --dtype float32

# config FILE METHOD BASE "MODEL ..." "PARAMETER LINES" [OUT_DTYPE]
config() {
  local file=$1 method=$2 base=$3 models=$4 extra=$5 dtype=${6:-float32}
  { echo "merge_method: $method"; echo "base_model: $work/$base"; echo "out_dtype: $dtype"
    echo "models:"
    for m in $models; do printf '  - model: %s\n' "$work/$m"; done
    if [ -n "$extra" ]; then echo "parameters:"; printf '%s\n' "$extra" | sed 's/^/  /'; fi
  } > "$file"
}

# check NAME METHOD BASE "MODEL ..." "PARAMETER LINES" OUT_DTYPE MERGE-FLAGS REF-ARGS...
check() {
  local name=$1 method=$2 base=$3 models=$4 extra=$5 dtype=$6 flags=$7; shift 7
  config "$work/$name.yml" "$method" "$base" "$models" "$extra" "$dtype"
  rm -rf "$work/out-$name"
  if ! $SMELT merge "$work/$name.yml" "$work/out-$name" -q $flags; then
    fail "$name: merge failed"; return
  fi
  local refmodels=()
  for m in $models; do refmodels+=("$work/$m"); done
  "$REF" "$method" "$work/out-$name" "$work/$base" "${refmodels[@]}" "$@" \
    && pass "$name matches the reference" || fail "$name differs from the reference"
}

small="--max-memory 2560Ki"
check ram ram base "a b c" "epsilon: 0.005" float32 "$small" epsilon=0.005
check ram_default ram base "a b" "" float32 "" # epsilon 1e-5: nearly every entry overlaps
check ram_bf16 ram base "a b c" "epsilon: 0.004" bfloat16 "$small" epsilon=0.004
check ram_f32 ram base32 "a32 b32" "epsilon: 0.006" float32 "--max-memory 3Mi" epsilon=0.006
check ram_one ram base "b" "epsilon: 0.01" float32 "" epsilon=0.01
check plus ramplus_tl base "a b c" "epsilon: 0.005
r: 0.5
alpha: 0.8" float32 "$small" epsilon=0.005 r=0.5 alpha=0.8
check plus_default ramplus_tl base "a b c" "" float32 "$small"
check plus_bf16 ramplus_tl base "a b c" "epsilon: 0.004
r: 1.5" bfloat16 "$small" epsilon=0.004 r=1.5
check plus_f32 ramplus_tl base32 "a32 b32" "epsilon: 0.006
r: 0.3
alpha: 5" float32 "--max-memory 3Mi" epsilon=0.006 r=0.3 alpha=5
check plus_f32_bf16 ramplus_tl base32 "a32 b32" "epsilon: 0.006
r: 0.3
alpha: 5" bfloat16 "" epsilon=0.006 r=0.3 alpha=5

# The reference can tell the methods apart: ramplus_tl's λ changed the unique entries.
"$REF" ram "$work/out-plus" "$work/base" "$work/a" "$work/b" "$work/c" epsilon=0.005 \
  >/dev/null 2>&1 && fail "ramplus_tl wrote what ram writes" || pass "ramplus_tl's λ has an effect"

# Determinism: identical bytes for any thread count, budget, SIMD level.
for name in ram plus plus_bf16 plus_f32; do
  check_invariant "$name" "$work/$name.yml" "$work/out-$name" "--threads 3"
done

# Tensors far larger than the budget: 25 M parameters in one layer, 11 MB MLP matrices in bf16
# against --max-memory 1200Ki (streamed, so ramplus_tl reads them twice), and the same merge
# under the default budget, where they are resident.
$SMELT synth "$work/bigbase" --size 50M --layers 1 --seed 5
$SMELT synth "$work/biga" --size 50M --layers 1 --base-seed 5 --seed 6
$SMELT synth "$work/bigb" --size 50M --layers 1 --base-seed 5 --seed 7
config "$work/big.yml" ramplus_tl bigbase "biga bigb" "epsilon: 0.006
r: 0.4" bfloat16
# Captured first: with pipefail, grep -q leaving early would fail plan with SIGPIPE.
$SMELT plan "$work/big.yml" --max-memory 1200Ki > "$work/big.plan"
grep -q "streamed, read 2x" "$work/big.plan" \
  && pass "big: the plan streams the large tensors" || fail "big: no tensor is streamed"
for budget in "--max-memory 1200Ki" ""; do
  rm -rf "$work/bigout"
  $SMELT merge "$work/big.yml" "$work/bigout" -q $budget --threads 2
  "$REF" ramplus_tl "$work/bigout" "$work/bigbase" "$work/biga" "$work/bigb" epsilon=0.006 r=0.4 \
    && pass "ramplus_tl: 11 MB tensors ${budget:-under the default budget} match" \
    || fail "ramplus_tl: large tensors ${budget:-under the default budget} differ"
done
rm -rf "$work/bigbase" "$work/biga" "$work/bigb" "$work/bigout"

# Plan-time errors name the method, tensor and rule, and leave no output.
bad() { # bad NAME PHRASE CONFIG-TEXT
  printf '%s\n' "$3" > "$work/bad.yml"
  rm -rf "$work/badout"
  expect_error "$1" "$2" $SMELT merge "$work/bad.yml" "$work/badout"
  no_model_output "$work/badout"
}
two="models:
  - model: $work/a
  - model: $work/b"
bad "ram without a base" "method 'ram' needs a base_model" "merge_method: ram
$two"
bad "ramplus_tl without a base" "method 'ramplus_tl' needs a base_model" "merge_method: ramplus_tl
$two"
bad "ram epsilon negative" "method 'ram': tensor 'model.embed_tokens.weight': epsilon -0.1 is out of range (it must be >= 0)" "merge_method: ram
base_model: $work/base
$two
parameters: {epsilon: -0.1}"
bad "ramplus_tl epsilon 0" "epsilon 0 is out of range (it must be > 0)" "merge_method: ramplus_tl
base_model: $work/base
$two
parameters: {epsilon: 0}"
bad "ramplus_tl r negative" "method 'ramplus_tl': tensor 'model.embed_tokens.weight': r -1 is out of range" "merge_method: ramplus_tl
base_model: $work/base
$two
parameters: {r: -1}"
bad "ramplus_tl alpha negative" "alpha -0.2 is out of range" "merge_method: ramplus_tl
base_model: $work/base
$two
parameters: {alpha: -0.2}"
bad "ramplus_tl r overflows f32" "r = 1e+39 overflows f32" "merge_method: ramplus_tl
base_model: $work/base
$two
parameters: {r: 1.0e+39}"
bad "ram with only the base" "method 'ram'" "merge_method: ram
base_model: $work/base
models:
  - model: $work/base"
finish
