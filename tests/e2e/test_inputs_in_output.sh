# No option destroys an input: an output path that is an input file, holds one at any depth, or
# holds another name (hard or symbolic link) for one, is refused before anything is written —
# for model files, shards, the index, config.json, tokenizer files of every model (the base
# included) and the config itself; --overwrite and --resume change nothing about that.
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/src_sharded" --size 4M --seed 1 --shard-size 1M
$SMELT synth "$work/src_one" --size 4M --seed 2
$SMELT synth "$work/src_base" --size 4M --seed 3
echo '{"version": "1.0", "model": {}}' > "$work/src_base/tokenizer.json"

snapshot() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

# refused NAME DIR_TO_KEEP PHRASE CMD...: refused, and DIR_TO_KEEP is byte for byte as before.
refused() {
  local name=$1 keep=$2 phrase=$3; shift 3
  local before; before=$(snapshot "$keep")
  expect_error "$name" "$phrase" "$@"
  [ "$(snapshot "$keep")" = "$before" ] || fail "$name: $keep changed"
}

lin() { # lin CONFIG MODEL...: a linear config with weight 1 each
  local file=$1; shift
  { echo "merge_method: linear"; echo "models:"
    for m in "$@"; do printf '  - {model: %s, parameters: {weight: 1}}\n' "$m"; done; } > "$file"
}

for flags in "" "--overwrite" "--resume" "--overwrite --no-copy-tokenizer"; do
  # OUT is a sharded model directory (shards, index and config.json are inside it).
  rm -rf "$work/m1"; cp -r "$work/src_sharded" "$work/m1"
  lin "$work/c1.yml" "$work/m1" "$work/src_one"
  refused "out is the model dir [$flags]" "$work/m1" "contains the input file" \
    $SMELT merge "$work/c1.yml" "$work/m1" $flags

  # A lone .safetensors file inside OUT, under a name the merge writes (model.safetensors) and
  # under one it would remove as stale (model-00001-of-00002.safetensors).
  for name in model.safetensors model-00001-of-00002.safetensors x.safetensors; do
    rm -rf "$work/o2"; mkdir "$work/o2"; cp "$work/src_one/model.safetensors" "$work/o2/$name"
    lin "$work/c2.yml" "$work/o2/$name" "$work/src_one"
    refused "lone file $name in out [$flags]" "$work/o2" "contains the input file" \
      $SMELT merge "$work/c2.yml" "$work/o2" $flags
  done

  # An input model directory deep below OUT.
  rm -rf "$work/o3"; mkdir -p "$work/o3/a/b"; cp -r "$work/src_one" "$work/o3/a/b/m"
  lin "$work/c3.yml" "$work/o3/a/b/m" "$work/src_sharded"
  refused "model below out [$flags]" "$work/o3" "contains the input file" \
    $SMELT merge "$work/c3.yml" "$work/o3" $flags

  # OUT named through a symbolic link to the model directory, and through a path with "..".
  rm -rf "$work/m4" "$work/link4"; cp -r "$work/src_sharded" "$work/m4"; ln -s "$work/m4" "$work/link4"
  lin "$work/c4.yml" "$work/m4" "$work/src_one"
  refused "out is a symlink to the model [$flags]" "$work/m4" "contains the input file" \
    $SMELT merge "$work/c4.yml" "$work/link4" $flags
  refused "out with .. [$flags]" "$work/m4" "contains the input file" \
    $SMELT merge "$work/c4.yml" "$work/m4/../m4/." $flags

  # The model reached through a symlink whose target lies inside OUT.
  rm -rf "$work/o5" "$work/ln5"; mkdir "$work/o5"; cp -r "$work/src_one" "$work/o5/m"
  ln -s "$work/o5/m" "$work/ln5"
  lin "$work/c5.yml" "$work/ln5" "$work/src_sharded"
  refused "symlinked model inside out [$flags]" "$work/o5" "contains the input file" \
    $SMELT merge "$work/c5.yml" "$work/o5" $flags

  # A hard link to an input (a shard, the base's tokenizer.json, config.json) inside OUT.
  for f in model.safetensors tokenizer.json config.json; do
    rm -rf "$work/b6" "$work/o6"; cp -r "$work/src_base" "$work/b6"; mkdir "$work/o6"
    ln "$work/b6/$f" "$work/o6/$f"
    { echo "merge_method: task_arithmetic"; echo "base_model: $work/b6"; echo "models:"
      echo "  - {model: $work/src_one, parameters: {weight: 1}}"; } > "$work/c6.yml"
    refused "hard link to base $f in out [$flags]" "$work/b6" "another name (a link) for the input file" \
      $SMELT merge "$work/c6.yml" "$work/o6" $flags
  done

  # A symbolic link inside OUT to an input's file.
  rm -rf "$work/o7"; mkdir "$work/o7"; ln -s "$work/src_base/tokenizer.json" "$work/o7/tokenizer.json"
  lin "$work/c7.yml" "$work/src_base" "$work/src_one"
  refused "symlink to tokenizer.json in out [$flags]" "$work/src_base" "another name (a link) for the input file" \
    $SMELT merge "$work/c7.yml" "$work/o7" $flags

  # The config file itself inside OUT (as the copy the merge writes, and under its own name).
  for name in mergekit_config.yml my.yml; do
    rm -rf "$work/o8"; mkdir "$work/o8"; lin "$work/o8/$name" "$work/src_one" "$work/src_base"
    refused "config $name in out [$flags]" "$work/o8" "contains the input file" \
      $SMELT merge "$work/o8/$name" "$work/o8" $flags
  done

  # OUT is the lone input file itself.
  rm -rf "$work/f9.safetensors"; cp "$work/src_one/model.safetensors" "$work/f9.safetensors"
  lin "$work/c9.yml" "$work/f9.safetensors" "$work/src_one"
  refused "out is the input file [$flags]" "$work" "the output path is the input file" \
    $SMELT merge "$work/c9.yml" "$work/f9.safetensors" $flags
done

# What stays allowed: an output inside a model directory, next to the inputs, and replacing an
# earlier merge with --overwrite.
lin "$work/ok.yml" "$work/src_sharded" "$work/src_one"
$SMELT merge "$work/ok.yml" "$work/src_sharded/merged" -q && pass "out inside a model dir" \
  || fail "out inside a model dir refused"
$SMELT merge "$work/ok.yml" "$work/src_sharded/merged" -q --overwrite && pass "overwrite an earlier merge" \
  || fail "overwriting an earlier merge refused"
finish
