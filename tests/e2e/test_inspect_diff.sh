# smelt inspect and smelt diff: text and JSON reports, figures of known pairs, mismatches, and
# figures that do not depend on the memory budget or the thread count.
source "$(dirname "$0")/lib.sh"

json_ok() { python3 -c 'import json,sys; json.load(sys.stdin)'; }
# jq-like one-liner: jget FILE EXPR prints eval(EXPR) with d = the document.
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

$SMELT synth "$work/a" --size 4M --seed 1 >/dev/null
$SMELT synth "$work/ft" --size 4M --seed 2 --base-seed 1 >/dev/null
$SMELT synth "$work/other" --size 8M --seed 1 >/dev/null
$SMELT synth "$work/sharded" --size 4M --seed 1 --shard-size 1M >/dev/null

# ---- inspect ----
out=$($SMELT inspect "$work/a") || fail "inspect exited non-zero"
grep -q '^tensors: 75 ' <<<"$out" && pass "inspect: tensor count" || fail "inspect count: $out"
grep -q '^layers: 8$' <<<"$out" && pass "inspect: layer count" || fail "inspect layers: $out"
grep -qE '^  BF16 +75 tensors' <<<"$out" && pass "inspect: per-dtype totals" || fail "inspect dtypes"
grep -qE '^model\.embed_tokens\.weight +BF16 +\[1536, 128\] +393216 +model\.safetensors$' <<<"$out" \
  && pass "inspect: tensor line" || fail "inspect tensor line: $(grep embed <<<"$out")"
$SMELT inspect "$work/sharded" --json > "$work/sharded.json" || fail "inspect --json exited non-zero"
json_ok < "$work/sharded.json" && pass "inspect --json is valid JSON" || fail "inspect --json: invalid JSON"
[ "$(jget "$work/sharded.json" 'len(d["files"]) > 1 and d["tensor_count"] == 75 and d["layers"] == 8 and d["metadata"] == {"format": "pt"}')" = True ] \
  && pass "inspect --json: files, count, layers, metadata" || fail "inspect --json fields"
[ "$(jget "$work/sharded.json" 'sum(t["bytes"] for t in d["tensors"]) == d["total_bytes"] == d["dtypes"]["BF16"]["bytes"]')" = True ] \
  && pass "inspect --json: totals add up" || fail "inspect --json totals"
$SMELT inspect "$work/a/model.safetensors" >/dev/null && pass "inspect: a lone file" || fail "inspect lone file"
expect_error "inspect: missing model" "nothing" $SMELT inspect "$work/nothing"
expect_error "inspect: usage" "inspect takes one MODEL" $SMELT inspect

# ---- diff: a model with itself, a fine-tune, another architecture ----
$SMELT diff "$work/a" "$work/sharded" > "$work/self.txt" || fail "diff with itself exited non-zero"
grep -q '^compared: 75 tensors (75 float, 0 bytewise): 75 identical, 0 differ$' "$work/self.txt" \
  && pass "diff with itself: all identical" || fail "diff self: $(tail -5 "$work/self.txt")"
awk '$1 ~ /weight$/ && !($(NF-2) == "1.000000000" && $(NF-1) == "0.000e+00" && $NF == "0.000e+00") {bad = 1}
     END {exit bad}' "$work/self.txt" && pass "diff with itself: cosine 1, distance 0, max 0" \
  || fail "diff self figures"
$SMELT diff "$work/a" "$work/a" --json > "$work/self.json" || fail "diff --json with itself"
json_ok < "$work/self.json" && pass "diff --json is valid JSON" || fail "diff --json invalid"
[ "$(jget "$work/self.json" 'all(t["cosine"] == 1 and t["rel_l2"] == 0 and t["max_abs"] == 0 and t["status"] == "identical" for t in d["tensors"]) and d["summary"]["match"]')" = True ] \
  && pass "diff --json with itself: figures" || fail "diff --json self figures"

$SMELT diff "$work/a" "$work/ft" --json > "$work/ft.json" || fail "diff with a fine-tune exited non-zero"
[ "$(jget "$work/ft.json" 'all(0.5 < t["cosine"] < 1 and 0 < t["rel_l2"] < 1 and 0 < t["max_abs"] < 0.1 for t in d["tensors"]) and d["summary"]["differ"] == 75')" = True ] \
  && pass "diff with a fine-tune: 0.5 < cosine < 1, distance and max small and non-zero" \
  || fail "diff fine-tune figures: $(jget "$work/ft.json" 'd["summary"]')"

rc=0; $SMELT diff "$work/a" "$work/other" > "$work/other.txt" 2> "$work/other.err" || rc=$?
[ "$rc" = 1 ] && pass "diff of different shapes: exit 1" || fail "diff different shapes: exit $rc"
grep -qE 'shapes differ: [1-9]' "$work/other.txt" && grep -qE '[1-9][0-9]* with different shapes' "$work/other.err" \
  && pass "diff of different shapes: reported" || fail "diff shapes report: $(cat "$work/other.err")"

# ---- bounded memory and threads: the same figures ----
$SMELT synth "$work/big" --size 48M --seed 1 >/dev/null
$SMELT synth "$work/bigft" --size 48M --seed 2 --base-seed 1 >/dev/null
largest=$($SMELT inspect "$work/big" --json | python3 -c 'import json,sys; print(max(t["bytes"] for t in json.load(sys.stdin)["tensors"]))')
[ "$largest" -gt $((3 * 1024 * 1024)) ] && pass "the largest tensor ($largest bytes) exceeds 3Mi" \
  || fail "test models too small: $largest"
$SMELT diff "$work/big" "$work/bigft" --max-memory 1G -j 3 > "$work/d1g.txt" || fail "diff 1G"
$SMELT diff "$work/big" "$work/bigft" --max-memory 3Mi -j 3 > "$work/d3m.txt" || fail "diff 3Mi"
$SMELT diff "$work/big" "$work/bigft" --max-memory 3Mi -j 1 > "$work/d3m1.txt" || fail "diff 3Mi -j1"
SMELT_IO=pread $SMELT diff "$work/big" "$work/bigft" -j 2 > "$work/dpread.txt" 2>/dev/null || fail "diff pread"
cmp -s "$work/d1g.txt" "$work/d3m.txt" && pass "diff: --max-memory 3Mi and 1G give the same report" \
  || fail "diff depends on the budget: $(diff "$work/d1g.txt" "$work/d3m.txt" | head -5)"
cmp -s "$work/d3m.txt" "$work/d3m1.txt" && pass "diff: threads 1 and 3 give the same report" \
  || fail "diff depends on threads: $(diff "$work/d3m.txt" "$work/d3m1.txt" | head -5)"
cmp -s "$work/d1g.txt" "$work/dpread.txt" && pass "diff: pread and io_uring give the same report" \
  || fail "diff depends on the I/O path"
if [ "${SMELT_SANITIZED:-0}" != 1 ]; then
  peak() { "$SMELT_TEST_HELPERS/peak_rss" "$@" 2>&1 >/dev/null | awk '/^peak_rss_kib/ {print $2}'; }
  base=$(peak $SMELT inspect "$work/big")
  kib=$(peak $SMELT diff "$work/big" "$work/bigft" --max-memory 3Mi -j 3)
  # Over what the program and the headers take, the budget and a little slack: one whole copy
  # of the largest tensor per model would already be about 9 MiB.
  [ "$kib" -le $((base + 3072 + 2048)) ] \
    && pass "diff --max-memory 3Mi: peak RSS $kib KiB ($base KiB without reading data)" \
    || fail "diff --max-memory 3Mi: peak RSS $kib KiB ($base KiB without reading data)"
fi
expect_error "diff: budget too small" "raise --max-memory" $SMELT diff "$work/a" "$work/a" --max-memory 100K
expect_error "diff: usage" "diff takes two models" $SMELT diff "$work/a"

# ---- dtypes: mixed floats decoded, others bytewise, zero tensors, incomparable dtypes ----
python3 - "$work" <<'PY'
import json, struct, sys
def st(path, tensors):
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
f32 = lambda *v: struct.pack("<%df" % len(v), *v)
f16 = lambda *v: struct.pack("<%de" % len(v), *v)
i64 = lambda *v: struct.pack("<%dq" % len(v), *v)
w = sys.argv[1]
st(w + "/x.safetensors", [("w", "F32", [2, 2], f32(1, 2, 3, 4)), ("ids", "I64", [3], i64(1, 2, 3)),
                          ("z", "F32", [2], f32(0, 0)), ("zb", "F32", [2], f32(0, 0)),
                          ("mixed", "F64", [1], struct.pack("<d", 1)), ("onlyx", "F32", [1], f32(1))])
st(w + "/y.safetensors", [("w", "F16", [2, 2], f16(1, 2, 3, 5)), ("ids", "I64", [3], i64(1, 2, 4)),
                          ("z", "F32", [2], f32(0, 0)), ("zb", "F32", [2], f32(0, 1)),
                          ("mixed", "F32", [1], f32(1)), ("onlyy", "F32", [1], f32(1))])
PY
rc=0; $SMELT diff "$work/x.safetensors" "$work/y.safetensors" --json > "$work/xy.json" 2>/dev/null || rc=$?
[ "$rc" = 1 ] && pass "diff with incomparable tensors: exit 1" || fail "diff x y: exit $rc"
t() { jget "$work/xy.json" "{t['name']: t for t in d['tensors']}['$1']$2"; }
[ "$(t w '["rel_l2"]')" = "$(python3 -c 'print(1/30**0.5)')" ] && [ "$(t w '["max_abs"]')" = 1.0 ] \
  && pass "diff F32 vs F16: relative L2 1/sqrt(30), max 1" || fail "diff F32/F16: $(t w '')"
[ "$(t ids '["status"]')" = differ ] && pass "diff I64: bytewise differ" || fail "diff ids: $(t ids '')"
[ "$(t z '["cosine"]') $(t z '["rel_l2"]')" = "1.0 0.0" ] && pass "diff zeros vs zeros: cosine 1, distance 0" \
  || fail "diff zeros: $(t z '')"
[ "$(t zb '["cosine"]') $(t zb '["rel_l2"]')" = "0.0 inf" ] && pass "diff zeros vs non-zero: cosine 0, distance inf" \
  || fail "diff zb: $(t zb '')"
[ "$(t mixed '["status"]') $(t onlyx '["status"]') $(t onlyy '["status"]')" = "dtype_mismatch only_in_a only_in_b" ] \
  && pass "diff: dtype mismatch and one-sided tensors reported" || fail "diff statuses"

# GGUF block types: diff decodes Q8_0 and Q4_K/Q6_K blocks, chunk by chunk at any budget; its
# figures equal those of the same models converted to F32 GGUF (the dequantization is exact).
for dt in q8_0 q4_k_m; do
  $SMELT synth "$work/g1-$dt.gguf" --size 2M --dtype $dt --seed 1 >/dev/null
  $SMELT synth "$work/g2-$dt.gguf" --size 2M --dtype $dt --base-seed 1 --seed 3 >/dev/null
  for m in 1 2; do
    printf 'merge_method: passthrough\nmodels:\n  - model: %s\n' "$work/g$m-$dt.gguf" > "$work/p$m.yml"
    rm -rf "$work/f$m-$dt"
    $SMELT merge "$work/p$m.yml" "$work/f$m-$dt" --outtype f32 -q
  done
  figures() { $SMELT diff "$@" | awk 'NR > 3 {$2 = ""; print}'; } # all but the dtype
  figures "$work/g1-$dt.gguf" "$work/g2-$dt.gguf" --max-memory 1Mi -j1 > "$work/dq-$dt"
  figures "$work/f1-$dt/model.gguf" "$work/f2-$dt/model.gguf" > "$work/df-$dt"
  if [ -s "$work/dq-$dt" ] && cmp -s "$work/dq-$dt" "$work/df-$dt" && grep -q "e-0" "$work/dq-$dt"; then
    pass "diff of $dt GGUF files = diff of their F32 conversions ($(wc -l < "$work/dq-$dt") tensors)"
  else fail "diff of $dt GGUF: $(diff "$work/dq-$dt" "$work/df-$dt" | head -3)"; fi
done
finish
