#!/usr/bin/env bash
# The reference ggml the GGUF tests compare smelt with: libggml-base.so from node-llama-cpp's
# prebuilt Linux binaries (npm), kept in one cache directory outside the build trees so every
# build (plain, sanitized, fuzz) finds the same copy.
#   tools/ggml_ref.sh install   installs it when missing (needs npm and the npm registry)
#   tools/ggml_ref.sh path      prints the library's path (exit 1 when it is not installed)
set -euo pipefail
version=3.21.1
dir=${SMELT_GGML_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smelt/node-llama-cpp-$version}
lib=$dir/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so
case ${1:-} in
  install)
    [ -f "$lib" ] && exit 0
    [ "$(uname -m)" = x86_64 ] || { echo "tools/ggml_ref.sh: only linux-x64 binaries are used" >&2; exit 1; }
    mkdir -p "$dir"
    echo "== installing node-llama-cpp $version (reference ggml) into $dir"
    # --ignore-scripts: its postinstall would download or build more; the prebuilt .so is all
    # the tests need. -E pins the exact versions.
    (cd "$dir" && npm i -E --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error \
      "node-llama-cpp@$version" "@node-llama-cpp/linux-x64@$version" >/dev/null)
    [ -f "$lib" ] || { echo "tools/ggml_ref.sh: $lib missing after npm install" >&2; exit 1; } ;;
  path)
    [ -f "$lib" ] || { echo "tools/ggml_ref.sh: reference ggml not installed at $lib (run tools/setup.sh)" >&2; exit 1; }
    echo "$lib" ;;
  *) echo "usage: tools/ggml_ref.sh install|path" >&2; exit 2 ;;
esac
