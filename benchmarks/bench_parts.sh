#!/bin/bash
# Wall time of a partitioned merge on this machine, against one process: a ties merge of three
# synthetic fine-tunes (and their base) of SIZE each,
#   - one `smelt merge` process;
#   - N `smelt merge --part K/N` processes at once, then `--finalize`;
#   - with Slurm (root, Debian's slurmctld/slurmd/munge/slurm-client; tools/setup.sh), the
#     N-task array of tools/cluster/slurm-merge.sh and its afterok finalize job on a
#     single-node cluster of its own (tests/e2e/slurm_cluster.sh), from the submission until
#     the finalize job has ended: the scheduler's own latency included.
# Each output is checked byte for byte against the one-process merge. The inputs are in the
# page cache after `smelt synth` (no cache is dropped): this measures compute and writing, not
# a cold disk. Every run uses --max-memory 512Mi; the parts and the Slurm tasks -j 2 (the
# tasks' --cpus-per-task), the one process every CPU.
#
#   benchmarks/bench_parts.sh [SIZE [N [OUT_SHARD_SIZE]]]     (default 200M 4 12M)
#
# SMELT: the CLI (default build/smelt). TMPDIR: where the models go (4 x SIZE, 3 outputs).
# BENCH_NO_SLURM=1: leave the Slurm figure out.
source "$(dirname "$0")/../tests/e2e/lib.sh"
size=${1:-200M} n=${2:-4} shard=${3:-12M}
export SMELT SMELT_MAX_MEMORY=512Mi
args=(--out-shard-size "$shard" --max-memory 512Mi -q)

ties_set "$size" 50M
cfg=$work/ties.yml
now() { date +%s.%N; }
secs() { printf '%.2f' "$(echo "$(now) - $1" | bc)"; }

t=$(now); $SMELT merge "$cfg" "$work/one" "${args[@]}"; one=$(secs "$t")
nshards=$(ls "$work/one"/model-*.safetensors | wc -l)
echo "inputs: 4 x $size ($(du -sh "$work/base" | cut -f1) each on disk), ties, $nshards output shards of up to $shard, $(nproc) CPUs"
echo "one process:                      ${one} s"

t=$(now)
for k in $(seq 1 "$n"); do $SMELT merge "$cfg" "$work/local" "${args[@]}" -j 2 --part "$k/$n" & done
wait
$SMELT merge "$cfg" "$work/local" "${args[@]}" --finalize
echo "$n local parts at once + finalize:  $(secs "$t") s"
same_as "$work/one" "$work/local" "$n local parts" >/dev/null

if [ "${BENCH_NO_SLURM:-0}" = 1 ]; then finish >/dev/null; exit; fi
source "$here/slurm_cluster.sh" >/dev/null
cd "$work/jobs"
t=$(now)
msg=$(bash "$here/../../tools/cluster/slurm-merge.sh" --cpus-per-task=2 --mem=1G \
  "$n" "$cfg" "$work/slurm-out" --out-shard-size "$shard")
array=$(sed -n 's/^parts: array job \([0-9]*\) .* finalize: job \([0-9]*\) .*/\1/p' <<<"$msg")
final=$(sed -n 's/^parts: array job \([0-9]*\) .* finalize: job \([0-9]*\) .*/\2/p' <<<"$msg")
wait_jobs 3600 "$array" "$final"
total=$(secs "$t")
job_ok "$array" "the array tasks" && job_ok "$final" "the finalize job"
# at ID FIELD: the job's (each task's) FIELD=time as seconds after the submission, sorted
# (Slurm's clock has whole seconds).
at() {
  scontrol -o show job "$1" | grep -o "$2=[^ ]*" | cut -d= -f2 | xargs -I{} date -d {} +%s |
    awk -v t0="$t" '{ printf "%d\n", $1 - t0 }' | sort -n | paste -sd,
}
echo "Slurm array of $n + finalize job:   $total s (submit to finalize done)"
echo "  after submitting: tasks started at +$(at "$array" StartTime) s, ended at +$(at "$array" EndTime) s;" \
  "finalize ran +$(at "$final" StartTime) to +$(at "$final" EndTime) s"
same_as "$work/one" "$work/slurm-out" "the Slurm merge" >/dev/null
finish >/dev/null
