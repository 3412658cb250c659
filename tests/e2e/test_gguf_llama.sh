# smelt synth --format gguf against llama.cpp itself (node-llama-cpp, installed by
# tools/setup.sh) and an independent numpy forward pass (tests/tools/llama_ref.py):
#  - ggml reads every synthesized file (keys, values, offsets, data) as smelt does;
#  - llama.cpp loads F32, F16, BF16, Q8_0, Q4_K and Q4_K_M files and their fine-tunes, and
#    generates tokens;
#  - its next-token probabilities for the F32 models agree with numpy within 1e-5 (and the
#    log-probabilities within 1e-4), the 16-bit and quantized ones more loosely (llama.cpp rounds
#    the activations to the weights' type), numpy dequantizing bit for bit as ggml does;
#  - a square tensor transposed in the file loads silently, and the comparison catches it;
#  - the F32 GGUF holds what convert_hf_to_gguf.py makes of the float32 safetensors model.
# Missing node, numpy or node-llama-cpp is a failure, not a skip.
source "$(dirname "$0")/lib.sh"
src=${SMELT_SOURCE_DIR:-$here/../..}
eval_js=$src/tests/tools/llama_eval.mjs
ref_py=$src/tests/tools/llama_ref.py
# Debian's python3 has numpy (python3-numpy); a python3 earlier on PATH (pyenv) may not.
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
command -v node >/dev/null || { echo "FAIL: node is missing (run tools/setup.sh)"; exit 1; }
"$py" -c "import numpy" 2>/dev/null || { echo "FAIL: $py has no numpy (python3-numpy; run tools/setup.sh)"; exit 1; }
lib=$(bash "$src/tools/ggml_ref.sh" path) || { echo "FAIL: no reference ggml"; exit 1; }
check=$SMELT_TEST_HELPERS/ggml_check

# llama_eval NAME FILE [ARGS...]: llama.cpp loads FILE and generates; the JSON goes to FILE.json.
llama_eval() {
  local name=$1 file=$2 out; shift 2
  if ! out=$(node "$eval_js" "$file" "$@" 2>&1 >"$file.json"); then
    fail "$name: llama.cpp: $out"; return 0
  fi
  local gen
  gen=$("$py" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(len(r["generated"]), r["generated"], repr(r["text"]))' "$file.json")
  [ "${gen%% *}" -ge 1 ] && pass "$name: llama.cpp loads it and generates $gen" || fail "$name: nothing generated"
}

# compare NAME FILE [TOLERANCES...]: numpy over FILE's weights against FILE.json.
compare() {
  local name=$1 file=$2 out; shift 2
  if out=$("$py" "$ref_py" compare "$file" "$file.json" "$@" 2>&1); then pass "$name: $out"; else fail "$name: $out"; fi
}

synth() { "$SMELT" synth "$@" -j2 >/dev/null; }

# dequant NAME FILE: the numpy reference reads FILE's tensors bit for bit as ggml dequantizes.
dequant() {
  local out
  if out=$("$py" "$ref_py" dequant "$lib" "$2" 2>&1); then pass "$1: $out"; else fail "$1: $out"; fi
}

# F32: the numeric check, in MHA and in GQA with tied embeddings.
tokens=1,2,300,301,5,6,7,8,9,400,258,3
synth "$work/f32.gguf" --size 4M --dtype f32 --layers 2 --seed 1
synth "$work/gqa.gguf" --size 8M --dtype f32 --hidden 256 --heads 4 --kv-heads 2 --layers 3 --tied --seed 5
for m in f32 gqa; do
  out=$("$check" "$lib" gguf "$work/$m.gguf" 2>&1) && pass "$m: ggml agrees: $out" || fail "$m: ggml: $out"
  llama_eval "$m" "$work/$m.gguf" --tokens $tokens --generate 4
  compare "$m: llama.cpp vs numpy" "$work/$m.gguf" --tol 1e-5 --logtol 1e-4
done

# A square tensor transposed in the file: llama.cpp loads it without a word; the numbers differ.
for t in blk.0.attn_output.weight blk.1.attn_q.weight; do
  "$py" "$ref_py" transpose "$work/f32.gguf" "$t" "$work/transposed.gguf"
  llama_eval "transposed $t" "$work/transposed.gguf" --tokens $tokens --generate 2
  if out=$("$py" "$ref_py" compare "$work/f32.gguf" "$work/transposed.gguf.json" 2>&1); then
    fail "transposed $t: the comparison did not catch it: $out"
  else
    pass "transposed $t is caught: $out"
  fi
done

# The F32 file is convert_hf_to_gguf.py's conversion of the float32 safetensors model (and a
# model of another seed is not), for a base and a fine-tune.
synth "$work/hf" --size 4M --dtype float32 --layers 2 --seed 1
out=$("$py" "$ref_py" hf "$work/f32.gguf" "$work/hf" 2>&1) && pass "hf conversion: $out" || fail "hf conversion: $out"
synth "$work/hf2" --size 4M --dtype float32 --layers 2 --seed 2
"$py" "$ref_py" hf "$work/f32.gguf" "$work/hf2" >/dev/null 2>&1 && fail "hf check passes another seed" || pass "hf check refuses another seed"
synth "$work/ft.gguf" --size 4M --dtype f32 --layers 2 --base-seed 1 --seed 9 --delta 0.05
synth "$work/hf-ft" --size 4M --dtype float32 --layers 2 --base-seed 1 --seed 9 --delta 0.05
out=$("$py" "$ref_py" hf "$work/ft.gguf" "$work/hf-ft" 2>&1) && pass "fine-tune hf conversion: $out" || fail "fine-tune: $out"
llama_eval "f32 fine-tune" "$work/ft.gguf" --tokens $tokens
compare "f32 fine-tune: llama.cpp vs numpy" "$work/ft.gguf" --tol 1e-5 --logtol 1e-4

# 16-bit and Q8_0: llama.cpp rounds the activations to the weights' type before its dot
# products, so the agreement with numpy (over the stored, dequantized weights) is looser.
for d in f16 bf16 q8_0; do
  synth "$work/$d.gguf" --size 8M --dtype $d --layers 2 --seed 3
  out=$("$check" "$lib" gguf "$work/$d.gguf" 2>&1) && pass "$d: ggml agrees" || fail "$d: ggml: $out"
  dequant "$d" "$work/$d.gguf"
  llama_eval "$d" "$work/$d.gguf" --tokens $tokens
  compare "$d: llama.cpp vs numpy" "$work/$d.gguf" --tol 1e-3 --logtol 5e-2
done

# K-quants, a base and a fine-tune each: llama.cpp loads them, generates, and agrees loosely with
# numpy (its activations are rounded to Q8_K). Q4_K_M has Q6_K for output.weight and for attn_v
# and ffn_down of layers 2 and 3 of 4 (llama.cpp's use_more_bits).
for d in q4_k q4_k_m; do
  synth "$work/$d.gguf" --size 8M --dtype $d --layers 4 --seed 3
  synth "$work/$d-ft.gguf" --size 8M --dtype $d --layers 4 --base-seed 3 --seed 4
  for m in $d $d-ft; do
    out=$("$check" "$lib" gguf "$work/$m.gguf" 2>&1) && pass "$m: ggml agrees" || fail "$m: ggml: $out"
    dequant "$m" "$work/$m.gguf"
    llama_eval "$m" "$work/$m.gguf" --tokens $tokens --generate 6
    compare "$m: llama.cpp vs numpy" "$work/$m.gguf" --tol 1e-3 --logtol 5e-2
  done
  cmp -s "$work/$d.gguf" "$work/$d-ft.gguf" && fail "$d: the fine-tune equals its base" || pass "$d: the fine-tune differs from its base"
done
"$SMELT" inspect --json "$work/q4_k_m.gguf" > "$work/q4km.json"
if "$py" - "$work/q4km.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = {x["name"]: x["type"] for x in r["tensors"]}
q6 = sorted(n for n, ty in t.items() if ty == "q6_K")
assert q6 == ["blk.2.attn_v.weight", "blk.2.ffn_down.weight", "blk.3.attn_v.weight",
              "blk.3.ffn_down.weight", "output.weight"], q6
assert all(ty == "f32" for n, ty in t.items() if "norm" in n), t
assert all(ty == "q4_K" for n, ty in t.items() if n not in q6 and "norm" not in n), t
assert r["metadata"]["general.file_type"] == 15, r["metadata"]
PY
then pass "q4_k_m: Q6_K where llama.cpp's Q4_K_M puts it, norms F32"; else fail "q4_k_m tensor types"; fi

# Deterministic: the same options give the same bytes for any thread count.
"$SMELT" synth "$work/again.gguf" --size 8M --dtype q4_k_m --layers 4 --base-seed 3 --seed 4 -j1 >/dev/null
cmp -s "$work/again.gguf" "$work/q4_k_m-ft.gguf" && pass "q4_k_m fine-tune: same bytes with -j1 and -j2" || fail "synth gguf is not deterministic"

# Refusals, with nothing left behind.
mkdir "$work/err"
expect_error "gguf OUT without .gguf" "a GGUF output is a file whose name ends in '.gguf'" "$SMELT" synth "$work/err/model" --format gguf --size 4M
expect_error "unknown GGUF dtype" "GGUF dtype 'q3_k' is not f32, f16, bf16, q8_0, q4_k or q4_k_m" "$SMELT" synth "$work/err/m.gguf" --size 4M --dtype q3_k
expect_error "k-quant rows not whole blocks" "q4_k stores rows in blocks of 256, but hidden is 320" "$SMELT" synth "$work/err/m.gguf" --size 4M --dtype q4_k --hidden 320 --intermediate 512
expect_error "GGUF vocabulary without the byte tokens" "a GGUF one needs at least 259" "$SMELT" synth "$work/err/m.gguf" --size 4M --vocab 258
expect_error "odd head size" "a head size of 3 is odd" "$SMELT" synth "$work/err/m.gguf" --size 4M --hidden 96 --heads 32
expect_error "unknown format" "format 'onnx' is not safetensors or gguf" "$SMELT" synth "$work/err/m" --size 4M --format onnx
[ -z "$(ls -A "$work/err")" ] && pass "refusals leave nothing behind" || fail "left behind: $(ls -A "$work/err")"

finish
