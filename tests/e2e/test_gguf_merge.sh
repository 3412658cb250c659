# Merging GGUF models end to end, checked against the real references:
#  - ties and slerp of Q4_K_M-style fine-tunes (Q4_K + Q6_K tensors) and linear of F16 ones,
#    written as GGUF in the base's types: ggml reads the output as smelt wrote it, llama.cpp
#    loads it and generates;
#  - the math: the inputs decoded by ggml itself (ggml_check to-st), merged as F32 safetensors
#    and checked by the independent references (taskvec_ref, interp_ref, linear_ref); the GGUF
#    merge with --outtype f32 equals that merge bit for bit, and the requantized output equals
#    ggml's own quantizers applied to it, byte for byte (ggml_check match);
#  - an F32 merge's next-token probabilities in llama.cpp agree with numpy within 1e-5;
#  - the same bytes at any thread count or budget; verify, inspect and plan read the output;
#  - the format rules: no mixing GGUF and safetensors, --outtype only for GGUF, bad types.
# Missing node, numpy or the reference ggml is a failure, not a skip.
source "$(dirname "$0")/lib.sh"
src=${SMELT_SOURCE_DIR:-$here/../..}
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
command -v node >/dev/null || { echo "FAIL: node is missing (run tools/setup.sh)"; exit 1; }
"$py" -c "import numpy" 2>/dev/null || { echo "FAIL: $py has no numpy (run tools/setup.sh)"; exit 1; }
lib=$(bash "$src/tools/ggml_ref.sh" path) || { echo "FAIL: no reference ggml"; exit 1; }
check=$SMELT_TEST_HELPERS/ggml_check
synth() { "$SMELT" synth "$@" -j2 >/dev/null; }
merge() { "$SMELT" merge -q "$@"; }

# run NAME CMD...: passes when CMD exits 0, with its last line of output.
run() {
  local name=$1 out; shift
  if out=$("$@" 2>&1); then pass "$name: $(tail -1 <<<"$out")"; else fail "$name: $out"; fi
}

# reference NAME DIR GGUF...: each GGUF decoded by ggml into DIR/<file>/model.safetensors.
reference_inputs() {
  for g in "$@"; do
    local d=$work/ref-$(basename "$g" .gguf)
    mkdir -p "$d"
    "$check" "$lib" to-st "$g" "$d/model.safetensors" >/dev/null || fail "to-st $g"
  done
}
ref() { echo "$work/ref-$(basename "$1" .gguf)"; }

llama_generates() {
  local name=$1 file=$2 out
  if out=$(node "$src/tests/tools/llama_eval.mjs" "$file" --tokens 1,2,300,301,5,6 --generate 4 2>&1 >"$file.json"); then
    pass "$name: llama.cpp loads it and generates $("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["generated"])' "$file.json")"
  else
    fail "$name: llama.cpp: $out"
  fi
}

# ---- ties and slerp over Q4_K_M fine-tunes ----
q=$work/q
mkdir -p "$q"
synth "$q/base.gguf" --size 8M --dtype q4_k_m --layers 4 --seed 3
synth "$q/ft1.gguf" --size 8M --dtype q4_k_m --layers 4 --base-seed 3 --seed 4 --delta 0.05
synth "$q/ft2.gguf" --size 8M --dtype q4_k_m --layers 4 --base-seed 3 --seed 5 --delta 0.05
reference_inputs "$q/base.gguf" "$q/ft1.gguf" "$q/ft2.gguf"
ties_config() { # FILE BASE M1 M2 [extra line]
  printf 'merge_method: ties\nbase_model: %s\nmodels:\n  - model: %s\n    parameters: {weight: 0.7, density: 0.5}\n  - model: %s\n    parameters: {weight: 0.5, density: 0.3}\n%s' "$2" "$3" "$4" "${5:-}" > "$1"
}
ties_config "$work/ties.yml" "$q/base.gguf" "$q/ft1.gguf" "$q/ft2.gguf"
ties_config "$work/ties-ref.yml" "$(ref "$q/base.gguf")" "$(ref "$q/ft1.gguf")" "$(ref "$q/ft2.gguf")" 'dtype: float32
'
merge "$work/ties.yml" "$work/ties" && pass "ties of Q4_K_M models" || fail "ties merge"
merge "$work/ties-ref.yml" "$work/ties-ref" 2>/dev/null || fail "ties over the decoded inputs"
run "ties: the F32 merge of ggml's decoding against the reference" "$SMELT_TEST_HELPERS/taskvec_ref" ties "$work/ties-ref" "$(ref "$q/base.gguf")" 0.7:0.5:"$(ref "$q/ft1.gguf")" 0.5:0.3:"$(ref "$q/ft2.gguf")"
run "ties: requantized bytes equal ggml's quantizers of the reference" "$check" "$lib" match "$work/ties-ref" "$work/ties/model.gguf"
merge "$work/ties.yml" "$work/ties-f32" --outtype f32 || fail "ties --outtype f32"
run "ties: --outtype f32 equals the reference bit for bit" "$check" "$lib" match "$work/ties-ref" "$work/ties-f32/model.gguf"
run "ties: ggml reads the output as smelt wrote it" "$check" "$lib" gguf "$work/ties/model.gguf"
llama_generates "ties Q4_K_M" "$work/ties/model.gguf"
"$SMELT" inspect --json "$work/ties" > "$work/ties.json"
if "$py" - "$work/ties.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = {x["name"]: x["type"] for x in r["tensors"]}
assert t["output.weight"] == "q6_K" and t["blk.0.attn_q.weight"] == "q4_K", t
assert all(ty == "f32" for n, ty in t.items() if "norm" in n), t
m = r["metadata"]
assert m["smelt.merge_method"] == "ties" and m["general.base_model.count"] == 3, m
assert "tokenizer.ggml.tokens" in m or any(k.startswith("tokenizer.") for k in m), m
PY
then pass "ties: the base's types (Q4_K, Q6_K, norms F32), its tokenizer and the provenance keys"; else fail "ties output metadata"; fi
run "ties: verify" "$SMELT" verify "$work/ties"
for opt in "-j1" "--max-memory 4Mi"; do
  rm -rf "$work/ties-again"
  merge "$work/ties.yml" "$work/ties-again" $opt || fail "ties $opt"
  cmp -s "$work/ties/model.gguf" "$work/ties-again/model.gguf" && pass "ties: same bytes with $opt" || fail "ties: bytes differ with $opt"
done
"$SMELT" plan "$work/ties.yml" --max-memory 4Mi --threads 2 > "$work/ties.plan"
grep -q "blk.0.attn_q.weight q4_K .* -> model.gguf" "$work/ties.plan" && grep -q "(q4_K)" "$work/ties.plan" \
  && pass "plan shows the types in and out" || fail "plan: $(head -20 "$work/ties.plan")"

printf 'merge_method: slerp\nbase_model: %s\nmodels:\n  - model: %s\n  - model: %s\nparameters:\n  t: 0.3\n%s' \
  "$q/ft1.gguf" "$q/ft1.gguf" "$q/ft2.gguf" "" > "$work/slerp.yml"
printf 'merge_method: slerp\nbase_model: %s\nmodels:\n  - model: %s\n  - model: %s\nparameters:\n  t: 0.3\ndtype: float32\n' \
  "$(ref "$q/ft1.gguf")" "$(ref "$q/ft1.gguf")" "$(ref "$q/ft2.gguf")" > "$work/slerp-ref.yml"
merge "$work/slerp.yml" "$work/slerp" && pass "slerp of Q4_K_M models" || fail "slerp merge"
merge "$work/slerp-ref.yml" "$work/slerp-ref" 2>/dev/null || fail "slerp over the decoded inputs"
run "slerp: the F32 merge of ggml's decoding against the reference" "$SMELT_TEST_HELPERS/interp_ref" slerp "$work/slerp-ref" --base "$(ref "$q/ft1.gguf")" -:"$(ref "$q/ft2.gguf")" t=0.3
run "slerp: requantized bytes equal ggml's quantizers of the reference" "$check" "$lib" match "$work/slerp-ref" "$work/slerp/model.gguf"
llama_generates "slerp Q4_K_M" "$work/slerp/model.gguf"

# ---- linear over F16 models ----
synth "$work/h1.gguf" --size 8M --dtype f16 --layers 2 --seed 7
synth "$work/h2.gguf" --size 8M --dtype f16 --layers 2 --base-seed 7 --seed 8 --delta 0.05
reference_inputs "$work/h1.gguf" "$work/h2.gguf"
linear_config "$work/lin.yml" "$work/h1.gguf" 0.6 "$work/h1.gguf" 0.4 "$work/h2.gguf"
linear_config "$work/lin-ref.yml" "$(ref "$work/h1.gguf")" 0.6 "$(ref "$work/h1.gguf")" 0.4 "$(ref "$work/h2.gguf")"
echo "dtype: float32" >> "$work/lin-ref.yml"
merge "$work/lin.yml" "$work/lin" && pass "linear of F16 models" || fail "linear merge"
merge "$work/lin-ref.yml" "$work/lin-ref" 2>/dev/null || fail "linear over the decoded inputs"
run "linear: the F32 merge against the reference" "$SMELT_TEST_HELPERS/linear_ref" "$work/lin-ref" 0.6:"$(ref "$work/h1.gguf")" 0.4:"$(ref "$work/h2.gguf")"
run "linear: F16 bytes equal ggml's fp32_to_fp16 of the reference" "$check" "$lib" match "$work/lin-ref" "$work/lin/model.gguf"
llama_generates "linear F16" "$work/lin/model.gguf"

# ---- an F32 merge: llama.cpp against numpy ----
synth "$work/f1.gguf" --size 4M --dtype f32 --layers 2 --seed 1
synth "$work/f2.gguf" --size 4M --dtype f32 --layers 2 --base-seed 1 --seed 2 --delta 0.05
linear_config "$work/f.yml" "$work/f1.gguf" 0.5 "$work/f1.gguf" 0.5 "$work/f2.gguf"
merge "$work/f.yml" "$work/f" || fail "linear of F32 models"
out=$(node "$src/tests/tools/llama_eval.mjs" "$work/f/model.gguf" --tokens 1,2,300,301,5,6,7,8 --generate 2 2>&1 >"$work/f.json") || fail "f32 merge: llama.cpp: $out"
run "f32 merge: llama.cpp's probabilities vs numpy" "$py" "$src/tests/tools/llama_ref.py" compare "$work/f/model.gguf" "$work/f.json" --tol 1e-5 --logtol 1e-4

# ---- the format rules ----
synth "$work/st" --size 4M --layers 2 --seed 1
linear_config "$work/mixed.yml" "$work/f1.gguf" 0.5 "$work/f1.gguf" 0.5 "$work/st"
expect_error "GGUF with safetensors" "must share a format" "$SMELT" merge -q "$work/mixed.yml" "$work/mixed"
no_model_output "$work/mixed"
expect_error "--format safetensors of GGUF inputs" "written as GGUF" "$SMELT" merge -q "$work/f.yml" "$work/x1" --format safetensors
linear_config "$work/st.yml" "$work/st" 1 "$work/st"
expect_error "--format gguf of safetensors" "GGUF output needs GGUF inputs" "$SMELT" merge -q "$work/st.yml" "$work/x2" --format gguf
expect_error "--outtype for safetensors" "--outtype is for GGUF output" "$SMELT" merge -q "$work/st.yml" "$work/x3" --outtype q8_0
expect_error "--outtype unknown" "is not a type smelt writes" "$SMELT" merge -q "$work/f.yml" "$work/x4" --outtype q3_k
expect_error "--format unknown" "is not safetensors or gguf" "$SMELT" merge -q "$work/f.yml" "$work/x5" --format onnx
printf 'merge_method: linear\nmodels:\n  - model: %s+%s\n    parameters: {weight: 1}\n' "$work/f1.gguf" "$work/nowhere" > "$work/lora.yml"
expect_error "GGUF base with an adapter" "applies to a safetensors base" "$SMELT" merge -q "$work/lora.yml" "$work/x6"
for d in x1 x2 x3 x4 x5 x6; do no_model_output "$work/$d"; done

# --outtype q8_0 for every 2-D tensor; norms stay F32.
merge "$work/lin.yml" "$work/q8" --outtype q8_0 || fail "--outtype q8_0"
run "--outtype q8_0: bytes equal ggml's quantize_row_q8_0_ref of the reference" "$check" "$lib" match "$work/lin-ref" "$work/q8/model.gguf"

[ "$failures" -eq 0 ] || { echo "$failures failures"; exit 1; }
echo "all GGUF merge checks passed"
