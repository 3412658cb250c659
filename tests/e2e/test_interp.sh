# The interpolation family (slerp, nuslerp, multislerp, karcher, model_stock, nearswap,
# passthrough) through `smelt merge`, each checked element by element by interp_ref (an
# independent whole-tensor computation); degenerate geometry (colinear, opposite and zero
# vectors), a tensor many times larger than the memory budget, byte-identical outputs across
# threads, budgets and SIMD levels, and every plan-time error.
source "$(dirname "$0")/lib.sh"
REF=$SMELT_TEST_HELPERS/interp_ref

# interp_config FILE METHOD BASE|- 'GLOBAL PARAMS' W:MODEL ...: a mergekit config; W is the
# model's weight ('-': no parameters), or 'scale=S' for passthrough.
interp_config() {
  local file=$1 method=$2 base=$3 glob=$4; shift 4
  { echo "merge_method: $method"; [ "$base" = - ] || echo "base_model: $base"; echo "models:"
    local wm w m
    for wm in "$@"; do
      w=${wm%%:*}; m=${wm#*:}
      echo "  - model: $m"
      case $w in
        -) ;;
        scale=*) printf '    parameters: {scale: %s}\n' "${w#scale=}" ;;
        *) printf '    parameters: {weight: %s}\n' "$w" ;;
      esac
    done
    [ -z "$glob" ] || echo "parameters: {$glob}"; } > "$file"
}

# check NAME METHOD BASE|- 'GLOBALS' 'REF PARAMS' W:MODEL ...: merges, then checks with interp_ref.
n=0
check() {
  local name=$1 method=$2 base=$3 glob=$4 refp=$5; shift 5
  n=$((n + 1))
  local cfg=$work/c$n.yml out=$work/o$n refargs=()
  interp_config "$cfg" "$method" "$base" "$glob" "$@"
  [ "$base" = - ] || [ "$method" = karcher ] || [ "$method" = passthrough ] || refargs=(--base "$base")
  local wm
  for wm in "$@"; do
    [ "${wm#*:}" = "$base" ] && [ "$method" != karcher ] && continue # the base is not a model
    case ${wm%%:*} in scale=*) refargs+=("${wm#scale=}") ;; *) refargs+=("$wm") ;; esac
  done
  if ! $SMELT merge "$cfg" "$out" -q $MERGE_FLAGS 2>"$work/err"; then
    fail "$name: merge failed: $(cat "$work/err")"; return
  fi
  # shellcheck disable=SC2086
  "$REF" "$method" "$out" "${refargs[@]}" $refp >"$work/ref.log" 2>&1 \
    && pass "$name: $(tail -1 "$work/ref.log")" || fail "$name: $(tail -3 "$work/ref.log")"
  rm -rf "$out"
}
MERGE_FLAGS=

for dt in bfloat16 float32; do
  size=4M; [ $dt = float32 ] && size=8M
  d=$work/$dt
  $SMELT synth "$d/base" --size $size --dtype $dt --seed 1
  $SMELT synth "$d/a" --size $size --dtype $dt --base-seed 1 --seed 2
  $SMELT synth "$d/b" --size $size --dtype $dt --base-seed 1 --seed 3
  $SMELT synth "$d/c" --size $size --dtype $dt --base-seed 1 --seed 4
  $SMELT synth "$d/same" --size $size --dtype $dt --seed 1 # a "fine-tune" equal to the base
  B=$d/base A=$d/a Bm=$d/b C=$d/c
  check "$dt slerp" slerp "$B" "t: 0.3" "t=0.3" -:"$B" -:"$A"
  check "$dt slerp t=0" slerp "$B" "t: 0" "t=0" -:"$A"
  check "$dt nuslerp with base" nuslerp "$B" "" "" 0.4:"$A" 0.6:"$Bm"
  check "$dt nuslerp without base" nuslerp - "" "" 1:"$A" 3:"$Bm"
  check "$dt multislerp with base" multislerp "$B" "" "" 0.2:"$A" 0.3:"$Bm" 0.5:"$C"
  check "$dt multislerp without base" multislerp - "normalize_weights: false" \
    "normalize_weights=0" 0.5:"$A" 0.7:"$Bm"
  check "$dt karcher" karcher - "" "" -:"$B" -:"$A" -:"$Bm" -:"$C"
  check "$dt karcher max_iter=2" karcher - "max_iter: 2, tol: 1.0e-3" "max_iter=2 tol=1e-3" \
    -:"$A" -:"$Bm"
  check "$dt model_stock" model_stock "$B" "" "" -:"$B" -:"$A" -:"$Bm" -:"$C"
  check "$dt nearswap" nearswap "$B" "t: 0.002" "t=0.002" -:"$A"
  check "$dt passthrough" passthrough - "" "" scale=0.5:"$A"
  # Zero task vectors: a fine-tune identical to the base.
  check "$dt model_stock, zero task vectors" model_stock "$B" "" "" -:"$d/same" -:"$A"
  check "$dt nuslerp, zero task vectors" nuslerp "$B" "" "" 1:"$d/same" 1:"$d/same"
  check "$dt multislerp, zero task vectors" multislerp "$B" "" "" 1:"$d/same" 1:"$A"
done

# Per vector: nuslerp per row (nuslerp_flatten: false) and per column (nuslerp_row_wise), and
# model_stock per row (filter_wise), with rows that do not divide a task (MLP rows of 384).
d=$work/bfloat16 B=$d/base A=$d/a Bm=$d/b C=$d/c
NU_ROWS="nuslerp_flatten: false" NU_COLS="nuslerp_flatten: false, nuslerp_row_wise: true"
check "nuslerp per row with base" nuslerp "$B" "$NU_ROWS" "nuslerp_flatten=0" 0.4:"$A" 0.6:"$Bm"
check "nuslerp per row without base" nuslerp - "$NU_ROWS" "nuslerp_flatten=0" 1:"$A" 3:"$Bm"
check "nuslerp per column with base" nuslerp "$B" "$NU_COLS" \
  "nuslerp_flatten=0 nuslerp_row_wise=1" 0.4:"$A" 0.6:"$Bm"
check "nuslerp per column without base" nuslerp - "$NU_COLS" \
  "nuslerp_flatten=0 nuslerp_row_wise=1" 1:"$A" 3:"$Bm"
check "model_stock filter_wise" model_stock "$B" "filter_wise: true" "filter_wise=1" \
  -:"$A" -:"$Bm" -:"$C"
check "model_stock filter_wise, zero task vectors" model_stock "$B" "filter_wise: true" \
  "filter_wise=1" -:"$d/same" -:"$A"

# Colinear and opposite vectors, made exactly with linear merges: a scaled copy (2a) and the
# negation (−a) of a model.
d=$work/bfloat16 B=$d/base A=$d/a
linear_config "$work/x2.yml" "$A" 2 "$A"; echo "parameters: {normalize: false}" >> "$work/x2.yml"
linear_config "$work/neg.yml" "$A" -1 "$A"; echo "parameters: {normalize: false}" >> "$work/neg.yml"
$SMELT merge "$work/x2.yml" "$d/a2" -q && $SMELT merge "$work/neg.yml" "$d/neg" -q
check "slerp, a model with itself" slerp "$B" "t: 0.5" "t=0.5" -:"$d/same"
check "slerp, a scaled copy" slerp "$A" "t: 0.25" "t=0.25" -:"$d/a2"
check "slerp, opposite" slerp "$A" "t: 0.25" "t=0.25" -:"$d/neg"
check "nuslerp, colinear" nuslerp - "" "" 1:"$A" 2:"$d/a2"
check "nuslerp, opposite" nuslerp - "" "" 1:"$A" 2:"$d/neg"
check "multislerp, colinear" multislerp - "" "" 1:"$A" 1:"$d/a2" 1:"$A"
check "multislerp, opposite pair (lerp fallback)" multislerp - "" "" 1:"$A" 1:"$d/neg"
check "karcher, colinear" karcher - "" "" -:"$A" -:"$d/a2"
check "karcher, opposite" karcher - "" "" -:"$A" -:"$d/neg"
check "model_stock, opposite task vectors" model_stock "$d/base" "" "" -:"$A" -:"$d/neg"

# A tensor (the 11 MiB embedding) more than 8 times the budget: every statistics pass streams it
# in chunks of one task.
big=$work/big
$SMELT synth "$big/base" --size 120M --seed 1 --shard-size 1G
$SMELT synth "$big/a" --size 120M --base-seed 1 --seed 2 --shard-size 1G
$SMELT synth "$big/b" --size 120M --base-seed 1 --seed 3 --shard-size 1G
MERGE_FLAGS="--max-memory 1400Ki"
check "large tensor, slerp" slerp "$big/base" "t: 0.6" "t=0.6" -:"$big/a"
check "large tensor, model_stock" model_stock "$big/base" "" "" -:"$big/a" -:"$big/b"
check "large tensor, nuslerp per column" nuslerp "$big/base" "nuslerp_flatten: false, nuslerp_row_wise: true" \
  "nuslerp_flatten=0 nuslerp_row_wise=1" 1:"$big/a" 2:"$big/b"
check "large tensor, model_stock filter_wise" model_stock "$big/base" "filter_wise: true" \
  "filter_wise=1" -:"$big/a" -:"$big/b"
MERGE_FLAGS=
rm -rf "$big"

# Byte-identical outputs whatever the threads, budget or SIMD level.
d=$work/bfloat16 B=$d/base A=$d/a Bm=$d/b C=$d/c
same_bytes() { # same_bytes NAME CONFIG
  local name=$1 cfg=$2 ref sum v
  rm -rf "$work/v"; $SMELT merge "$cfg" "$work/v" -q; ref=$(cat "$work/v"/model*.safetensors | sha256sum)
  local variants=("--threads 1" "--threads 2" "--threads 7" "--max-memory 1700Ki"
                  "--max-memory 5M" "--max-memory 1G")
  for v in "${variants[@]}" "SMELT_ISA=scalar" "SMELT_ISA=avx2"; do
    rm -rf "$work/v"
    case $v in
      SMELT_ISA=*) env "$v" $SMELT version >/dev/null 2>&1 || { echo "skip: $v"; continue; }
                   env "$v" $SMELT merge "$cfg" "$work/v" -q --threads 3 ;;
      *) # shellcheck disable=SC2086
         $SMELT merge "$cfg" "$work/v" -q $v ;;
    esac
    sum=$(cat "$work/v"/model*.safetensors | sha256sum)
    [ "$sum" = "$ref" ] || { fail "$name: $v gives different bytes"; return; }
  done
  pass "$name: identical across threads, budgets and SIMD levels"
}
interp_config "$work/d1.yml" slerp "$B" "t: 0.3" -:"$A"; same_bytes slerp "$work/d1.yml"
interp_config "$work/d2.yml" nuslerp "$B" "" 1:"$A" 2:"$Bm"; same_bytes nuslerp "$work/d2.yml"
interp_config "$work/d3.yml" multislerp "$B" "" 1:"$A" 2:"$Bm" 3:"$C"; same_bytes multislerp "$work/d3.yml"
interp_config "$work/d4.yml" karcher - "" -:"$A" -:"$Bm" -:"$C"; same_bytes karcher "$work/d4.yml"
interp_config "$work/d5.yml" model_stock "$B" "" -:"$A" -:"$Bm" -:"$C"; same_bytes model_stock "$work/d5.yml"
interp_config "$work/d7.yml" nuslerp "$B" "$NU_ROWS" 1:"$A" 2:"$Bm"; same_bytes "nuslerp per row" "$work/d7.yml"
interp_config "$work/d8.yml" nuslerp "$B" "$NU_COLS" 1:"$A" 2:"$Bm"; same_bytes "nuslerp per column" "$work/d8.yml"
interp_config "$work/d9.yml" model_stock "$B" "filter_wise: true" -:"$A" -:"$Bm" -:"$C"
same_bytes "model_stock filter_wise" "$work/d9.yml"
interp_config "$work/d6.yml" nearswap "$B" "t: 0.002" -:"$A"; same_bytes nearswap "$work/d6.yml"

# Errors: found at plan time, named, and no output left behind.
e=0
expect_plan_error() { # expect_plan_error NAME PHRASE METHOD BASE GLOBALS W:MODEL ...
  local name=$1 phrase=$2; shift 2
  e=$((e + 1))
  interp_config "$work/e$e.yml" "$@"
  expect_error "$name" "$phrase" $SMELT merge "$work/e$e.yml" "$work/eo$e"
  no_model_output "$work/eo$e"
}
expect_plan_error "slerp without a base" "method 'slerp' needs a base_model" slerp - "t: 0.5" -:"$A" -:"$Bm"
expect_plan_error "slerp with three models" "method 'slerp' takes exactly 1 model besides the base" \
  slerp "$B" "t: 0.5" -:"$A" -:"$Bm"
expect_plan_error "slerp without t" "required parameter 't' of method 'slerp'" slerp "$B" "" -:"$A"
expect_plan_error "slerp t > 1" "slerp: t = 1.5 is outside [0, 1]" slerp "$B" "t: 1.5" -:"$A"
expect_plan_error "slerp t < 0" "slerp: t = -0.1 is outside [0, 1]" slerp "$B" "t: -0.1" -:"$A"
expect_plan_error "nuslerp with three models" "method 'nuslerp' takes exactly 2 models" \
  nuslerp "$B" "" 1:"$A" 1:"$Bm" 1:"$C"
expect_plan_error "nuslerp without weight" "required parameter 'weight'" nuslerp - "" -:"$A" -:"$Bm"
expect_plan_error "multislerp weights summing to 0" "multislerp: the weights sum to 0" \
  multislerp - "" 1:"$A" -1:"$Bm"
expect_plan_error "karcher max_iter" "karcher: max_iter = -1" karcher - "max_iter: -1" -:"$A" -:"$Bm"
expect_plan_error "model_stock without a base" "method 'model_stock' needs a base_model" \
  model_stock - "" -:"$A" -:"$Bm"
expect_plan_error "model_stock with one model" "method 'model_stock' takes at least 2 models" \
  model_stock "$B" "" -:"$A"
expect_plan_error "nearswap without t" "required parameter 't' of method 'nearswap'" nearswap "$B" "" -:"$A"
expect_plan_error "nearswap t = 0" "nearswap: t = 0 must be a finite number > 0" nearswap "$B" "t: 0" -:"$A"
expect_plan_error "nearswap with two models" "method 'nearswap' takes exactly 1 model" \
  nearswap "$B" "t: 0.1" -:"$A" -:"$Bm"
expect_plan_error "passthrough with two models" "method 'passthrough' takes exactly 1 model" \
  passthrough - "" -:"$A" -:"$Bm"
# Per-vector shapes smelt refuses: a 3-D tensor per column, a row longer than 65536. Hand-made
# one-tensor models (zeros: the refusal comes at plan time).
one_tensor() { # one_tensor DIR SHAPE(json list)
  mkdir -p "$1"
  python3 - "$1/model.safetensors" "$2" <<'PY'
import json, math, struct, sys
shape = json.loads(sys.argv[2]); n = 2 * math.prod(shape)
h = json.dumps({"w": {"dtype": "BF16", "shape": shape, "data_offsets": [0, n]}}).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + bytes(n))
PY
}
one_tensor "$work/t3a" "[4, 3, 2]"; one_tensor "$work/t3b" "[4, 3, 2]"
one_tensor "$work/lra" "[2, 65537]"; one_tensor "$work/lrb" "[2, 65537]"
expect_plan_error "nuslerp per column, 3-D" "tensor 'w': nuslerp with nuslerp_row_wise: true on a 3-D tensor" \
  nuslerp - "$NU_COLS" 1:"$work/t3a" 1:"$work/t3b"
expect_plan_error "nuslerp per row, long rows" "its rows have 65537 elements" \
  nuslerp - "$NU_ROWS" 1:"$work/lra" 1:"$work/lrb"
expect_plan_error "model_stock filter_wise, long rows" "its rows have 65537 elements" \
  model_stock "$work/lra" "filter_wise: true" -:"$work/lrb" -:"$work/lrb"
check "nuslerp per row, 3-D" nuslerp - "$NU_ROWS" "nuslerp_flatten=0" 1:"$work/t3a" 1:"$work/t3b"

# Found only by the statistics pass: unit vectors that cancel (a, −a with equal weights).
expect_plan_error "multislerp, antipodal" "cancel out" multislerp - "" 1:"$A" 1:"$d/neg" 0:"$Bm"
finish
