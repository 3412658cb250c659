# The task-vector family end to end: every method through `smelt merge`, checked element by
# element against taskvec_ref (an independent whole-tensor computation); exact rank thresholds
# and DELLA's per-row ranks on tensors many times larger than the budget; byte-identical outputs
# across threads, budgets, SIMD levels and runs; and every plan-time error with no output left
# behind.
source "$(dirname "$0")/lib.sh"
REF=$SMELT_TEST_HELPERS/taskvec_ref

# One-layer models of 1.5 M parameters (small, so that the many merges below stay fast): hidden
# 320 and MLP width 896, neither of which divides 65536, so DELLA's rows would straddle the
# default task boundaries; the MLP matrices span several chunks under check()'s budget.
$SMELT synth "$work/base" --size 3M --layers 1 --seed 1 --shard-size 1M
$SMELT synth "$work/a" --size 3M --layers 1 --base-seed 1 --seed 2
$SMELT synth "$work/b" --size 3M --layers 1 --base-seed 1 --seed 3 --delta 0.02
$SMELT synth "$work/c" --size 3M --layers 1 --base-seed 1 --seed 4

# config FILE METHOD "W:D MODEL ..." [TOP-LEVEL PARAMETER LINES]: float32 output by default
# (OUT_DTYPE), so that the reference sees the merge's f32 result unrounded.
OUT_DTYPE=float32
config() {
  local file=$1 method=$2 models=$3 extra=${4:-}
  { echo "merge_method: $method"; echo "base_model: $work/base"; echo "out_dtype: $OUT_DTYPE"
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

# check NAME METHOD "W:D@MODEL ..." "PARAMS YAML" REF-ARGS...: merge and compare, on 2 threads
# and a budget of 2560Ki plus what BOUNDS rank bounds' per-worker histograms take (256Ki each
# per thread), so that the same tensors stream on any machine.
BOUNDS=0
check() {
  local name=$1 method=$2 models=$3 extra=$4; shift 4
  config "$work/$name.yml" "$method" "$models" "$extra"
  rm -rf "$work/out-$name"
  local budget=(--threads 2 --max-memory $((2560 + 512 * BOUNDS))Ki)
  if ! $SMELT merge "$work/$name.yml" "$work/out-$name" -q "${budget[@]}" --random-seed 7; then
    fail "$name: merge failed"; return
  fi
  $SMELT plan "$work/$name.yml" "${budget[@]}" > "$work/$name.plan"
  if [ "$BOUNDS" -gt 0 ] && ! grep -q streamed "$work/$name.plan"; then
    fail "$name: nothing is streamed under ${budget[*]}"
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
BOUNDS=3 check ties ties "$three" ""
BOUNDS=3 check ties_nonorm ties "$three" "normalize: false
lambda: 0.8" normalize=0 lambda=0.8
check dare_ties dare_ties "$three" ""
check dare_linear dare_linear "$three" ""
check dare_norescale dare_linear "$three" "rescale: false" rescale=0
check dare_paper dare_ties "$three" "rescale_by_density: true" rescale_by_density=1
BOUNDS=4 check breadcrumbs breadcrumbs "0.5:0.9@a 0.3:0.7@b" ""
BOUNDS=4 check breadcrumbs_gamma breadcrumbs "0.5:0.6@a 0.3:0.2@b" "gamma: 0.3" gamma=0.3
BOUNDS=6 check breadcrumbs_ties breadcrumbs_ties "$three" "gamma: 0.05" gamma=0.05
check metagpt metagpt "1:1@a 1:1@b 1:1@c" ""
check consensus_ta consensus_ta "$three" ""
# k between counts and past the models (the agreement test rounds k up and clamps it)
check consensus_ta_k consensus_ta "$three" "k: 1.5" k=1.5
check consensus_ta_kbig consensus_ta "$three" "k: 7" k=7
BOUNDS=3 check consensus_ties consensus_ties "$three" "k: 1
tall_lambda: 0.7" k=1 tall_lambda=0.7
BOUNDS=1 check sce sce "1:1@a 1:1@b 1:1@c" "select_topk: 0.4" select_topk=0.4
check sce_all sce "1:1@a 1:1@b" ""
# two and four models: the variance's mean divides by a power of two (a multiply)
BOUNDS=1 check sce_two sce "1:1@a 1:1@b" "select_topk: 0.5" select_topk=0.5
BOUNDS=1 check sce_four sce "1:1@a 1:1@b 1:1@c 1:1@a" "select_topk: 0.3" select_topk=0.3
# sce's streamed tensors: a histogram read (its sample guesses the second digit's bins), the
# SUMS read (which also numbers the tied
# variances: a prefix pass needs no read of its own), the merge; the ring reads what plan says.
$SMELT plan "$work/sce.yml" --threads 2 --max-memory 3072Ki > "$work/sce-plan.txt"
planned=$(sed -n 's/^read: *\([0-9]*\) bytes.*/\1/p' "$work/sce-plan.txt")
rm -rf "$work/sce-json"
read_bytes=$($SMELT merge "$work/sce.yml" "$work/sce-json" -q --threads 2 --max-memory 3072Ki --random-seed 7 \
  --json | sed -n 's/.*"bytes_read": \([0-9]*\).*/\1/p')
if grep -q 'streamed, read 3x (+1 if its sample misses)$' "$work/sce-plan.txt" && [ -n "$planned" ] &&
   [ "$read_bytes" = "$planned" ] &&
   cmp -s "$work/sce-json/model.safetensors" "$work/out-sce/model.safetensors"; then
  pass "sce streamed: 3 reads, $read_bytes bytes read as planned, same bytes"
else
  fail "sce streamed: plan $planned bytes, read '$read_bytes': $(grep -m1 streamed "$work/sce-plan.txt")"
fi
rm -rf "$work/sce-json"
check della della "$three" "epsilon: 0.1" epsilon=0.1
check della_linear della_linear "$three" ""
check della_paper della "0.5:0.5@a 0.3:0.7@b" "rescale_by_density: true
epsilon: 0.25" rescale_by_density=1 epsilon=0.25
check della_norescale della_linear "0.6:0.4@a 0.6:0.6@b" "rescale: false
normalize: true
lambda: 1.3" rescale=0 normalize=1 lambda=1.3
OUT_DTYPE=bfloat16
check della_bf16 della "$three" ""
check della_linear_bf16_paper della_linear "$three" "rescale_by_density: true" rescale_by_density=1
OUT_DTYPE=float32

# One model, no rescale: the output is the base plus exactly the kept entries.
config "$work/dare1.yml" dare_linear "1:0.3@a" "rescale: false"
$SMELT merge "$work/dare1.yml" "$work/dare1" -q --random-seed 3
"$REF" dare_linear "$work/dare1" "$work/base" "1:0.3:$work/a" rescale=0 seed=3 \
  && pass "dare one model matches" || fail "dare one model differs"

# Determinism: identical bytes for any thread count, budget, SIMD level and run. The baseline
# is check()'s output (default threads, the small budget), already matched to the reference;
# each variant changes threads and budget (so chunk sizes) together, and every ISA other than
# the default one runs too.
sum_of() { cat "$1"/model*.safetensors | sha256sum; }
default_isa=$($SMELT version | sed -n 's/.*kernels: \([a-z0-9]*\).*/\1/p')
for method in ties dare_ties breadcrumbs_ties sce della della_linear_bf16_paper; do
  want=$(sum_of "$work/out-$method")
  for variant in "--threads 1 --max-memory 1G" "--threads 7 --max-memory 28Mi" \
                 "--threads 3 --max-memory 12Mi"; do
    rm -rf "$work/d1"
    $SMELT merge "$work/$method.yml" "$work/d1" -q --random-seed 7 $variant
    [ "$(sum_of "$work/d1")" = "$want" ] && pass "$method $variant: identical" \
      || fail "$method $variant: output differs"
  done
  for isa in scalar avx2 avx512; do
    [ "$isa" != "$default_isa" ] && SMELT_ISA=$isa $SMELT version >/dev/null 2>&1 || continue
    rm -rf "$work/d1"
    SMELT_ISA=$isa $SMELT merge "$work/$method.yml" "$work/d1" -q --random-seed 7 --threads 3
    [ "$(sum_of "$work/d1")" = "$want" ] && pass "$method SMELT_ISA=$isa: identical" \
      || fail "$method SMELT_ISA=$isa: output differs"
  done
done
rm -rf "$work/d1"
$SMELT merge "$work/dare_ties.yml" "$work/s1" -q --random-seed 7
$SMELT merge "$work/dare_ties.yml" "$work/s3" -q --random-seed 12
[ "$(sum_of "$work/s1")" = "$(sum_of "$work/out-dare_ties")" ] && pass "dare: same seed, same bytes" \
  || fail "dare: same seed gave different bytes"
[ "$(sum_of "$work/s1")" != "$(sum_of "$work/s3")" ] && pass "dare: another seed, other bytes" \
  || fail "dare: the seed has no effect"

# A sample that misses: one streamed tensor whose first half's task vector is a thousand times
# smaller than the rest, so the window its sample (the first chunks) guesses holds no threshold.
# The fallback read finds the keys: the bytes are the resident merge's, and the ring reads the
# plan's count plus the one more read it says a miss costs.
numpy_python
mkdir -p "$work/skew/base" "$work/skew/ft"
"$PY" - "$work/skew" <<'EOF2'
import json, struct, sys
import numpy as np
rng = np.random.default_rng(3)
base = rng.standard_normal((1024, 1024), dtype=np.float32)
delta = rng.standard_normal((1024, 1024), dtype=np.float32) * np.float32(0.01)
delta[:512] *= np.float32(1e-3)
for name, w in (("base", base), ("ft", base + delta)):
    data = np.ascontiguousarray(w, dtype="<f4").tobytes()
    head = json.dumps({"w": {"dtype": "F32", "shape": [1024, 1024],
                             "data_offsets": [0, len(data)]}}).encode()
    head += b" " * (-len(head) % 8)
    with open(f"{sys.argv[1]}/{name}/model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + data)
EOF2
printf 'merge_method: ties\nbase_model: %s\nmodels:\n  - model: %s\n    parameters: {weight: 1, density: 0.3}\n' \
  "$work/skew/base" "$work/skew/ft" > "$work/skew.yml"
skew=(--threads 2 --max-memory 3Mi)
$SMELT plan "$work/skew.yml" "${skew[@]}" > "$work/skew.plan"
planned=$(sed -n 's/^read: *\([0-9]*\) bytes.*/\1/p' "$work/skew.plan")
extra=$(sed -n 's/^read: .*up to \([0-9]*\) more.*/\1/p' "$work/skew.plan")
read_bytes=$($SMELT merge "$work/skew.yml" "$work/skew-out" -q "${skew[@]}" --json 2>/dev/null |
  sed -n 's/.*"bytes_read": \([0-9]*\).*/\1/p')
$SMELT merge "$work/skew.yml" "$work/skew-resident" -q --max-memory 1G
if grep -q '^  w F32 .*streamed, read 2x (+1 if its sample misses)$' "$work/skew.plan" &&
   [ -n "$extra" ] && [ "$read_bytes" = $((planned + extra)) ] &&
   cmp -s "$work/skew-out/model.safetensors" "$work/skew-resident/model.safetensors"; then
  pass "a sample that misses: one fallback read ($read_bytes bytes = $planned + $extra), same bytes"
else
  fail "a sample that misses: read '$read_bytes', planned '$planned' + '$extra': $(grep -E '^  w|^read' "$work/skew.plan")"
fi
# The same miss in a group: a sweep's outputs all take the one fallback read, each output the
# same bytes as the resident sweep's.
$SMELT merge "$work/skew.yml" "$work/skew-sweep" -q "${skew[@]}" --sweep lambda=0.5,1.5
$SMELT merge "$work/skew.yml" "$work/skew-sweep1g" -q --max-memory 1G --sweep lambda=0.5,1.5
if cmp -s "$work/skew-sweep/lambda=0.5/model.safetensors" "$work/skew-sweep1g/lambda=0.5/model.safetensors" &&
   cmp -s "$work/skew-sweep/lambda=1.5/model.safetensors" "$work/skew-sweep1g/lambda=1.5/model.safetensors" &&
   ! cmp -s "$work/skew-sweep/lambda=0.5/model.safetensors" "$work/skew-sweep/lambda=1.5/model.safetensors"; then
  pass "a sample that misses in a sweep: both outputs are the resident sweep's"
else
  fail "a sample that misses in a sweep: outputs differ from the resident sweep's"
fi
rm -rf "$work/skew" "$work/skew-out" "$work/skew-resident" "$work/skew-sweep" "$work/skew-sweep1g"

# Tensors far larger than the budget: 25 M parameters in one layer, whose 1408 x 3872 MLP
# matrices (10.9 MB in bf16, rows of 3872 that straddle tasks) are 6x --max-memory 1800Ki, a
# little above the smallest budget these merges accept.
$SMELT synth "$work/bigbase" --size 50M --layers 1 --seed 5
$SMELT synth "$work/biga" --size 50M --layers 1 --base-seed 5 --seed 6
# ties covers the radix select across chunks, della the row ranks and the L1 rescale sums.
for method in ties della; do
  printf 'merge_method: %s\nbase_model: %s\nmodels:\n  - model: %s\n    parameters: {weight: 0.7, density: 0.35}\n' \
    "$method" "$work/bigbase" "$work/biga" > "$work/big.yml"
  rm -rf "$work/bigout"
  $SMELT merge "$work/big.yml" "$work/bigout" -q --max-memory 1800Ki --random-seed 2 --threads 2
  "$REF" "$method" "$work/bigout" "$work/bigbase" "0.7:0.35:$work/biga" seed=2 \
    && pass "$method: 11 MB tensors under --max-memory 1800Ki match" \
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
bad "della epsilon too large" "method 'della': model '$work/a': tensor" "merge_method: della
base_model: $work/base
$(models_with "weight: 1, density: 0.5, epsilon: 0.5")"
bad "della density minus epsilon" "density 0.1 with epsilon 0.15 is out of range" "merge_method: della_linear
base_model: $work/base
$(models_with "weight: 1, density: 0.1")"
# A row longer than 65536 elements: one f32 tensor of shape [2, 70000] in two .safetensors files.
long_row() {
  local hdr='{"w":{"dtype":"F32","shape":[2,70000],"data_offsets":[0,560000]}}'
  while [ $(( ${#hdr} % 8 )) -ne 0 ]; do hdr="$hdr "; done
  { printf "$(printf '\\x%02x' $(( ${#hdr} & 255 )) $(( ${#hdr} >> 8 )) 0 0 0 0 0 0)"
    printf '%s' "$hdr"; head -c 560000 /dev/zero; } > "$1"
}
long_row "$work/long0.safetensors"; long_row "$work/long1.safetensors"
bad "della row too long" "tensor 'w': its rows of 70000 elements are longer than the 65536" "merge_method: della
base_model: $work/long0.safetensors
models:
  - model: $work/long1.safetensors
    parameters: {weight: 1, density: 0.5}"
printf 'merge_method: della\nbase_model: %s\nmodels:\n  - model: %s\n    parameters: {weight: 1}\n' \
  "$work/long0.safetensors" "$work/long1.safetensors" > "$work/long.yml"
$SMELT merge "$work/long.yml" "$work/longout" -q && pass "della at density 1 takes long rows" \
  || fail "della at density 1 refused a long row"
bad "tall k negative" "k -1 is out of range" "merge_method: consensus_ta
base_model: $work/base
$(models_with "weight: 1")
parameters:
  k: -1.0"
finish
