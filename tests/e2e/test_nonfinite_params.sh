# Parameters that are finite in YAML but not in the arithmetic the method does: every one is
# refused before any data is read, naming the parameter, the model and the tensor, with no
# output that looks complete — never an all-zero or NaN merge that exits 0. Values that stay
# finite where they are used still merge, to the same bytes as their small equivalents.
source "$(dirname "$0")/lib.sh"

$SMELT synth "$work/base" --size 2M --seed 1
$SMELT synth "$work/a" --size 2M --base-seed 1 --seed 2
$SMELT synth "$work/b" --size 2M --base-seed 1 --seed 3
B=$work/base A=$work/a C=$work/b

check() { # check NAME PHRASE CONFIG_TEXT
  printf '%s\n' "$3" > "$work/cfg.yml"
  rm -rf "$work/out"
  expect_error "$1" "$2" $SMELT merge "$work/cfg.yml" "$work/out" -q
  no_model_output "$work/out"
}

# The plan: values no method may see.
for v in .inf -.inf .nan 1.0e+999; do
  check "linear weight $v" "parameter 'weight' is" "merge_method: linear
models:
  - {model: $A, parameters: {weight: $v}}
  - {model: $C, parameters: {weight: 1.0}}"
done

# Sums used to normalize (double for linear, nuslerp and multislerp; f32 for the task-vector
# family).
check "linear: weights that sum past double" "the sum of the weights = inf" "merge_method: linear
models:
  - {model: $A, parameters: {weight: 1.0e+308}}
  - {model: $C, parameters: {weight: 1.0e+308}}"
check "nuslerp: weights that sum past double" "method 'nuslerp': tensor '" "merge_method: nuslerp
models:
  - {model: $A, parameters: {weight: 1.0e+308}}
  - {model: $C, parameters: {weight: 1.0e+308}}"
check "multislerp: weights that sum past double" "the sum of the weights = inf" "merge_method: multislerp
models:
  - {model: $A, parameters: {weight: 1.0e+308}}
  - {model: $C, parameters: {weight: 1.0e+308}}"
for m in task_arithmetic ties dare_linear breadcrumbs_ties della consensus_ties; do
  extra="" norm="parameters: {normalize: true}"
  case $m in dare_*|della*|breadcrumbs*) extra=", density: 0.5";; esac
  check "$m: f32 sum of the weights overflows" "the sum of the weights' magnitudes" "merge_method: $m
base_model: $B
$norm
models:
  - {model: $A, parameters: {weight: 3.0e+38$extra}}
  - {model: $C, parameters: {weight: 3.0e+38$extra}}"
done

# ram and ramplus_tl: scalars used in f32, and ramplus_tl's largest scale 1 + r * alpha.
# .inf and .nan are caught where parameters are read; 1e39 is finite, but not in f32.
for v in .inf .nan 1.0e+39; do
  if [ "$v" = 1.0e+39 ]; then want_r="method 'ramplus_tl': tensor '"; want_e="method 'ram': tensor '"
  else want_r="parameter 'r' is"; want_e="parameter 'epsilon' is"; fi
  check "ramplus_tl r $v" "$want_r" "merge_method: ramplus_tl
base_model: $B
parameters: {r: $v}
models:
  - {model: $A}"
  check "ram epsilon $v" "$want_e" "merge_method: ram
base_model: $B
parameters: {epsilon: $v}
models:
  - {model: $A}"
done
check "ramplus_tl: 1 + r * alpha past f32" "1 + r * alpha = " "merge_method: ramplus_tl
base_model: $B
parameters: {r: 1.0e+20, alpha: 1.0e+20}
models:
  - {model: $A}
  - {model: $C}"

# One value past f32, where the method computes in f32.
check "linear normalize false: weight past f32" "model '$A': tensor '" "merge_method: linear
parameters: {normalize: false}
models:
  - {model: $A, parameters: {weight: 1.0e+39}}
  - {model: $C, parameters: {weight: 1.0}}"
check "linear: weight / sum past f32" "weight / sum of the weights = " "merge_method: linear
models:
  - {model: $A, parameters: {weight: 1.0e+32}}
  - {model: $C, parameters: {weight: -1.0e+32}}
  - {model: $B, parameters: {weight: 1.0e-7}}"
for m in task_arithmetic ties dare_ties; do
  check "$m: weight past f32" "overflows f32" "merge_method: $m
base_model: $B
models:
  - {model: $A, parameters: {weight: 1.0e+39, density: 0.5}}
  - {model: $C, parameters: {weight: 1.0, density: 0.5}}"
  check "$m: lambda past f32" "lambda = 1e+39 overflows f32" "merge_method: $m
base_model: $B
parameters: {lambda: 1.0e+39}
models:
  - {model: $A, parameters: {weight: 1.0, density: 0.5}}"
  check "$m: weight * lambda past f32" "weight * lambda = " "merge_method: $m
base_model: $B
parameters: {lambda: 1.0e+20}
models:
  - {model: $A, parameters: {weight: 1.0e+20, density: 0.5}}"
done
check "task_arithmetic: lambda / sum past f32" "lambda / the sum of the weights" "merge_method: task_arithmetic
base_model: $B
parameters: {lambda: 3.0e+38, normalize: true}
models:
  - {model: $A, parameters: {weight: 0.5}}
  - {model: $C, parameters: {weight: -0.4999}}"
check "passthrough: scale past f32" "scale = 1e+39 overflows f32" "merge_method: passthrough
models:
  - {model: $A, parameters: {scale: 1.0e+39}}"
check "nearswap: t past f32" "t = 1e+39 overflows f32" "merge_method: nearswap
base_model: $B
parameters: {t: 1.0e+39}
models:
  - {model: $B}
  - {model: $A}"
check "multislerp: coefficients past f32" "the coefficient the merge gives it" "merge_method: multislerp
parameters: {normalize_weights: false}
models:
  - {model: $A, parameters: {weight: 1.0e+300}}
  - {model: $C, parameters: {weight: 1.0e+300}}"

# Large but usable: normalized 1e30 weights are 0.5 each, as 1 and 1 are.
linear_config "$work/big.yml" "$A" 1.0e+30 "$A" 1.0e+30 "$C"
linear_config "$work/one.yml" "$A" 1.0 "$A" 1.0 "$C"
$SMELT merge "$work/big.yml" "$work/big" -q && $SMELT merge "$work/one.yml" "$work/one" -q \
  && cmp -s "$work/big/model.safetensors" "$work/one/model.safetensors" \
  && pass "weights 1e30 merge as 1 and 1 do" || fail "weights 1e30: merge failed or differs"
finish
