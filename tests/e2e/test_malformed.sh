# Every safetensors rule, broken one at a time, through the CLI: a non-zero exit, a message that
# names the file and the rule, and no output that looks complete.
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/good" --size 4M --seed 1

phrase_for() {
  case $1 in
    short) echo "shorter than the 8-byte header length" ;;
    header-too-large) echo "larger than the limit of 100000000 bytes" ;;
    header-past-eof) echo "runs past the end of the file" ;;
    not-utf8) echo "is not valid UTF-8" ;;
    not-json) echo "is not valid JSON" ;;
    not-object) echo "the top level must be a JSON object" ;;
    duplicate-key) echo "duplicate key" ;;
    metadata-not-string) echo "metadata values must be strings" ;;
    metadata-tensor) echo "'__metadata__' is reserved" ;;
    unknown-dtype) echo "unknown dtype 'F12'" ;;
    bad-shape) echo "dimensions must be non-negative integers" ;;
    bad-offsets) echo "exactly 2 non-negative integers" ;;
    unknown-field) echo "unknown key 'foo'" ;;
    end-before-begin) echo "end before they begin" ;;
    numel-overflow) echo "element count overflow" ;;
    size-mismatch) echo "span 8 bytes but shape" ;;
    hole) echo "leave a hole" ;;
    overlap) echo "overlap the previous tensor" ;;
    data-past-eof) echo "run past the end of the file" ;;
    trailing-bytes) echo "bytes after the end of the last tensor" ;;
    *) echo "no phrase for rule $1" >&2; exit 1 ;;
  esac
}

rules=$("$SMELT_TEST_HELPERS/make_bad_st" list)
[ "$(wc -l <<<"$rules")" -ge 20 ] || fail "make_bad_st lists too few rules"
for rule in $rules; do
  bad=$work/bad-$rule.safetensors
  "$SMELT_TEST_HELPERS/make_bad_st" "$rule" "$bad"
  printf 'merge_method: linear\nmodels:\n  - {model: %s, parameters: {weight: 1}}\n  - {model: %s, parameters: {weight: 1}}\n' \
    "$work/good" "$bad" > "$work/cfg.yml"
  rm -rf "$work/out"
  expect_error "rule $rule" "$(phrase_for "$rule")" $SMELT merge "$work/cfg.yml" "$work/out"
  expect_error "rule $rule names the file" "bad-$rule.safetensors" $SMELT merge "$work/cfg.yml" "$work/out"
  no_model_output "$work/out"
done

# The same file as a shard of an indexed model is caught too, with the shard named.
mkdir -p "$work/sharded"
"$SMELT_TEST_HELPERS/make_bad_st" overlap "$work/sharded/model-00001-of-00001.safetensors"
printf '{"metadata": {}, "weight_map": {"w": "model-00001-of-00001.safetensors", "v": "model-00001-of-00001.safetensors"}}\n' \
  > "$work/sharded/model.safetensors.index.json"
printf 'merge_method: linear\nmodels:\n  - {model: %s, parameters: {weight: 1}}\n' "$work/sharded" > "$work/cfg.yml"
rm -rf "$work/out"
expect_error "bad shard" "model-00001-of-00001.safetensors" $SMELT merge "$work/cfg.yml" "$work/out"
no_model_output "$work/out"

finish
