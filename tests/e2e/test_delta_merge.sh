# 'BASE+DELTA' merge inputs: a fine-tune stored as a smelt delta merges as the fine-tune itself.
# A ties merge of base+d1 and base+d2 equals, byte for byte, the ties merge of the raw
# fine-tunes, at any thread count, budget (resident or streamed tensors) and SIMD level; plan
# shows the XOR; inputs on the same base read it once; a fine-tune whose tensors differ from the
# base's (stored whole) merges as itself; a damaged frame and another base are clear errors
# with no output.
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/base" --size 4M --seed 1 --shard-size 1M >/dev/null
for s in 2 3 4; do
  $SMELT synth "$work/ft$s" --size 4M --base-seed 1 --seed $s --shard-size 1M >/dev/null
  $SMELT delta extract --base "$work/base" "$work/ft$s" "$work/d$s" -q
done
ties() { # FILE MODEL1 MODEL2 MODEL3
  cat > "$1" <<YAML
merge_method: ties
base_model: $work/base
parameters: {normalize: true}
models:
  - model: $2
    parameters: {weight: 0.5, density: 0.5}
  - model: $3
    parameters: {weight: 0.3, density: 0.7}
  - model: $4
    parameters: {weight: 0.2, density: 0.3}
YAML
}
ties "$work/raw.yml" "$work/ft2" "$work/ft3" "$work/ft4"
ties "$work/delta.yml" "$work/base+$work/d2" "$work/base+$work/d3" "$work/base+$work/d4/delta.safetensors"
$SMELT merge "$work/raw.yml" "$work/raw" -q
same() { cmp -s "$work/raw/model.safetensors" "$1/model.safetensors"; }
for variant in "" "-j1" "--max-memory 6Mi" "-j3 --max-memory 8Mi" scalar; do
  out=$work/out-${variant// /}
  if [ "$variant" = scalar ]; then
    SMELT_ISA=scalar $SMELT merge "$work/delta.yml" "$out" -q
  else
    # shellcheck disable=SC2086
    $SMELT merge "$work/delta.yml" "$out" -q $variant
  fi
  same "$out" && pass "ties of three base+delta inputs == ties of the fine-tunes (${variant:-default})" \
    || fail "ties of deltas differs (${variant:-default})"
done
$SMELT verify "$work/out-" -q && pass "verify" || fail "verify"

# The base read once: base_model BASE and two BASE+DELTA inputs stand on the same base bytes,
# which the ring reads once per chunk; what the merge reads (the ring's count and the deltas'
# frames, --json bytes_read) is what `smelt plan` promised, at a resident and a streamed budget,
# and it is the base's tensors once plus at most the two delta files.
two() { # FILE MODEL1 MODEL2
  printf 'merge_method: ties\nbase_model: %s\nmodels:\n  - model: %s\n    parameters: {weight: 0.6, density: 0.5}\n  - model: %s\n    parameters: {weight: 0.4, density: 0.6}\n' \
    "$work/base" "$2" "$3" > "$1"
}
two "$work/raw2.yml" "$work/ft2" "$work/ft3"
two "$work/shared.yml" "$work/base+$work/d2" "$work/base+$work/d3"
$SMELT merge "$work/raw2.yml" "$work/raw2" -q
for budget in 512Mi 4Mi; do # 4Mi at -j2 streams the largest tensors: their frames span chunks
  $SMELT plan "$work/shared.yml" --max-memory $budget -j2 > "$work/shared-$budget.plan"
  planned=$(sed -n 's/^read: *\([0-9]*\) bytes.*/\1/p' "$work/shared-$budget.plan")
  got=$($SMELT merge "$work/shared.yml" "$work/shared-$budget" --max-memory $budget -j2 --json -q |
        sed -n 's/.*"bytes_read": \([0-9]*\).*/\1/p')
  cmp -s "$work/raw2/model.safetensors" "$work/shared-$budget/model.safetensors" &&
    pass "base_model + two deltas on it == the fine-tunes' merge ($budget)" ||
    fail "base_model + two deltas differ from the fine-tunes' merge ($budget)"
  [ -n "$got" ] && [ "$got" = "$planned" ] && pass "bytes read $got == planned ($budget)" ||
    fail "bytes read '$got' != planned '$planned' ($budget)"
done
grep -q streamed "$work/shared-4Mi.plan" && pass "4Mi streams" || fail "4Mi streams nothing"
# The pread path counts the same, at another thread count.
planned=$($SMELT plan "$work/shared.yml" --max-memory 5Mi -j3 | sed -n 's/^read: *\([0-9]*\) bytes.*/\1/p')
got=$(SMELT_IO=pread $SMELT merge "$work/shared.yml" "$work/shared-pread" --max-memory 5Mi -j3 --json -q |
      sed -n 's/.*"bytes_read": \([0-9]*\).*/\1/p')
[ -n "$got" ] && [ "$got" = "$planned" ] &&
  cmp -s "$work/raw2/model.safetensors" "$work/shared-pread/model.safetensors" &&
  pass "pread, -j3, 3Mi: same bytes, bytes read $got == planned" ||
  fail "pread, -j3, 3Mi: bytes read '$got', planned '$planned', or the output differs"
deltas=$(( $(stat -c %s "$work/d2/delta.safetensors") + $(stat -c %s "$work/d3/delta.safetensors") ))
# At 512Mi every tensor is resident: read once. $inputs counts the base's tensors three times.
planned=$($SMELT plan "$work/shared.yml" | sed -n 's/^read: *\([0-9]*\) bytes.*/\1/p')
inputs=$($SMELT plan "$work/shared.yml" | sed -n "s/^read:.*the input tensors' \([0-9]*\) bytes.*/\1/p")
[ "$planned" -gt $((inputs / 3)) ] && [ "$planned" -le $((inputs / 3 + deltas)) ] &&
  pass "the base is read once ($planned bytes: base tensors $((inputs / 3)) + deltas <= $deltas)" ||
  fail "the base is read more than once ($planned bytes for base tensors $((inputs / 3)), deltas $deltas)"



# A damaged frame: the error names the tensor and the frame; nothing that looks complete.
cp -r "$work/d3" "$work/bad"
size=$(stat -c %s "$work/bad/delta.safetensors")
printf '\xff\xff\xff\xff' | dd of="$work/bad/delta.safetensors" bs=1 seek=$((size - 4000)) conv=notrunc 2>/dev/null
ties "$work/bad.yml" "$work/base+$work/d2" "$work/base+$work/bad" "$work/ft4"
expect_error "damaged frame" "frame" $SMELT merge "$work/bad.yml" "$work/out-bad" -q
no_model_output "$work/out-bad"

# Another base: refused before any output.
$SMELT synth "$work/other" --size 4M --seed 9 --shard-size 1M >/dev/null
printf 'merge_method: linear\nmodels:\n  - model: %s\n    parameters: {weight: 1}\n' \
  "$work/other+$work/d2" > "$work/other.yml"
expect_error "delta of another base" "this is not the delta's base" $SMELT merge "$work/other.yml" "$work/out-other" -q
no_model_output "$work/out-other"

# A fine-tune with another vocabulary: its embedding and lm_head are stored whole, decoded from
# their frames alone (no base read for them): base+dv merges as the fine-tune itself, byte for
# byte, alone and first next to another delta (whose rows are cut to as many as it has); after
# a model with more rows its shape is refused by the ordinary shape rule, as the raw one is.
$SMELT synth "$work/ftv" --size 4M --base-seed 1 --seed 5 --shard-size 1M --vocab 600 >/dev/null
# its side files differ from the base's too (vocab_size 600; a chat template of its own)
python3 - "$work/ftv/tokenizer_config.json" <<'PY'
import json, sys
path = sys.argv[1]
doc = json.load(open(path))
doc["chat_template"] = "{{ the fine-tune's own }}"
json.dump(doc, open(path, "w"))
PY
$SMELT delta extract --base "$work/base" "$work/ftv" "$work/dv" -q
linear() { # FILE MODEL...
  f=$1; shift
  printf 'merge_method: linear\nmodels:\n' > "$f"
  for m in "$@"; do printf '  - model: %s\n    parameters: {weight: 0.5}\n' "$m" >> "$f"; done
}
linear "$work/v1.yml" "$work/base+$work/dv"
linear "$work/v1r.yml" "$work/ftv"
linear "$work/v2.yml" "$work/base+$work/dv" "$work/base+$work/d2"
linear "$work/v2r.yml" "$work/ftv" "$work/ft2"
linear "$work/v3.yml" "$work/base+$work/d2" "$work/base+$work/dv"
linear "$work/v3r.yml" "$work/ft2" "$work/ftv"
$SMELT plan "$work/v1.yml" > "$work/v1.plan"
grep -q "stored whole: decoded from the delta's" "$work/v1.plan" &&
  pass "plan shows a tensor stored whole" || fail "plan does not show the tensor stored whole"
for v in v1 v2; do
  $SMELT merge "$work/$v.yml" "$work/out-$v" -q 2>/dev/null && $SMELT merge "$work/${v}r.yml" "$work/out-${v}r" -q 2>/dev/null &&
    cmp -s "$work/out-$v/model.safetensors" "$work/out-${v}r/model.safetensors" &&
    pass "$v: a delta with tensors stored whole == the fine-tune itself" ||
    fail "$v: a delta with tensors stored whole differs from the fine-tune"
  # config.json and the tokenizer are the fine-tune's, from the delta, not the base's
  same=1
  for f in config.json tokenizer_config.json generation_config.json; do
    cmp -s "$work/out-$v/$f" "$work/out-${v}r/$f" || same=0
  done
  grep -q '"vocab_size": 600' "$work/out-$v/config.json" &&
    grep -q "the fine-tune's own" "$work/out-$v/tokenizer_config.json" || same=0
  [ $same = 1 ] && pass "$v: config.json and tokenizer files are the fine-tune's (from the delta)" ||
    fail "$v: config.json or tokenizer files are not the fine-tune's"
done
# A fine-tune with a tensor the base lacks, in the middle of its first shard: stored whole, it
# keeps its place (the merge follows the fine-tune's layout, not the base's with the new tensor
# at the end), so base+dx merges as the fine-tune itself.
cp -r "$work/ft2" "$work/ftx"
python3 - "$work/ftx" <<'PY'
import json, os, struct, sys
d = sys.argv[1]
index_path = os.path.join(d, "model.safetensors.index.json")
index = json.load(open(index_path))
shard = sorted(set(index["weight_map"].values()))[0]
path = os.path.join(d, shard)
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
meta = header.pop("__metadata__", None)
names = sorted(header, key=lambda k: header[k]["data_offsets"][0])
blobs = [(k, header[k], raw[8 + n + header[k]["data_offsets"][0]:8 + n + header[k]["data_offsets"][1]])
         for k in names]
blobs.insert(3, ("model.layers.0.extra_bias", {"dtype": "BF16", "shape": [128]},
                 bytes((i * 37) & 0x7f for i in range(256))))
out, data, at = {}, b"", 0
if meta is not None:
    out["__metadata__"] = meta
for k, info, b in blobs:
    out[k] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [at, at + len(b)]}
    data += b
    at += len(b)
text = json.dumps(out, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
open(path, "wb").write(struct.pack("<Q", len(text)) + text + data)
index["weight_map"]["model.layers.0.extra_bias"] = shard
index["metadata"]["total_size"] += 256
json.dump(index, open(index_path, "w"))
PY
$SMELT delta extract --base "$work/base" "$work/ftx" "$work/dx" -q
linear "$work/x1.yml" "$work/base+$work/dx"
linear "$work/x1r.yml" "$work/ftx"
$SMELT merge "$work/x1.yml" "$work/out-x1" -q && $SMELT merge "$work/x1r.yml" "$work/out-x1r" -q &&
  cmp -s "$work/out-x1/model.safetensors" "$work/out-x1r/model.safetensors" &&
  pass "a tensor the base lacks keeps its place in the fine-tune's order" ||
  fail "a delta with a new tensor does not merge as the fine-tune (tensor order?)"
expect_error "a delta whose vocabulary is not the others'" "dv': tensor 'model.embed_tokens.weight' has shape [600, 128], but [1536, 128]" \
  $SMELT merge "$work/v3.yml" "$work/out-v3" -q
no_model_output "$work/out-v3"
finish
