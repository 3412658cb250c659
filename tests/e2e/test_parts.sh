# Partitioned merges: parts run one after another or at once (local processes standing in for
# machines on a shared filesystem), then --finalize, give every file of a one-process merge byte
# for byte; a part killed mid-way resumes with --resume --part K/N; finalize refuses missing,
# foreign, damaged or mismatched parts with a clear message and writes nothing; --part is
# validated and --part auto reads Slurm job arrays and Kubernetes Indexed Jobs.
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/base" --size 6M --seed 1 --shard-size 1M
$SMELT synth "$work/a" --size 6M --base-seed 1 --seed 2 --shard-size 1M
$SMELT synth "$work/b" --size 6M --base-seed 1 --seed 3 --shard-size 1M
ties_config() { # ties_config FILE WEIGHT_A
  cat > "$1" <<EOF
merge_method: ties
base_model: $work/base
models:
  - model: $work/a
    parameters: {weight: $2, density: 0.5}
  - model: $work/b
    parameters: {weight: 0.4, density: 0.5}
parameters: {normalize: true}
dtype: bfloat16
EOF
}
ties_config "$work/c.yml" 0.6
cfg=$work/c.yml
args=(--out-shard-size 1M -q)

$SMELT merge "$cfg" "$work/ref" "${args[@]}"
nshards=$(ls "$work/ref"/model-*.safetensors | wc -l)
[ "$nshards" -ge 5 ] && pass "one-process merge: $nshards shards" || fail "only $nshards shards"

# smelt plan --part: the part's shards and bytes, and the whole partition.
$SMELT plan "$cfg" "${args[@]}" --part 2/3 > "$work/plan.txt"
grep -q '^\* part 2 of 3: [0-9]* shards\?, read [0-9]* bytes, write [0-9]* bytes' "$work/plan.txt" &&
  grep -q '^part 2 of 3 writes:' "$work/plan.txt" && grep -q '^  model-000' "$work/plan.txt" &&
  pass "plan --part 2/3: $(grep '^\* part' "$work/plan.txt")" || fail "plan --part: $(tail -6 "$work/plan.txt")"
sum=$(grep '^[* ] part [0-9]* of 3:' "$work/plan.txt" | sed 's/.* \([0-9]*\) shards\?,.*/\1/' | paste -sd+ | bc)
[ "$sum" -eq "$nshards" ] && pass "the 3 parts cover $nshards shards" || fail "parts cover $sum of $nshards shards"

# Three parts one after another, then three at once.
out=$work/seq
for k in 1 2 3; do $SMELT merge "$cfg" "$out" "${args[@]}" --part $k/3; done
if compgen -G "$out/model*.safetensors" >/dev/null || [ -e "$out/smelt-manifest.json" ]; then
  fail "parts renamed shards or wrote a manifest: $(ls -A "$out" | tr '\n' ' ')"
fi
[ "$(ls "$out"/.smelt-part-*-of-3.json | wc -l)" -eq 3 ] && ! compgen -G "$out/.smelt-journal*" >/dev/null &&
  pass "3 parts: 3 fragments, temporary shards, no journals" || fail "after 3 parts: $(ls -A "$out" | tr '\n' ' ')"
expect_error "a finished part rerun without --resume or --overwrite" "part 2 of 3 has already finished" \
  $SMELT merge "$cfg" "$out" "${args[@]}" --part 2/3
$SMELT merge "$cfg" "$out" "${args[@]}" --part 2/3 --resume 2>"$work/again.err" &&
  grep -q "part 2 of 3 had already finished" "$work/again.err" && pass "--resume of a finished part: nothing to do" ||
  fail "--resume of a finished part: $(cat "$work/again.err")"
$SMELT merge "$cfg" "$out" "${args[@]}" --finalize
same_as "$work/ref" "$out" "3 parts in sequence + finalize"
$SMELT verify "$out" -q && pass "verify passes on the finalized output" || fail "verify failed"

out=$work/conc
for k in 1 2 3; do $SMELT merge "$cfg" "$out" "${args[@]}" --part $k/3 & done
wait
$SMELT merge "$cfg" "$out" "${args[@]}" --finalize
same_as "$work/ref" "$out" "3 concurrent parts + finalize"

# More parts than shards: the empty parts say so; 4 parts of a 2-3 shard output, and 9 of 7.
$SMELT merge "$cfg" "$work/ref3" --out-shard-size 3M -q
for spec in "3M 4" "1M 9"; do
  set -- $spec
  out=$work/many$2 ref=$work/ref; [ "$1" = 3M ] && ref=$work/ref3
  empty=0
  for k in $(seq 1 "$2"); do
    $SMELT merge "$cfg" "$out" --out-shard-size "$1" -q --part "$k/$2" 2>"$work/empty.err" &
  done
  wait
  for k in $(seq 1 "$2"); do
    plan=$($SMELT plan "$cfg" --out-shard-size "$1" --part "$k/$2") # whole: see test_install
    grep -q "writes: no shards" <<<"$plan" && empty=$((empty + 1))
  done
  [ "$empty" -gt 0 ] || fail "$2 parts of $1 shards: no part was empty"
  $SMELT merge "$cfg" "$out" --out-shard-size "$1" -q --finalize
  same_as "$ref" "$out" "$2 parts ($empty without shards) of a --out-shard-size $1 merge"
done
out=$work/emptymsg
$SMELT merge "$cfg" "$out" --out-shard-size 3M --part 1/4 2>"$work/empty.err"
grep -q "part 1 of 4 has no shards to write" "$work/empty.err" && pass "an empty part says so" ||
  fail "empty part: $(cat "$work/empty.err")"

# A part killed (SIGKILL) mid-way resumes from its own journal, same bytes.
export SMELT_JOURNAL_INTERVAL=0
slow=(--out-shard-size 1M -q --max-memory 2Mi -j1)
killed=0
for delay in 0.02 0.03 0.01 0.04 0.05 0.015 0.06 0.08 0.005 0.1; do
  out=$work/kill; rm -rf "$out"
  $SMELT merge "$cfg" "$out" "${slow[@]}" --part 1/3
  $SMELT merge "$cfg" "$out" "${slow[@]}" --part 3/3
  $SMELT merge "$cfg" "$out" "${slow[@]}" --part 2/3 2>/dev/null & pid=$!
  sleep "$delay"; kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  if [ -e "$out/.smelt-journal.part-2-of-3" ] && [ ! -e "$out/.smelt-part-2-of-3.json" ]; then killed=1; break; fi
done
if [ "$killed" -eq 1 ]; then
  pass "part 2/3 killed mid-way (after ${delay}s): its journal, no fragment"
  expect_error "finalize with a part still unfinished" "part 2 of 3 has not finished" \
    $SMELT merge "$cfg" "$out" "${args[@]}" --finalize
  no_final "$out" "unfinished part"
  expect_error "the killed part rerun without --resume" "--resume to continue it" \
    $SMELT merge "$cfg" "$out" "${slow[@]}" --part 2/3
  $SMELT merge "$cfg" "$out" "${slow[@]}" --part 2/3 --resume 2>"$work/resume.err" ||
    fail "resume of part 2/3: $(cat "$work/resume.err")"
  grep -q "resuming:" "$work/resume.err" && pass "resumed: $(grep resuming: "$work/resume.err")" ||
    fail "no resume notice: $(cat "$work/resume.err")"
  $SMELT merge "$cfg" "$out" "${args[@]}" --finalize
  same_as "$work/ref" "$out" "killed part resumed + finalize"
else
  fail "no kill landed mid-way through part 2/3"
fi
unset SMELT_JOURNAL_INTERVAL

# Finalize refuses, names the part and writes nothing.
parts3() { rm -rf "$1"; for k in 1 2 3; do $SMELT merge "$cfg" "$1" "${args[@]}" --part $k/3; done; }
out=$work/bad
parts3 "$out"; rm "$out/.smelt-part-2-of-3.json"
expect_error "finalize: a missing part" \
  "part 2 of 3 is missing: no $out/.smelt-part-2-of-3.json; run \`smelt merge $cfg $out --part 2/3\`" \
  $SMELT merge "$cfg" "$out" "${args[@]}" --finalize
no_final "$out" "missing part"

ties_config "$work/other.yml" 0.5
parts3 "$out"
$SMELT merge "$work/other.yml" "$work/otherout" "${args[@]}" --part 2/3
cp "$work/otherout/.smelt-part-2-of-3.json" "$out/"
expect_error "finalize: a fragment of another config" "part 2 of 3: $out/.smelt-part-2-of-3.json was made from another config" \
  $SMELT merge "$cfg" "$out" "${args[@]}" --finalize
no_final "$out" "another config"

parts3 "$out"
tmp=$(ls "$out"/model-*.smelt-tmp | sed -n 3p)
truncate -s -1000 "$tmp"
expect_error "finalize: a truncated temporary shard" "$tmp is" \
  $SMELT merge "$cfg" "$out" "${args[@]}" --finalize
expect_error "finalize: the truncation named" "its fragment says" \
  $SMELT merge "$cfg" "$out" "${args[@]}" --finalize
no_final "$out" "truncated shard"

parts3 "$out"
sed -i 's/"smelt_version": "[^"]*"/"smelt_version": "0.0.1-other"/' "$out/.smelt-part-3-of-3.json"
expect_error "finalize: a fragment of another smelt version" "part 3 of 3: $out/.smelt-part-3-of-3.json was made by smelt 0.0.1-other" \
  $SMELT merge "$cfg" "$out" "${args[@]}" --finalize
no_final "$out" "other version"

parts3 "$out"
sed -i 's/"plan": "[0-9a-f]*"/"plan": "00000000000000000000000000000000"/' "$out/.smelt-part-1-of-3.json"
expect_error "finalize: a fragment of another layout" "part 1 of 3: $out/.smelt-part-1-of-3.json has another output layout" \
  $SMELT merge "$cfg" "$out" "${args[@]}" --finalize
no_final "$out" "other layout"

parts3 "$out"
$SMELT merge "$cfg" "$work/four" "${args[@]}" --part 1/4
cp "$work/four/.smelt-part-1-of-4.json" "$out/"
expect_error "finalize: fragments of two part counts" "parts of a merge in" \
  $SMELT merge "$cfg" "$out" "${args[@]}" --finalize
no_final "$out" "two part counts"
rm "$out/.smelt-part-1-of-4.json"
printf '{"format": "smelt-part"' > "$out/.smelt-part-2-of-3.json"
expect_error "finalize: a damaged fragment" "part 2 of 3: $out/.smelt-part-2-of-3.json is damaged" \
  $SMELT merge "$cfg" "$out" "${args[@]}" --finalize
no_final "$out" "damaged fragment"
expect_error "finalize of a directory without parts" "no parts to finalize" \
  $SMELT merge "$cfg" "$work/nothing" "${args[@]}" --finalize
# A plain merge into a directory holding parts: refused, --overwrite starts over.
expect_error "a plain merge over parts' state" "holds an interrupted merge" \
  $SMELT merge "$cfg" "$out" "${args[@]}"

# --part is checked.
for bad in 0/3 4/3 x 1/ /3 1/3x -1/3 3 1/0 2/1; do
  expect_error "--part $bad" "--part: '$bad' is not K/N" $SMELT merge "$cfg" "$work/x" "${args[@]}" --part "$bad"
done
expect_error "--part with --finalize" "takes no --part" $SMELT merge "$cfg" "$work/x" "${args[@]}" --part 1/3 --finalize
expect_error "--parts without --part auto" "only with --part auto" $SMELT merge "$cfg" "$work/x" "${args[@]}" --parts 3
noenv=(env -u SLURM_ARRAY_TASK_ID -u SLURM_ARRAY_TASK_COUNT -u SLURM_ARRAY_TASK_MIN -u SLURM_ARRAY_TASK_MAX -u JOB_COMPLETION_INDEX)
expect_error "--part auto without the environment" "neither a Slurm job array" \
  "${noenv[@]}" $SMELT merge "$cfg" "$work/x" "${args[@]}" --part auto
expect_error "--part auto: Kubernetes without --parts" "add --parts N" \
  "${noenv[@]}" JOB_COMPLETION_INDEX=1 $SMELT merge "$cfg" "$work/x" "${args[@]}" --part auto
expect_error "--part auto: index past --parts" "not below --parts 3" \
  "${noenv[@]}" JOB_COMPLETION_INDEX=3 $SMELT merge "$cfg" "$work/x" "${args[@]}" --part auto --parts 3
expect_error "--part auto: a Slurm task without the count" "not SLURM_ARRAY_TASK_COUNT" \
  "${noenv[@]}" SLURM_ARRAY_TASK_ID=1 $SMELT merge "$cfg" "$work/x" "${args[@]}" --part auto
expect_error "--part auto: a Slurm array with a step" "not one contiguous range" \
  "${noenv[@]}" SLURM_ARRAY_TASK_ID=2 SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_MAX=4 SLURM_ARRAY_TASK_COUNT=3 \
  $SMELT merge "$cfg" "$work/x" "${args[@]}" --part auto
[ ! -e "$work/x" ] && pass "no output directory after the refusals" || fail "refusals made $work/x"

# --part auto: Slurm task IDs 5..7 (--array=5-7) are parts 1..3; Kubernetes indexes 0..2.
got=$("${noenv[@]}" SLURM_ARRAY_TASK_ID=6 SLURM_ARRAY_TASK_MIN=5 SLURM_ARRAY_TASK_MAX=7 SLURM_ARRAY_TASK_COUNT=3 \
  $SMELT plan "$cfg" "${args[@]}" --part auto | grep '^\* part')
[[ "$got" == "* part 2 of 3:"* ]] && pass "Slurm task 6 of 5-7 is part 2 of 3" || fail "Slurm auto: $got"
got=$("${noenv[@]}" JOB_COMPLETION_INDEX=0 $SMELT plan "$cfg" "${args[@]}" --part auto --parts 3 | grep '^\* part')
[[ "$got" == "* part 1 of 3:"* ]] && pass "JOB_COMPLETION_INDEX 0 is part 1 of 3" || fail "Kubernetes auto: $got"
out=$work/slurm
for id in 0 1 2; do
  "${noenv[@]}" SLURM_ARRAY_TASK_ID=$id SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_MAX=2 SLURM_ARRAY_TASK_COUNT=3 \
    $SMELT merge "$cfg" "$out" "${args[@]}" --part auto &
done
wait
$SMELT merge "$cfg" "$out" "${args[@]}" --finalize
same_as "$work/ref" "$out" "a Slurm-style array of 3 + finalize"
out=$work/k8s
for i in 0 1 2 3; do
  "${noenv[@]}" JOB_COMPLETION_INDEX=$i $SMELT merge "$cfg" "$out" "${args[@]}" --part auto --parts 4 &
done
wait
$SMELT merge "$cfg" "$out" "${args[@]}" --finalize
same_as "$work/ref" "$out" "a Kubernetes-style Indexed Job of 4 + finalize"

# tools/cluster/slurm-merge.sbatch run as three array tasks would run it (no Slurm here), and
# the wrapper's two sbatch calls through a stand-in sbatch that records them.
cluster=$here/../../tools/cluster
out=$work/sbatch
for id in 1 2 3; do
  "${noenv[@]}" SMELT="$SMELT" SLURM_ARRAY_TASK_ID=$id SLURM_ARRAY_TASK_MIN=1 SLURM_ARRAY_TASK_MAX=3 \
    SLURM_ARRAY_TASK_COUNT=3 SLURM_CPUS_PER_TASK=2 SMELT_MAX_MEMORY=64Mi \
    bash "$cluster/slurm-merge.sbatch" "$cfg" "$out" --out-shard-size 1M 2>/dev/null &
done
wait
$SMELT merge "$cfg" "$out" "${args[@]}" --finalize
same_as "$work/ref" "$out" "slurm-merge.sbatch as an array of 3 + finalize"
mkdir -p "$work/bin"
printf '%s\n' '#!/bin/bash' 'echo "$*" >> "$SBATCH_LOG"' 'echo "100$(wc -l < "$SBATCH_LOG")"' > "$work/bin/sbatch"
chmod +x "$work/bin/sbatch"
PATH=$work/bin:$PATH SBATCH_LOG=$work/sbatch.log bash "$cluster/slurm-merge.sh" 4 "$cfg" "$work/o" --out-shard-size 1M >/dev/null
if sed -n 1p "$work/sbatch.log" | grep -q -- "--array=0-3 .*slurm-merge.sbatch $cfg $work/o --out-shard-size 1M" &&
   sed -n 2p "$work/sbatch.log" | grep -q -- "--dependency=afterok:1001 .*--finalize"; then
  pass "slurm-merge.sh: an array of 4, then finalize after afterok:<array id>"
else
  fail "slurm-merge.sh submitted: $(cat "$work/sbatch.log")"
fi

# The Python binding passes part and finalize through smelt_merge_options.
src=$here/../..
out=$work/py
smelt_python_env
env "${PYENV[@]}" /usr/bin/python3 - "$cfg" "$out" <<'PY' \
  && same_as "$work/ref" "$out" "smelt.merge(part=(K, 2)) twice + smelt.merge(finalize=True)" \
  || fail "Python partitioned merge"
import sys, smelt
cfg, out = sys.argv[1], sys.argv[2]
for k in (1, 2):
    r = smelt.merge(cfg, out, out_shard_size="1M", part=(k, 2))
    assert r["files"] >= 1 and len(r["manifest_xxh3"]) == 32, r
smelt.merge(cfg, out, out_shard_size="1M", finalize=True)
PY

finish
