# Bad configs and inputs that do not fit together: a clear message naming the file, tensor and
# rule, a non-zero exit, and no output that looks complete.
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/base" --size 8M --seed 1 --shard-size 3M
$SMELT synth "$work/a" --size 8M --base-seed 1 --seed 2
$SMELT synth "$work/wide" --size 20M --seed 1

check() { # check NAME PHRASE CONFIG_TEXT [merge args]
  local name=$1 phrase=$2 text=$3; shift 3
  printf '%s\n' "$text" > "$work/cfg.yml"
  rm -rf "$work/out"
  expect_error "$name" "$phrase" $SMELT merge "$work/cfg.yml" "$work/out" "$@"
  no_model_output "$work/out"
}

B=$work/base A=$work/a
check "unknown method" "unknown merge_method 'frobnicate'" "merge_method: frobnicate
models: [{model: $B}]"
check "unknown top-level key" "modelz" "merge_method: linear
modelz: [{model: $B}]"
check "unknown parameter" "'densty' is not a parameter of method 'linear'" "merge_method: linear
models:
  - model: $B
    parameters: {weight: 1, densty: 0.5}"
check "missing weight" "required parameter 'weight'" "merge_method: linear
models:
  - model: $B
    parameters: {weight: 1}
  - model: $A"
check "weights sum to zero" "sum to 0" "merge_method: linear
models:
  - {model: $B, parameters: {weight: 1}}
  - {model: $A, parameters: {weight: -1}}"
check "string weight" "must be a number" "merge_method: linear
models:
  - {model: $B, parameters: {weight: heavy}}"
check "bad dtype" "dtype 'int4'" "merge_method: linear
dtype: int4
models:
  - {model: $B, parameters: {weight: 1}}"
check "shape mismatch" "has shape" "merge_method: linear
models:
  - {model: $B, parameters: {weight: 1}}
  - {model: $work/wide, parameters: {weight: 1}}"
# The first shard alone holds only some of the tensors.
first_shard=$(ls "$B"/model-00001-of-*.safetensors)
check "missing tensor" "is missing" "merge_method: linear
base_model: $B
models:
  - {model: $B, parameters: {weight: 1}}
  - {model: $first_shard, parameters: {weight: 1}}"
check "missing model dir" "$work/nowhere" "merge_method: linear
models:
  - {model: $work/nowhere, parameters: {weight: 1}}"
HF_HOME=$work/hf check "hub id not cached" "never downloads" "merge_method: linear
models:
  - {model: someorg/somemodel, parameters: {weight: 1}}"
check "budget too small" "raise --max-memory" "merge_method: linear
models:
  - {model: $B, parameters: {weight: 1}}
  - {model: $A, parameters: {weight: 1}}" --max-memory 64K
printf 'merge_method: linear\nmodels: [{model: %s, parameters: {weight: 1}}]\n' "$B" > "$work/ok.yml"
expect_error "output is an input" "contains the input file" $SMELT merge "$work/ok.yml" "$B" --overwrite
expect_error "bad size suffix" "unknown size suffix" $SMELT merge "$work/ok.yml" "$work/o2" --max-memory 12Q
expect_error "missing config" "nope.yml" $SMELT merge "$work/nope.yml" "$work/o3"
expect_error "no arguments" "merge takes CONFIG.yml and OUT_DIR" $SMELT merge
expect_error "unknown command" "unknown command 'merj'" $SMELT merj

# A read error mid-merge (an input truncated after planning is impossible to stage portably, so
# truncate a shard: its header no longer matches the file) leaves nothing that looks complete.
cp -r "$A" "$work/trunc"
shard=$(ls "$work/trunc"/model*.safetensors | head -1)
truncate -s -1000 "$shard"
check "truncated input" "$(basename "$shard")" "merge_method: linear
models:
  - {model: $B, parameters: {weight: 1}}
  - {model: $work/trunc, parameters: {weight: 1}}"
finish
