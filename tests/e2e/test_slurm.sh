# Partitioned merges on a real Slurm cluster: this test starts munged, slurmctld and slurmd
# (Debian's munge, slurmctld, slurmd and slurm-client; tools/setup.sh installs them) as a
# single-node cluster of its own (config, key, socket, state and logs in its temporary
# directory; localhost only, free high ports; /etc/slurm and the system munge are not touched),
# submits tools/cluster/slurm-merge.sh's array of 4 parts and its afterok finalize job with
# sbatch, and compares the output byte for byte with a one-process merge. An array with a
# failing part must leave the finalize job cancelled, never run, and no final files; the part
# rerun and the printed finalize command then complete the merge. Slurm not being installed or
# not coming up is a failure that says why, never a skip.
source "$(dirname "$0")/lib.sh"
PATH=$PATH:/usr/sbin:/sbin
export SMELT
cluster=$here/../../tools/cluster

need=(munged munge slurmctld slurmd sbatch squeue sinfo scontrol scancel)
for b in "${need[@]}"; do
  if ! command -v "$b" >/dev/null; then
    echo "FAIL: '$b' is not installed: this test runs a real single-node Slurm cluster and needs" \
      "Debian's munge, slurmctld, slurmd and slurm-client (tools/setup.sh installs them)" >&2
    exit 1
  fi
done
if [ "$(id -u)" -ne 0 ]; then
  echo "FAIL: this test must run as root: slurmd starts jobs as their owner (setuid), which" \
    "needs root, and the cluster runs with SlurmUser=root" >&2
  exit 1
fi
# Inside a Slurm job (a CI runner on a cluster) the outer job's variables would leak into ours.
for v in $(compgen -v SLURM_) $(compgen -v SBATCH_); do unset "$v"; done

# --- The cluster -----------------------------------------------------------------------------
# munged wants every directory above its socket searchable by all; mktemp made $work 0700.
chmod 711 "$work"
mkdir -p "$work/munge" "$work/munge-run" "$work/slurm/state" "$work/slurm/spool" "$work/jobs"
chmod 700 "$work/munge"; chmod 755 "$work/munge-run"
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$work/munge/munge.key"
sock=$work/munge-run/munge.socket

daemons=() # the pids of `timeout ... DAEMON -D/-F`: timeout forwards our TERM to the daemon
logs=("$work/munge/munged" "$work/slurm/slurmctld" "$work/slurm/slurmd")
# show_logs: each daemon's log, or what it printed before it had one (a bad slurm.conf).
show_logs() {
  local f
  for f in "${logs[@]}"; do
    if [ -s "$f.log" ]; then f=$f.log; elif [ -s "$f.stderr" ]; then f=$f.stderr; else continue; fi
    echo "--- $f (last 25 lines)"; tail -n 25 "$f"
  done >&2
}
# die MESSAGE: the cluster cannot run; say why, with the daemons' logs.
die() { echo "FAIL: $*" >&2; show_logs; exit 1; }
stop_cluster() {
  if [ ${#daemons[@]} -gt 0 ] && [ -n "${SLURM_CONF:-}" ] && [ -e "$SLURM_CONF" ]; then
    # No job may outlive the cluster: cancel what is left, then wait for it to go.
    local ids; ids=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ') || true
    if [ -n "${ids// }" ]; then
      scancel $ids 2>/dev/null || true
      for _ in $(seq 30); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 1; done
    fi
  fi
  local pid i
  for ((i = ${#daemons[@]} - 1; i >= 0; i--)); do # slurmd, slurmctld, then munged
    pid=${daemons[i]}
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 -- "-$pid" 2>/dev/null || true # timeout leads its own process group
    wait "$pid" 2>/dev/null || true
  done
  daemons=()
}
trap 'stop_cluster; rm -rf "$work"' EXIT

# free_port: a TCP port nothing on 127.0.0.1 listens on (random, so that copies of this test
# running at once pick different ones; a clash shows in slurmctld's log).
free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 30000))
    if ! (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null && [ "$p" != "${1:-}" ]; then echo "$p"; return; fi
  done
  echo "FAIL: no free TCP port found on 127.0.0.1" >&2; exit 1
}
ctld_port=$(free_port)
slurmd_port=$(free_port "$ctld_port")
host=$(hostname -s)
# Daemons stop on their own after 25 minutes should this script be killed before its trap runs.
life=1500

timeout "$life" munged -F --key-file="$work/munge/munge.key" --socket="$sock" \
  --pid-file="$work/munge-run/munged.pid" --log-file="$work/munge/munged.log" \
  --seed-file="$work/munge/munged.seed" 2>"$work/munge/munged.stderr" &
daemons+=($!)
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.2; done
[ -S "$sock" ] || die "munged did not create its socket $sock"
echo test | munge -S "$sock" | unmunge -S "$sock" >/dev/null ||
  die "munge cannot encode and decode a credential through $sock"
pass "munged runs with its own key on $sock"

# One node of 8 CPUs, whatever this machine has (config_overrides: slurmd takes the node as
# configured instead of draining it for fewer cores), so the 4 parts of 2 CPUs run at once.
export SLURM_CONF=$work/slurm/slurm.conf
cat > "$SLURM_CONF" <<EOF
ClusterName=smelt-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$work/slurm/state
SlurmdSpoolDir=$work/slurm/spool
SlurmctldPidFile=$work/slurm/slurmctld.pid
SlurmdPidFile=$work/slurm/slurmd.pid
SlurmctldLogFile=$work/slurm/slurmctld.log
SlurmdLogFile=$work/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=8 RealMemory=8192 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
timeout "$life" slurmctld -D -f "$SLURM_CONF" >"$work/slurm/slurmctld.stderr" 2>&1 &
daemons+=($!)
timeout "$life" slurmd -D -f "$SLURM_CONF" >"$work/slurm/slurmd.stderr" 2>&1 &
daemons+=($!)
state=
for _ in $(seq 120); do
  for pid in "${daemons[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a Slurm daemon exited while starting (pids ${daemons[*]})"
  done
  state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.5
done
[ "$state" = idle ] || die "node $host not idle 60 s after starting slurmctld (port $ctld_port)" \
  "and slurmd (port $slurmd_port): sinfo says '${state:-nothing}'"
pass "slurmctld and slurmd up on ports $ctld_port/$slurmd_port, node $host idle"

# job_states ID: one JobState=... per job (an array's tasks each), while Slurm keeps the record.
job_states() { scontrol -o show job "$1" | grep -o 'JobState=[A-Z_]*'; }
# wait_jobs SECONDS ID...: until every job (and array task) has ended.
wait_jobs() {
  local limit=$1 id t; shift
  for ((t = 0; t < limit * 2; t++)); do
    local busy=0
    for id in "$@"; do
      job_states "$id" | grep -qvE 'JobState=(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)$' && busy=1
    done
    [ "$busy" -eq 0 ] && return 0
    sleep 0.5
  done
  fail "jobs $* still not done after $limit s: $(squeue 2>&1 | tr '\n' '|')"
  for id in "$@"; do scontrol -o show job "$id" >&2 || true; done
  show_logs
  return 1
}
# job_ok ID NAME: the job (every task of an array) completed with exit code 0.
job_ok() {
  local rec; rec=$(scontrol -o show job "$1")
  if grep -vq 'JobState=COMPLETED .* ExitCode=0:0' <<<"$rec"; then
    fail "$2: $(grep -o 'JobId=[0-9]* \|ArrayTaskId=[0-9]*\|JobState=[A-Z_]*\|Reason=[^ ]*\|ExitCode=[0-9:]*' <<<"$rec" | tr '\n' ' ')"
    return 1
  fi
}

# The jobs see this environment (sbatch --export=ALL): SMELT, and ASAN_OPTIONS under ASan.
cd "$work/jobs"
sbatch --wait --quiet --output=env.log --wrap='echo "SMELT=$SMELT ASAN=${ASAN_OPTIONS:-}"' ||
  die "a one-line batch job did not complete: $(cat env.log 2>/dev/null)"
[ "$(cat env.log)" = "SMELT=$SMELT ASAN=${ASAN_OPTIONS:-}" ] &&
  pass "a batch job runs and sees SMELT${ASAN_OPTIONS:+ and ASAN_OPTIONS}" ||
  fail "a batch job's environment: $(cat env.log), expected SMELT=$SMELT ASAN=${ASAN_OPTIONS:-}"

# --- The merge -------------------------------------------------------------------------------
$SMELT synth "$work/base" --size 6M --seed 1 --shard-size 1M
for s in 2 3 4; do $SMELT synth "$work/ft$s" --size 6M --base-seed 1 --seed $s --shard-size 1M; done
cfg=$work/ties.yml
cat > "$cfg" <<EOF
merge_method: ties
base_model: $work/base
models:
  - model: $work/ft2
    parameters: {weight: 0.5, density: 0.5}
  - model: $work/ft3
    parameters: {weight: 0.3, density: 0.6}
  - model: $work/ft4
    parameters: {weight: 0.2, density: 0.4}
parameters: {normalize: true}
dtype: bfloat16
EOF
args=(--out-shard-size 1M)
t0=$(date +%s.%N)
$SMELT merge "$cfg" "$work/ref" "${args[@]}" -q
t_one=$(echo "$(date +%s.%N) - $t0" | bc)
nshards=$(ls "$work/ref"/model-*.safetensors | wc -l)
[ "$nshards" -ge 4 ] && pass "one-process merge: $nshards shards in ${t_one}s" || fail "only $nshards shards"
for k in 1 2 3 4; do
  ! $SMELT plan "$cfg" "${args[@]}" --part $k/4 | grep -q "writes: no shards" || fail "part $k of 4 has no shards"
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

# --- A failing part: afterok holds the finalize job back, for good ---------------------------
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
  REAL_SMELT=$SMELT sbatch --wait --quiet --output=refinalize.log --wrap="$finalize" ||
    fail "the printed finalize command as a batch job: $(cat refinalize.log)"
  same_as "$work/ref" "$out" "part 3 rerun + the printed finalize command"
fi

# slurm-merge.sh's own argument checks (no Slurm needed).
expect_error "slurm-merge.sh: a two-word sbatch option" "give it as --name=value" \
  bash "$cluster/slurm-merge.sh" -p debug 4 "$cfg" "$work/x"
expect_error "slurm-merge.sh: N not a number" "N must be a positive number" \
  bash "$cluster/slurm-merge.sh" --mem=1G four "$cfg" "$work/x"

finish
