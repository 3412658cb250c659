#!/bin/bash
# Submits a partitioned smelt merge to Slurm: an array of N parts, then a finalize job that
# starts only when every part succeeded.
#
#   tools/cluster/slurm-merge.sh [SBATCH OPTIONS] N CONFIG.yml OUT_DIR [merge options]
#
# sbatch options before N, each in the --name=value form (--partition=cpu, --account=...,
# --cpus-per-task=4, --mem=6G, --time=08:00:00), go to both sbatch calls and override the
# parts' #SBATCH defaults in slurm-merge.sbatch (16 CPUs, 8G: a node with fewer never starts a
# part) and the finalize job's own (2 CPUs, 2G, 30 minutes).
# The same merge options go to the parts and to the finalize job (they must agree: the finalize
# job refuses parts made with another --out-shard-size, for instance).
#
# If a part fails, Slurm cancels the finalize job (--kill-on-invalid-dep=yes; without it the
# job would wait forever: requeueing the failed task does not revive an afterok dependency that
# has failed). Rerun the part (`scontrol requeue JOBID_K` or `smelt merge CONFIG OUT --resume
# --part K/N`), then the finalize command this script prints.
set -euo pipefail
usage() { echo "usage: $0 [SBATCH OPTIONS] N CONFIG.yml OUT_DIR [merge options]" >&2; exit 2; }
opts=()
while [ $# -gt 0 ] && [[ $1 == -* ]]; do
  [ "$1" = -- ] && { shift; break; }
  [[ $1 == --*=* ]] || { echo "$0: sbatch option '$1': give it as --name=value" >&2; usage; }
  opts+=("$1"); shift
done
if [ $# -lt 3 ]; then usage; fi
n=$1 config=$2 out=$3; shift 3
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "$0: N must be a positive number of parts, not '$n'" >&2; usage; }
here=$(cd "$(dirname "$0")" && pwd)
array=$(sbatch --parsable --array=0-$((n - 1)) "${opts[@]}" "$here/slurm-merge.sbatch" "$config" "$out" "$@")
array=${array%%;*} # --parsable prints "jobid[;cluster]"
finalize="${SMELT:-smelt} merge '$config' '$out' --finalize -q $*"
final=$(sbatch --parsable --job-name=smelt-finalize --dependency=afterok:"$array" \
  --kill-on-invalid-dep=yes --cpus-per-task=2 --mem=2G --time=00:30:00 \
  --output=smelt-finalize-%j.log "${opts[@]}" --wrap="$finalize")
echo "parts: array job $array (N=$n); finalize: job ${final%%;*} (after all parts succeed)"
echo "if a part fails, rerun it, then: $finalize"
