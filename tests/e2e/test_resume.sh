# Crash safety: a merge killed (SIGKILL) at many random points, then resumed, gives the same bytes
# as an uninterrupted run; SIGINT/SIGTERM leave a resumable state with a hint and exit 130; a
# journal that does not match the command or the inputs' content is refused with the reason.
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/base" --size 8M --seed 1 --shard-size 3M
$SMELT synth "$work/a" --size 8M --base-seed 1 --seed 2 --shard-size 3M
$SMELT synth "$work/b" --size 8M --base-seed 1 --seed 3 --shard-size 3M
linear_config "$work/c.yml" "$work/base" 0.5 "$work/base" 0.3 "$work/a" 0.2 "$work/b"
# Many chunks (a small budget, one thread) and a journal record per tensor, so a kill lands
# mid-run with some tensors journaled.
export SMELT_JOURNAL_INTERVAL=0
args=(--out-shard-size 3M --max-memory 3Mi -j1 -q)

# sums DIR: sha256 of every file smelt leaves in DIR (hidden ones too).
sums() { (cd "$1" && for f in $(ls -A | sort); do sha256sum "$f"; done); }

t0=$(date +%s%N)
$SMELT merge "$work/c.yml" "$work/ref" "${args[@]}"
run_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$run_ms" -gt 0 ] || run_ms=1
sums "$work/ref" > "$work/ref.sha"
grep -q smelt-manifest.json "$work/ref.sha" && ! grep -q -e smelt-journal -e smelt-tmp "$work/ref.sha" \
  && pass "reference merge in ${run_ms} ms" || fail "reference output: $(cat "$work/ref.sha")"

# run_killed DELAY_MS CMD...: runs CMD, SIGKILLs it after DELAY_MS; prints its exit status.
run_killed() {
  local delay=$1; shift
  "$@" 2>/dev/null & local pid=$!
  sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
  kill -9 "$pid" 2>/dev/null || true
  local rc=0; wait "$pid" 2>/dev/null || rc=$?
  echo "$rc"
}

points=24 mid=0 finished=0 identical=0
for i in $(seq 1 $points); do
  out=$work/k$i
  # Delays over the first three quarters of the reference run's time (startup included), so
  # most land mid-run even when a loaded machine makes the reference run slow.
  delay=$(( RANDOM % (run_ms * 3 / 4 + 10) ))
  rc=$(run_killed "$delay" $SMELT merge "$work/c.yml" "$out" "${args[@]}")
  if [ "$rc" -eq 0 ]; then finished=$((finished + 1)); else mid=$((mid + 1)); fi
  # Every other point, kill the resume too (a crash while re-verifying or continuing).
  if [ "$rc" -ne 0 ] && [ $((i % 2)) -eq 0 ]; then
    rc=$(run_killed $(( RANDOM % (run_ms + 20) )) $SMELT merge --resume "$work/c.yml" "$out" "${args[@]}")
  fi
  # Killed between removing the journal and exiting: the output is finished and verifies.
  if [ "$rc" -ne 0 ] && [ ! -e "$out/.smelt-journal" ] && compgen -G "$out/model*.safetensors" >/dev/null; then
    $SMELT verify "$out" -q >/dev/null 2>&1 && rc=0 \
      || fail "point $i: complete-looking output without a journal after a kill: $(ls -A "$out")"
  fi
  if [ "$rc" -ne 0 ]; then
    $SMELT merge --resume "$work/c.yml" "$out" "${args[@]}" 2>"$work/resume.err" \
      || { fail "point $i (${delay} ms): resume failed: $(cat "$work/resume.err")"; continue; }
  fi
  if sums "$out" | diff -q - "$work/ref.sha" >/dev/null; then
    identical=$((identical + 1))
  else
    fail "point $i (${delay} ms): output differs from the uninterrupted run: $(sums "$out" | diff - "$work/ref.sha")"
  fi
  rm -rf "$out"
done
[ "$identical" -eq "$points" ] \
  && pass "$points SIGKILL points ($mid mid-run, $finished after the end): all resumed byte-identical" \
  || fail "only $identical of $points kill points gave identical output"
# Timing depends on the machine's load: a floor that catches delays that are all too long.
[ "$mid" -ge $((points / 3)) ] || fail "only $mid of $points kills landed mid-run"

# A torn journal tail and a damaged tensor: the tail is dropped, the tensor redone.
out=$work/torn
torn=0
for frac in 2 3 4 6 8; do # until a kill lands mid-run, however fast this machine is
  rm -rf "$out"
  rc=$(run_killed $((run_ms / frac + 5)) $SMELT merge "$work/c.yml" "$out" "${args[@]}")
  [ "$rc" -ne 0 ] && [ -e "$out/.smelt-journal" ] || continue
  torn=1
  printf 'torn' >> "$out/.smelt-journal"
  tmp=$(ls "$out"/*.smelt-tmp | head -1)
  printf '\x55\x55\x55\x55' | dd of="$tmp" bs=1 seek=20000 conv=notrunc status=none
  $SMELT merge --resume "$work/c.yml" "$out" "${args[@]}" 2>"$work/torn.err" \
    && sums "$out" | diff -q - "$work/ref.sha" >/dev/null \
    && pass "torn journal tail + damaged bytes: resumed identical ($(grep resuming "$work/torn.err" || true))" \
    || fail "torn journal: $(cat "$work/torn.err")"
  break
done
[ "$torn" -eq 1 ] || fail "torn journal: no kill landed mid-run"

# SIGINT and SIGTERM: the hint, exit 130, nothing that looks complete, and resume works.
for sig in INT TERM; do
  out=$work/sig$sig got=0
  for delay in 30 50 80 20 120 10 5; do
    rm -rf "$out"
    $SMELT merge "$work/c.yml" "$out" "${args[@]}" 2>"$work/sig.err" & pid=$!
    sleep "0.0$delay" 2>/dev/null || sleep "0.$delay"
    kill -"$sig" "$pid" 2>/dev/null || true
    rc=0; wait "$pid" || rc=$?
    if [ "$rc" -eq 130 ] && grep -q "interrupted; run the same command with --resume to continue" "$work/sig.err"; then
      got=1; break
    fi
  done
  if [ "$got" -eq 0 ]; then fail "SIG$sig: never caught mid-run (last rc $rc: $(cat "$work/sig.err"))"; continue; fi
  pass "SIG$sig: exit 130 with the hint"
  if compgen -G "$out/model*.safetensors" >/dev/null || [ -e "$out/model.safetensors.index.json" ]; then
    fail "SIG$sig: output looks complete: $(ls -A "$out")"
  fi
  [ -e "$out/.smelt-journal" ] && pass "SIG$sig: journal kept" || fail "SIG$sig: no journal"
  expect_error "SIG$sig: rerun without --resume" "--resume to continue it, or with --overwrite" \
    $SMELT merge "$work/c.yml" "$out" "${args[@]}"
  $SMELT merge --resume "$work/c.yml" "$out" "${args[@]}" \
    && sums "$out" | diff -q - "$work/ref.sha" >/dev/null \
    && pass "SIG$sig: resume gives identical bytes" || fail "SIG$sig: resume differs"
done

# A journal from another command is refused with what changed; --overwrite starts over.
out=$work/changed
for frac in 2 3 4 6 8; do # until a kill lands mid-run
  rm -rf "$out"
  rc=$(run_killed $((run_ms / frac + 5)) $SMELT merge "$work/c.yml" "$out" "${args[@]}")
  [ "$rc" -ne 0 ] && [ -e "$out/.smelt-journal" ] && break
done
if [ "$rc" -ne 0 ] && [ -e "$out/.smelt-journal" ]; then
  linear_config "$work/c2.yml" "$work/base" 0.6 "$work/base" 0.2 "$work/a" 0.2 "$work/b"
  expect_error "changed config" "cannot resume: the config file changed" \
    $SMELT merge --resume "$work/c2.yml" "$out" "${args[@]}"
  expect_error "changed layout" "the output layout" \
    $SMELT merge --resume "$work/c.yml" "$out" --out-shard-size 4M --max-memory 3Mi -j1 -q
  expect_error "changed seed" "--random-seed" \
    $SMELT merge --resume "$work/c.yml" "$out" "${args[@]}" --random-seed 7
  $SMELT merge --overwrite "$work/c.yml" "$out" "${args[@]}" \
    && sums "$out" | diff -q - "$work/ref.sha" >/dev/null \
    && pass "--overwrite discards the old state" || fail "--overwrite over a journal"
else
  fail "changed config: no kill landed mid-run, so nothing was checked"
fi

# An input whose bytes changed while its header stayed the same: resuming would mix old and new
# data, so it is refused naming the file. Each change in place keeps the header and the size:
# new bytes (mtime moves), a bare touch, and new bytes with the old mtime put back (only the
# sampled blocks can tell). With the file as it was, the resume goes through.
out=$work/inchanged
for frac in 2 3 4 6 8; do # until a kill lands mid-run
  rm -rf "$out"
  rc=$(run_killed $((run_ms / frac + 5)) $SMELT merge "$work/c.yml" "$out" "${args[@]}")
  [ "$rc" -ne 0 ] && [ -e "$out/.smelt-journal" ] && break
done
if [ "$rc" -ne 0 ] && [ -e "$out/.smelt-journal" ]; then
  in=$(ls "$work"/a/model-00001-of-*.safetensors)
  cp -p "$in" "$work/a-orig.safetensors"
  stamp=$(stat -c %y "$in")
  hlen=$(od -An -tu8 -N8 "$in" | tr -d ' ')
  # poke OFFSET_IN_DATA: rewrites 4 bytes of the first shard's data in place (size unchanged).
  poke() { printf '\x11\x22\x33\x44' | dd of="$in" bs=1 seek=$((8 + hlen + $1)) conv=notrunc status=none; }
  restore() { cp -p "$work/a-orig.safetensors" "$in"; touch -d "$stamp" "$in"; }
  poke 100
  expect_error "input bytes changed" "cannot resume: input $in changed (its modification time differs)" \
    $SMELT merge --resume "$work/c.yml" "$out" "${args[@]}"
  restore; touch "$in"
  expect_error "input touched" "input $in changed (its modification time differs)" \
    $SMELT merge --resume "$work/c.yml" "$out" "${args[@]}"
  restore; poke 100; touch -d "$stamp" "$in"
  [ "$(stat -c %y "$in")" = "$stamp" ] || fail "touch -d did not restore the mtime to the ns"
  expect_error "input bytes changed, mtime put back" "input $in changed (its data differs in the sampled blocks)" \
    $SMELT merge --resume "$work/c.yml" "$out" "${args[@]}"
  restore; size=$(stat -c %s "$in"); poke $((size - 8 - hlen - 4)); touch -d "$stamp" "$in"
  expect_error "last data bytes changed, mtime put back" "its data differs in the sampled blocks" \
    $SMELT merge --resume "$work/c.yml" "$out" "${args[@]}"
  restore
  $SMELT merge --resume "$work/c.yml" "$out" "${args[@]}" \
    && sums "$out" | diff -q - "$work/ref.sha" >/dev/null \
    && pass "input restored: resume gives identical bytes" || fail "input restored: resume failed or differs"
else
  fail "changed input: no kill landed mid-run, so nothing was checked"
fi

# A journal from a smelt that did not record the inputs' data identity is refused as such.
out=$work/oldjournal
for frac in 2 3 4 6 8; do
  rm -rf "$out"
  rc=$(run_killed $((run_ms / frac + 5)) $SMELT merge "$work/c.yml" "$out" "${args[@]}")
  [ "$rc" -ne 0 ] && [ -e "$out/.smelt-journal" ] && break
done
if [ "$rc" -ne 0 ] && [ -e "$out/.smelt-journal" ]; then
  printf '\x01\x00\x00\x00' | dd of="$out/.smelt-journal" bs=1 seek=8 conv=notrunc status=none
  expect_error "version 1 journal" "journal version 1, made by an older smelt" \
    $SMELT merge --resume "$work/c.yml" "$out" "${args[@]}"
else
  fail "old journal: no kill landed mid-run, so nothing was checked"
fi

# --resume with nothing to resume starts from the beginning.
$SMELT merge --resume "$work/c.yml" "$work/fresh" "${args[@]}" 2>"$work/fresh.err" \
  && grep -q "starting from the beginning" "$work/fresh.err" \
  && sums "$work/fresh" | diff -q - "$work/ref.sha" >/dev/null \
  && pass "--resume without a journal" || fail "--resume without a journal: $(cat "$work/fresh.err")"
finish
