# `smelt lora apply` with broken adapters: each rule of src/format/lora.c gives a non-zero exit,
# its own message on stderr, and no output; plus a Conv1D (fan_in_fan_out) adapter checked bit
# for bit against tests/tools/lora_ref.py, the same with the scalar kernels on one thread, and
# DoRA / alpha_pattern / BF16 factors / modules_to_save on a synthetic Llama base.
source "$(dirname "$0")/lib.sh"

numpy_python # lora_ref.py needs numpy
REF="${SMELT_SOURCE_DIR:-$here/../..}/tests/tools/lora_ref.py"

B=$work/base
$SMELT synth "$B" --size 2M --layers 2 --seed 1 >/dev/null
P=base_model.model.model.layers.0.self_attn # the saved key prefix of layer 0's attention

# adapter NAME [make-adapter options]: $work/ad/NAME, a q_proj/v_proj adapter of the base.
adapter() {
  local name=$1; shift
  "$PY" "$REF" make-adapter "$work/ad/$name" --base "$B" "$@"
}

# out_absent_or_empty DIR
out_absent_or_empty() {
  no_model_output "$1"
  if [ -d "$1" ] && [ -n "$(ls -A "$1")" ]; then fail "$1 is not empty after a failure: $(ls -A "$1")"; fi
}

# bad NAME PHRASE [MORE_PHRASES...] -- ADAPTER_DIR: lora apply fails with every phrase.
bad() {
  local name=$1 phrases=() out rc=0; shift
  while [ "$1" != "--" ]; do phrases+=("$1"); shift; done; shift
  local ad=$1
  rm -rf "$work/out"
  out=$(timeout 120 "$SMELT" lora apply -q "$B" "$ad" "$work/out" 2>&1) || rc=$?
  if [ "$rc" -eq 0 ]; then fail "$name: exit 0, expected '${phrases[0]}'"
  elif [ "$rc" -ge 124 ]; then fail "$name: exit $rc (crash or hang): $out"
  else
    local ok=1 ph
    for ph in "${phrases[@]}"; do
      if ! grep -qF -- "$ph" <<<"$out"; then fail "$name: message lacks '$ph': $out"; ok=0; break; fi
    done
    [ "$ok" -eq 1 ] && pass "$name: exit $rc: $(head -1 <<<"$out")"
  fi
  out_absent_or_empty "$work/out"
}

# ---- the adapter against its base ----
adapter shape --add "$P.q_proj.lora_B.weight=F32:193,4"
bad "base shape mismatch" "module 'model.layers.0.self_attn.q_proj'" "needs a base weight of shape [193, 192]" \
  "has [192, 192]" -- "$work/ad/shape"
adapter conv_shape --modules gate_proj --add "base_model.model.model.layers.1.mlp.gate_proj.lora_A.weight=F32:4,100"
bad "base shape mismatch (neither way round)" "module 'model.layers.1.mlp.gate_proj'" "or its transpose" \
  "has [576, 192]" -- "$work/ad/conv_shape"
adapter missing_module --add "$P.zz_proj.lora_A.weight=F32:4,192" --add "$P.zz_proj.lora_B.weight=F32:192,4"
bad "targeted module missing from the base" \
  "the adapter targets module 'model.layers.0.self_attn.zz_proj', but the base" \
  "has no tensor 'model.layers.0.self_attn.zz_proj.weight'" -- "$work/ad/missing_module"
adapter mts_missing --add "base_model.model.model.layers.0.zz.weight=BF16:192"
bad "modules_to_save tensor missing from the base" \
  "stores tensor 'model.layers.0.zz.weight' whole (modules_to_save), but the base" -- "$work/ad/mts_missing"
adapter mts_shape --add "base_model.model.model.norm.weight=BF16:191"
bad "modules_to_save tensor of the wrong shape" \
  "tensor 'model.norm.weight' has shape [191] in the adapter but [192] in the base" -- "$work/ad/mts_shape"

# ---- pairing and ranks ----
adapter a_only --drop 'layers\.0\.self_attn\.q_proj\.lora_B'
bad "lora_A without lora_B" "module 'model.layers.0.self_attn.q_proj' has lora_A but no lora_B" -- "$work/ad/a_only"
adapter b_only --drop 'layers\.1\.self_attn\.v_proj\.lora_A'
bad "lora_B without lora_A" "module 'model.layers.1.self_attn.v_proj' has lora_B but no lora_A" -- "$work/ad/b_only"
adapter rank_ab --add "$P.q_proj.lora_B.weight=F32:192,5"
bad "A/B rank disagreement" "lora_A has rank 4 (shape [4, 192]) but lora_B rank 5 (shape [192, 5])" \
  -- "$work/ad/rank_ab"
adapter rank_cfg --set r=8
bad "file rank vs config r" "module 'model.layers.0.self_attn.q_proj' has rank 4 in the file" \
  "gives it rank 8" -- "$work/ad/rank_cfg"
adapter rank_pat --set 'rank_pattern={"v_proj": 6, "q_proj": 4}'
bad "file rank vs rank_pattern" "module 'model.layers.0.self_attn.v_proj' has rank 4 in the file" \
  "gives it rank 6" -- "$work/ad/rank_pat"
adapter rank0 --add "$P.q_proj.lora_A.weight=F32:0,192" --add "$P.q_proj.lora_B.weight=F32:192,0"
bad "zero rank" "module 'model.layers.0.self_attn.q_proj' has rank 0" -- "$work/ad/rank0"
adapter mixed --drop 'layers\.0\.self_attn\.q_proj\.lora_B' --add "$P.q_proj.lora_embedding_B=F32:192,4"
bad "lora_A/B mixed with lora_embedding" "mixes lora_A/lora_B with lora_embedding_A/B" -- "$work/ad/mixed"
adapter twice --add "model.layers.0.self_attn.q_proj.lora_A.weight=F32:4,192"
bad "a factor stored with and without the prefix" "module 'model.layers.0.self_attn.q_proj' has two lora_A tensors" \
  -- "$work/ad/twice"
adapter whole_and_lora --add "$P.q_proj.weight=BF16:192,192"
bad "a weight both whole and adapted" \
  "tensor 'model.layers.0.self_attn.q_proj.weight' is both stored whole and adapted" -- "$work/ad/whole_and_lora"

# ---- adapter_config.json ----
adapter not_json --config-text '{"peft_type": "LORA", "r": 4,'
bad "adapter_config.json not JSON" "adapter_config.json: not valid JSON" -- "$work/ad/not_json"
adapter not_object --config-text '[{"peft_type": "LORA"}]'
bad "adapter_config.json not an object" "adapter_config.json: not a JSON object" -- "$work/ad/not_object"
adapter r_float --set r=4.5
bad "r not an integer" '"r" must be an integer' -- "$work/ad/r_float"
adapter r_string --set 'r="4"'
bad "r a string" '"r" must be an integer' -- "$work/ad/r_string"
adapter loha --set 'peft_type="LOHA"'
bad "peft_type LOHA" '"peft_type" is "LOHA"; smelt applies LoRA adapters only' -- "$work/ad/loha"
adapter ia3 --set 'peft_type="IA3"'
bad "peft_type IA3" '"peft_type" is "IA3"; smelt applies LoRA adapters only' -- "$work/ad/ia3"
adapter lora_bias --set lora_bias=true
bad "lora_bias true" '"lora_bias": true is not supported' -- "$work/ad/lora_bias"
adapter bias_tensor --add "$P.q_proj.lora_B.bias=F32:192"
bad "a lora_B.bias tensor" "is a LoRA bias (lora_bias adapters are not supported)" -- "$work/ad/bias_tensor"
adapter lora_c --add "$P.q_proj.lora_C.weight=F32:4,4"
bad "an unknown lora_ tensor" "is a LoRA tensor of a kind smelt does not know" -- "$work/ad/lora_c"
adapter bad_regex --set 'alpha_pattern={"q_proj(": 2}'
bad "alpha_pattern not a regular expression" 'alpha_pattern: "q_proj(" is not a regular expression' \
  -- "$work/ad/bad_regex"

# ---- DoRA ----
adapter dora_nomag --set use_dora=true
bad "use_dora without magnitude vectors" "has no lora_magnitude_vector, but" '"use_dora": true' \
  -- "$work/ad/dora_nomag"
adapter mag_nodora --dora --set use_dora=false
bad "a magnitude vector without use_dora" "is a DoRA magnitude vector, but" 'does not set "use_dora": true' \
  -- "$work/ad/mag_nodora"
adapter mag_len --dora --add "$P.q_proj.lora_magnitude_vector=F32:191"
bad "a magnitude of the wrong length" "lora_magnitude_vector has 191 entries, but the weight has 192 output features" \
  -- "$work/ad/mag_len"
adapter mag_only --dora --add "$P.k_proj.lora_magnitude_vector=F32:192"
bad "a magnitude-only module" "module 'model.layers.0.self_attn.k_proj' has a lora_magnitude_vector but no lora_A or lora_B" \
  -- "$work/ad/mag_only"
adapter mag_2d --dora --add "$P.q_proj.lora_magnitude_vector=F32:192,1"
bad "a 2-D magnitude vector" "has 2 dimensions; a DoRA magnitude vector has 1" -- "$work/ad/mag_2d"
# A NaN magnitude passes every check on opening: the engine finds it mid-merge.
adapter mag_nan --dora --add "$P.v_proj.lora_magnitude_vector=F32:192@nan"
bad "a NaN magnitude (found by the engine)" "DoRA's rescaling of output feature 0 is not finite" -- "$work/ad/mag_nan"

# ---- the weights file ----
adapter dims3 --add "$P.q_proj.lora_A.weight=F32:4,192,1"
bad "an adapter tensor with 3 dimensions" "has 3 dimensions; LoRA factors have 2" -- "$work/ad/dims3"
adapter i32 --factor-dtype I32
bad "I32 LoRA factors" "has dtype I32; LoRA factors must be F32, F16 or BF16" -- "$work/ad/i32"
adapter i8 --factor-dtype I8
bad "I8 LoRA factors" "has dtype I8; LoRA factors must be F32, F16 or BF16" -- "$work/ad/i8"
adapter no_config --no-config
bad "missing adapter_config.json" "no adapter_config.json here: a LoRA adapter needs its PEFT config" \
  -- "$work/ad/no_config"
bad "a lone .safetensors without adapter_config.json beside it" "no adapter_config.json here" \
  -- "$work/ad/no_config/adapter_model.safetensors"
adapter bin_only --bin-only
bad "adapter_model.bin only" "the adapter is a PyTorch pickle (adapter_model.bin)" -- "$work/ad/bin_only"
adapter empty --drop .
bad "empty adapter" "the adapter holds no tensors" -- "$work/ad/empty"
bad "no such adapter" "no such adapter" -- "$work/ad/nowhere"

# ---- the same rule through a merge config's base+adapter reference ----
printf 'merge_method: linear\nmodels:\n  - model: %s+%s\n    parameters: {weight: 1}\n' \
  "$B" "$work/ad/rank_cfg" > "$work/lora.yml"
rm -rf "$work/out"
expect_error "merge with base+adapter (rank vs r)" "has rank 4 in the file, but" \
  $SMELT merge -q "$work/lora.yml" "$work/out"
out_absent_or_empty "$work/out"

# ---- positive: bit for bit against lora_ref.py ----
# ref NAME BASE ADAPTER OUT: lora_ref.py agrees with smelt's output.
ref() {
  local name=$1 msg rc=0; shift
  msg=$("$PY" "$REF" "$@" 2>&1) || rc=$?
  if [ "$rc" -eq 0 ]; then pass "$name: $(tail -1 <<<"$msg")"; else fail "$name: $msg"; fi
}
"$PY" "$REF" make-conv1d "$work/c"
if $SMELT lora apply -q "$work/c/base" "$work/c/adapter" "$work/c/out"; then
  ref "Conv1D fan_in_fan_out adapter" "$work/c/base" "$work/c/adapter" "$work/c/out"
  if SMELT_ISA=scalar $SMELT lora apply -q -j1 "$work/c/base" "$work/c/adapter" "$work/c/scalar"; then
    if cmp "$work/c/out/model.safetensors" "$work/c/scalar/model.safetensors"; then
      pass "Conv1D: SMELT_ISA=scalar -j1 writes the same bytes"
    else fail "Conv1D: SMELT_ISA=scalar -j1 writes other bytes"; fi
  else fail "Conv1D: SMELT_ISA=scalar -j1 lora apply failed"; fi
else
  fail "Conv1D: lora apply failed"
fi

# DoRA with BF16 factors, an alpha_pattern, rsLoRA, a plain [576, 192] and a [192, 576] module
# and a modules_to_save norm in F32 (rounded to the base's BF16) on the synthetic base.
adapter good --dora --factor-dtype BF16 --modules q_proj,v_proj,gate_proj,down_proj \
  --set 'alpha_pattern={"v_proj": 3, "layers\\.1\\..*gate_proj": 5}' --set use_rslora=true \
  --add "base_model.model.model.norm.weight=F32:192"
if $SMELT lora apply -q "$B" "$work/ad/good" "$work/good"; then
  ref "DoRA / BF16 factors / alpha_pattern / rsLoRA / modules_to_save" "$B" "$work/ad/good" "$work/good"
else fail "lora apply of the DoRA adapter failed"; fi
# fan_in_fan_out on square weights (transposed), and an embedding (always transposed).
E=base_model.model.model.embed_tokens
adapter good16 --factor-dtype F16 --r 8 --alpha 16 --set fan_in_fan_out=true \
  --add "$E.lora_embedding_A=F16:8,512" --add "$E.lora_embedding_B=F16:192,8"
if $SMELT lora apply -q "$B" "$work/ad/good16" "$work/good16"; then
  ref "F16 factors, fan_in_fan_out on square weights, an embedding" "$B" "$work/ad/good16" "$work/good16"
else fail "lora apply of the F16 adapter failed"; fi
# DoRA on transposed (fan_in_fan_out) square weights: norms by column.
adapter goodt --dora --set fan_in_fan_out=true
if $SMELT lora apply -q "$B" "$work/ad/goodt" "$work/goodt"; then
  ref "DoRA with fan_in_fan_out" "$B" "$work/ad/goodt" "$work/goodt"
else fail "lora apply of the transposed DoRA adapter failed"; fi
# An adapter of whole tensors only (no LoRA modules): the norm replaced, BF16 kept.
adapter mts_only --drop 'lora_' --add "base_model.model.model.norm.weight=BF16:192"
if $SMELT lora apply -q "$B" "$work/ad/mts_only" "$work/mts_only"; then
  ref "modules_to_save only" "$B" "$work/ad/mts_only" "$work/mts_only"
else fail "lora apply of the modules_to_save-only adapter failed"; fi

finish
