# mergekit configs run unchanged: the documentation-style examples in fixtures/ against
# generated 32-layer models, their resolved parameters read back from `smelt plan` and checked
# against values computed here, their tensors checked against the reference tools. Gradient
# and filter configs are checked layer by layer: the layer must be byte-identical to a merge
# with the scalar parameters the gradient gives there, and that merge is checked by reference.
source "$(dirname "$0")/lib.sh"
S=$SMELT
T=$SMELT_TEST_HELPERS
fixtures=$(dirname "$0")/fixtures

$S synth "$work/base" --size 3M --layers 32 --seed 1
for m in a:2 b:3 c:4; do
  $S synth "$work/${m%%:*}" --size 3M --layers 32 --base-seed 1 --seed "${m##*:}"
done

fixture() { # fixture NAME: the fixture with the model paths filled in, as $work/NAME.yml
  sed "s|@BASE@|$work/base|g; s|@A@|$work/a|g; s|@B@|$work/b|g; s|@C@|$work/c|g" \
    "$fixtures/$1.yml" > "$work/$1.yml"
}

# param PLAN TENSOR NAME: the value `smelt plan` resolved for NAME on TENSOR ("[a,b]" or "x").
param() {
  awk -v t="  $2 " -v n="$3=" 'index($0, t) == 1 { found = 1 }
    found && /^    parameters:/ { for (i = 1; i <= NF; i++) if (index($i, n) == 1) {
      print substr($i, length(n) + 1); exit } }' "$1"
}

# item LIST I: element I (0-based) of "[a,b,c]".
item() { tr -d '[]' <<<"$1" | cut -d, -f$(($2 + 1)); }

# grad T V0 V1 ...: mergekit's gradient at t, printed exactly (awk computes in double).
grad() {
  awk -v t="$1" -v list="${*:2}" 'BEGIN { n = split(list, g, " "); s = t * (n - 1);
    i0 = int(s); i1 = i0 + 1 < n - 1 ? i0 + 1 : n - 1; f = s - i0;
    printf "%.17g\n", (1 - f) * g[i0 + 1] + f * g[i1 + 1] }'
}

same_number() { # same_number WHAT GOT WANT
  if awk -v a="$2" -v b="$3" 'BEGIN { exit !(a + 0 == b + 0) }'; then pass "$1 = $2"
  else fail "$1: got '$2', want $3"; fi
}

merge() { # merge CONFIG OUT [flags]: a merge that must succeed
  local cfg=$1 out=$2; shift 2
  rm -rf "$out"
  $S merge "$cfg" "$out" -q "$@" || fail "merge of $(basename "$cfg") failed"
}

# --- linear ------------------------------------------------------------------------------
fixture linear
$S plan "$work/linear.yml" > "$work/linear.plan"
same_number "linear weight of b" "$(item "$(param "$work/linear.plan" model.layers.3.mlp.up_proj.weight weight)" 1)" 0.5
merge "$work/linear.yml" "$work/linear"
"$T/linear_ref" "$work/linear" 1.0:"$work/a" 0.5:"$work/b" && pass "linear: reference" || fail "linear: reference"
grep -q '"torch_dtype": "float16"' "$work/linear/config.json" && pass "linear: torch_dtype float16" \
  || fail "linear: torch_dtype"

# --- ties with gradients and filters -------------------------------------------------------
fixture ties
$S plan "$work/ties.yml" > "$work/ties.plan"
P=$work/ties.plan
# Inputs are the base, a, b, c: per-model lists have four entries.
t16=$(awk 'BEGIN { printf "%.17g", 16 / 31 }')
same_number "ties: a's density on layer 0" "$(item "$(param $P model.layers.0.self_attn.q_proj.weight density)" 1)" 1
same_number "ties: a's density on layer 16" "$(item "$(param $P model.layers.16.self_attn.q_proj.weight density)" 1)" "$(grad "$t16" 1 0.7 0.1)"
same_number "ties: a's density on layer 31" "$(item "$(param $P model.layers.31.mlp.up_proj.weight density)" 1)" 0.1
same_number "ties: b's weight on layer 16" "$(item "$(param $P model.layers.16.mlp.up_proj.weight weight)" 2)" "$(grad "$t16" 0 0.3 0.7 1)"
same_number "ties: c's weight on an mlp tensor" "$(item "$(param $P model.layers.16.mlp.down_proj.weight weight)" 3)" 0.5
same_number "ties: c's weight elsewhere" "$(item "$(param $P model.layers.16.self_attn.o_proj.weight weight)" 3)" 0
same_number "ties: lm_head is after the layers (t = 1): b's weight" "$(item "$(param $P lm_head.weight weight)" 2)" 1
same_number "ties: embeddings are before the layers (t = 0): b's weight" "$(item "$(param $P model.embed_tokens.weight weight)" 2)" 0
same_number "ties: normalize" "$(param $P lm_head.weight normalize)" 1
merge "$work/ties.yml" "$work/ties"
# Layer 31's mlp tensors: a(w 1, d 0.1), b(w 1, d 0.5), c(w 0.5, d 0.33).
printf 'models:\n  - model: %s\n  - {model: %s, parameters: {weight: 1, density: 0.1}}\n  - {model: %s, parameters: {weight: 1, density: 0.5}}\n  - {model: %s, parameters: {weight: 0.5, density: 0.33}}\nmerge_method: ties\nbase_model: %s\ndtype: float16\n' \
  "$work/base" "$work/a" "$work/b" "$work/c" "$work/base" > "$work/ties31.yml"
merge "$work/ties31.yml" "$work/ties31"
"$T/taskvec_ref" ties "$work/ties31" "$work/base" 1:0.1:"$work/a" 1:0.5:"$work/b" 0.5:0.33:"$work/c" \
  && pass "ties, layer 31's parameters: reference" || fail "ties, layer 31's parameters: reference"
"$T/layers_eq" "$work/ties" 31 1 "$work/ties31" 31 --only mlp && pass "ties: layer 31 mlp follows the gradients" \
  || fail "ties: layer 31 mlp"
# Layer 0's attention tensors: a(w 1, d 1), b(w 0, d 0.5), c(w 0, d 0.33).
printf 'models:\n  - model: %s\n  - {model: %s, parameters: {weight: 1, density: 1}}\n  - {model: %s, parameters: {weight: 0, density: 0.5}}\n  - {model: %s, parameters: {weight: 0, density: 0.33}}\nmerge_method: ties\nbase_model: %s\ndtype: float16\n' \
  "$work/base" "$work/a" "$work/b" "$work/c" "$work/base" > "$work/ties0.yml"
merge "$work/ties0.yml" "$work/ties0"
"$T/taskvec_ref" ties "$work/ties0" "$work/base" 1:1:"$work/a" 0:0.5:"$work/b" 0:0.33:"$work/c" \
  && pass "ties, layer 0's parameters: reference" || fail "ties, layer 0's parameters: reference"
"$T/layers_eq" "$work/ties" 0 1 "$work/ties0" 0 --only self_attn && pass "ties: layer 0 attention follows the gradients" \
  || fail "ties: layer 0 attention"

# --- slerp with per-module t gradients -----------------------------------------------------
fixture slerp
$S plan "$work/slerp.yml" > "$work/slerp.plan"
P=$work/slerp.plan
t8=$(awk 'BEGIN { printf "%.17g", 8 / 31 }')
attn_t=$(grad "$t8" 0 0.5 0.3 0.7 1)
mlp_t=$(grad "$t8" 1 0.5 0.7 0.3 0)
same_number "slerp: t of layer 8's attention" "$(param $P model.layers.8.self_attn.k_proj.weight t)" "$attn_t"
same_number "slerp: t of layer 8's mlp" "$(param $P model.layers.8.mlp.gate_proj.weight t)" "$mlp_t"
same_number "slerp: t of layer 8's norm (the fallback)" "$(param $P model.layers.8.input_layernorm.weight t)" 0.5
merge "$work/slerp.yml" "$work/slerp"
for part in attn:self_attn:$attn_t mlp:mlp:$mlp_t; do
  IFS=: read -r tag filter tv <<<"$part"
  printf 'slices:\n  - sources:\n      - {model: %s, layer_range: [0, 32]}\n      - {model: %s, layer_range: [0, 32]}\nmerge_method: slerp\nbase_model: %s\nparameters: {t: %s}\ndtype: bfloat16\n' \
    "$work/base" "$work/a" "$work/base" "$tv" > "$work/slerp_$tag.yml"
  merge "$work/slerp_$tag.yml" "$work/slerp_$tag"
  "$T/interp_ref" slerp "$work/slerp_$tag" --base "$work/base" -:"$work/a" t="$tv" \
    && pass "slerp t=$tv: reference" || fail "slerp t=$tv: reference"
  "$T/layers_eq" "$work/slerp" 8 1 "$work/slerp_$tag" 8 --only "$filter" \
    && pass "slerp: layer 8 $filter follows its gradient" || fail "slerp: layer 8 $filter"
done

# --- a 44-layer passthrough frankenmerge ---------------------------------------------------
fixture passthrough
$S plan "$work/passthrough.yml" > "$work/passthrough.plan"
grep -q "44 layers" "$work/passthrough.plan" && pass "passthrough: plan shows 44 layers" \
  || fail "passthrough: plan lacks '44 layers'"
merge "$work/passthrough.yml" "$work/franken"
"$T/layers_eq" "$work/franken" 0 22 "$work/a" 0 --same model.embed_tokens.weight \
  && pass "passthrough: layers 0-21 and the embeddings are a's" || fail "passthrough: first slice"
"$T/layers_eq" "$work/franken" 22 22 "$work/b" 10 --same model.norm.weight --same lm_head.weight \
  && pass "passthrough: layers 22-43, the final norm and lm_head are b's layers 10-31" \
  || fail "passthrough: second slice"
grep -q '"num_hidden_layers": 44' "$work/franken/config.json" && pass "passthrough: config.json has 44 layers" \
  || fail "passthrough: config.json layer count"
[ -z "$(grep -ao 'model\.layers\.44\.' "$work/franken"/model*.safetensors | head -1)" ] \
  && pass "passthrough: no layer 44" || fail "passthrough: a layer past 43"

# --- model_stock -------------------------------------------------------------------------
fixture model_stock
merge "$work/model_stock.yml" "$work/model_stock"
"$T/interp_ref" model_stock "$work/model_stock" --base "$work/base" -:"$work/a" -:"$work/b" -:"$work/c" \
  && pass "model_stock: reference" || fail "model_stock: reference"

# --- della ---------------------------------------------------------------------------------
fixture della
if $S plan "$work/della.yml" > "$work/della.plan" 2>"$work/della.err"; then
  same_number "della: b's epsilon" "$(item "$(param "$work/della.plan" model.layers.5.mlp.up_proj.weight epsilon)" 2)" 0.1
  merge "$work/della.yml" "$work/della"
  "$T/taskvec_ref" della "$work/della" "$work/base" 1:0.6:"$work/a" 0.7:0.5:"$work/b" epsilon=0.1 \
    && pass "della: reference" || fail "della: reference"
else
  fail "della: $(cat "$work/della.err")"
fi

# --- model card and output conventions ---------------------------------------------------
card=$work/ties/README.md
for want in "base_model:" "- $work/base" "- $work/a" "library_name: transformers" "- merge" "- smelt" \
            "merge_method: ties"; do
  grep -qF -- "$want" "$card" && pass "model card has '$want'" || fail "model card lacks '$want'"
done
[ -f "$work/ties/mergekit_config.yml" ] && pass "config saved" || fail "mergekit_config.yml missing"

# --- tokenizer_source, chat_template, flags ------------------------------------------------
echo '{"model": "tokenizer of b"}' > "$work/b/tokenizer.json"
linear2() { printf 'merge_method: linear\nbase_model: %s\nmodels:\n  - {model: %s, parameters: {weight: 1}}\n  - {model: %s, parameters: {weight: 1}}\n%s\n' \
  "$work/base" "$work/base" "$work/b" "$1" > "$work/tok.yml"; }
linear2 "tokenizer_source: $work/b"
merge "$work/tok.yml" "$work/tok_b"
cmp -s "$work/b/tokenizer.json" "$work/tok_b/tokenizer.json" && pass "tokenizer_source: a model's files" \
  || fail "tokenizer_source: b's tokenizer.json not copied"
linear2 "tokenizer_source: base"
merge "$work/tok.yml" "$work/tok_base"
[ ! -e "$work/tok_base/tokenizer.json" ] && pass "tokenizer_source: base" || fail "tokenizer_source base copied b's"
linear2 "chat_template: chatml"
merge "$work/tok.yml" "$work/chatml"
grep -q 'im_start' "$work/chatml/tokenizer_config.json" && pass "chat_template: chatml written" \
  || fail "chat_template chatml"
linear2 'chat_template: "{% for m in messages %}{{ m.content }}{% endfor %}"'
merge "$work/tok.yml" "$work/jinja"
grep -q 'for m in messages' "$work/jinja/tokenizer_config.json" && pass "chat_template: literal Jinja" \
  || fail "chat_template literal"
linear2 "chat_template: chatmel"
expect_error "unknown chat template" "chat_template 'chatmel'" $S merge "$work/tok.yml" "$work/x"
no_model_output "$work/x"
linear2 "tokenizer_source: union"
expect_error "tokenizer union" "union is not supported yet" $S merge "$work/tok.yml" "$work/x"
no_model_output "$work/x"
linear2 ""
merge "$work/tok.yml" "$work/flags" --no-copy-tokenizer --no-write-model-card --cuda --lazy-unpickle \
  --low-cpu-memory --trust-remote-code --transformers-cache /nonexistent
[ ! -e "$work/flags/tokenizer_config.json" ] && [ ! -e "$work/flags/README.md" ] && \
  [ -e "$work/flags/mergekit_config.yml" ] && pass "--no-copy-tokenizer, --no-write-model-card" \
  || fail "flags: $(ls "$work/flags")"
out=$($S merge "$work/tok.yml" "$work/flags2" --cuda -q 2>&1) && grep -q "cuda.*ignored" <<<"$out" \
  && pass "--cuda is accepted with a notice" || fail "--cuda: $out"
# Different architectures: refused unless --allow-crimes.
cp -r "$work/b" "$work/b_other"
sed -i 's/LlamaForCausalLM/MistralForCausalLM/' "$work/b_other/config.json"
printf 'merge_method: linear\nmodels:\n  - {model: %s, parameters: {weight: 1}}\n  - {model: %s, parameters: {weight: 1}}\n' \
  "$work/a" "$work/b_other" > "$work/crimes.yml"
expect_error "different architectures" "--allow-crimes" $S merge "$work/crimes.yml" "$work/x"
no_model_output "$work/x"
merge "$work/crimes.yml" "$work/crimes" --allow-crimes && pass "--allow-crimes"

# --- slices: errors ------------------------------------------------------------------------
printf 'slices:\n  - sources:\n      - {model: %s, layer_range: [0, 8]}\n      - {model: %s, layer_range: [0, 9]}\nmerge_method: linear\nparameters: {weight: 1}\n' \
  "$work/a" "$work/b" > "$work/bad.yml"
expect_error "uneven slice" "every source must span the same number of layers" $S merge "$work/bad.yml" "$work/x"
printf 'slices:\n  - sources:\n      - {model: %s, layer_range: [20, 40]}\nmerge_method: passthrough\n' "$work/a" > "$work/bad.yml"
expect_error "range past the model" "goes past the 32 layers" $S merge "$work/bad.yml" "$work/x"
printf 'slices:\n  - sources:\n      - {model: %s, layer_range: [0, 4]}\nmerge_method: ties\nbase_model: %s\nparameters: {weight: 1}\n' \
  "$work/a" "$work/base" > "$work/bad.yml"
expect_error "base outside the slice" "is not one of the slice's sources" $S merge "$work/bad.yml" "$work/x"
no_model_output "$work/x"

# --- tied embeddings and extra vocabulary --------------------------------------------------
$S synth "$work/tied_base" --size 2M --seed 5 --tied
$S synth "$work/tied_ft" --size 2M --base-seed 5 --seed 6 --tied
printf 'merge_method: linear\nmodels:\n  - {model: %s, parameters: {weight: 1}}\n  - {model: %s, parameters: {weight: 1}}\n' \
  "$work/tied_base" "$work/tied_ft" > "$work/tied.yml"
merge "$work/tied.yml" "$work/tied"
"$T/linear_ref" "$work/tied" 1:"$work/tied_base" 1:"$work/tied_ft" && pass "tied model without lm_head" \
  || fail "tied model"
$S synth "$work/big_vocab" --size 3M --layers 32 --base-seed 1 --seed 7 --vocab 4000
printf 'merge_method: linear\nbase_model: %s\nmodels:\n  - {model: %s, parameters: {weight: 1}}\n  - {model: %s, parameters: {weight: 1}}\n' \
  "$work/base" "$work/base" "$work/big_vocab" > "$work/vocab.yml"
rm -rf "$work/vocab"
out=$($S merge "$work/vocab.yml" "$work/vocab" 2>&1) && grep -q "has 4000 rows; using the first" <<<"$out" \
  && pass "extra vocabulary rows are cut with a notice" || fail "vocab: $out"
rows=$(grep -o '"vocab_size": [0-9]*' "$work/base/config.json" | grep -o '[0-9]*$')
grep -aq "\"model.embed_tokens.weight\":{\"dtype\":\"BF16\",\"shape\":\[$rows," "$work/vocab/model.safetensors" \
  && pass "embeddings keep the base's $rows rows" || fail "embedding rows"
finish
