# The Python binding: tests/python/test_smelt.py (stdlib unittest) through tools/python/smelt.py
# over the build's libsmelt.so. Under the sanitizers the interpreter preloads their runtimes
# (an instrumented library needs them loaded first) and Python's own allocations are not
# leak-checked.
source "$(dirname "$0")/lib.sh"
build=$(dirname "$SMELT")
src=${SMELT_SOURCE_DIR:-$here/../..}
py=/usr/bin/python3
[ -x "$py" ] || py=python3
env=(SMELT="$SMELT" SMELT_LIBRARY="$build/libsmelt.so.0" PYTHONPATH="$src/tools/python")
if [ "${SMELT_SANITIZED:-0}" = 1 ]; then
  env+=(LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=1)
fi
if env "${env[@]}" "$py" "$src/tests/python/test_smelt.py" 2>&1 | tee "$work/log"; then
  pass "Python binding: $(grep -c '\.\.\. ok$' "$work/log") tests"
else fail "Python binding tests"; fi
grep -q "\.\.\. ok$" "$work/log" || fail "no Python test ran"
finish
