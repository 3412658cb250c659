#!/bin/bash
# Submits a partitioned smelt merge to Slurm: an array of N parts, then a finalize job that
# starts only when every part succeeded.
#
#   tools/cluster/slurm-merge.sh N CONFIG.yml OUT_DIR [merge options]
#
# The same merge options go to the parts and to the finalize job (they must agree: the finalize
# job refuses parts made with another --out-shard-size, for instance).
set -euo pipefail
if [ $# -lt 3 ]; then echo "usage: $0 N CONFIG.yml OUT_DIR [merge options]" >&2; exit 2; fi
n=$1 config=$2 out=$3; shift 3
here=$(cd "$(dirname "$0")" && pwd)
array=$(sbatch --parsable --array=0-$((n - 1)) "$here/slurm-merge.sbatch" "$config" "$out" "$@")
array=${array%%;*} # --parsable prints "jobid[;cluster]"
final=$(sbatch --parsable --job-name=smelt-finalize --dependency=afterok:"$array" \
  --cpus-per-task=2 --mem=2G --time=00:30:00 --output=smelt-finalize-%j.log \
  --wrap="${SMELT:-smelt} merge '$config' '$out' --finalize -q $*")
echo "parts: array job $array (N=$n); finalize: job ${final%%;*} (after all parts succeed)"
