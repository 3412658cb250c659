# Partitioned merges on a real Slurm cluster: on a single-node cluster of its own
# (slurm_cluster.sh), tools/cluster/slurm-merge.sh's array of 4 parts and its afterok finalize
# job, submitted with sbatch, give every file of a one-process merge byte for byte. An array
# with a failing part leaves the finalize job cancelled, never run, and no final files; the
# part rerun and the printed finalize command then complete the merge. Slurm not installed or
# not coming up is a failure that says why, never a skip.
source "$(dirname "$0")/lib.sh"
export SMELT
cluster=$here/../../tools/cluster

source "$here/slurm_cluster.sh"

# The jobs see this environment (sbatch --export=ALL): SMELT, and ASAN_OPTIONS under ASan.
cd "$work/jobs"
# (timeout: sbatch --wait would wait for ever on a job that is never scheduled)
timeout 300 sbatch --wait --quiet --output=env.log --wrap='echo "SMELT=$SMELT ASAN=${ASAN_OPTIONS:-}"' ||
  die "a one-line batch job did not complete: $(cat env.log 2>/dev/null)"
[ "$(cat env.log)" = "SMELT=$SMELT ASAN=${ASAN_OPTIONS:-}" ] &&
  pass "a batch job runs and sees SMELT${ASAN_OPTIONS:+ and ASAN_OPTIONS}" ||
  fail "a batch job's environment: $(cat env.log), expected SMELT=$SMELT ASAN=${ASAN_OPTIONS:-}"

# --- The merge -------------------------------------------------------------------------------
ties_set 6M 1M
cfg=$work/ties.yml
args=(--out-shard-size 1M)
t0=$(date +%s.%N)
$SMELT merge "$cfg" "$work/ref" "${args[@]}" -q
t_one=$(echo "$(date +%s.%N) - $t0" | bc)
nshards=$(ls "$work/ref"/model-*.safetensors | wc -l)
[ "$nshards" -ge 4 ] && pass "one-process merge: $nshards shards in ${t_one}s" || fail "only $nshards shards"
for k in 1 2 3 4; do
  plan=$($SMELT plan "$cfg" "${args[@]}" --part $k/4) # whole, then grep: see test_install
  ! grep -q "writes: no shards" <<<"$plan" || fail "part $k of 4 has no shards"
done

sbopts=(--cpus-per-task=2 --mem=512M --time=00:20:00)
out=$work/out
t0=$(date +%s.%N)
msg=$(bash "$cluster/slurm-merge.sh" "${sbopts[@]}" 4 "$cfg" "$out" "${args[@]}") ||
  die "slurm-merge.sh failed: $msg"
array=$(sed -n 's/^parts: array job \([0-9]*\) (N=4); finalize: job \([0-9]*\) .*/\1/p' <<<"$msg")
final=$(sed -n 's/^parts: array job \([0-9]*\) (N=4); finalize: job \([0-9]*\) .*/\2/p' <<<"$msg")
[ -n "$array" ] && [ -n "$final" ] || die "slurm-merge.sh printed no job ids: $msg"
if wait_jobs 600 "$array" "$final"; then
  t_slurm=$(echo "$(date +%s.%N) - $t0" | bc)
  tasks=$(scontrol -o show job "$array" | grep -o 'ArrayTaskId=[0-9]*' | cut -d= -f2 | sort -n | paste -sd,)
  [ "$tasks" = 0,1,2,3 ] && pass "slurm-merge.sh: array job $array ran tasks $tasks, finalize job $final" ||
    fail "array job $array ran tasks '$tasks', not 0,1,2,3"
  job_ok "$array" "the 4 array tasks" && pass "the 4 array tasks completed with exit code 0"
  job_ok "$final" "the finalize job" && pass "the finalize job completed with exit code 0 after them"
  for i in 0 1 2 3; do
    [ -e "smelt-part-${array}_$i.log" ] || fail "no log smelt-part-${array}_$i.log for array task $i"
    # --resume without a journal says it starts from the beginning; anything else is shown.
    said=$(grep -v "no journal of an interrupted merge; starting from the beginning" "smelt-part-${array}_$i.log" || true)
    [ -z "$said" ] || echo "array task $i said: $said"
  done
  [ ! -s "smelt-finalize-$final.log" ] || echo "finalize said: $(cat "smelt-finalize-$final.log")"
  # Finalizing after its dependency: it started no earlier than the last part ended.
  last_end=$(scontrol -o show job "$array" | grep -o 'EndTime=[^ ]*' | sort | tail -1 | cut -d= -f2)
  fin_start=$(scontrol -o show job "$final" | grep -o 'StartTime=[^ ]*' | cut -d= -f2)
  [[ ! "$fin_start" < "$last_end" ]] && pass "finalize started at $fin_start, after the last part ended ($last_end)" ||
    fail "finalize started at $fin_start, before the last part ended ($last_end)"
  same_as "$work/ref" "$out" "a 4-part Slurm array + finalize job (${t_slurm}s, one process ${t_one}s)"
  $SMELT verify "$out" -q && pass "verify passes on the Slurm merge" || fail "verify failed on the Slurm merge"
fi

# --- A failing part: the finalize job is cancelled, never run --------------------------------
# A stand-in for smelt fails array task 2 (part 3 of 4) and runs the real smelt otherwise.
cat > "$work/smelt-fail-part3" <<'EOF'
#!/bin/bash
if [ "${SLURM_ARRAY_TASK_ID:-}" = 2 ]; then echo "failing array task 2 on purpose" >&2; exit 3; fi
exec "$REAL_SMELT" "$@"
EOF
chmod +x "$work/smelt-fail-part3"
out=$work/failed
msg=$(REAL_SMELT=$SMELT SMELT=$work/smelt-fail-part3 bash "$cluster/slurm-merge.sh" "${sbopts[@]}" 4 "$cfg" "$out" "${args[@]}") ||
  die "slurm-merge.sh failed: $msg"
array=$(sed -n 's/^parts: array job \([0-9]*\) .* finalize: job \([0-9]*\) .*/\1/p' <<<"$msg")
final=$(sed -n 's/^parts: array job \([0-9]*\) .* finalize: job \([0-9]*\) .*/\2/p' <<<"$msg")
if wait_jobs 600 "$array" "$final"; then
  rec=$(scontrol -o show job "${array}_2")
  grep -q 'JobState=FAILED .*ExitCode=3:0' <<<"$rec" && grep -q "on purpose" "smelt-part-${array}_2.log" &&
    pass "array task 2 failed (exit 3)" || fail "array task 2: $rec"
  [ "$(job_states "$array" | grep -c COMPLETED)" -eq 3 ] && pass "the other 3 tasks completed" ||
    fail "the other tasks: $(job_states "$array" | tr '\n' ' ')"
  rec=$(scontrol -o show job "$final")
  grep -q 'JobState=CANCELLED Reason=DependencyNeverSatisfied' <<<"$rec" && grep -q 'RunTime=00:00:00' <<<"$rec" &&
    [ ! -e "smelt-finalize-$final.log" ] &&
    pass "the finalize job was cancelled without running: $(grep -o 'Dependency=[^ ]*' <<<"$rec")" ||
    fail "the finalize job after a failed part: $(grep -o 'JobState=[^ ]*\|Reason=[^ ]*\|RunTime=[^ ]*\|Dependency=[^ ]*' <<<"$rec" | tr '\n' ' ')"
  no_final "$out" "a failed part"
  [ "$(ls "$out"/.smelt-part-*-of-4.json 2>/dev/null | wc -l)" -eq 3 ] && [ ! -e "$out/.smelt-part-3-of-4.json" ] &&
    pass "3 fragments, none of part 3" || fail "after a failed part: $(ls -A "$out" | tr '\n' ' ')"
  # The recovery the scripts describe: rerun the part, then the printed finalize command.
  $SMELT merge "$cfg" "$out" "${args[@]}" -q --resume --part 3/4 2>/dev/null
  finalize=$(sed -n 's/^if a part fails, rerun it, then: //p' <<<"$msg")
  [ -n "$finalize" ] || fail "slurm-merge.sh printed no finalize command: $msg"
  REAL_SMELT=$SMELT timeout 300 sbatch --wait --quiet --output=refinalize.log --wrap="$finalize" ||
    fail "the printed finalize command as a batch job: $(cat refinalize.log)"
  same_as "$work/ref" "$out" "part 3 rerun + the printed finalize command"
fi

# slurm-merge.sh's own argument checks (no Slurm needed).
expect_error "slurm-merge.sh: a two-word sbatch option" "give it as --name=value" \
  bash "$cluster/slurm-merge.sh" -p debug 4 "$cfg" "$work/x"
expect_error "slurm-merge.sh: N not a number" "N must be a positive number" \
  bash "$cluster/slurm-merge.sh" --mem=1G four "$cfg" "$work/x"

finish
