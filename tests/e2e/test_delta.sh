# smelt delta extract / apply end to end: fine-tunes of sharded bf16, f16 and f32 bases, a
# fine-tune with a larger vocabulary (tensors of other shapes stored raw), an identical model
# (a tiny delta) are rebuilt with the sha256 of every file; the delta file is byte-identical
# across thread counts and budgets; every bad input (a damaged frame, a truncated file, edited
# metadata, another base, an output that already holds a model, MODEL == BASE, ...) is its own
# error, with no output left that looks complete.
source "$(dirname "$0")/lib.sh"

synth() { $SMELT synth "$work/$1" --size 4M --shard-size 1M "${@:2}"; }
synth base --seed 1
synth ft --base-seed 1 --seed 2
synth base16 --seed 1 --dtype float16
synth ft16 --base-seed 1 --seed 2 --dtype float16
synth base32 --seed 1 --dtype float32
synth ft32 --base-seed 1 --seed 2 --dtype float32
synth basev --seed 1 --vocab 1000
synth ftv --base-seed 1 --seed 2 --vocab 1200
cp -r "$work/base" "$work/same"
echo "# a model card" > "$work/ft/README.md"

# sums DIR: "sha256  name" of every file, sorted by name.
sums() { (cd "$1" && sha256sum * | sort -k2); }

# round_trip NAME BASE MODEL [extract options]: extract, apply, compare every file.
round_trip() {
  local name=$1 base=$2 model=$3; shift 3
  rm -rf "$work/d-$name" "$work/o-$name"
  if ! $SMELT delta extract --base "$work/$base" "$work/$model" "$work/d-$name" -q "$@"; then
    fail "$name: extract"; return
  fi
  if ! $SMELT delta apply "$work/$base" "$work/d-$name" "$work/o-$name" -q; then
    fail "$name: apply"; return
  fi
  if [ "$(sums "$work/$model")" = "$(sums "$work/o-$name")" ]; then
    pass "$name: every file rebuilt byte for byte ($(ls "$work/o-$name" | wc -l) files)"
  else
    fail "$name: rebuilt files differ"; diff <(sums "$work/$model") <(sums "$work/o-$name") >&2
  fi
}

round_trip bf16 base ft
round_trip f16 base16 ft16
round_trip f32 base32 ft32 --level 9
round_trip vocab basev ftv
round_trip same base same
round_trip cross base16 ft   # bf16 against f16: every tensor differs in dtype, stored raw

# The summary line (not -q) has the figures.
out=$($SMELT delta extract --base "$work/base" "$work/ft" "$work/d-summary" 2>&1)
grep -qE "75 tensors \(75 as XOR.*ratio [0-9.]+x.*MB/s in.*MB/s out" <<<"$out" \
  && pass "summary: $out" || fail "summary line: $out"
out=$($SMELT delta extract --base "$work/basev" "$work/ftv" "$work/d-summary2" 2>&1)
grep -qE "as XOR" <<<"$out" && ! grep -q "(75 as XOR" <<<"$out" \
  && pass "vocab: tensors of other shapes are raw: $out" || fail "vocab summary: $out"

# The delta is a valid safetensors file that smelt's own reader opens.
$SMELT inspect "$work/d-bf16/delta.safetensors" >/dev/null && pass "inspect reads the delta" \
  || fail "inspect cannot read the delta"

# An identical model: every XOR is zero, the delta is tiny.
model_bytes=$(du -cb "$work/same"/* | tail -1 | cut -f1)
delta_bytes=$(stat -c %s "$work/d-same/delta.safetensors")
if [ $((delta_bytes * 50)) -lt "$model_bytes" ]; then
  pass "identical model: delta $delta_bytes bytes of $model_bytes (< 2%)"
else
  fail "identical model: delta $delta_bytes bytes of $model_bytes (>= 2%)"
fi

# The same bytes for any thread count and budget.
ref=$(sha256sum < "$work/d-bf16/delta.safetensors")
for opts in "-j1" "-j2" "-j2 --max-memory 6Mi" "-j1 --max-memory 4Mi" "-j3 --max-memory 1Gi"; do
  rm -rf "$work/dj"
  # shellcheck disable=SC2086
  $SMELT delta extract --base "$work/base" "$work/ft" "$work/dj" -q $opts || { fail "extract $opts"; continue; }
  [ "$(sha256sum < "$work/dj/delta.safetensors")" = "$ref" ] && pass "extract $opts: same bytes" \
    || fail "extract $opts: the delta's bytes differ"
  rm -rf "$work/oj"
  # shellcheck disable=SC2086
  $SMELT delta apply "$work/base" "$work/dj" "$work/oj" -q $opts && \
    [ "$(sums "$work/ft")" = "$(sums "$work/oj")" ] && pass "apply $opts: same files" \
    || fail "apply $opts"
done
expect_error "budget too small" "cannot hold one frame" \
  $SMELT delta extract --base "$work/base" "$work/ft" "$work/dsmall" --max-memory 100K
[ ! -e "$work/dsmall/delta.safetensors" ] || fail "budget error left a delta"

# ---- bad input ----------------------------------------------------------------------------
D=$work/d-bf16/delta.safetensors
# py EXPR: runs python3 on the delta's header: h (the JSON), doc (the metadata document),
# start (the data start).
pyhdr='
import json, struct, sys
f = sys.argv[1]
raw = open(f, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n]); start = 8 + n
doc = json.loads(h["__metadata__"]["smelt_delta"])
'

# apply_bad NAME PHRASE DELTA [BASE]: apply must fail with PHRASE and leave nothing.
apply_bad() {
  local name=$1 phrase=$2 delta=$3 base=${4:-$work/base}
  rm -rf "$work/obad"
  expect_error "$name" "$phrase" $SMELT delta apply "$base" "$delta" "$work/obad"
  if [ -d "$work/obad" ]; then no_model_output "$work/obad"; fi
}

# A damaged byte inside a frame of the largest tensor: the message names tensor and frame.
tensor=model.embed_tokens.weight
read -r off <<<"$(python3 -c "$pyhdr
b, e = h['$tensor']['data_offsets']
ent = [x for x in doc['entries'] if x['name'] == '$tensor'][0]
elems = 1
for s in ent['shape']: elems *= s
nframes = (elems + 65535) // 65536
print(start + b + 16 * nframes + 100)" "$D")"
cp "$D" "$work/corrupt.safetensors"
printf '\x5a' | dd of="$work/corrupt.safetensors" bs=1 seek="$off" conv=notrunc status=none
apply_bad "damaged frame" "tensor '$tensor': frame 0 of" "$work/corrupt.safetensors"

# A damaged checksum in a frame table: checksum mismatch.
read -r off <<<"$(python3 -c "$pyhdr
print(start + h['$tensor']['data_offsets'][0] + 16 + 8)" "$D")"
cp "$D" "$work/sum.safetensors"
printf '\x01' | dd of="$work/sum.safetensors" bs=1 seek="$off" conv=notrunc status=none
apply_bad "damaged checksum" "tensor '$tensor': frame 1 of" "$work/sum.safetensors"
expect_error "damaged checksum: says so" "checksum mismatch" \
  $SMELT delta apply "$work/base" "$work/sum.safetensors" "$work/obad"

# A frame table whose sizes do not add up to the blob.
read -r off <<<"$(python3 -c "$pyhdr
print(start + h['$tensor']['data_offsets'][0] + 16)" "$D")"
cp "$D" "$work/table.safetensors"
printf '\x00\x00\x00' | dd of="$work/table.safetensors" bs=1 seek="$off" conv=notrunc status=none
apply_bad "frame table" "tensor '$tensor': frame 1 of" "$work/table.safetensors"

# A truncated file.
cp "$D" "$work/short.safetensors"
truncate -s -1000 "$work/short.safetensors"
apply_bad "truncated" "past the end of the file" "$work/short.safetensors"

# Edited metadata, each its own message (same lengths, so the safetensors part stays valid).
edit() { # edit OUT OLD NEW: the first OLD in the header replaced
  python3 - "$D" "$work/$1" "$2" "$3" <<'PY'
import sys
raw = bytearray(open(sys.argv[1], "rb").read())
old, new = sys.argv[3].encode(), sys.argv[4].encode()
assert len(old) == len(new)
i = raw.index(old)
raw[i:i + len(old)] = new
open(sys.argv[2], "wb").write(raw)
PY
}
edit mode.safetensors '\"mode\":\"xor\"' '\"mode\":\"xyz\"'
apply_bad "metadata: bad mode" "mode is xyz" "$work/mode.safetensors"
edit json.safetensors '{\"version\":1' '[\"version\":1'
apply_bad "metadata: not JSON" "delta metadata is not valid JSON" "$work/json.safetensors"
edit fmt.safetensors '"smelt-delta"' '"smelt-delto"'
apply_bad "metadata: format" "not a smelt delta" "$work/fmt.safetensors"
edit fe.safetensors '\"frame_elements\":65536' '\"frame_elements\":65537'
apply_bad "metadata: frame size" "frame_elements is not 65536" "$work/fe.safetensors"
edit size.safetensors '\"size\":4' '\"size\":5'
apply_bad "metadata: file size" "but its parts decode to" "$work/size.safetensors"
# the first digit of a tensor's first dimension changed: its frame count no longer fits
python3 - "$D" "$work/shape.safetensors" <<'PY'
import sys
raw = bytearray(open(sys.argv[1], "rb").read())
pat = b'model.embed_tokens.weight\\",\\"dtype\\":\\"BF16\\",\\"shape\\":['
i = raw.index(pat) + len(pat)
raw[i] = ord('9') if raw[i] != ord('9') else ord('8')
open(sys.argv[2], "wb").write(raw)
PY
apply_bad "metadata: shape" "but its parts decode to" "$work/shape.safetensors"

# Another base: other shapes (its header hash differs), and the same shapes with other weights.
apply_bad "another base: header" "header hash" "$D" "$work/basev"
apply_bad "another base: header names the file" "model-00001-of-00005.safetensors" "$D" "$work/basev"
synth other --seed 9
apply_bad "another base: same header, other weights" "same header, other weights in the sampled blocks" "$D" "$work/other"
apply_bad "base of other file count" "this is not the delta's base" "$D" "$work/base32"

# The output directory.
expect_error "output holds a model" "already holds a model" \
  $SMELT delta apply "$work/base" "$D" "$work/o-bf16"
$SMELT delta apply "$work/base" "$D" "$work/o-bf16" --overwrite -q && \
  [ "$(sums "$work/ft")" = "$(sums "$work/o-bf16")" ] && pass "--overwrite replaces it" \
  || fail "--overwrite"
expect_error "output is the base" "the base's directory" \
  $SMELT delta apply "$work/base" "$D" "$work/base" --overwrite
expect_error "extract: delta exists" "already holds a delta" \
  $SMELT delta extract --base "$work/base" "$work/ft" "$work/d-bf16"
expect_error "extract: MODEL == BASE" "are the same model" \
  $SMELT delta extract --base "$work/base" "$work/base" "$work/dsame"
expect_error "extract: output in the model" "the model's directory" \
  $SMELT delta extract --base "$work/base" "$work/ft" "$work/ft"
[ ! -e "$work/ft/delta.safetensors" ] || fail "a delta was written into the model"
expect_error "extract: no model" "MODEL: " \
  $SMELT delta extract --base "$work/base" "$work/nothing" "$work/dnone"
expect_error "extract: no --base" "takes --base BASE" $SMELT delta extract "$work/ft" "$work/dx"
expect_error "apply: a model is not a delta" "not a smelt delta" \
  $SMELT delta apply "$work/base" "$work/ft/model-00001-of-00005.safetensors" "$work/obad"
expect_error "level out of range" "--level" \
  $SMELT delta extract --base "$work/base" "$work/ft" "$work/dl" --level 23

finish
