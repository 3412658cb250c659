# The task-vector family end to end: every method through `smelt merge`, checked element by
# element against taskvec_ref (an independent whole-tensor computation); exact rank thresholds
# on a tensor many times larger than the budget; byte-identical outputs across threads, budgets,
# SIMD levels and runs; and every plan-time error with no output left behind.
source "$(dirname "$0")/lib.sh"
REF=$SMELT_TEST_HELPERS/taskvec_ref

$SMELT synth "$work/base" --size 6M --seed 1 --shard-size 3M
$SMELT synth "$work/a" --size 6M --base-seed 1 --seed 2
$SMELT synth "$work/b" --size 6M --base-seed 1 --seed 3 --delta 0.02
$SMELT synth "$work/c" --size 6M --base-seed 1 --seed 4

# config FILE METHOD "W:D MODEL ..." [TOP-LEVEL PARAMETER LINES]: float32 output, so that the
# reference sees the merge's f32 result unrounded.
config() {
  local file=$1 method=$2 models=$3 extra=${4:-}
  { echo "merge_method: $method"; echo "base_model: $work/base"; echo "out_dtype: float32"
    echo "models:"
    for spec in $models; do
      local wd=${spec%@*} m=${spec#*@}
      if [ "$method" = metagpt ] || [ "$method" = sce ]; then # no per-model parameters
        printf '  - model: %s\n' "$work/$m"
      else
        printf '  - model: %s\n    parameters: {weight: %s, density: %s}\n' "$work/$m" "${wd%:*}" "${wd#*:}"
      fi
    done
    if [ -n "$extra" ]; then echo "parameters:"; printf '%s\n' "$extra" | sed 's/^/  /'; fi
  } > "$file"
}

# check NAME METHOD "W:D@MODEL ..." "PARAMS YAML" REF-ARGS...: merge and compare.
check() {
  local name=$1 method=$2 models=$3 extra=$4; shift 4
  config "$work/$name.yml" "$method" "$models" "$extra"
  rm -rf "$work/out-$name"
  if ! $SMELT merge "$work/$name.yml" "$work/out-$name" -q --max-memory 3Mi --random-seed 7; then
    fail "$name: merge failed"; return
  fi
  local refargs=()
  for spec in $models; do refargs+=("${spec%@*}:$work/${spec#*@}"); done
  "$REF" "$method" "$work/out-$name" "$work/base" "${refargs[@]}" seed=7 "$@" \
    && pass "$name matches the reference" || fail "$name differs from the reference"
}

three="0.5:0.3@a 0.3:0.5@b 0.4:0.2@c"
check ta task_arithmetic "0.5:1@a 0.3:1@b -0.2:1@c" ""
check ta_norm task_arithmetic "0.5:1@a 0.3:1@b" "normalize: true
lambda: 1.5" normalize=1 lambda=1.5
check ties ties "$three" ""
check ties_nonorm ties "$three" "normalize: false
lambda: 0.8" normalize=0 lambda=0.8
check dare_ties dare_ties "$three" ""
check dare_linear dare_linear "$three" ""
check dare_norescale dare_linear "$three" "rescale: false" rescale=0
check dare_paper dare_ties "$three" "rescale_by_density: true" rescale_by_density=1
check breadcrumbs breadcrumbs "0.5:0.9@a 0.3:0.7@b" ""
check breadcrumbs_gamma breadcrumbs "0.5:0.6@a 0.3:0.2@b" "gamma: 0.3" gamma=0.3
check breadcrumbs_ties breadcrumbs_ties "$three" "gamma: 0.05" gamma=0.05
check metagpt metagpt "1:1@a 1:1@b 1:1@c" ""
check consensus_ta consensus_ta "$three" ""
check consensus_ties consensus_ties "$three" "k: 1
tall_lambda: 0.7" k=1 tall_lambda=0.7
check sce sce "1:1@a 1:1@b 1:1@c" "select_topk: 0.4" select_topk=0.4
check sce_all sce "1:1@a 1:1@b" ""

# One model, no rescale: the output is the base plus exactly the kept entries.
config "$work/dare1.yml" dare_linear "1:0.3@a" "rescale: false"
$SMELT merge "$work/dare1.yml" "$work/dare1" -q --random-seed 3
"$REF" dare_linear "$work/dare1" "$work/base" "1:0.3:$work/a" rescale=0 seed=3 \
  && pass "dare one model matches" || fail "dare one model differs"

# Determinism: identical bytes for any thread count, budget, SIMD level and run.
sum_of() { cat "$1"/model*.safetensors | sha256sum; }
for method in ties dare_ties breadcrumbs_ties sce; do
  yml=$work/$method.yml
  $SMELT merge "$yml" "$work/d0" -q --random-seed 11 --threads 1
  want=$(sum_of "$work/d0")
  for variant in "--threads 2" "--threads 7" "--max-memory 3Mi --threads 2" "--max-memory 7Mi" \
                 "--max-memory 1G --threads 3"; do
    rm -rf "$work/d1"
    $SMELT merge "$yml" "$work/d1" -q --random-seed 11 $variant
    [ "$(sum_of "$work/d1")" = "$want" ] && pass "$method $variant: identical" \
      || fail "$method $variant: output differs"
  done
  for isa in scalar avx2 avx512; do
    SMELT_ISA=$isa $SMELT version >/dev/null 2>&1 || continue
    rm -rf "$work/d1"
    SMELT_ISA=$isa $SMELT merge "$yml" "$work/d1" -q --random-seed 11 --threads 3
    [ "$(sum_of "$work/d1")" = "$want" ] && pass "$method SMELT_ISA=$isa: identical" \
      || fail "$method SMELT_ISA=$isa: output differs"
  done
  rm -rf "$work/d0" "$work/d1"
done
$SMELT merge "$work/dare_ties.yml" "$work/s1" -q --random-seed 11
$SMELT merge "$work/dare_ties.yml" "$work/s2" -q --random-seed 11
$SMELT merge "$work/dare_ties.yml" "$work/s3" -q --random-seed 12
[ "$(sum_of "$work/s1")" = "$(sum_of "$work/s2")" ] && pass "dare: same seed, same bytes" \
  || fail "dare: same seed gave different bytes"
[ "$(sum_of "$work/s1")" != "$(sum_of "$work/s3")" ] && pass "dare: another seed, other bytes" \
  || fail "dare: the seed has no effect"

# A tensor far larger than the budget: a ~25 MB embedding under --max-memory 3Mi.
$SMELT synth "$work/bigbase" --size 250M --seed 5
$SMELT synth "$work/biga" --size 250M --base-seed 5 --seed 6
for method in ties dare_ties; do
  printf 'merge_method: %s\nbase_model: %s\nmodels:\n  - model: %s\n    parameters: {weight: 0.7, density: 0.35}\n' \
    "$method" "$work/bigbase" "$work/biga" > "$work/big.yml"
  rm -rf "$work/bigout"
  $SMELT merge "$work/big.yml" "$work/bigout" -q --max-memory 3Mi --random-seed 2 --threads 2
  "$REF" "$method" "$work/bigout" "$work/bigbase" "0.7:0.35:$work/biga" seed=2 \
    && pass "$method: 25 MB tensor under --max-memory 3Mi matches" \
    || fail "$method: large tensor differs from the reference"
done
rm -rf "$work/bigbase" "$work/biga" "$work/bigout"

# Plan-time errors name the method, model and tensor, and leave no output.
bad() { # bad NAME PHRASE CONFIG-TEXT
  printf '%s\n' "$3" > "$work/bad.yml"
  rm -rf "$work/badout"
  expect_error "$1" "$2" $SMELT merge "$work/bad.yml" "$work/badout"
  no_model_output "$work/badout"
}
models_with() { printf 'models:\n  - model: %s\n    parameters: {%s}\n  - model: %s\n    parameters: {weight: 1}\n' "$work/a" "$1" "$work/b"; }
bad "density 0" "method 'ties': model '$work/a': tensor" "merge_method: ties
base_model: $work/base
$(models_with "weight: 1, density: 0.0")"
bad "density above 1" "density 1.5 is out of range" "merge_method: dare_ties
base_model: $work/base
$(models_with "weight: 1, density: 1.5")"
bad "gamma below 0" "gamma -0.1 is out of range" "merge_method: breadcrumbs
base_model: $work/base
$(models_with "weight: 1, density: 0.5, gamma: -0.1")"
bad "missing base_model" "method 'ties' needs a base_model" "merge_method: ties
$(models_with "weight: 1, density: 0.5")"
bad "missing weight" "required parameter 'weight' is not set" "merge_method: task_arithmetic
base_model: $work/base
$(models_with "density: 0.5")"
bad "select_topk 0" "select_topk 0 is out of range" "merge_method: sce
base_model: $work/base
models:
  - model: $work/a
  - model: $work/b
parameters:
  select_topk: 0.0"
bad "tall k negative" "k -1 is out of range" "merge_method: consensus_ta
base_model: $work/base
$(models_with "weight: 1")
parameters:
  k: -1.0"
finish
