#!/usr/bin/env bash
# smelt synth with explicit (grouped-query) shapes, and such models merged with a method that
# has statistics passes: resident tensors (read once) and streamed ones (read per pass) give the
# same bytes, and `smelt plan` says which is which.
. "$(dirname "$0")/lib.sh"

shape=(--hidden 256 --intermediate 704 --heads 8 --kv-heads 2 --vocab 3000 --layers 2)
$SMELT synth "$work/base" --size 4M --seed 1 "${shape[@]}"
$SMELT synth "$work/a" --size 4M --base-seed 1 --seed 2 "${shape[@]}"
$SMELT synth "$work/b" --size 4M --base-seed 1 --seed 3 "${shape[@]}"

$SMELT inspect "$work/base" --json > "$work/inspect.json"
if python3 - "$work/inspect.json" "$work/base/config.json" <<'PY'
import json, sys
tensors = {t["name"]: t["shape"] for t in json.load(open(sys.argv[1]))["tensors"]}
cfg = json.load(open(sys.argv[2]))
want = {"model.embed_tokens.weight": [3000, 256], "lm_head.weight": [3000, 256],
        "model.layers.1.self_attn.q_proj.weight": [256, 256],
        "model.layers.1.self_attn.k_proj.weight": [64, 256],   # 2 kv heads of 256/8
        "model.layers.1.self_attn.v_proj.weight": [64, 256],
        "model.layers.0.mlp.down_proj.weight": [256, 704]}
for name, shape in want.items():
    assert tensors[name] == shape, (name, tensors[name], shape)
assert len(tensors) == 2 * 9 + 3, len(tensors)
assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"],
        cfg["num_key_value_heads"], cfg["vocab_size"]) == (256, 704, 8, 2, 3000), cfg
PY
then pass "synth: grouped-query shapes and config.json"; else fail "synth: shapes"; fi

cat > "$work/ties.yml" <<EOF2
merge_method: ties
base_model: $work/base
models:
  - model: $work/a
    parameters: {weight: 0.6, density: 0.3}
  - model: $work/b
    parameters: {weight: 0.4, density: 0.7}
EOF2
# 2400Ki: the 768 000-element embedding and lm_head do not fit beside the read-ahead; the
# layers do.
small=(--max-memory 2400Ki --threads 2)
$SMELT plan "$work/ties.yml" "${small[@]}" > "$work/plan-small.txt"
$SMELT plan "$work/ties.yml" > "$work/plan-big.txt"
if grep -q '^  model.embed_tokens.weight .*, streamed, read 2x (+1 if its sample misses)$' "$work/plan-small.txt" &&
   grep -q '^  model.layers.0.self_attn.k_proj.weight .*, resident, read 1x$' "$work/plan-small.txt" &&
   ! grep -q streamed "$work/plan-big.txt" &&
   grep -q '^read: .*(1.00 x the input' "$work/plan-big.txt"; then
  pass "plan: streamed and resident tensors, one read at the default budget"
else
  fail "plan: residency: $(grep -E 'embed|k_proj|^read' "$work/plan-small.txt" "$work/plan-big.txt")"
fi
$SMELT merge -q "$work/ties.yml" "$work/out-small" "${small[@]}"
$SMELT merge -q "$work/ties.yml" "$work/out-big"
SMELT_IO=pread $SMELT merge -q "$work/ties.yml" "$work/out-pread" -j 1
if cmp -s "$work/out-small/model.safetensors" "$work/out-big/model.safetensors" &&
   cmp -s "$work/out-big/model.safetensors" "$work/out-pread/model.safetensors"; then
  pass "ties: streamed, resident and pread/1-thread merges are byte-identical"
else
  fail "ties: outputs differ between budgets or I/O paths"
fi

expect_error "synth: --heads needs --hidden" "need --hidden" \
  $SMELT synth "$work/x" --size 1M --heads 4
expect_error "synth: hidden not a multiple of heads" "multiple of heads" \
  $SMELT synth "$work/y" --size 1M --hidden 100 --heads 8
expect_error "synth: heads not a multiple of kv-heads" "heads of kv-heads" \
  $SMELT synth "$work/z" --size 1M --hidden 256 --heads 8 --kv-heads 3
finish
