#!/usr/bin/env bash
# Installs what smelt needs on Debian 12 (only what is missing) and builds it.
# Usage: tools/setup.sh [BUILD_DIR [extra cmake args...]]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config liburing-dev libxxhash-dev libzstd-dev check
          libjansson-dev libyaml-dev
          # NEON kernels are cross-compiled and tested under user-mode emulation.
          gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
          # The tests: JSON checks (python3), memcheck runs (valgrind), an independent XXH3
          # (xxhsum) to check the manifest's hashes against.
          python3 valgrind xxhash
          # The llama.cpp tests' independent forward pass (tests/tools/llama_ref.py).
          python3-numpy
          # tests/e2e/test_slurm.sh runs the partitioned merge scripts (tools/cluster/) on a real
          # single-node Slurm cluster of its own: the controller, the node daemon, munge (their
          # authentication) and sbatch/squeue/scontrol (slurm-client). The test starts its own
          # daemons with its own config, key and socket, never the packages' services (which
          # systemd enables; without /etc/slurm/slurm.conf the Slurm ones do not start).
          slurmctld slurmd munge slurm-client)
# The GGUF tests compare with the real ggml, installed from npm (tools/ggml_ref.sh). An npm
# already on PATH is used as it is: NodeSource's nodejs bundles one and conflicts with Debian's.
command -v npm >/dev/null || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "tools/setup.sh: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

tools/ggml_ref.sh install

build=${1:-build}
shift || true
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
