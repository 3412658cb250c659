# Paths near and past PATH_MAX keep the reason in the message: the path is cut in the middle
# (its first and last 60 characters around "..."), never the rule or the errno text after it.
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/m" --size 2M --seed 1
seg=$(printf 'd%.0s' $(seq 1 200))
long=$work; for i in $(seq 1 25); do long=$long/$seg; done   # about 5,000 characters
mid=$work/$seg/$seg/$seg/$seg/$seg/$seg/$seg                  # about 1,400: under PATH_MAX

# long_msg NAME PHRASE CMD...: refused, PHRASE in the message, the path cut in the middle,
# every line of the message short.
long_msg() {
  local name=$1 phrase=$2; shift 2
  expect_error "$name" "$phrase" "$@"
  local out; out=$("$@" 2>&1) || true
  grep -qF -- "..." <<<"$out" || fail "$name: the path is not shortened: $out"
  local widest; widest=$(awk '{ if (length($0) > w) w = length($0) } END { print w + 0 }' <<<"$out")
  [ "$widest" -lt 600 ] || fail "$name: a message line of $widest characters"
}

lin() { printf 'merge_method: linear\nmodels: [{model: %s, parameters: {weight: 1}}]\n' "$2" > "$1"; }
lin "$work/long_model.yml" "$long/model"
lin "$work/mid_model.yml" "$mid/model"
lin "$work/ok.yml" "$work/m"
long_msg "5,000-character model path" "/model: cannot access: File name too long" $SMELT merge "$work/long_model.yml" "$work/o"
long_msg "1,400-character missing model" "/model: no such file or directory" $SMELT merge "$work/mid_model.yml" "$work/o"
long_msg "5,000-character OUT" "cannot create directory: File name too long" $SMELT merge "$work/ok.yml" "$long/out"
long_msg "5,000-character config" ".yml: cannot open: File name too long" $SMELT merge "$long/c.yml" "$work/o"
long_msg "1,400-character missing config" ".yml: cannot open: No such file or directory" $SMELT merge "$mid/c.yml" "$work/o"
long_msg "plan: 5,000-character model" "File name too long" $SMELT plan "$work/long_model.yml"
long_msg "inspect: 5,000-character path" "File name too long" $SMELT inspect "$long/m"
long_msg "diff: 5,000-character path" "File name too long" $SMELT diff "$work/m" "$long/m"
long_msg "verify: 5,000-character path" "cannot access: File name too long" $SMELT verify "$long/m"
long_msg "synth: 5,000-character DIR" "File name too long" $SMELT synth "$long/s" --size 1M

# A model that exists under a long path (built step by step: each component is short) merges,
# and a failure inside it still names the file and keeps the reason.
(mkdir -p "$mid" && cp -r "$work/m" "$mid/model") || fail "cannot stage a long path"
$SMELT merge "$work/mid_model.yml" "$mid/out" -q && pass "merge under a 1,400-character path" \
  || fail "merge under a 1,400-character path failed"
rm "$mid/model/config.json"; mkfifo "$mid/model/config.json"
long_msg "FIFO under a long path" "/config.json: not a regular file (a FIFO)" timeout 30 $SMELT merge "$work/mid_model.yml" "$work/o2"
finish
