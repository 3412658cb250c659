# Sourced after lib.sh (by test_slurm.sh and benchmarks/bench_parts.sh): starts a single-node
# Slurm cluster of its own and stops it on exit. munged (its own key and socket), slurmctld and
# slurmd (their own slurm.conf, state, spool and logs under $work; 127.0.0.1, random free high
# ports) from Debian's munge, slurmctld, slurmd and slurm-client, which tools/setup.sh installs;
# /etc/slurm and the system munge are not touched. SLURM_CONF is exported, so sbatch, squeue
# and scontrol, and the jobs, talk to this cluster. Slurm missing, not running as root, or a
# daemon not coming up is a failure that says why, with the daemons' logs: never a skip.
# Also defines job_states, wait_jobs and job_ok, and makes $work/jobs for the jobs' logs.
PATH=$PATH:/usr/sbin:/sbin
need=(munged munge slurmctld slurmd sbatch squeue sinfo scontrol scancel)
for b in "${need[@]}"; do
  if ! command -v "$b" >/dev/null; then
    echo "FAIL: '$b' is not installed: a single-node Slurm cluster needs" \
      "Debian's munge, slurmctld, slurmd and slurm-client (tools/setup.sh installs them)" >&2
    exit 1
  fi
done
if [ "$(id -u)" -ne 0 ]; then
  echo "FAIL: the Slurm cluster must run as root: slurmd starts jobs as their owner (setuid), which" \
    "needs root, and the cluster runs with SlurmUser=root" >&2
  exit 1
fi
# Inside a Slurm job (a CI runner on a cluster) the outer job's variables would leak into ours.
for v in $(compgen -v SLURM_) $(compgen -v SBATCH_); do unset "$v"; done

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
# our_stepds: the pids of this cluster's slurmstepd processes (a job's step; they inherit
# slurmd's environment, so SLURM_CONF tells them from another cluster's).
our_stepds() {
  local p
  for p in $(pgrep -f '^slurmstepd' || true); do
    { tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$SLURM_CONF" && echo "$p"
  done
  return 0
}
stop_cluster() {
  if [ ${#daemons[@]} -gt 0 ] && [ -n "${SLURM_CONF:-}" ] && [ -e "$SLURM_CONF" ]; then
    # No job may outlive the cluster: cancel what is left, wait for it to go, and for the
    # steps to exit (a step lingers a moment after its job ended).
    local ids; ids=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ') || true
    if [ -n "${ids// }" ]; then
      scancel $ids 2>/dev/null || true
      for _ in $(seq 30); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 1; done
    fi
    for _ in $(seq 50); do [ -z "$(our_stepds)" ] && break; sleep 0.2; done
  fi
  local pid i
  for ((i = ${#daemons[@]} - 1; i >= 0; i--)); do # slurmd, slurmctld, then munged
    pid=${daemons[i]}
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 -- "-$pid" 2>/dev/null || true # timeout leads its own process group
    wait "$pid" 2>/dev/null || true
  done
  local left; left=$(our_stepds)
  [ -z "$left" ] || kill -9 $left 2>/dev/null || true
  daemons=()
}
trap 'stop_cluster; rm -rf "$work"' EXIT

# free_port: a TCP port nothing on 127.0.0.1 listens on (random, so that copies of this file
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
# configured instead of draining it for fewer cores), so that 4 jobs of 2 CPUs run at once.
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

