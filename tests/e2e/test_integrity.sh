# The checksum manifest and `smelt verify`: a clean merge verifies; a flipped byte names its
# tensor; a truncated shard and a missing manifest are reported.
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/base" --size 8M --seed 1 --shard-size 3M
$SMELT synth "$work/a" --size 8M --base-seed 1 --seed 2 --shard-size 3M
linear_config "$work/c.yml" "$work/base" 0.5 "$work/base" 0.5 "$work/a"
$SMELT merge "$work/c.yml" "$work/out" --out-shard-size 3M -q
out=$work/out

[ -s "$out/smelt-manifest.json" ] && pass "manifest written" || fail "no smelt-manifest.json"
grep -q '"algorithm": "xxh3-128"' "$out/smelt-manifest.json" && pass "manifest names its hash" \
  || fail "manifest lacks the algorithm"
[ ! -e "$out/.smelt-journal" ] && pass "journal removed on success" || fail "journal left behind"
n_tensors=$(grep -c '": "[0-9a-f]\{32\}"' "$out/smelt-manifest.json")
[ "$n_tensors" -gt 20 ] && pass "manifest lists $n_tensors hashes" || fail "manifest hashes: $n_tensors"

rc=0; $SMELT verify "$out" >"$work/v.out" 2>"$work/v.err" || rc=$?
[ "$rc" -eq 0 ] && [ ! -s "$work/v.out" ] && grep -q "GB/s" "$work/v.err" \
  && pass "verify passes: $(cat "$work/v.err")" || fail "verify of a clean merge: rc $rc $(cat "$work/v.out" "$work/v.err")"
SMELT_IO=pread $SMELT verify "$out" -q --max-memory 64Ki && pass "verify with pread, 64Ki" \
  || fail "verify with pread and a small budget"

# The hash of a tensor is what xxhsum prints for its bytes.
if command -v xxhsum >/dev/null && command -v python3 >/dev/null; then
  python3 - "$out/model.safetensors.index.json" "$out" "$work/t.bin" <<'PY' >"$work/t.name"
import json, struct, sys
idx = json.load(open(sys.argv[1]))
name, shard = sorted(idx["weight_map"].items())[0]
f = open(sys.argv[2] + "/" + shard, "rb"); n = struct.unpack("<Q", f.read(8))[0]
h = json.loads(f.read(n)); b, e = h[name]["data_offsets"]; f.seek(8 + n + b)
open(sys.argv[3], "wb").write(f.read(e - b)); print(name)
PY
  want=$(xxhsum -H2 "$work/t.bin" | awk '{print $1}' | sed 's/^XXH128_//')
  grep -q "\"$(cat "$work/t.name")\": \"$want\"" "$out/smelt-manifest.json" \
    && pass "tensor hash matches xxhsum -H2" || fail "tensor hash differs from xxhsum ($want)"
fi

# One flipped byte in the middle of a shard: verify names the file and the tensor, exits 1.
cp -r "$out" "$work/flip"
shard="$work/flip/model-00002-of-00003.safetensors"
size=$(stat -c %s "$shard"); at=$((size - 1000))
byte=$(od -An -tu1 -j "$at" -N1 "$shard" | tr -d ' ')
printf "$(printf '\\%03o' $(( (byte + 1) % 256 )))" | dd of="$shard" bs=1 seek="$at" conv=notrunc status=none
rc=0; $SMELT verify "$work/flip" >"$work/v.out" 2>&1 || rc=$?
lines=$(grep -c "model-00002-of-00003.safetensors: tensor '.*': hash [0-9a-f]\{32\} but the manifest says [0-9a-f]\{32\}" "$work/v.out" || true)
[ "$rc" -eq 1 ] && [ "$lines" -eq 1 ] && pass "flipped byte: $(head -1 "$work/v.out")" \
  || fail "flipped byte: rc $rc, $lines lines: $(cat "$work/v.out")"

# A truncated shard: the structure check and the size check both complain.
cp -r "$out" "$work/trunc"
truncate -s -4096 "$work/trunc/model-00003-of-00003.safetensors"
rc=0; $SMELT verify "$work/trunc" >"$work/v.out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "model-00003-of-00003.safetensors: size .* but the manifest says" "$work/v.out" \
  && pass "truncated shard: $(head -1 "$work/v.out")" || fail "truncated shard: rc $rc $(cat "$work/v.out")"

# A missing shard and a damaged manifest.
cp -r "$out" "$work/miss"; rm "$work/miss/model-00001-of-00003.safetensors"
expect_error "missing shard" "model-00001-of-00003.safetensors" $SMELT verify "$work/miss"
cp -r "$out" "$work/badman"; echo '{"format": 3' > "$work/badman/smelt-manifest.json"
expect_error "damaged manifest" "smelt-manifest.json" $SMELT verify "$work/badman"

# No manifest: says so, checks the structure only, passes.
cp -r "$out" "$work/noman"; rm "$work/noman/smelt-manifest.json"
rc=0; $SMELT verify "$work/noman" >"$work/v.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] && grep -q "no smelt-manifest.json; checked the safetensors structure" "$work/v.out" \
  && pass "no manifest: structure only" || fail "no manifest: rc $rc $(cat "$work/v.out")"
expect_error "not a directory" "nowhere: cannot access: No such file or directory" $SMELT verify "$work/nowhere"

# Same merge twice: the manifest is byte-identical (no timestamps).
$SMELT merge "$work/c.yml" "$work/out2" --out-shard-size 3M -q -j1 --max-memory 3Mi
cmp -s "$out/smelt-manifest.json" "$work/out2/smelt-manifest.json" && pass "manifest is deterministic" \
  || fail "manifests of the same merge differ"
finish
