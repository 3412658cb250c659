# The Python binding: tests/python/test_smelt.py (stdlib unittest) through tools/python/smelt.py
# over the build's libsmelt.so (lib.sh smelt_python_env, sanitizer runtimes included).
source "$(dirname "$0")/lib.sh"
src=${SMELT_SOURCE_DIR:-$here/../..}
py=/usr/bin/python3
[ -x "$py" ] || py=python3
smelt_python_env
if env "${PYENV[@]}" "$py" "$src/tests/python/test_smelt.py" 2>&1 | tee "$work/log"; then
  pass "Python binding: $(grep -c '\.\.\. ok$' "$work/log") tests"
else fail "Python binding tests"; fi
grep -q "\.\.\. ok$" "$work/log" || fail "no Python test ran"
finish
