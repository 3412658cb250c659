# GGUF: the reader, dequantization and `smelt inspect` against the real ggml (libggml-base.so
# from node-llama-cpp, installed by tools/setup.sh), and every malformed-file rule through the
# CLI: a non-zero exit and a message that names the file and the rule.
source "$(dirname "$0")/lib.sh"

# Missing the reference is a failure, not a skip: without it nothing here is checked.
lib=$(bash "${SMELT_SOURCE_DIR:-$here/../..}/tools/ggml_ref.sh" path) || { echo "FAIL: no reference ggml"; exit 1; }
check=$SMELT_TEST_HELPERS/ggml_check
make=$SMELT_TEST_HELPERS/make_gguf

run_check() { # NAME CMD...: the command must succeed; its last line is shown
  local name=$1 out; shift
  if out=$("$@" 2>&1); then pass "$name: $(tail -1 <<<"$out")"; else fail "$name: $out"; fi
}

run_check "type table" "$check" "$lib" types
run_check "dequantization" "$check" "$lib" dequant 8192
run_check "reference quantizers" "$check" "$lib" quant 20000

# Valid files: smelt and ggml read the same keys, tensors, offsets.
for c in valid valid-v2 valid-align64; do
  "$make" $c "$work/$c.gguf"
  run_check "$c: ggml agrees" "$check" "$lib" gguf "$work/$c.gguf"
  run_check "$c: inspect" "$SMELT" inspect "$work/$c.gguf"
done
# smelt's writer (format/gguf_write.h): ggml reads the same keys, values, offsets and data.
run_check "writer: ggml reads what smelt writes" "$check" "$lib" write "$work"

# Nested arrays are valid GGUF, which smelt reads (up to 4 levels) and ggml refuses.
"$make" valid-nested "$work/nested.gguf"
run_check "nested arrays: smelt reads them" "$SMELT" inspect "$work/nested.gguf"
run_check "nested arrays: ggml refuses them" "$check" "$lib" reject "$work/nested.gguf"

# inspect's report: torch-order shapes, ggml's ne, types, bytes, metadata (arrays summarized).
"$SMELT" inspect --json "$work/valid.gguf" > "$work/valid.json"
if python3 - "$work/valid.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["format"] == "gguf" and r["version"] == 3 and r["alignment"] == 32, r
assert r["tensor_count"] == 6 and r["layers"] == 1, r
t = {x["name"]: x for x in r["tensors"]}
e = t["token_embd.weight"]
assert e["type"] == "q8_0" and e["shape"] == [8, 64] and e["ne"] == [64, 8] and e["bytes"] == 544, e
assert t["blk.0.attn_v.weight"]["shape"] == [2, 2, 32], t
assert t["blk.0.attn_q.weight"]["type"] == "q4_K" and t["blk.0.attn_q.weight"]["bytes"] == 576
m = r["metadata"]
assert m["general.architecture"] == "llama" and m["test.i64"] == -(1 << 40) and m["test.bool"] is True
assert m["tokenizer.ggml.tokens"] == {"array": "string", "count": 5,
                                      "first": ["<s>", "</s>", "a", "b", "hello"]}, m
assert m["tokenizer.ggml.scores"]["first"] == [0.0, 1.0, -1.0]
assert r["types"]["q6_K"] == {"tensors": 1, "bytes": 420}, r["types"]
PY
then pass "inspect --json: shapes, types, metadata"; else fail "inspect --json report"; fi
"$SMELT" inspect "$work/valid.gguf" > "$work/valid.txt"
grep -q '^token_embd.weight  *q8_0  *\[8, 64\]  *544 ' "$work/valid.txt" && grep -q 'tokenizer.ggml.tokens  array  {"array":"string","count":5' "$work/valid.txt" \
  && pass "inspect text" || fail "inspect text: $(cat "$work/valid.txt")"

# Every malformed rule: smelt refuses it naming the file and the rule; ggml refuses it too,
# except a file cut short inside its data, which ggml (reading headers only) accepts.
cases=$("$make" list | awk -F'\t' '$2 != ""')
[ "$(wc -l <<<"$cases")" -ge 25 ] || fail "make_gguf lists too few malformed cases"
while IFS=$'\t' read -r c rule; do
  f=$work/bad-$c.gguf
  "$make" "$c" "$f"
  expect_error "$c" "$rule" "$SMELT" inspect "$f"
  expect_error "$c (--json, names the file)" "bad-$c.gguf: " "$SMELT" inspect --json "$f"
  [ "$c" = truncated ] || run_check "$c: ggml refuses it too" "$check" "$lib" reject "$f"
done <<<"$cases"

# Split sets: any split's name opens the whole set; each split agrees with ggml; every rule of
# the set (split.no, split.count, split.tensors.count, a tensor in two splits, a missing split,
# split keys on a file not named as a split) is an error naming the file.
"$make" split "$work/set" 3
for k in 1 2 3; do run_check "split $k: ggml agrees" "$check" "$lib" gguf "$work/set-0000$k-of-00003.gguf"; done
"$SMELT" inspect --json "$work/set-00003-of-00003.gguf" > "$work/set.json"
if python3 - "$work/set.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["tensor_count"] == 6 and len(r["files"]) == 3, r
assert [f["tensors"] for f in r["files"]] == [2, 2, 2], r["files"]
assert r["metadata"]["general.architecture"] == "llama" and r["metadata"]["split.count"] == 3
t = {x["name"]: x for x in r["tensors"]}
assert t["blk.0.ffn_down.weight"]["file"] == "set-00003-of-00003.gguf", t
PY
then pass "split set: inspect --json"; else fail "split set report"; fi
split_case() { # FAULT PHRASE
  rm -f "$work"/bad-set-*
  "$make" split "$work/bad-set" 3 "$1"
  expect_error "split $1" "$2" "$SMELT" inspect "$work/bad-set-00002-of-00003.gguf"
}
split_case no "bad-set-00002-of-00003.gguf: split.no is 0 but the name makes it split 2"
split_case count "bad-set-00003-of-00003.gguf: split.count is 4 but the name says the set has 3 files"
split_case tensors "bad-set-00001-of-00003.gguf: split.tensors.count is 7 but the 3 splits hold 6 tensors"
split_case dup "bad-set-00002-of-00003.gguf: tensor 'token_embd.weight' is also in"
rm -f "$work"/bad-set-*
"$make" split "$work/bad-set" 3
rm "$work/bad-set-00003-of-00003.gguf"
expect_error "split missing" "bad-set-00003-of-00003.gguf: cannot open" "$SMELT" inspect "$work/bad-set-00001-of-00003.gguf"
cp "$work/set-00001-of-00003.gguf" "$work/lone.gguf"
expect_error "split keys on a lone file" "lone.gguf: split.count is 3 but the name is not that of a split" \
  "$SMELT" inspect "$work/lone.gguf"

finish
