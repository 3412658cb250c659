# A hub id resolves offline in the Hugging Face cache (snapshots are symlinks into blobs).
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/src" --size 4M --seed 1 --shard-size 2M
$SMELT synth "$work/ft" --size 4M --base-seed 1 --seed 2
hub=$work/hf/hub/models--acme--tiny-llama
mkdir -p "$hub/blobs" "$hub/snapshots/0123abcd" "$hub/refs"
for f in "$work/src"/*; do
  blob=$(sha256sum "$f" | cut -c1-40)
  cp "$f" "$hub/blobs/$blob"
  ln -s "../../blobs/$blob" "$hub/snapshots/0123abcd/$(basename "$f")"
done
printf 0123abcd > "$hub/refs/main"
cat > "$work/c.yml" <<YAML
merge_method: linear
base_model: acme/tiny-llama
models:
  - model: acme/tiny-llama
    parameters: {weight: 1}
  - model: $work/ft
    parameters: {weight: 1}
YAML
HF_HOME=$work/hf $SMELT merge "$work/c.yml" "$work/out" -q && pass "merge with a cached hub id" \
  || fail "merge with a cached hub id"
"$SMELT_TEST_HELPERS/linear_ref" "$work/out" 1:"$work/src" 1:"$work/ft" && pass "values" || fail "values"
HF_HUB_CACHE=$work/hf/hub $SMELT merge "$work/c.yml" "$work/out2" -q && pass "HF_HUB_CACHE" \
  || fail "HF_HUB_CACHE"
expect_error "uncached hub id" "acme/tiny-llama" env HF_HOME=$work/empty $SMELT merge "$work/c.yml" "$work/out3"
finish
