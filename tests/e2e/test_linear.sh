# A linear merge of three bf16 models, end to end through the CLI, checked element by element
# against an independent f32 computation; the output directory is a complete HF model.
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/base" --size 24M --seed 1 --shard-size 7M
$SMELT synth "$work/a" --size 24M --base-seed 1 --seed 2 --shard-size 7M
$SMELT synth "$work/b" --size 24M --base-seed 1 --seed 3 --shard-size 7M
linear_config "$work/linear.yml" "$work/base" 0.5 "$work/base" 0.3 "$work/a" 0.2 "$work/b"

$SMELT merge "$work/linear.yml" "$work/out" --out-shard-size 10M --max-memory 16M
"$SMELT_TEST_HELPERS/linear_ref" "$work/out" 0.5:"$work/base" 0.3:"$work/a" 0.2:"$work/b" \
  && pass "bf16 linear merge matches the reference" || fail "bf16 linear merge differs from the reference"

for f in config.json tokenizer_config.json generation_config.json README.md mergekit_config.yml \
         model.safetensors.index.json model-00001-of-00003.safetensors; do
  [ -s "$work/out/$f" ] && pass "output has $f" || fail "output lacks $f"
done
grep -q '"torch_dtype": "bfloat16"' "$work/out/config.json" && pass "config.json torch_dtype" \
  || fail "config.json torch_dtype: $(grep torch_dtype "$work/out/config.json")"
grep -q "^- smelt" "$work/out/README.md" && grep -q "merge_method: linear" "$work/out/README.md" \
  && pass "model card has tags and config" || fail "model card incomplete"
ls "$work/out" | grep -q smelt-tmp && fail "temporary files left" || pass "no temporary files"

# Unnormalized weights, float32 output, and a single-file output.
cat > "$work/f32.yml" <<YAML
merge_method: linear
models:
  - model: $work/a
    parameters: {weight: 0.7}
  - model: $work/b
    parameters: {weight: 0.6}
parameters:
  normalize: false
out_dtype: float32
YAML
$SMELT merge "$work/f32.yml" "$work/out32" -q
[ -f "$work/out32/model.safetensors" ] && [ ! -e "$work/out32/model.safetensors.index.json" ] \
  && pass "single-file output" || fail "expected a single model.safetensors"
"$SMELT_TEST_HELPERS/linear_ref" "$work/out32" 0.7:"$work/a" 0.6:"$work/b" --no-normalize \
  && pass "f32 unnormalized merge matches" || fail "f32 unnormalized merge differs"
grep -q '"torch_dtype": "float32"' "$work/out32/config.json" && pass "torch_dtype float32" \
  || fail "torch_dtype not float32"

# float16 output from bf16 inputs (mixed casts).
sed 's/out_dtype: float32/out_dtype: float16/' "$work/f32.yml" > "$work/f16.yml"
$SMELT merge "$work/f16.yml" "$work/out16" -q
"$SMELT_TEST_HELPERS/linear_ref" "$work/out16" 0.7:"$work/a" 0.6:"$work/b" --no-normalize \
  && pass "f16 output matches" || fail "f16 output differs"

# Mixed input dtypes: an f32 model and an f16 model of the same shape (same parameter count).
$SMELT synth "$work/a32" --size 48M --dtype float32 --seed 1
$SMELT synth "$work/b16" --size 24M --dtype float16 --seed 1
linear_config "$work/mixed.yml" "$work/a32" 1 "$work/a32" 3 "$work/b16"
$SMELT merge "$work/mixed.yml" "$work/outmixed" -q 2>"$work/mixed.err" \
  && "$SMELT_TEST_HELPERS/linear_ref" "$work/outmixed" 1:"$work/a32" 3:"$work/b16" \
  && pass "mixed f32/f16 inputs" || fail "mixed dtypes: $(cat "$work/mixed.err")"

# --overwrite replaces an earlier merge and removes its stale shards.
expect_error "existing output" "already holds a model" $SMELT merge "$work/linear.yml" "$work/out"
$SMELT merge "$work/f32.yml" "$work/out" --overwrite -q
[ ! -e "$work/out/model.safetensors.index.json" ] && [ -f "$work/out/model.safetensors" ] \
  && ! compgen -G "$work/out/model-*" >/dev/null && pass "--overwrite removed stale shards" \
  || fail "--overwrite left: $(ls "$work/out")"
finish
