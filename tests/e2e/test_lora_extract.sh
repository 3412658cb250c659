# `smelt lora extract` end to end: every module's relative Frobenius error within 1% of the
# optimum of numpy's exact SVD truncated to the same rank (tests/tools/rsvd_check.py) on deltas
# with decaying spectra and on a synthetic fine-tune; lora apply of the adapter reconstructs the
# model; identical adapter bytes across threads and budgets (streamed or resident); the
# sv-epsilon cut-off and rank_pattern; errors with nothing left that looks complete.
source "$(dirname "$0")/lib.sh"
numpy_python
CHECK="$PY $here/../tools/rsvd_check.py"

# no_adapter DIR: nothing in DIR looks like a finished adapter.
no_adapter() {
  if [ -e "$1/adapter_config.json" ] || [ -e "$1/adapter_model.safetensors" ]; then
    fail "adapter files in $1 after a failure: $(ls "$1")"
  fi
  if compgen -G "$1/*.smelt-tmp" >/dev/null || compgen -G "$1/.*smelt-scratch" >/dev/null; then
    fail "temporary files left in $1: $(ls -a "$1")"
  fi
}

# extract_check NAME BASE MODEL ARGS...: extracts, then compares with numpy's optimum.
extract_check() {
  local name=$1 base=$2 model=$3; shift 3
  local log
  if ! log=$($SMELT lora extract --base "$work/$base" "$work/$model" "$work/$name" "$@" 2>&1); then
    fail "$name: lora extract: $log"; return
  fi
  case " $* " in *" -q "*) [ -z "$log" ] || fail "$name: -q printed: $log" ;;
    *) grep -q "^smelt: lora extract: " <<<"$log" || fail "$name: no summary line: $log" ;; esac
  if out=$($CHECK check "$work/$base" "$work/$model" "$work/$name"); then
    pass "$name: every module within 1% of the optimum ($(grep -c '^ok' <<<"$out") modules)"
  else
    fail "$name: $(grep FAIL <<<"$out")"
  fi
}

# 1. Decaying spectra (U diag(0.5^i or i^-1.5) V^T + noise), f32 and one bf16 weight.
$CHECK make "$work/nb" "$work/nf"
extract_check np-r8 nb nf --rank 8
extract_check np-r16 nb nf --rank 16 --embeddings -j2
log=$($SMELT lora extract --base "$work/nb" "$work/nf" "$work/np-r8b" --rank 8 2>&1)
grep -q "skipping 'model.layers.1.mlp.qweight.weight' (I8)" <<<"$log" \
  && pass "integer weight skipped with a notice" || fail "no notice for the I8 weight: $log"
# The printed error estimate (from the passes) agrees with the one numpy measures.
est=$(grep "model.layers.0.self_attn.q_proj " <<<"$log" | sed 's/.*rel. error \([0-9.]*\).*/\1/')
got=$($CHECK check "$work/nb" "$work/nf" "$work/np-r8" | grep "q_proj \[" | sed 's/.*rel. error \([0-9.e-]*\),.*/\1/')
if $PY -c "import sys; e, g = map(float, sys.argv[1:]); sys.exit(abs(e - g) > 1e-4 * g + 1e-7)" "$est" "$got"; then
  pass "q_proj's printed error $est matches numpy's $got"
else fail "q_proj's printed error $est, numpy measures $got"; fi

# sv-epsilon (absolute, as mergekit): the geometric modules keep fewer values, listed in
# rank_pattern and alpha_pattern; still optimal for their rank.
extract_check np-eps nb nf --rank 16 --sv-epsilon 1e-4
if $PY - "$work/np-eps/adapter_config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
rp = c["rank_pattern"]
assert c["r"] == 16 and c["lora_alpha"] == 16, c
assert rp.get("model.layers.0.self_attn.q_proj") == 7 and rp == c["alpha_pattern"], rp
assert "model.layers.0.mlp.up_proj" not in rp, rp
assert c["modules_to_save"] == ["embed_tokens", "input_layernorm", "lm_head", "norm"], c
EOF
then pass "sv-epsilon: rank_pattern $(grep -c '"model' "$work/np-eps/adapter_config.json") entries"
else fail "sv-epsilon: adapter_config.json: $(cat "$work/np-eps/adapter_config.json")"; fi

# 2. A synthetic fine-tune (bf16, noise deltas: a flat spectrum, the hard case).
$SMELT synth "$work/base" --size 2M --layers 2 --seed 1
$SMELT synth "$work/ft" --size 2M --layers 2 --base-seed 1 --seed 2
extract_check ft-r8 base ft --rank 8 -q
extract_check ft-r16 base ft --rank 16 -q -j2
if $SMELT lora apply "$work/base" "$work/ft-r16" "$work/applied" -q; then
  recon=$($CHECK recon "$work/base" "$work/ft" "$work/applied") && pass "lora apply: $recon" \
    || fail "lora apply output: $recon"
else fail "lora apply of the extracted adapter"; fi
# --power-iters 1 --oversample 2 is a weaker sketch: still valid, measurably worse.
$SMELT lora extract --base "$work/base" "$work/ft" "$work/ft-weak" --rank 16 -q --power-iters 1 \
  --oversample 2 && $CHECK check "$work/base" "$work/ft" "$work/ft-weak" --slack 0.2 >/dev/null \
  && pass "--power-iters 1 --oversample 2" || fail "--power-iters 1 --oversample 2"
# On the decaying spectra the applied model is close to the fine-tune.
$SMELT lora apply "$work/nb" "$work/np-r16" "$work/napplied" -q
recon=$($CHECK recon "$work/nb" "$work/nf" "$work/napplied")
worst=$(sed 's/.*worst \([0-9.]*\).*/\1/' <<<"$recon")
$PY -c "import sys; sys.exit(float(sys.argv[1]) > 0.07)" "$worst" \
  && pass "lora apply (decaying spectra): $recon" || fail "reconstruction too far: $recon"

# 3. The same bytes for any thread count and budget: 3M streams the MLP deltas in rounds.
log=$($SMELT lora extract --base "$work/base" "$work/ft" "$work/ft-small" --rank 16 -j1 \
  --max-memory 3M 2>&1) || fail "--max-memory 3M: $log"
grep -q "gate_proj .*read 8x" <<<"$log" && pass "3M budget streams gate_proj (read 8x)" \
  || fail "3M budget did not stream: $(grep gate_proj <<<"$log")"
for d in ft-small; do
  cmp -s "$work/ft-r16/adapter_model.safetensors" "$work/$d/adapter_model.safetensors" \
    && cmp -s "$work/ft-r16/adapter_config.json" "$work/$d/adapter_config.json" \
    && pass "-j2 512Mi and -j1 3M give identical adapters" || fail "$d differs from ft-r16"
done
$SMELT lora extract --base "$work/base" "$work/ft" "$work/ft-j1" --rank 16 -q -j1
cmp -s "$work/ft-r16/adapter_model.safetensors" "$work/ft-j1/adapter_model.safetensors" \
  && pass "-j1 and -j2 identical" || fail "-j1 and -j2 differ"
$SMELT lora extract --base "$work/base" "$work/ft" "$work/ft-seed" --rank 16 -q --seed 9
cmp -s "$work/ft-r16/adapter_model.safetensors" "$work/ft-seed/adapter_model.safetensors" \
  && fail "--seed does not change the sketch" || pass "--seed changes the sketch"
$SMELT lora extract --base "$work/base" "$work/ft" "$work/ft-bf16" --rank 8 -q --dtype bfloat16 \
  && $SMELT lora apply "$work/base" "$work/ft-bf16" "$work/applied-bf16" -q \
  && pass "--dtype bfloat16 adapter applies" || fail "--dtype bfloat16"
# --overwrite replaces an adapter; without it a non-empty OUT_DIR is refused.
expect_error "OUT_DIR not empty" "is not empty (--overwrite" \
  $SMELT lora extract --base "$work/base" "$work/ft" "$work/ft-r8" --rank 4 -q
$SMELT lora extract --base "$work/base" "$work/ft" "$work/ft-r8" --rank 4 -q --overwrite \
  && grep -q '"r": 4' "$work/ft-r8/adapter_config.json" && pass "--overwrite" || fail "--overwrite"

# 4. Errors: clear, non-zero, nothing that looks complete.
$SMELT synth "$work/other" --size 4M --layers 2 --seed 1
for t in "rank 0|the rank must be at least 1|--rank 0" \
         "rank too large|is larger than module 'model.layers.0.self_attn.q_proj'|--rank 1000" \
         "budget|cannot hold module|--rank 16 --max-memory 200K" \
         "dtype|is not float32, bfloat16 or float16|--rank 4 --dtype int8"; do
  IFS='|' read -r name phrase args <<<"$t"
  # shellcheck disable=SC2086
  expect_error "$name" "$phrase" $SMELT lora extract --base "$work/base" "$work/ft" "$work/e1" $args
  [ -d "$work/e1" ] && no_adapter "$work/e1"
done
expect_error "shape mismatch" "has shape" \
  $SMELT lora extract --base "$work/other" "$work/ft" "$work/e2" --rank 4
[ -d "$work/e2" ] && no_adapter "$work/e2"
expect_error "missing model" "$work/nope" \
  $SMELT lora extract --base "$work/base" "$work/nope" "$work/e3" --rank 4
expect_error "missing --base" "needs --base" $SMELT lora extract "$work/ft" "$work/e4" --rank 4
expect_error "missing --rank" "needs --rank" $SMELT lora extract --base "$work/base" "$work/ft" "$work/e4"
# --max-rank clamps instead (mergekit's semantics): k_proj of the numpy model is 48 rows.
$SMELT lora extract --base "$work/nb" "$work/nf" "$work/np-max" --max-rank 64 -q \
  && grep -q '"model.layers.0.self_attn.k_proj": 48' "$work/np-max/adapter_config.json" \
  && pass "--max-rank clamps to the module" || fail "--max-rank 64"

finish
