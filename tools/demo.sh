#!/usr/bin/env bash
# Installs what is missing, builds, generates a base model and two fine-tunes, merges them
# with a mergekit-style linear config, and shows the result.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh build
smelt=build/smelt
work=${SMELT_DEMO_DIR:-/tmp/smelt-demo}
rm -rf "$work"
mkdir -p "$work"

echo "== generating a 200 MB bf16 base model and two fine-tunes in $work"
$smelt synth "$work/base" --size 200M --seed 1 --shard-size 80M
$smelt synth "$work/ft-a" --size 200M --base-seed 1 --seed 2 --shard-size 80M
$smelt synth "$work/ft-b" --size 200M --base-seed 1 --seed 3 --shard-size 80M

cat > "$work/linear.yml" <<YAML
merge_method: linear
base_model: $work/base
models:
  - model: $work/base
    parameters:
      weight: 0.5
  - model: $work/ft-a
    parameters:
      weight: 0.3
  - model: $work/ft-b
    parameters:
      weight: 0.2
dtype: bfloat16
YAML
echo "== config ($work/linear.yml)"
cat "$work/linear.yml"

echo "== smelt merge $work/linear.yml $work/merged --max-memory 64M"
start=$(date +%s%N)
$smelt merge "$work/linear.yml" "$work/merged" --max-memory 64M
end=$(date +%s%N)
echo "   done in $(( (end - start) / 1000000 )) ms"

echo "== output"
ls -l "$work/merged"
echo "== checking every element against an independent f32 computation"
build/tests/linear_ref "$work/merged" 0.5:"$work/base" 0.3:"$work/ft-a" 0.2:"$work/ft-b"

echo "== a rank-16 LoRA adapter for the base, applied on the fly: ties of ft-a and base+adapter"
$smelt synth "$work/adapter" --size 200M --seed 4 --lora 16
cat > "$work/ties.yml" <<YAML
merge_method: ties
base_model: $work/base
models:
  - model: $work/ft-a
    parameters: {weight: 0.5, density: 0.5}
  - model: $work/base+$work/adapter
    parameters: {weight: 0.5, density: 0.5}
YAML
$smelt plan "$work/ties.yml" --max-memory 64M | grep -m1 "LoRA delta"
$smelt merge "$work/ties.yml" "$work/ties" --max-memory 64M -q --json
$smelt verify "$work/ties"
