# Memcheck over the CLI on small models: a merge (with its journal and manifest), a plan, a
# verify, a resumed merge, one method of each family (statistics passes, radix select, random
# masks, per-row ranks, row tasks, Gram coefficients, ramplus_tl's counts, arcee_fusion's
# quartiles), a frankenmerge, inspect and diff, and a GGUF synth (the GGUF writer).
source "$(dirname "$0")/lib.sh"

if ! command -v valgrind >/dev/null; then echo "skipped: valgrind is not installed"; exit 77; fi
if [ "${SMELT_SANITIZED:-0}" = 1 ] || [ "${SMELT_SANITIZED:-}" = TRUE ] || [ "${SMELT_SANITIZED:-}" = ON ]; then
  echo "skipped: a sanitized build does not run under valgrind"; exit 77
fi
# io_uring's shared rings are invisible to memcheck: the pread path is the one it can check.
export SMELT_IO=pread
vg=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect)

$SMELT synth "$work/base" --size 2M --seed 1 --shard-size 1M
$SMELT synth "$work/a" --size 2M --base-seed 1 --seed 2 --shard-size 1M
linear_config "$work/c.yml" "$work/base" 0.5 "$work/base" 0.5 "$work/a"

check() {
  local name=$1; shift
  local rc=0; "${vg[@]}" "$@" >"$work/vg.out" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then pass "valgrind: $name"; else fail "valgrind: $name: rc $rc: $(tail -30 "$work/vg.out")"; fi
}
check "merge" $SMELT merge "$work/c.yml" "$work/out" --out-shard-size 1M --max-memory 4Mi -j2 -q
check "plan" $SMELT plan "$work/c.yml" --max-memory 4Mi
check "verify" $SMELT verify "$work/out" --max-memory 256Ki -q
# A resume: kill a merge mid-run (retrying shorter delays until a journal and temp files are
# left), then resume it under memcheck.
for delay in 0.05 0.03 0.02 0.01 0.005; do
  rm -rf "$work/r"
  SMELT_JOURNAL_INTERVAL=0 $SMELT merge "$work/c.yml" "$work/r" --out-shard-size 1M -q -j1 --max-memory 4Mi & pid=$!
  sleep "$delay"; kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  [ -e "$work/r/.smelt-journal" ] && break
done
[ -e "$work/r/.smelt-journal" ] || fail "valgrind resume: no kill left a journal behind"
check "resume" $SMELT merge --resume "$work/c.yml" "$work/r" --out-shard-size 1M -q -j1 --max-memory 4Mi
cmp -s "$work/out/smelt-manifest.json" "$work/r/smelt-manifest.json" && pass "resumed manifest identical" \
  || fail "resumed manifest differs"

$SMELT synth "$work/b" --size 2M --base-seed 1 --seed 3
method() { # method NAME PARAMS MODEL_PARAMS: a merge of a and b on the base
  printf 'merge_method: %s\nbase_model: %s\nparameters: {%s}\nmodels:\n  - {model: %s, parameters: {%s}}\n  - {model: %s, parameters: {%s}}\n' \
    "$1" "$work/base" "$2" "$work/a" "$3" "$work/b" "$3" > "$work/m.yml"
  rm -rf "$work/m"
  check "$1" $SMELT merge "$work/m.yml" "$work/m" --max-memory 4Mi -j2 -q
}
method ties "" "weight: 0.5, density: 0.5"
method dare_ties "" "weight: 0.5, density: 0.5"
method della "" "weight: 0.5, density: 0.5, epsilon: 0.1"
method breadcrumbs "" "weight: 0.5, density: 0.9, gamma: 0.05"
method model_stock "filter_wise: true" ""
method nuslerp "nuslerp_flatten: false, nuslerp_row_wise: true" "weight: 0.5"
method ramplus_tl "epsilon: 0.005" ""
printf 'merge_method: arcee_fusion\nbase_model: %s\nmodels:\n  - model: %s\n' "$work/base" "$work/a" \
  > "$work/af.yml"
check "arcee_fusion" $SMELT merge "$work/af.yml" "$work/af" --max-memory 4Mi -j2 -q
printf 'slices:\n  - sources: [{model: %s, layer_range: [0, 2]}]\n  - sources: [{model: %s, layer_range: [1, 3]}]\nmerge_method: passthrough\n' \
  "$work/a" "$work/b" > "$work/f.yml"
check "frankenmerge" $SMELT merge "$work/f.yml" "$work/f" --max-memory 4Mi -q
check "inspect" $SMELT inspect "$work/f" --json
check "diff" $SMELT diff "$work/a" "$work/b" --max-memory 4Mi -j2
check "synth gguf (q8_0 fine-tune)" $SMELT synth "$work/s.gguf" --size 1M --dtype q8_0 --layers 1 --base-seed 1 --seed 2
finish
