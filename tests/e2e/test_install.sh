# The installable library: `cmake --install` into a prefix puts libsmelt.so (versioned soname,
# only include/smelt.h's functions exported), libsmelt.a, smelt.h, smelt.pc and the man page in
# place, and a program built with `pkg-config --cflags --libs smelt` against the installed copy
# (shared, then static) synthesizes two models, merges them, plans and verifies, through the
# public API alone.
source "$(dirname "$0")/lib.sh"
build=$(dirname "$SMELT")
src=${SMELT_SOURCE_DIR:-$here/../..}
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" > "$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; finish; }
libdir=$(sed -n 's/^libdir=\${prefix}\///p' "$prefix"/lib*/pkgconfig/smelt.pc)
for f in bin/smelt "$libdir/libsmelt.a" "$libdir/libsmelt.so" include/smelt.h \
         "$libdir/pkgconfig/smelt.pc" share/man/man1/smelt.1 lib/python3/dist-packages/smelt.py; do
  [ -e "$prefix/$f" ] && pass "installed $f" || fail "not installed: $f"
done
soname=$(objdump -p "$prefix/$libdir/libsmelt.so" | awk '/SONAME/ {print $2}')
[ "$soname" = libsmelt.so.0 ] && pass "soname $soname" || fail "soname '$soname'"

# Exactly the public functions are exported: the names smelt.h declares.
grep -oE "^[A-Za-z][^(]*[ *]smelt_[a-z0-9_]+\(" "$src/include/smelt.h" | grep -oE "smelt_[a-z0-9_]+\($" \
  | tr -d '(' | sort > "$work/declared"
nm -D --defined-only "$prefix/$libdir/libsmelt.so" | awk '$2 != "A" {sub(/@.*/, "", $3); print $3}' \
  | sort > "$work/exported"
if cmp -s "$work/declared" "$work/exported"; then pass "exports = smelt.h's $(wc -l < "$work/declared") functions"
else fail "exports differ from smelt.h: $(diff "$work/declared" "$work/exported" | head -5 | tr '\n' ' ')"; fi

cat > "$work/prog.c" <<'C'
#include <smelt.h>
#include <stdio.h>
#include <string.h>

static int check(smelt_ctx *ctx, int rc, const char *what)
{
    if (rc != SMELT_OK)
        fprintf(stderr, "%s: %s: %s\n", what, smelt_status_name(rc), smelt_errmsg(ctx));
    return rc != SMELT_OK;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    char base[4096], ft[4096], cfg[4096], out[4096];
    snprintf(base, sizeof base, "%s/base", argv[1]);
    snprintf(ft, sizeof ft, "%s/ft", argv[1]);
    snprintf(cfg, sizeof cfg, "%s/c.yml", argv[1]);
    snprintf(out, sizeof out, "%s/out", argv[1]);
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_synth_options so;
    smelt_synth_options_default(&so);
    so.size = 2000000;
    so.seed = 1;
    if (check(ctx, smelt_synth(ctx, base, &so), "synth base"))
        return 1;
    so.has_base = 1;
    so.base_seed = 1;
    so.seed = 2;
    if (check(ctx, smelt_synth(ctx, ft, &so), "synth fine-tune"))
        return 1;
    FILE *f = fopen(cfg, "w");
    fprintf(f, "merge_method: linear\nmodels:\n  - model: %s\n    parameters: {weight: 0.5}\n"
               "  - model: %s\n    parameters: {weight: 0.5}\n", base, ft);
    fclose(f);
    smelt_merge_options mo;
    smelt_merge_options_default(&mo);
    mo.max_memory = 8u << 20;
    FILE *plan = fopen("/dev/null", "w");
    if (check(ctx, smelt_plan_print(ctx, cfg, &mo, plan), "plan") ||
        check(ctx, smelt_merge(ctx, cfg, out, &mo), "merge"))
        return 1;
    fclose(plan);
    smelt_verify_options vo;
    smelt_verify_options_default(&vo);
    smelt_verify_result res;
    memset(&res, 0, sizeof res);
    if (check(ctx, smelt_verify(ctx, out, &vo, stderr, &res), "verify"))
        return 1;
    printf("smelt %s: merged and verified %llu tensors, %llu problems\n", smelt_version(),
           (unsigned long long)res.tensors_checked, (unsigned long long)res.problems);
    smelt_ctx_free(ctx);
    return res.problems != 0;
}
C
export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
san=()
[ "${SMELT_SANITIZED:-0}" = 1 ] && san=(-fsanitize=address,undefined)
# shellcheck disable=SC2046
if cc -std=c11 -Wall -Werror "${san[@]}" "$work/prog.c" -o "$work/prog-shared" $(pkg-config --cflags --libs smelt) \
     -Wl,-rpath,"$prefix/$libdir"; then
  pass "built against the installed libsmelt.so with pkg-config"
  # Not `ldd | grep -q`: grep may exit before ldd is done, and pipefail then fails on its SIGPIPE.
  libs=$(ldd "$work/prog-shared")
  grep -q "$prefix/$libdir/libsmelt.so.0" <<<"$libs" && pass "it loads the installed .so" \
    || fail "the program does not load the installed libsmelt.so: $(grep smelt <<<"$libs")"
  mkdir -p "$work/run1"
  "$work/prog-shared" "$work/run1" && pass "shared: synth, plan, merge, verify" || fail "shared program failed"
else fail "build against the installed shared library"; fi
# shellcheck disable=SC2046
if cc -std=c11 -Wall -Werror "${san[@]}" "$work/prog.c" -o "$work/prog-static" -I"$prefix/include" \
     "$prefix/$libdir/libsmelt.a" $(pkg-config --static --libs-only-l --libs-only-L smelt | sed 's/-lsmelt//'); then
  pass "built against the installed libsmelt.a with pkg-config --static"
  mkdir -p "$work/run2"
  "$work/prog-static" "$work/run2" && pass "static: synth, plan, merge, verify" || fail "static program failed"
  cmp -s "$work/run1/out/model.safetensors" "$work/run2/out/model.safetensors" \
    && pass "shared and static programs wrote the same bytes" || fail "shared and static outputs differ"
else fail "build against the installed static library"; fi

# The installed Python module finds the installed library by itself.
pyenv=(PYTHONPATH="$prefix/lib/python3/dist-packages")
[ "${SMELT_SANITIZED:-0}" = 1 ] && pyenv+=(LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" ASAN_OPTIONS=detect_leaks=0)
got=$(env -u SMELT_LIBRARY "${pyenv[@]}" /usr/bin/python3 -c 'import smelt; print(smelt.version(), smelt._lib._name)' 2>&1) || true
case "$got" in
  *"$prefix"*libsmelt.so.0*) pass "installed Python module: $got" ;;
  *) fail "installed Python module: $got" ;;
esac
finish
