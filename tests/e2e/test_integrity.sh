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
  got=$(python3 - "$out/smelt-manifest.json" "$(cat "$work/t.name")" <<'PY'
import json, sys
files = json.load(open(sys.argv[1]))["files"]
print([f["tensors"][sys.argv[2]]["data"] for f in files.values() if sys.argv[2] in f["tensors"]][0])
PY
)
  [ "$got" = "$want" ] && pass "tensor hash matches xxhsum -H2" || fail "tensor hash $got differs from xxhsum ($want)"
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

# The header's meaning is bound too: the same bytes relabelled (BF16 -> F16), a shape
# transposed, the metadata changed, each in place with the file's size kept, fail verify and name
# the file (and the tensor where there is one).
# edit_header FILE OLD NEW: replaces the first OLD in FILE's JSON header by NEW (same length).
edit_header() {
  python3 - "$@" <<'PY'
import struct, sys
path, old, new = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
assert len(old) == len(new)
with open(path, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]; h = f.read(n)
    at = h.index(old); f.seek(8 + at); f.write(new)
PY
}
shard1=model-00001-of-00003.safetensors
first_tensor() { # the first non-square 2-D tensor of shard 1: name, dtype, "a,b"
  python3 - "$1/$shard1" <<'PY'
import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n))
k = sorted(k for k, v in h.items() if k != "__metadata__" and len(v["shape"]) == 2 and v["shape"][0] != v["shape"][1])[0]
print(k, h[k]["dtype"], ",".join(map(str, h[k]["shape"])))
PY
}
read -r tname tdtype tshape < <(first_tensor "$out")
[ "$tdtype" = BF16 ] || fail "expected a BF16 tensor in $shard1, got $tdtype"
cp -r "$out" "$work/relabel"; edit_header "$work/relabel/$shard1" '"BF16"' '"F16" '
rc=0; $SMELT verify "$work/relabel" >"$work/v.out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "$shard1: tensor '.*': dtype F16 but the manifest says BF16" "$work/v.out" \
  && grep -q "$shard1: header hash .* but the manifest says" "$work/v.out" \
  && pass "dtype relabelled: $(head -1 "$work/v.out")" || fail "dtype relabelled: rc $rc $(cat "$work/v.out")"
IFS=, read -r r c <<<"$tshape"
cp -r "$out" "$work/transpose"; edit_header "$work/transpose/$shard1" "[$r,$c]" "[$c,$r]"
rc=0; $SMELT verify "$work/transpose" >"$work/v.out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "$shard1: tensor '.*': shape \[$c, $r\] but the manifest says \[$r, $c\]" "$work/v.out" \
  && pass "shape transposed: $(head -1 "$work/v.out")" || fail "shape transposed: rc $rc $(cat "$work/v.out")"
cp -r "$out" "$work/meta"; edit_header "$work/meta/$shard1" '"pt"' '"PT"'
rc=0; $SMELT verify "$work/meta" >"$work/v.out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "$shard1: header hash .* but the manifest says .*__metadata__" "$work/v.out" \
  && pass "metadata changed: $(head -1 "$work/v.out")" || fail "metadata changed: rc $rc $(cat "$work/v.out")"

# A manifest from an older smelt (format_version 1: bare data hashes, no headers) is still
# checked for its bytes, and verify says what it could not check.
to_v1() {
  python3 - "$1/smelt-manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); m["format_version"] = 1; m["smelt_version"] = "0.1.0"
for f in m["files"].values():
    del f["header"]; f["tensors"] = {k: v["data"] for k, v in f["tensors"].items()}
json.dump(m, open(sys.argv[1], "w"), indent=1, sort_keys=True)
PY
}
cp -r "$out" "$work/old"; to_v1 "$work/old"
rc=0; $SMELT verify "$work/old" >"$work/v.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] && grep -q "format_version 1, made by an older smelt (0.1.0): checked sizes and tensor bytes only" "$work/v.out" \
  && pass "old manifest: checked as before, and says so" || fail "old manifest: rc $rc $(cat "$work/v.out")"
cp -r "$work/flip" "$work/oldflip"; cp "$work/old/smelt-manifest.json" "$work/oldflip/"
rc=0; $SMELT verify "$work/oldflip" >"$work/v.out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "tensor '.*': hash [0-9a-f]\{32\} but the manifest says" "$work/v.out" \
  && pass "old manifest: a flipped byte still fails" || fail "old manifest, flipped byte: rc $rc $(cat "$work/v.out")"

# Same merge twice: the manifest is byte-identical (no timestamps).
$SMELT merge "$work/c.yml" "$work/out2" --out-shard-size 3M -q -j1 --max-memory 3Mi
cmp -s "$out/smelt-manifest.json" "$work/out2/smelt-manifest.json" && pass "manifest is deterministic" \
  || fail "manifests of the same merge differ"
finish
