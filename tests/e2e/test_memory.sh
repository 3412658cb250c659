# Peak RSS follows --max-memory, not the model: a tensor far larger than the budget is merged in
# chunks, and a bigger model does not raise the peak.
source "$(dirname "$0")/lib.sh"
if [ "${SMELT_SANITIZED:-0}" = 1 ]; then
  echo "skip: sanitizer shadow memory makes RSS meaningless"; exit 77
fi

rss_of() { # rss_of SIZE BUDGET: merges 3 models of SIZE, prints the peak RSS in MiB
  local size=$1 budget=$2 d=$work/$1
  if [ ! -d "$d/base" ]; then
    $SMELT synth "$d/base" --size "$size" --seed 1 --shard-size 1G
    $SMELT synth "$d/a" --size "$size" --base-seed 1 --seed 2 --shard-size 1G
    $SMELT synth "$d/b" --size "$size" --base-seed 1 --seed 3 --shard-size 1G
    linear_config "$d/c.yml" "$d/base" 1 "$d/base" 1 "$d/a" 1 "$d/b"
  fi
  rm -rf "$d/out"
  local kib
  kib=$("$SMELT_TEST_HELPERS/peak_rss" $SMELT merge "$d/c.yml" "$d/out" -q --max-memory "$budget" 2>&1 \
        | awk '/^peak_rss_kib/ {print $2}')
  rm -rf "$d/out"
  echo $((kib / 1024))
}

small=$(rss_of 40M 16Mi)
large=$(rss_of 400M 16Mi)
echo "peak RSS at --max-memory 16Mi: 3 x 40 MB inputs: $small MiB; 3 x 400 MB inputs: $large MiB"
# The budget plus the program, libraries and headers: a generous constant, but far below what
# buffering one 400 MB model's largest tensor (about 40 MB per input) would take.
limit=$((16 + 40))
[ "$small" -le "$limit" ] && pass "small inputs stay under $limit MiB" || fail "small inputs: $small MiB"
[ "$large" -le "$limit" ] && pass "large inputs stay under $limit MiB" || fail "large inputs: $large MiB"
[ $((large - small)) -le 8 ] && pass "peak RSS is flat in model size" || fail "RSS grew by $((large - small)) MiB"
finish
