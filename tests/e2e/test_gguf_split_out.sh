# GGUF merges written as a gguf-split set (--out-shard-size given explicitly):
#  - linear and ties of Q8_0 fine-tunes: the names model-0000K-of-0000N.gguf (N >= 3), split.no /
#    split.count / split.tensors.count (u16, u16, i32) in every split as ggml's own parser reads
#    them, the metadata and tokenizer in the first split only, the greedy split sizes;
#  - the set's tensors, split after split, equal byte for byte those of the same merge written as
#    one model.gguf (ggml's offsets; smelt diff of an F16 merge: max_abs 0);
#  - verify passes, and names the file when a byte of split 2 is flipped; inspect and plan show
#    the splits; llama.cpp loads the first split and generates;
#  - the same bytes at -j1 and a small --max-memory, and after --resume of a killed merge;
#  - the set as a merge input again (its directory or a split's path);
#  - without the flag one model.gguf, whatever the size; more than 65535 splits is an error.
# Missing node, python or the reference ggml is a failure, not a skip.
source "$(dirname "$0")/lib.sh"
src=${SMELT_SOURCE_DIR:-$here/../..}
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
command -v node >/dev/null || { echo "FAIL: node is missing (run tools/setup.sh)"; exit 1; }
lib=$(bash "$src/tools/ggml_ref.sh" path) || { echo "FAIL: no reference ggml"; exit 1; }
check=$SMELT_TEST_HELPERS/ggml_check
splitpy() { "$py" "$src/tests/tools/gguf_split_check.py" "$lib" "$@"; }
synth() { "$SMELT" synth "$@" -j2 >/dev/null; }
merge() { "$SMELT" merge -q "$@"; }
size=2M
run() {
  local name=$1 out; shift
  if out=$("$@" 2>&1); then pass "$name: $(tail -1 <<<"$out")"; else fail "$name: $out"; fi
}
splits() { ls "$1" | grep -E '^model.*\.gguf$' || true; } # the model files of an output, sorted
same_files() { # A B: every model file of A equals B's of the same name, and both have the same
  [ "$(splits "$1")" = "$(splits "$2")" ] || return 1
  for f in $(splits "$1"); do cmp -s "$1/$f" "$2/$f" || return 1; done
}

synth "$work/base.gguf" --size 8M --dtype q8_0 --layers 4 --seed 3
synth "$work/ft1.gguf" --size 8M --dtype q8_0 --layers 4 --base-seed 3 --seed 4 --delta 0.05
synth "$work/ft2.gguf" --size 8M --dtype q8_0 --layers 4 --base-seed 3 --seed 5 --delta 0.05
linear_config "$work/linear.yml" "$work/base.gguf" 0.5 "$work/base.gguf" 0.3 "$work/ft1.gguf" 0.2 "$work/ft2.gguf"
printf 'merge_method: ties\nbase_model: %s\nmodels:\n  - model: %s\n    parameters: {weight: 0.7, density: 0.5}\n  - model: %s\n    parameters: {weight: 0.5, density: 0.3}\n' \
  "$work/base.gguf" "$work/ft1.gguf" "$work/ft2.gguf" > "$work/ties.yml"

# check_keys SET N: split.* in every split, metadata in the first only, the greedy sizes.
check_keys() {
  local dir=$1 n=$2 k=0
  for f in $(splits "$dir"); do
    splitpy keys "$dir/$f" > "$work/k$k.json" || { fail "$f: ggml cannot read it"; return; }
    k=$((k + 1))
  done
  if "$py" - "$work" "$n" "$size" <<'PY'
import json, sys
work, n, limit = sys.argv[1], int(sys.argv[2]), 2 << 20
files = [json.load(open(f"{work}/k{k}.json")) for k in range(n)]
total = sum(len(f["tensors"]) for f in files)
for k, f in enumerate(files):
    assert f["split"] == [k, n, total], (k, f["split"], f["split_types"])
    keys = set(f["keys"])
    if k == 0:
        assert any(x.startswith("general.") for x in keys) and "general.architecture" in keys, keys
        assert any(x.startswith("tokenizer.") for x in keys), keys
        assert list(f["keys"])[-3:] == ["split.no", "split.count", "split.tensors.count"], keys
    else:
        assert keys == {"split.no", "split.count", "split.tensors.count"}, (k, keys)
    assert f["tensors"], k
# Greedy as gguf-split: each split holds what fits (data padded to 32), the next tensor did not.
pad = lambda b: (b + 31) // 32 * 32
for k, f in enumerate(files):
    used = sum(pad(b) for b in f["sizes"])
    assert used <= limit or len(f["sizes"]) == 1, (k, used)
    if k + 1 < n:
        assert used + pad(files[k + 1]["sizes"][0]) > limit, (k, used)
PY
  then pass "$dir: split.no/count/tensors.count (u16, u16, i32) in each of the $n splits, metadata and tokenizer in the first only"
  else fail "$dir: split keys"; fi
}

for m in linear ties; do
  merge "$work/$m.yml" "$work/$m-one" || fail "$m: one-file merge"
  [ "$(splits "$work/$m-one")" = model.gguf ] && pass "$m: without --out-shard-size one model.gguf" \
    || fail "$m: without the flag: $(ls "$work/$m-one")"
  merge "$work/$m.yml" "$work/$m" --out-shard-size $size || { fail "$m: split merge"; continue; }
  names=$(splits "$work/$m")
  n=$(wc -l <<<"$names")
  want=$(for k in $(seq 1 "$n"); do printf 'model-%05d-of-%05d.gguf\n' "$k" "$n"; done)
  if [ "$n" -ge 3 ] && [ "$names" = "$want" ] && [ ! -e "$work/$m/model.safetensors.index.json" ]; then
    pass "$m: --out-shard-size $size gives $n splits named model-0000K-of-$(printf %05d "$n").gguf"
  else
    fail "$m: split names: $(ls "$work/$m")"
  fi
  check_keys "$work/$m" "$n"
  first=$work/$m/model-00001-of-$(printf %05d "$n").gguf
  second=$work/$m/model-00002-of-$(printf %05d "$n").gguf
  for f in $names; do "$check" "$lib" gguf "$work/$m/$f" >/dev/null || fail "$m: $f: smelt's reader and ggml's disagree"; done
  run "$m: the set's tensor data equals the one-file merge's" splitpy same "$work/$m-one/model.gguf" $(for f in $names; do echo "$work/$m/$f"; done)
  run "$m: verify" "$SMELT" verify "$work/$m"
  off=$(splitpy data-at "$second")
  cp "$second" "$work/saved.gguf"
  "$py" -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(int(sys.argv[2])); b=f.read(1); f.seek(int(sys.argv[2])); f.write(bytes([b[0]^1]))' "$second" "$off"
  expect_error "$m: verify after a flipped byte in split 2" "$(basename "$second"): tensor" "$SMELT" verify "$work/$m"
  cp "$work/saved.gguf" "$second"
  "$SMELT" inspect "$first" > "$work/inspect.txt" && grep -q "^files: $n" "$work/inspect.txt" \
    && pass "$m: inspect reads the set through its first split" || fail "$m: inspect: $(head -5 "$work/inspect.txt")"
  "$SMELT" plan "$work/$m.yml" --out-shard-size $size > "$work/plan.txt"
  [ "$(grep -c '^shard: *model-0000[0-9]-of-' "$work/plan.txt")" -eq "$n" ] && pass "$m: plan lists the $n splits" \
    || fail "$m: plan: $(grep shard "$work/plan.txt")"
  for opt in "-j1" "--max-memory 4Mi"; do
    rm -rf "$work/again"
    merge "$work/$m.yml" "$work/again" --out-shard-size $size $opt || fail "$m $opt"
    same_files "$work/$m" "$work/again" && pass "$m: same bytes with $opt" || fail "$m: bytes differ with $opt"
  done
done

n=$(splits "$work/linear" | wc -l)
first=$work/linear/model-00001-of-$(printf %05d "$n").gguf
if out=$(node "$src/tests/tools/llama_eval.mjs" "$first" --tokens 1,2,300,301,5,6 --generate 4 2>&1 >"$work/llama.json"); then
  pass "llama.cpp loads the set from its first split and generates $("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["generated"])' "$work/llama.json")"
else
  fail "llama.cpp: $out"
fi

# An F16 merge: smelt diff of the set against the one-file merge (max_abs 0 for every tensor).
synth "$work/h1.gguf" --size 4M --dtype f16 --layers 2 --seed 7
synth "$work/h2.gguf" --size 4M --dtype f16 --layers 2 --base-seed 7 --seed 8 --delta 0.05
linear_config "$work/h.yml" "$work/h1.gguf" 0.6 "$work/h1.gguf" 0.4 "$work/h2.gguf"
merge "$work/h.yml" "$work/h-one" && merge "$work/h.yml" "$work/h" --out-shard-size 1M || fail "F16 merges"
if "$SMELT" diff "$work/h-one" "$work/h" > "$work/diff.txt" && grep -q "largest max |a-b|: 0.000e+00" "$work/diff.txt" &&
   grep -q "only in A: 0  only in B: 0  shapes differ: 0  dtypes not comparable: 0" "$work/diff.txt"; then
  pass "F16: smelt diff of the set ($(splits "$work/h" | wc -l) splits) and the one file: max_abs 0"
else
  fail "F16 diff: $(tail -4 "$work/diff.txt")"
fi

# The set as an input: its directory, or any split's path, reads as the one file does.
linear_config "$work/re-one.yml" "$work/linear-one" 1 "$work/linear-one"
linear_config "$work/re-dir.yml" "$work/linear" 1 "$work/linear"
second=$work/linear/model-00002-of-$(printf %05d "$n").gguf
linear_config "$work/re-split.yml" "$second" 1 "$second"
merge "$work/re-one.yml" "$work/re-one" || fail "merge of the one-file output"
for c in re-dir re-split; do
  merge "$work/$c.yml" "$work/$c" || { fail "$c: merge of the set"; continue; }
  cmp -s "$work/re-one/model.gguf" "$work/$c/model.gguf" && pass "$c: the set as an input merges as the one file does" \
    || fail "$c: differs from the merge of the one file"
done

# --resume after a kill mid-merge gives the same bytes.
export SMELT_JOURNAL_INTERVAL=0
args=(--out-shard-size $size --max-memory 3Mi -j1 -q)
ref=$work/ties # the same merge, uninterrupted (its bytes depend on neither -j nor the budget)
resumed=0
for delay in 0.15 0.1 0.2 0.05 0.3 0.08 0.4 0.03; do
  rm -rf "$work/killed"
  "$SMELT" merge "$work/ties.yml" "$work/killed" "${args[@]}" 2>/dev/null & pid=$!
  sleep "$delay"; kill -9 "$pid" 2>/dev/null || true
  rc=0; wait "$pid" 2>/dev/null || rc=$?
  [ "$rc" -ne 0 ] && [ -e "$work/killed/.smelt-journal" ] || continue
  compgen -G "$work/killed/model*.gguf" >/dev/null && fail "killed at ${delay}s: finished-looking splits: $(ls -A "$work/killed")"
  merge --resume "$work/ties.yml" "$work/killed" "${args[@]}" || { fail "resume after a kill at ${delay}s"; break; }
  same_files "$ref" "$work/killed" && cmp -s "$ref/smelt-manifest.json" "$work/killed/smelt-manifest.json" \
    && pass "--resume after a kill at ${delay}s: the same splits and manifest" || fail "--resume: bytes differ"
  "$SMELT" verify -q "$work/killed" >/dev/null || fail "resumed set does not verify"
  resumed=1; break
done
[ "$resumed" -eq 1 ] || fail "no kill landed mid-merge"
unset SMELT_JOURNAL_INTERVAL

# Limits, before any output: more than 65535 splits.
"$SMELT_TEST_HELPERS/make_gguf" many 70000 "$work/many.gguf"
linear_config "$work/many.yml" "$work/many.gguf" 1 "$work/many.gguf"
expect_error "70000 splits" "at most 65535" "$SMELT" merge -q "$work/many.yml" "$work/many" --out-shard-size 1
no_model_output "$work/many"
merge "$work/many.yml" "$work/many-one" && [ "$(splits "$work/many-one")" = model.gguf ] \
  && pass "70000 tensors without the flag: one model.gguf" || fail "many without the flag"

finish
