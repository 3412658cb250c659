# Shared by the end-to-end tests: sourced, not run. Expects $SMELT (the CLI) and
# $SMELT_TEST_HELPERS (the test tools) from ctest; falls back to ./build.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SMELT=${SMELT:-$here/../../build/smelt}
SMELT_TEST_HELPERS=${SMELT_TEST_HELPERS:-$here/../../build/tests}
work=$(mktemp -d "${TMPDIR:-/tmp}/smelt-e2e.XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# expect_error NAME PHRASE CMD...: the command must exit non-zero and print PHRASE on stderr.
expect_error() {
  local name=$1 phrase=$2; shift 2
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  if [ "$rc" -eq 0 ]; then fail "$name: exit 0, expected an error containing '$phrase'"; return; fi
  if ! grep -qF -- "$phrase" <<<"$out"; then
    fail "$name: message lacks '$phrase': $out"; return
  fi
  pass "$name: exit $rc: $(head -1 <<<"$out")"
}

# no_model_output DIR: nothing in DIR looks like a finished model.
no_model_output() {
  local dir=$1
  if compgen -G "$dir/model*.safetensors" >/dev/null || [ -e "$dir/model.safetensors.index.json" ] ||
     compgen -G "$dir/model*.gguf" >/dev/null; then
    fail "output in $dir looks complete after a failure: $(ls "$dir")"
  fi
  if compgen -G "$dir/*.smelt-tmp" >/dev/null; then fail "temporary files left in $dir"; fi
}

# same_as REF DIR NAME: DIR (a partitioned merge) holds exactly REF's files, each byte-identical.
same_as() {
  local ref=$1 dir=$2 name=$3 bad=0
  if ! diff <(ls -A "$ref") <(ls -A "$dir") >/dev/null; then
    fail "$name: other files than the one-process merge: $(diff <(ls -A "$ref") <(ls -A "$dir") | tr '\n' ' ')"
    return
  fi
  for f in $(ls -A "$ref"); do cmp -s "$ref/$f" "$dir/$f" || { fail "$name: $f differs"; bad=1; }; done
  if [ "$bad" -eq 0 ]; then pass "$name: all $(ls -A "$ref" | wc -l) files byte-identical to one process"; fi
}
# no_final DIR NAME: nothing that finalizing writes is in DIR.
no_final() {
  if compgen -G "$1/model*.safetensors" >/dev/null || [ -e "$1/model.safetensors.index.json" ] ||
     [ -e "$1/smelt-manifest.json" ] || [ -e "$1/config.json" ] || [ -e "$1/README.md" ]; then
    fail "$2: final files written after a refusal: $(ls -A "$1" | tr '\n' ' ')"
  fi
}

# linear_config FILE BASE W1 M1 [W2 M2 ...]: a mergekit linear config.
linear_config() {
  local file=$1 base=$2; shift 2
  { echo "merge_method: linear"; echo "base_model: $base"; echo "models:"
    while [ $# -gt 0 ]; do
      printf '  - model: %s\n    parameters:\n      weight: %s\n' "$2" "$1"; shift 2
    done; } > "$file"
}

# ties_set SIZE SHARD: a base and three fine-tunes of it ($work/base, $work/ft2..ft4; SIZE each,
# shards of SHARD) and $work/ties.yml, a ties merge of them (the Slurm test and
# benchmarks/bench_parts.sh share it).
ties_set() {
  $SMELT synth "$work/base" --size "$1" --seed 1 --shard-size "$2"
  for s in 2 3 4; do $SMELT synth "$work/ft$s" --size "$1" --base-seed 1 --seed $s --shard-size "$2"; done
  cat > "$work/ties.yml" <<EOF
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
}

# numpy_python: sets PY to a python3 that has numpy (Debian's python3-numpy, which
# tools/setup.sh installs; a python3 earlier on PATH, such as pyenv's, may lack it), or fails.
numpy_python() {
  for PY in ${PYTHON:-} /usr/bin/python3 python3; do
    if command -v "$PY" >/dev/null && "$PY" -c 'import numpy' 2>/dev/null; then return 0; fi
  done
  echo "FAIL: no python3 with numpy (python3-numpy: run tools/setup.sh)" >&2
  exit 1
}

# smelt_python_env: sets PYENV to the environment (for `env "${PYENV[@]}" ...`) in which
# tools/python/smelt.py runs over this build's libsmelt.so; under the sanitizers the interpreter
# preloads their runtimes (an instrumented library needs them loaded first) and Python's own
# allocations are not leak-checked.
smelt_python_env() {
  PYENV=(SMELT="$SMELT" SMELT_LIBRARY="$(dirname "$SMELT")/libsmelt.so.0"
         PYTHONPATH="${SMELT_SOURCE_DIR:-$here/../..}/tools/python")
  if [ "${SMELT_SANITIZED:-0}" = 1 ]; then
    PYENV+=(LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
            ASAN_OPTIONS=detect_leaks=0:abort_on_error=1)
  fi
}

# model_sum DIR: one hash of every model*.safetensors at any depth below DIR, in path order.
model_sum() { find "$1" -name 'model*.safetensors' -print0 | sort -z | xargs -0 cat | sha256sum; }

# check_invariant NAME CONFIG DIR ISA_FLAGS: CONFIG merged again at 1, 7 and 3 threads under
# three budgets, and under every other SIMD level this machine runs (with ISA_FLAGS), must give
# DIR's model files byte for byte.
check_invariant() {
  local name=$1 config=$2 want default_isa variant isa
  want=$(model_sum "$3")
  default_isa=$($SMELT version | sed -n 's/.*kernels: \([a-z0-9]*\).*/\1/p')
  for variant in "--threads 1 --max-memory 1G" "--threads 7 --max-memory 5Mi" \
                 "--threads 3 --max-memory 3Mi"; do
    rm -rf "$work/invariant"
    $SMELT merge "$config" "$work/invariant" -q $variant
    [ "$(model_sum "$work/invariant")" = "$want" ] && pass "$name $variant: identical" \
      || fail "$name $variant: output differs"
  done
  for isa in scalar avx2 avx512; do
    [ "$isa" != "$default_isa" ] && SMELT_ISA=$isa $SMELT version >/dev/null 2>&1 || continue
    rm -rf "$work/invariant"
    SMELT_ISA=$isa $SMELT merge "$config" "$work/invariant" -q $4
    [ "$(model_sum "$work/invariant")" = "$want" ] && pass "$name SMELT_ISA=$isa: identical" \
      || fail "$name SMELT_ISA=$isa: output differs"
  done
  rm -rf "$work/invariant"
}

finish() {
  if [ "$failures" -gt 0 ]; then echo "$failures check(s) failed"; exit 1; fi
  echo "all checks passed"
}
