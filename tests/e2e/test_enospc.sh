# A full disk: the merge stops with a clear message, leaves nothing that looks complete but a
# resumable state, and after space is freed --resume completes with the same bytes.
source "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ]; then echo "skipped: mounting a small tmpfs needs root"; exit 77; fi
mnt=$work/mnt
mkdir -p "$mnt"
if ! mount -t tmpfs -o size=6m tmpfs "$mnt" 2>/dev/null; then
  echo "skipped: cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?)"; exit 77
fi
trap 'umount "$mnt" 2>/dev/null; rm -rf "$work"' EXIT

$SMELT synth "$work/base" --size 4M --seed 1 --shard-size 2M
$SMELT synth "$work/a" --size 4M --base-seed 1 --seed 2 --shard-size 2M
linear_config "$work/c.yml" "$work/base" 0.5 "$work/base" 0.5 "$work/a"
args=(--out-shard-size 1500K --max-memory 3Mi -j1 -q)
$SMELT merge "$work/c.yml" "$work/ref" "${args[@]}"
sums() { (cd "$1" && for f in $(ls -A | sort); do sha256sum "$f"; done); }

# Leave room for the first shard or so, not for the whole output (~4 MB).
dd if=/dev/zero of="$mnt/filler" bs=1M count=3 status=none 2>/dev/null || true
rc=0; $SMELT merge "$work/c.yml" "$mnt/out" "${args[@]}" 2>"$work/err" || rc=$?
[ "$rc" -ne 0 ] && grep -q "No space left on device" "$work/err" \
  && pass "full disk: exit $rc: $(head -1 "$work/err")" || fail "full disk: rc $rc: $(cat "$work/err")"
if compgen -G "$mnt/out/model*.safetensors" >/dev/null || [ -e "$mnt/out/model.safetensors.index.json" ]; then
  fail "full disk: output looks complete: $(ls -A "$mnt/out")"
else
  pass "full disk: nothing looks complete ($(ls -A "$mnt/out" | tr '\n' ' '))"
fi
if [ -e "$mnt/out/.smelt-journal" ]; then
  grep -q "run the same command with --resume" "$work/err" && pass "full disk: resume hint" \
    || fail "full disk: journal kept but no hint"
else
  fail "full disk: no journal kept, so it cannot be resumed: $(cat "$work/err")"
fi

rm -f "$mnt/filler"
$SMELT merge --resume "$work/c.yml" "$mnt/out" "${args[@]}" 2>"$work/err" \
  && diff <(sums "$mnt/out") <(sums "$work/ref") >/dev/null \
  && pass "space freed: --resume completes with identical bytes" \
  || fail "resume after freeing space: $(cat "$work/err")"

# Room for the shards but not for everything: the journal lets the resume skip the finished
# tensors. A filler sized to leave ~1.5 shards' room stops it mid-write on most layouts.
rm -rf "$mnt/out"
dd if=/dev/zero of="$mnt/filler" bs=1K count=3300 status=none 2>/dev/null || true
rc=0; $SMELT merge "$work/c.yml" "$mnt/out" "${args[@]}" 2>"$work/err" || rc=$?
rm -f "$mnt/filler"
if [ "$rc" -ne 0 ]; then
  $SMELT merge --resume "$work/c.yml" "$mnt/out" "${args[@]}" 2>"$work/err" \
    && diff <(sums "$mnt/out") <(sums "$work/ref") >/dev/null \
    && pass "second full disk: resumed identical" || fail "second resume: $(cat "$work/err")"
else
  fail "second fill: the merge found room after all, so the mid-write stop was not tested"
fi
finish
