# Layer indices read off tensor names: every index past the bound (any number of digits, past
# 2^31, past 2^32 where it used to wrap to layer 0) is refused by plan, merge and inspect with a
# message naming the file, the tensor and the bound; indices inside it plan in time linear in
# the number of tensors, not in the largest index.
source "$(dirname "$0")/lib.sh"

# st_model DIR NAME...: DIR/model.safetensors with one F32 [2] tensor per NAME.
st_model() {
  mkdir -p "$1"
  python3 - "$@" <<'PY'
import json, struct, sys
d, names = sys.argv[1], sys.argv[2:]
h = {n: {"dtype": "F32", "shape": [2], "data_offsets": [8 * i, 8 * i + 8]} for i, n in enumerate(names)}
b = json.dumps(h).encode(); b += b" " * (-len(b) % 8)
with open(d + "/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(b)) + b + struct.pack("<f", 1.0) * (2 * len(names)))
PY
}

two_model_config() { # two_model_config FILE A B
  printf 'merge_method: linear\nmodels:\n  - {model: %s, parameters: {weight: 0.5}}\n  - {model: %s, parameters: {weight: 0.5}}\n' "$2" "$3" > "$1"
}

n=0
for idx in 1000000 2147483647 2147483648 4294967296 4294967297 9223372036854775807 \
           9223372036854775808 99999999999999999999 1$(printf '0%.0s' $(seq 60)); do
  for pattern in "model.layers.%s.mlp.weight" "transformer.h.%s.attn.weight" "blk.%s.ffn.weight" \
                 "model.blocks.%s.weight"; do
    n=$((n + 1)); d=$work/m$n
    # shellcheck disable=SC2059
    name=$(printf "$pattern" "$idx")
    first=$(printf "$pattern" 0)
    st_model "$d" "model.embed_tokens.weight" "$first" "$name"
    two_model_config "$work/c$n.yml" "$d" "$d"
    shown=${idx:0:40}
    expect_error "plan, index $idx ($pattern)" \
      "$d/model.safetensors: tensor '$name': layer index $shown" timeout 30 $SMELT plan "$work/c$n.yml"
    expect_error "plan names the bound, index $idx" "limit of 1000000 layers" \
      timeout 30 $SMELT plan "$work/c$n.yml"
    rm -rf "$work/out"
    expect_error "merge, index $idx" "layer index $shown" timeout 30 $SMELT merge "$work/c$n.yml" "$work/out"
    no_model_output "$work/out"
    expect_error "inspect, index $idx" "tensor '$name': layer index $shown" timeout 30 $SMELT inspect "$d"
    expect_error "inspect --json, index $idx" "limit of 1000000" timeout 30 $SMELT inspect "$d" --json
  done
done

# The largest index allowed, alone and after 3000 other layer tensors: plans fast (the planner
# used to scan every tensor once per layer up to the largest index), keeps its number.
names=()
for i in $(seq 0 2999); do names+=("model.layers.$((997000 + i)).w"); done
st_model "$work/far" "model.embed_tokens.weight" "model.layers.999999.mlp.weight" "${names[@]}"
two_model_config "$work/far.yml" "$work/far" "$work/far"
start=$(date +%s)
if timeout 60 $SMELT plan "$work/far.yml" > "$work/far.plan" 2>&1; then
  secs=$(( $(date +%s) - start ))
  grep -q "model.layers.999999.mlp.weight" "$work/far.plan" && grep -q "model.layers.997000.w" "$work/far.plan" \
    && pass "layer 999999 and 3000 far layers plan in ${secs}s" || fail "far layers: names lost: $(head "$work/far.plan")"
else
  fail "far layers: plan failed or took over 60s: $(tail -3 "$work/far.plan")"
fi
report=$($SMELT inspect "$work/far")
grep -q "^layers: 1000000$" <<<"$report" && pass "inspect counts 1000000 layers" \
  || fail "inspect of the far model: $(grep layers: <<<"$report")"
rm -rf "$work/out"
timeout 60 $SMELT merge "$work/far.yml" "$work/out" -q && [ -s "$work/out/model.safetensors" ] \
  && pass "far layers merge" || fail "far layers: merge failed"

# Found by fuzz_plan: empty slices over a model of layer tensors only planned zero tensors
# (and sorted a NULL array); now a clear error, and no output.
st_model "$work/onlylayers" "model.layers.0.w" "model.layers.1.w"
printf 'merge_method: linear\nslices:\n  - sources:\n      - {model: %s, layer_range: [0, 0], parameters: {weight: 1.0}}\n' \
  "$work/onlylayers" > "$work/empty.yml"
expect_error "empty slices" "the merge would write no tensors" $SMELT plan "$work/empty.yml"
rm -rf "$work/out"
expect_error "empty slices, merge" "the merge would write no tensors" $SMELT merge "$work/empty.yml" "$work/out"
no_model_output "$work/out"
finish
