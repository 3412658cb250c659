# A FIFO (or a device, a socket, a directory) where smelt expects a regular file — the config,
# a model file, a shard, the index, config.json, a tokenizer file, a verify target's files — is
# refused at once with a message naming it and what it is; never a hang. Every command runs
# under a timeout, so a regression fails instead of hanging the suite.
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/one" --size 4M --seed 1
$SMELT synth "$work/sharded" --size 4M --seed 2 --shard-size 1M
echo '{"version": "1.0"}' > "$work/one/tokenizer.json"

T="timeout -k 5 30"

# special NAME PHRASE CMD...: refused quickly (not killed by the timeout), phrase in the message.
special() {
  local name=$1 phrase=$2; shift 2
  local out rc=0
  out=$($T "$@" 2>&1) || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then fail "$name: hung (killed by the timeout)"; return; fi
  if [ "$rc" -eq 0 ]; then fail "$name: exit 0, expected '$phrase'"; return; fi
  grep -qF -- "$phrase" <<<"$out" || { fail "$name: message lacks '$phrase': $out"; return; }
  pass "$name: exit $rc: $(head -1 <<<"$out")"
}

lin() { # lin CONFIG MODEL...
  local file=$1; shift
  { echo "merge_method: linear"; echo "models:"
    for m in "$@"; do printf '  - {model: %s, parameters: {weight: 1}}\n' "$m"; done; } > "$file"
}

# The config itself.
mkfifo "$work/fifo.yml"
special "config is a FIFO" "fifo.yml: not a regular file (a FIFO)" $SMELT merge "$work/fifo.yml" "$work/out"
special "plan of a FIFO config" "not a regular file (a FIFO)" $SMELT plan "$work/fifo.yml"
special "config is a directory" "not a regular file (a directory)" $SMELT merge "$work/one" "$work/out"
special "config is a device" "not a regular file (a character device)" $SMELT merge /dev/null "$work/out"

# A lone model file given as a FIFO or a device.
mkfifo "$work/lone.safetensors"
lin "$work/c.yml" "$work/lone.safetensors" "$work/one"
special "lone model is a FIFO" "lone.safetensors: neither a file nor a directory" $SMELT merge "$work/c.yml" "$work/out"
special "inspect a FIFO" "neither a file nor a directory" $SMELT inspect "$work/lone.safetensors"
special "diff a FIFO" "neither a file nor a directory" $SMELT diff "$work/one" "$work/lone.safetensors"

# A file of a model directory replaced by a FIFO (and by a directory): every file smelt reads.
replace() { # replace SRC_MODEL FILE KIND → a copy with FILE replaced; prints the copy's path
  local d=$work/r_$(basename "$2" | tr -c 'a-z0-9\n' _)_$3
  rm -rf "$d"; cp -r "$1" "$d"; rm -f "$d/$2"
  if [ "$3" = fifo ]; then mkfifo "$d/$2"; else mkdir "$d/$2"; fi
  echo "$d"
}
for kind in fifo dir; do
  what=$([ $kind = fifo ] && echo "a FIFO" || echo "a directory")
  for f in model.safetensors config.json tokenizer.json tokenizer_config.json; do
    d=$(replace "$work/one" $f $kind)
    lin "$work/c.yml" "$d" "$work/one"
    special "$f is $what" "$f: not a regular file ($what)" $SMELT merge "$work/c.yml" "$work/out_$kind"
    no_model_output "$work/out_$kind"
  done
  shard=$(cd "$work/sharded" && ls model-*.safetensors | head -1)
  for f in $shard model.safetensors.index.json; do
    d=$(replace "$work/sharded" $f $kind)
    lin "$work/c.yml" "$d" "$work/sharded"
    special "$f is $what" "$f: not a regular file ($what)" $SMELT merge "$work/c.yml" "$work/out_$kind"
    special "inspect: $f is $what" "$f: not a regular file ($what)" $SMELT inspect "$d"
    no_model_output "$work/out_$kind"
  done
  # config.json of the base model (read for its architecture) and the chat template vote.
  d=$(replace "$work/one" config.json $kind)
  { echo "merge_method: task_arithmetic"; echo "base_model: $d"; echo "models:"
    echo "  - {model: $work/one, parameters: {weight: 1}}"; } > "$work/c.yml"
  special "base config.json is $what" "config.json: not a regular file ($what)" $SMELT merge "$work/c.yml" "$work/out_$kind"
  d=$(replace "$work/sharded" tokenizer_config.json $kind)
  { echo "merge_method: linear"; echo "chat_template: auto"; echo "models:"
    echo "  - {model: $work/one, parameters: {weight: 1}}"; echo "  - {model: $d, parameters: {weight: 1}}"; } > "$work/c.yml"
  special "chat template vote: tokenizer_config.json is $what" "tokenizer_config.json: not a regular file ($what)" \
    $SMELT merge "$work/c.yml" "$work/out_$kind"
done

# verify: a FIFO as the target, as a shard, as the manifest.
lin "$work/ok.yml" "$work/one" "$work/one"
$SMELT merge "$work/ok.yml" "$work/merged" -q --out-shard-size 1M
mkfifo "$work/vfifo"
special "verify a FIFO" "vfifo: not a directory (a FIFO)" $SMELT verify "$work/vfifo"
for f in smelt-manifest.json model-00001-of-*.safetensors model.safetensors.index.json; do
  rm -rf "$work/v"; cp -r "$work/merged" "$work/v"
  name=$(cd "$work/v" && ls $f); rm "$work/v/$name"; mkfifo "$work/v/$name"
  special "verify: $name is a FIFO" "$name: not a regular file (a FIFO)" $SMELT verify "$work/v"
done
finish
