# emr (EMR-merging) end to end: one output directory per model, each checked bit for bit against
# emr_ref (an independent whole-tensor computation of FusionBench's emr_merge) on bf16 and f32
# inputs and outputs, on tensors larger than the budget (streamed: the statistics pass re-reads
# them) and under the default budget (resident, each input byte read once for all outputs);
# byte-identical outputs across threads, budgets and SIMD levels; every error clear with no
# output left behind.
source "$(dirname "$0")/lib.sh"
REF=$SMELT_TEST_HELPERS/emr_ref

$SMELT synth "$work/base" --size 3M --layers 1 --seed 1 --shard-size 1M
$SMELT synth "$work/a" --size 3M --layers 1 --base-seed 1 --seed 2
$SMELT synth "$work/b" --size 3M --layers 1 --base-seed 1 --seed 3 --delta 0.02
mkdir -p "$work/other"
$SMELT synth "$work/other/a" --size 3M --layers 1 --base-seed 1 --seed 4 # a second "a"
$SMELT synth "$work/base32" --size 6M --layers 1 --seed 1 --dtype float32
$SMELT synth "$work/a32" --size 6M --layers 1 --base-seed 1 --seed 2 --dtype float32
$SMELT synth "$work/b32" --size 6M --layers 1 --base-seed 1 --seed 3 --dtype float32

# config FILE BASE "MODEL ..." OUT_DTYPE
config() {
  { echo "merge_method: emr"; echo "base_model: $work/$2"; echo "out_dtype: $4"; echo "models:"
    for m in $3; do printf '  - model: %s\n' "$work/$m"; done; } > "$1"
}

# check NAME BASE "MODEL ..." OUT_DTYPE "DIR ..." MERGE-FLAGS: every output against the reference
# (DIR per model, in config order).
check() {
  local name=$1 base=$2 models=$3 dtype=$4 dirs=$5 flags=$6
  config "$work/$name.yml" "$base" "$models" "$dtype"
  rm -rf "$work/out-$name"
  if ! $SMELT merge "$work/$name.yml" "$work/out-$name" -q --json $flags > "$work/$name.json"; then
    fail "$name: merge failed"; return
  fi
  [ "$(ls "$work/out-$name" | tr '\n' ' ')" = "$(tr ' ' '\n' <<<"$dirs" | sort | tr '\n' ' ')" ] \
    && pass "$name: one directory per model: $dirs" || fail "$name: directories $(ls "$work/out-$name")"
  local refmodels=() k=1
  for m in $models; do refmodels+=("$work/$m"); done
  for d in $dirs; do
    "$REF" "$work/out-$name/$d" $k "$work/$base" "${refmodels[@]}" \
      && pass "$name $d matches the reference" || fail "$name $d differs from the reference"
    k=$((k + 1))
  done
}

small="--max-memory 3Mi"
check emr base "a b other/a" float32 "a b a-2" "$small"
check emr_bf16 base "a b other/a" bfloat16 "a b a-2" ""
check emr_two base "b a" bfloat16 "b a" "--max-memory 2Mi --threads 1"
check emr_f32 base32 "a32 b32" float32 "a32 b32" "--max-memory 3Mi --threads 3"
check emr_f32_bf16 base32 "a32 b32" bfloat16 "a32 b32" ""

# The outputs differ per model: the reference can tell them apart.
"$REF" "$work/out-emr/a" 2 "$work/base" "$work/a" "$work/b" "$work/other/a" >/dev/null 2>&1 \
  && fail "model 2's output equals model 1's" || pass "each output is its own model's"

cmp -s "$work/out-emr/a-2/mergekit_config.yml" "$work/emr.yml" \
  && pass "each output records the config" || fail "mergekit_config.yml differs from the config"

# Streamed under the small budget, resident under the default one.
plan_small=$($SMELT plan "$work/emr.yml" $small)
grep -q "streamed, read 2x" <<<"$plan_small" \
  && pass "small budget: tensors streamed" || fail "small budget: nothing streamed"

# Bytes read: under the default budget each input byte once for the 3 outputs; streamed twice.
in_bytes=$($SMELT plan "$work/emr.yml" | sed -n "s/^group: .*the input tensors' \([0-9]*\) bytes.*/\1/p")
read_bytes=$(sed -n 's/.*"bytes_read": \([0-9]*\).*/\1/p' "$work/emr_bf16.json")
echo "emr of 3 models: $read_bytes bytes read for $in_bytes input bytes" \
     "($(awk "BEGIN{printf \"%.3f\", $read_bytes/$in_bytes}") per input byte)"
[ "$read_bytes" = "$in_bytes" ] && pass "emr of 3 models reads each input byte once" \
  || fail "emr read $read_bytes bytes for $in_bytes input bytes"
small_read=$(sed -n 's/.*"bytes_read": \([0-9]*\).*/\1/p' "$work/emr.json")
planned=$($SMELT plan "$work/emr.yml" $small | sed -n 's/^group: .*together: \([0-9]*\) bytes.*/\1/p')
[ "$small_read" = "$planned" ] && pass "streamed: read $small_read bytes, as plan says" \
  || fail "streamed: read $small_read bytes, plan says $planned"
plan_out=$($SMELT plan "$work/emr.yml")
grep -q "== output 3 of 3: $work/emr.yml (output a-2) (emr)" <<<"$plan_out" \
  && pass "plan lists the outputs" || fail "plan: $(grep '^==' <<<"$plan_out")"

# Determinism: identical bytes for any thread count, budget, SIMD level.
for name in emr emr_f32; do
  check_invariant "$name" "$work/$name.yml" "$work/out-$name" "--max-memory 3Mi"
done

# An emr config in a batch: its outputs under the entry's directory, the same bytes.
printf -- '- config: %s\n  out: %s/batch-emr\n' "$work/emr.yml" "$work" > "$work/batch.yml"
rm -rf "$work/batch-emr"
$SMELT merge --batch "$work/batch.yml" -q $small
[ "$(model_sum "$work/batch-emr")" = "$(model_sum "$work/out-emr")" ] \
  && pass "emr in a batch: the same outputs" || fail "emr in a batch differs"

# Errors: clear, non-zero, nothing left behind.
err() {
  local name=$1 phrase=$2; shift 2
  rm -rf "$work/e"
  expect_error "$name" "$phrase" "$@"
  [ ! -e "$work/e" ] || fail "$name: left $(ls -A "$work/e")"
}
config "$work/one.yml" base "a" float32
err "one model" "method 'emr' takes 2 to 255 models besides the base, but the config lists 1" $SMELT merge "$work/one.yml" "$work/e"
{ echo "merge_method: emr"; echo "models:"; echo "  - model: $work/a"; echo "  - model: $work/b"; } \
  > "$work/nobase.yml"
err "no base" "base_model" $SMELT merge "$work/nobase.yml" "$work/e"
{ cat "$work/emr.yml"; echo "parameters:"; echo "  lambda: 1"; } > "$work/param.yml"
err "a parameter" "'lambda' is not a parameter of method 'emr' (it takes: none)" $SMELT merge "$work/param.yml" "$work/e"
err "a sweep" "emr has no parameter 'lambda'" $SMELT merge "$work/emr.yml" "$work/e" --sweep lambda=1,2
err "resume" "does not take --resume, --part or --finalize" \
  $SMELT merge "$work/emr.yml" "$work/e" --resume
err "part" "does not take --resume, --part or --finalize" \
  $SMELT merge "$work/emr.yml" "$work/e" --part 1/2
cat > "$work/slices.yml" <<EOF
merge_method: emr
base_model: $work/base
slices:
  - sources:
      - model: $work/base
        layer_range: [0, 1]
      - model: $work/a
        layer_range: [0, 1]
      - model: $work/b
        layer_range: [0, 1]
EOF
err "slices" "does not take slices:" $SMELT merge "$work/slices.yml" "$work/e"

finish
