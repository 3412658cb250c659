# Side files are streamed, never read whole: a 1 GB tokenizer.json (sparse) is copied at
# --max-memory 64Mi with a peak RSS far below its size, byte for byte and still sparse. What is
# parsed in memory (config.json, tokenizer_config.json for a chat template, the index) is
# bounded: past 64 MiB it is refused, naming the file and the bound, before anything is written.
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/a" --size 4M --seed 1
$SMELT synth "$work/b" --size 4M --seed 2 --shard-size 1M
lin() { # lin CONFIG MODEL... [-- extra top-level line]
  local file=$1; shift
  { echo "merge_method: linear"; echo "models:"
    for m in "$@"; do printf '  - {model: %s, parameters: {weight: 1}}\n' "$m"; done; } > "$file"
}
rss_limit_kib=$((200 * 1024))
if [ "${SMELT_SANITIZED:-0}" = 1 ] || [ "${SMELT_SANITIZED:-}" = TRUE ]; then rss_limit_kib=$((600 * 1024)); fi

# Copied files of 1 GB: tokenizer.json and tokenizer.model, a hole with a little data.
cp -r "$work/a" "$work/big"
for f in tokenizer.json tokenizer.model; do
  printf '{"version": "1.0"' > "$work/big/$f"; truncate -s 1G "$work/big/$f"
  printf 'tail' | dd of="$work/big/$f" bs=1 seek=$((1 << 29)) conv=notrunc status=none
done
lin "$work/big.yml" "$work/big" "$work/b"
out=$("$SMELT_TEST_HELPERS/peak_rss" $SMELT merge "$work/big.yml" "$work/out_big" -q --max-memory 64Mi 2>&1) \
  || fail "merge with a 1 GB tokenizer.json failed: $out"
kib=$(awk '/^peak_rss_kib/ {print $2}' <<<"$out")
if [ -n "$kib" ] && [ "$kib" -lt "$rss_limit_kib" ]; then pass "1 GB tokenizer files: peak RSS $((kib / 1024)) MiB"
else fail "1 GB tokenizer files: peak RSS ${kib:-?} KiB (limit $rss_limit_kib)"; fi
for f in tokenizer.json tokenizer.model; do
  cmp -s "$work/big/$f" "$work/out_big/$f" && pass "$f copied byte for byte" || fail "$f differs"
  used=$(du -k "$work/out_big/$f" | cut -f1)
  [ "$used" -lt 65536 ] && pass "$f stays sparse (${used} KiB on disk)" || fail "$f: $used KiB on disk"
done
$SMELT verify "$work/out_big" -q && pass "verify after big side files" || fail "verify failed"

# Parsed JSON side files past the bound: refused before any output.
big_json() { printf '{"a": "' > "$1"; truncate -s $((64 * 1024 * 1024 + 1)) "$1"; }
check_big() { # check_big NAME FILE CONFIG
  rm -rf "$work/out"
  expect_error "$1" "$2: 67108865 bytes is larger than the 67108864 (64 MiB)" \
    $SMELT merge "$3" "$work/out" --max-memory 64Mi
  no_model_output "$work/out"
  if compgen -G "$work/out/.smelt-journal*" >/dev/null; then fail "$1: a journal was left"; fi
}
rm -rf "$work/c"; cp -r "$work/a" "$work/c"; big_json "$work/c/config.json"
lin "$work/c.yml" "$work/c" "$work/b"
check_big "config.json over 64 MiB" config.json "$work/c.yml"
lin "$work/c.yml" "$work/b" "$work/c"
check_big "another model's config.json over 64 MiB" config.json "$work/c.yml"

rm -rf "$work/t"; cp -r "$work/a" "$work/t"; big_json "$work/t/tokenizer_config.json"
lin "$work/t.yml" "$work/t" "$work/b"; echo "chat_template: chatml" >> "$work/t.yml"
check_big "tokenizer_config.json over 64 MiB (chat template)" tokenizer_config.json "$work/t.yml"
lin "$work/t.yml" "$work/b" "$work/t"; echo "chat_template: auto" >> "$work/t.yml"
check_big "tokenizer_config.json over 64 MiB (chat template vote)" tokenizer_config.json "$work/t.yml"
lin "$work/t.yml" "$work/t" "$work/b"
$SMELT merge "$work/t.yml" "$work/out_t" -q --max-memory 64Mi && cmp -s "$work/t/tokenizer_config.json" "$work/out_t/tokenizer_config.json" \
  && pass "a big tokenizer_config.json without a chat template is copied" || fail "big tokenizer_config.json not copied"

rm -rf "$work/i"; cp -r "$work/b" "$work/i"; big_json "$work/i/model.safetensors.index.json"
lin "$work/i.yml" "$work/a" "$work/i"
check_big "index over 64 MiB" model.safetensors.index.json "$work/i.yml"
expect_error "inspect: index over 64 MiB" "(64 MiB)" $SMELT inspect "$work/i"
finish
