# One read, many outputs: `merge --sweep NAME=V1,V2,...` and `merge --batch FILE`. Every output
# directory must be byte-identical (cmp on every file, the manifest included) to a separate merge
# of the config it records, at any thread count, budget and SIMD level; the inputs must be read
# once for all outputs (the ring's byte counter, in --json's bytes_read); every error is clear
# and leaves no output.
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/base" --size 3M --layers 1 --seed 1 --shard-size 1M
$SMELT synth "$work/a" --size 3M --layers 1 --base-seed 1 --seed 2
$SMELT synth "$work/b" --size 3M --layers 1 --base-seed 1 --seed 3
$SMELT synth "$work/c" --size 3M --layers 1 --base-seed 1 --seed 4
$SMELT synth "$work/other" --size 3M --layers 1 --seed 9

# ties with statistics passes (density < 1); lambda is not in the config: a sweep adds it.
cat > "$work/ties.yml" <<EOF
merge_method: ties
base_model: $work/base
models:
  - model: $work/a
    parameters:
      weight: 0.6
      density: 0.5
  - model: $work/b
    parameters:
      weight: 0.4
      density: 0.7
parameters:
  normalize: true
dtype: bfloat16
EOF
# slerp's t is in the config: a sweep replaces it in place.
cat > "$work/slerp.yml" <<EOF
merge_method: slerp
base_model: $work/base
models:
  - model: $work/base
  - model: $work/a
parameters:
  t: 0.5
out_dtype: float32
EOF

# same_dir NAME A B: every file of A and B, byte for byte, and no file only in one of them.
same_dir() {
  local name=$1 a=$2 b=$3
  if [ "$(cd "$a" && ls -A | sort)" != "$(cd "$b" && ls -A | sort)" ]; then
    fail "$name: different files: $(ls -A "$a") / $(ls -A "$b")"; return
  fi
  for f in "$a"/*; do
    cmp -s "$f" "$b/$(basename "$f")" || { fail "$name: $(basename "$f") differs"; return; }
  done
  pass "$name: every file identical"
}

# input_bytes CONFIG: the input tensors' bytes, as plan counts them.
input_bytes() { $SMELT plan "$1" | sed -n "s/.*the input tensors' \([0-9]*\) bytes.*/\1/p"; }
json_field() { sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p"; }

# --- sweep: each output equals its separate merge; the config it records is the expected one.
sweep_check() {
  local name=$1 config=$2 param=$3 flags=$4; shift 4
  rm -rf "$work/sw-$name"
  local json
  json=$($SMELT merge "$config" "$work/sw-$name" --sweep "$param=$(IFS=,; echo "$*")" -q --json \
         $flags) || { fail "$name: sweep failed"; return; }
  for v in "$@"; do
    local dir="$work/sw-$name/$param=$v" want="$work/want-$name-$v.yml"
    if [ -e "$work/want-$name-$v.yml" ]; then
      cmp -s "$dir/mergekit_config.yml" "$want" && pass "$name $param=$v: the expected config" \
        || fail "$name $param=$v: recorded config differs: $(diff "$dir/mergekit_config.yml" "$want")"
    fi
    rm -rf "$work/sep"
    $SMELT merge "$dir/mergekit_config.yml" "$work/sep" -q $flags
    same_dir "$name $param=$v $flags vs its separate merge" "$dir" "$work/sep"
  done
  echo "$json" > "$work/sw-$name.json"
}
for v in 0.5 1.0 1.5; do
  sed "s/^  normalize: true/  lambda: $v\n  normalize: true/" "$work/ties.yml" > "$work/want-ties-$v.yml"
done
for v in 0.2 0.4 0.6; do
  sed "s/^  t: 0.5/  t: $v/" "$work/slerp.yml" > "$work/want-slerp-$v.yml"
done
sweep_check ties "$work/ties.yml" lambda "" 0.5 1.0 1.5
sweep_check ties_small "$work/ties.yml" lambda "--max-memory 4Mi --threads 3" 0.5 1.0 1.5
sweep_check ties_j1 "$work/ties.yml" lambda "--max-memory 3Mi --threads 1" 0.5 1.0 1.5
sweep_check slerp "$work/slerp.yml" t "" 0.2 0.4 0.6
sweep_check slerp_small "$work/slerp.yml" t "--max-memory 4Mi --threads 2" 0.2 0.4 0.6
SMELT_ISA=scalar sweep_check ties_scalar "$work/ties.yml" lambda "--max-memory 4Mi --threads 2" 0.5 1.0 1.5

# A config without `parameters:` gets one appended.
grep -v -e '^parameters:' -e '^  normalize' "$work/ties.yml" > "$work/ties_noparams.yml"
{ cat "$work/ties_noparams.yml"; printf 'parameters:\n  lambda: 0.7\n'; } > "$work/want-noparams-0.7.yml"
sweep_check noparams "$work/ties_noparams.yml" lambda "" 0.7

# Bytes read: a 3-point sweep under the default budget (every tensor resident) reads each input
# byte once; under a small budget it reads what plan says for the group.
in_bytes=$(input_bytes "$work/ties.yml")
read_bytes=$(json_field bytes_read < "$work/sw-ties.json")
echo "sweep ties lambda=0.5,1.0,1.5: $read_bytes bytes read for $in_bytes input bytes" \
     "($(awk "BEGIN{printf \"%.3f\", $read_bytes/$in_bytes}") per input byte)"
[ "$read_bytes" = "$in_bytes" ] && pass "a 3-point sweep reads each input byte once" \
  || fail "a 3-point sweep read $read_bytes bytes for $in_bytes input bytes"
in_slerp=$(input_bytes "$work/slerp.yml")
read_slerp=$(json_field bytes_read < "$work/sw-slerp.json")
[ "$read_slerp" = "$in_slerp" ] && pass "slerp sweep: each input byte once ($read_slerp)" \
  || fail "slerp sweep read $read_slerp bytes for $in_slerp input bytes"
planned=$($SMELT plan "$work/ties.yml" --sweep lambda=0.5,1.0,1.5 --max-memory 4Mi --threads 3 |
          sed -n 's/^group: .*together: \([0-9]*\) bytes.*/\1/p')
small_read=$(json_field bytes_read < "$work/sw-ties_small.json")
[ -n "$planned" ] && [ "$planned" = "$small_read" ] \
  && pass "small budget: read $small_read bytes, as plan says" \
  || fail "small budget: read $small_read bytes, plan says '$planned'"

# plan shows the outputs and the shared read.
plan_out=$($SMELT plan "$work/ties.yml" --sweep lambda=0.5,1.0,1.5)
grep -q "^outputs:  3" <<<"$plan_out" && grep -q "== output 3 of 3: lambda=1.5 (ties)" <<<"$plan_out" &&
  grep -q "^group:    3 outputs read their inputs together: $in_bytes bytes (1.00 x" <<<"$plan_out" \
  && pass "plan --sweep lists the outputs and the shared read" \
  || fail "plan --sweep: $(grep -E '^(outputs|==|group)' <<<"$plan_out")"

# --- batch: configs with different methods over the same inputs, paths relative to the file.
sed -e 's/merge_method: ties/merge_method: task_arithmetic/' -e '/density/d' "$work/ties.yml" > "$work/ta.yml"
{ echo "merge_method: linear"; echo "base_model: $work/base"; echo "models:"
  for m in base a b; do printf '  - model: %s\n    parameters:\n      weight: 1.0\n' "$work/$m"; done
  echo "dtype: bfloat16"; } > "$work/linear.yml"
sed 's/^dtype: bfloat16/out_dtype: float32/' "$work/ties.yml" > "$work/ties32.yml"
mkdir -p "$work/jobs"
cat > "$work/jobs/batch.yml" <<EOF
# four merges of base, a and b
- config: ../ties.yml
  out: ../batch-out/ties
- {config: ../ta.yml, out: ../batch-out/ta}
- config: $work/linear.yml
  out: ../batch-out/linear
- {config: ../ties32.yml, out: ../batch-out/ties32} # another output dtype
EOF
for flags in "" "--max-memory 4Mi --threads 3"; do
  rm -rf "$work/batch-out"
  json=$($SMELT merge --batch "$work/jobs/batch.yml" -q --json $flags) || fail "batch $flags failed"
  for name in ties ta linear ties32; do
    rm -rf "$work/sep"
    $SMELT merge "$work/$name.yml" "$work/sep" -q $flags
    same_dir "batch $name $flags vs its separate merge" "$work/batch-out/$name" "$work/sep"
  done
done
rm -rf "$work/batch-out"
json=$($SMELT merge --batch "$work/jobs/batch.yml" -q --json)
[ "$(json_field bytes_read <<<"$json")" = "$in_bytes" ] \
  && pass "a batch of 4 reads each input byte once" || fail "batch read: $json"
plan_out=$($SMELT plan --batch "$work/jobs/batch.yml")
grep -q "== output 2 of 4: $work/jobs/../ta.yml (task_arithmetic)" <<<"$plan_out" \
  && pass "plan --batch lists the outputs" || fail "plan --batch: $(grep '==' <<<"$plan_out")"

# --- errors: clear, non-zero, and no output directory.
err() {
  local name=$1 phrase=$2 dir=$3; shift 3
  rm -rf "$dir"
  expect_error "$name" "$phrase" "$@"
  [ ! -e "$dir" ] || { no_model_output "$dir"; [ -z "$(ls -A "$dir" 2>/dev/null)" ] ||
                       fail "$name: $dir holds $(ls -A "$dir")"; }
}
e=$work/err
err "unknown parameter" "ties has no parameter 'foo'" "$e" $SMELT merge "$work/ties.yml" "$e" --sweep foo=1,2
err "per-model parameter" "'density' is a per-model parameter of ties" "$e" \
  $SMELT merge "$work/ties.yml" "$e" --sweep density=0.1,0.2
err "not a number" "'1e-3' is not a number as YAML reads it" "$e" \
  $SMELT merge "$work/ties.yml" "$e" --sweep lambda=1e-3
err "empty value" "an empty value" "$e" $SMELT merge "$work/ties.yml" "$e" --sweep lambda=1,,2
err "no name" "write NAME=V1,V2" "$e" $SMELT merge "$work/ties.yml" "$e" --sweep =1
err "twice" "the value '1' is given twice" "$e" $SMELT merge "$work/ties.yml" "$e" --sweep lambda=1,1
err "out of range" "--sweep t=1.5: " "$e" $SMELT merge "$work/slerp.yml" "$e" --sweep t=0.5,1.5
err "sweep resume" "does not take --resume" "$e" \
  $SMELT merge "$work/ties.yml" "$e" --sweep lambda=1,2 --resume
err "sweep part" "does not take --part" "$e" \
  $SMELT merge "$work/ties.yml" "$e" --sweep lambda=1,2 --part 1/2
err "batch resume" "does not take --resume" "$e" $SMELT merge --batch "$work/jobs/batch.yml" --resume
err "batch with config" "takes no CONFIG.yml or OUT_DIR" "$e" \
  $SMELT merge "$work/ties.yml" "$e" --batch "$work/jobs/batch.yml"
printf -- '- config: %s\n  out: %s/x\n- config: %s\n  out: %s/y\n' "$work/ties.yml" "$e" \
  "$work/ties.yml" "$e" > "$work/ok.yml"
sed "s|$work/b\$|$work/c|" "$work/ta.yml" > "$work/ta_c.yml"
printf -- '- config: %s\n  out: %s/x\n- config: %s\n  out: %s/y\n' "$work/ties.yml" "$e" \
  "$work/ta_c.yml" "$e" > "$work/unshared.yml"
err "batch not sharing inputs" "$work/ta_c.yml: tensor 'model.embed_tokens.weight': input 2 is $work/c/" \
  "$e" $SMELT merge --batch "$work/unshared.yml"
sed "s|base_model: $work/base|base_model: $work/other|" "$work/ta.yml" > "$work/ta_other.yml"
printf -- '- config: %s\n  out: %s/x\n- config: %s\n  out: %s/y\n' "$work/ties.yml" "$e" \
  "$work/ta_other.yml" "$e" > "$work/unshared2.yml"
err "batch with another base" "the outputs of one read must share their inputs" "$e" \
  $SMELT merge --batch "$work/unshared2.yml"
printf -- '- config: %s\n  out: %s/x\n- config: %s\n  out: %s/x\n' "$work/ties.yml" "$e" \
  "$work/ta.yml" "$e" > "$work/dup.yml"
err "batch duplicate out" "entry 2 writes to $e/x, as entry 1 does" "$e" $SMELT merge --batch "$work/dup.yml"
printf 'config: a.yml\n' > "$work/notlist.yml"
err "batch not a list" "a batch file is a non-empty list" "$e" $SMELT merge --batch "$work/notlist.yml"
printf -- '- config: %s\n  output: %s/x\n' "$work/ties.yml" "$e" > "$work/badkey.yml"
err "batch unknown key" "unknown key 'output' in a batch entry" "$e" $SMELT merge --batch "$work/badkey.yml"
printf -- '- config: %s/missing.yml\n  out: %s/x\n' "$work" "$e" > "$work/missing_batch.yml"
err "batch missing config" "missing_batch.yml: entry 1: $work/missing.yml" "$e" \
  $SMELT merge --batch "$work/missing_batch.yml"
printf 'merge_method: ties\nbase_model: %s/base\nmodels:\n  - model: %s/a\n    parameters:\n      weight: 1\nparameters:\n  lambda: [0, 1]\n' \
  "$work" "$work" > "$work/gradient.yml"
err "sweep over a gradient" "a sweep sets one value" "$e" \
  $SMELT merge "$work/gradient.yml" "$e" --sweep lambda=1,2
sed 's/^      weight: 0.6$/      weight: 0.6\n      lambda: 2/' "$work/ties.yml" > "$work/lambda_model.yml"
err "sweep of a value set per model" "the config sets 'lambda' here too" "$e" \
  $SMELT merge "$work/lambda_model.yml" "$e" --sweep lambda=1,2
err "sweep with batch" "--sweep and --batch do not go together" "$e" \
  $SMELT merge --batch "$work/ok.yml" --sweep lambda=1,2
$SMELT merge --batch "$work/ok.yml" -q && same_dir "batch of one config twice" "$e/x" "$e/y"

finish
