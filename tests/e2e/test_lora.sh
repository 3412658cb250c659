# LoRA adapters end to end: `smelt lora apply` and 'base+adapter' references, checked element
# by element against tests/tools/lora_ref.py (numpy, PEFT's formulas computed from the files)
# for bf16, f16 and f32 bases, rsLoRA, rank and alpha patterns, embeddings, lm_head,
# modules_to_save and DoRA; byte-identical outputs across threads, budgets and SIMD levels; a
# ties merge of base+adapter references equal to the ties merge of the applied models; the
# reference forms (directory, lone file, hub id); plan's account; peak RSS within the budget;
# and synth --lora's own errors.
source "$(dirname "$0")/lib.sh"
numpy_python
REF="$PY $here/../tools/lora_ref.py"

# Two-layer models of ~1 M parameters: every matrix spans several 64 KiB tiles.
synth_base() { $SMELT synth "$work/$1" --size 2M --layers 2 --seed 1 "${@:2}"; }
synth_base base16 --dtype bfloat16
synth_base base_f16 --dtype float16
synth_base base_f32 --dtype float32 --shard-size 1M

# apply_check NAME BASE ADAPTER-SYNTH-ARGS...: writes adapter NAME for BASE (same shapes),
# applies it, verifies the output and compares it with the reference.
apply_check() {
  local name=$1 base=$2 dtype=$3; shift 3
  $SMELT synth "$work/ad-$name" --size 2M --layers 2 --dtype "$dtype" --seed 7 "$@" \
    || { fail "$name: synth --lora"; return; }
  rm -rf "$work/out-$name"
  if ! $SMELT lora apply "$work/$base" "$work/ad-$name" "$work/out-$name" -q; then
    fail "$name: lora apply"; return
  fi
  $SMELT verify "$work/out-$name" -q || fail "$name: verify"
  if $REF "$work/$base" "$work/ad-$name" "$work/out-$name"; then pass "$name: matches the reference"
  else fail "$name: differs from the reference"; fi
}

apply_check bf16 base16 bfloat16 --lora 8
apply_check f16-rslora base_f16 float16 --lora 16 --lora-alpha 8 --rslora --lora-dtype bfloat16
apply_check f32-patterns base_f32 float32 --lora 8 --lora-alpha 4 \
  --lora-targets q_proj,v_proj,down_proj,embed_tokens,lm_head \
  --lora-rank-pattern 'v_proj=4,layers\.1\.mlp\.down_proj=2' --lora-alpha-pattern 'layers\.0\..*=3' \
  --modules-to-save model.norm
apply_check dora base16 bfloat16 --lora 4 --dora --lora-targets q_proj,o_proj,up_proj,embed_tokens
apply_check dora-f16-saved base_f16 float16 --lora 4 --dora --lora-dtype float16 \
  --lora-targets k_proj,gate_proj --modules-to-save lm_head,input_layernorm

# The plan names each adapted tensor's rank and scale, and DoRA's extra read.
cat > "$work/pass.yml" <<YAML
merge_method: passthrough
models:
  - model: $work/base16+$work/ad-f32-patterns
YAML
expect_error "plan: a base of other shapes" "needs a base weight of shape" $SMELT plan "$work/pass.yml"
cat > "$work/pass.yml" <<YAML
merge_method: passthrough
models:
  - model: $work/base16+$work/ad-dora
YAML
plan=$($SMELT plan "$work/pass.yml")
for want in "q_proj.weight (BF16) + LoRA delta, rank 4, scale 2, DoRA" \
            "embed_tokens.weight (BF16) + LoRA delta, rank 4, scale 2, transposed, DoRA"; do
  grep -qF -- "$want" <<<"$plan" && pass "plan shows '$want'" || fail "plan lacks '$want'"
done
grep -q "model.norm.weight" <<<"$plan" && ! grep -q "model.norm.weight.*LoRA" <<<"$plan" \
  && pass "plan: untouched tensors have no delta" || fail "plan: untouched tensors"

# The passthrough merge of base+adapter is lora apply's output, tensor for tensor.
$SMELT merge "$work/pass.yml" "$work/out-pass" -q --lora-merge-cache "$work/ignored"
cmp -s "$work/out-pass/model.safetensors" "$work/out-dora/model.safetensors" \
  && pass "merge of base+adapter == lora apply" || fail "merge of base+adapter != lora apply"
[ ! -e "$work/ignored" ] && pass "--lora-merge-cache is ignored" || fail "--lora-merge-cache wrote"

# Same bytes at one thread, a budget smaller than the tensors, and the scalar kernels.
for variant in "-j1" "--max-memory 3Mi" "-j3 --max-memory 5Mi" "scalar"; do
  out=$work/out-dora-${variant// /}
  if [ "$variant" = scalar ]; then
    SMELT_ISA=scalar $SMELT lora apply "$work/base16" "$work/ad-dora" "$out" -q
  else
    # shellcheck disable=SC2086
    $SMELT lora apply "$work/base16" "$work/ad-dora" "$out" -q $variant
  fi
  cmp -s "$out/model.safetensors" "$work/out-dora/model.safetensors" \
    && pass "identical bytes: $variant" || fail "bytes differ: $variant"
done
for variant in "-j1 --max-memory 3Mi" "scalar"; do
  out=$work/out-f32-${variant// /}
  if [ "$variant" = scalar ]; then
    SMELT_ISA=scalar $SMELT lora apply "$work/base_f32" "$work/ad-f32-patterns" "$out" -q
  else
    # shellcheck disable=SC2086
    $SMELT lora apply "$work/base_f32" "$work/ad-f32-patterns" "$out" -q $variant
  fi
  for f in "$work/out-f32-patterns"/model*.safetensors; do
    cmp -s "$f" "$out/$(basename "$f")" || fail "f32 bytes differ: $variant: $(basename "$f")"
  done
  pass "f32 sharded: $variant checked"
done

# A ties merge of base+adapter references equals the ties merge of the applied models.
$SMELT synth "$work/ad1" --size 2M --layers 2 --seed 11 --lora 8
$SMELT synth "$work/ad2" --size 2M --layers 2 --seed 12 --lora 4 --lora-targets q_proj,v_proj,up_proj
$SMELT lora apply "$work/base16" "$work/ad1" "$work/m1" -q
$SMELT lora apply "$work/base16" "$work/ad2" "$work/m2" -q
ties() {
  cat > "$1" <<YAML
merge_method: ties
base_model: $work/base16
parameters: {normalize: true}
models:
  - model: $2
    parameters: {weight: 0.6, density: 0.5}
  - model: $3
    parameters: {weight: 0.4, density: 0.7}
YAML
}
ties "$work/t-ref.yml" "$work/m1" "$work/m2"
ties "$work/t-lora.yml" "$work/base16+$work/ad1" "$work/base16+$work/ad2"
$SMELT merge "$work/t-ref.yml" "$work/t-ref" -q
$SMELT merge "$work/t-lora.yml" "$work/t-lora" -q --max-memory 4Mi --threads 2
cmp -s "$work/t-ref/model.safetensors" "$work/t-lora/model.safetensors" \
  && pass "ties(base+ad1, base+ad2) == ties(applied models)" || fail "ties with adapters differs"

# Reference forms: a lone adapter file with its config beside it, and a hub id in the cache.
$SMELT lora apply "$work/base16" "$work/ad1/adapter_model.safetensors" "$work/out-file" -q \
  && cmp -s "$work/out-file/model.safetensors" "$work/m1/model.safetensors" \
  && pass "a lone adapter .safetensors" || fail "a lone adapter .safetensors"
hub=$work/hf/hub/models--acme--tiny-lora
mkdir -p "$hub/snapshots/0badc0de" "$hub/refs"
cp "$work/ad1"/* "$hub/snapshots/0badc0de/"
printf 0badc0de > "$hub/refs/main"
HF_HOME=$work/hf $SMELT lora apply "$work/base16" acme/tiny-lora "$work/out-hub" -q \
  && cmp -s "$work/out-hub/model.safetensors" "$work/m1/model.safetensors" \
  && pass "an adapter hub id" || fail "an adapter hub id"

# Memory: a base many times the budget stays within it (the factors count against it).
$SMELT synth "$work/big" --size 48M --layers 2 --seed 3
$SMELT synth "$work/ad-big" --size 48M --layers 2 --seed 4 --lora 64 --dora
kib=$("$SMELT_TEST_HELPERS/peak_rss" $SMELT lora apply "$work/big" "$work/ad-big" "$work/out-big" \
      -q --max-memory 16Mi 2>&1 | awk '/^peak_rss_kib/ {print $2}')
if [ -n "$kib" ] && [ "$kib" -lt $((16 * 1024 + 48 * 1024)) ]; then
  pass "lora apply of a 48 MB base at 16Mi: peak RSS $kib KiB"
else fail "lora apply peak RSS ${kib:-?} KiB at 16Mi"; fi

# synth --lora's own rules.
expect_error "synth: unknown target" "is not one of q_proj" \
  $SMELT synth "$work/x1" --size 2M --lora 4 --lora-targets q_proj,attn
expect_error "synth: lm_head of tied embeddings" "its embeddings are tied" \
  $SMELT synth "$work/x2" --size 2M --tied --lora 4 --lora-targets lm_head
expect_error "synth: adapter flag without --lora" "it needs --lora R" \
  $SMELT synth "$work/x3" --size 2M --dora
expect_error "synth: bad rank pattern" "is not a rank" \
  $SMELT synth "$work/x4" --size 2M --lora 4 --lora-rank-pattern 'q_proj=0'
expect_error "synth: bad regex" "is not a regular expression" \
  $SMELT synth "$work/x5" --size 2M --lora 4 --lora-rank-pattern '(q_proj=2'
expect_error "synth: adapter as GGUF" "PEFT adapter directory" \
  $SMELT synth "$work/x6.gguf" --size 2M --lora 4
expect_error "synth: saved and adapted" "both a LoRA target and in --modules-to-save" \
  $SMELT synth "$work/x7" --size 2M --lora 4 --modules-to-save q_proj
expect_error "synth: nothing to save" "no tensor of the model" \
  $SMELT synth "$work/x8" --size 2M --lora 4 --modules-to-save mlp
for x in x1 x2 x3 x4 x5 x6.gguf x7 x8; do
  [ ! -e "$work/$x" ] || fail "synth left $x after an error"
done
finish
