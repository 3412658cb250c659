#!/usr/bin/env python3
"""Independent reference for `smelt lora apply` (PEFT merge_and_unload), numpy only.

    lora_ref.py BASE ADAPTER OUT          check smelt's output OUT bit for bit
    lora_ref.py make-conv1d DIR           write DIR/base and DIR/adapter (a GPT-2 style
                                          Conv1D fixture with fan_in_fan_out)
    lora_ref.py make-adapter DIR --base BASE [options]
                                          write a PEFT adapter for BASE's q_proj/v_proj,
                                          with switches that break it (see --help)

The math, per targeted base weight W (rows x cols), mirroring src/format/lora.c and
src/engine/source.c:
  * orientation: embeddings are transposed; a linear module is plain when W is
    [out, in] = [B.shape[0], A.shape[1]], transposed when W is [in, out] (Conv1D); only a
    square weight follows adapter_config's fan_in_fan_out.
  * plain: delta[row][col] = sum_k f32(B[row][k] * A[k][col]), k in order, f32, from 0.
    transposed: delta[row][col] = sum_k f32(A[k][row] * B[col][k]).
  * scale = f32(alpha / r) (alpha / sqrt(r) with use_rslora), per-module r and alpha from
    rank_pattern / alpha_pattern; V = f32(W + f32(delta * scale)).
  * DoRA: per output feature j, factor_j = f32(magnitude_j / sqrt(sum_f64 V_j^2)) with the
    sum sequential in element order; V_j *= factor_j.
  * the result is rounded once to W's dtype (round to nearest even).
Adapter tensors without a lora_ suffix (modules_to_save) replace the base's tensor of that
name, rounded to the base's dtype when theirs differs. Everything else is copied as it is.
"""
import argparse
import glob
import json
import math
import os
import re
import struct
import sys

import numpy as np

KEY_PREFIX = "base_model.model."

# ---------------------------------------------------------------- safetensors ----

NP_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.uint8,
}
FLOAT_DTYPES = ("F32", "F16", "BF16")


class Tensor:
    def __init__(self, name, dtype, shape, data):
        self.name, self.dtype, self.shape, self.data = name, dtype, list(shape), data

    def f32(self):
        """The values as float32 (F32, F16 and BF16 only)."""
        raw = np.frombuffer(self.data, dtype=NP_DTYPES[self.dtype]).reshape(self.shape)
        if self.dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32)


def read_safetensors(path):
    """{name: Tensor} of one file; __metadata__ is skipped."""
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen])
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = Tensor(name, info["dtype"], info["shape"], blob[base + begin:base + end])
    return out


def read_model(path):
    """All tensors of a model directory (every *.safetensors) or of one .safetensors file."""
    files = sorted(glob.glob(os.path.join(path, "*.safetensors"))) if os.path.isdir(path) \
        else [path]
    if not files:
        sys.exit(f"{path}: no .safetensors files")
    tensors = {}
    for f in files:
        for name, t in read_safetensors(f).items():
            if name in tensors:
                sys.exit(f"{f}: tensor {name} is stored twice")
            tensors[name] = t
    return tensors


def encode(values, dtype):
    """Bytes of float values in dtype; F16/BF16 round to nearest even."""
    if dtype in ("F32", "F16", "F64"):
        return np.ascontiguousarray(values, dtype=NP_DTYPES[dtype]).tobytes()
    if dtype == "BF16":
        return round_bf16(np.asarray(values, dtype=np.float32)).tobytes()
    return np.ascontiguousarray(values).astype(NP_DTYPES[dtype]).tobytes()


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (dtype, shape, bytes)}; keys sorted, offsets contiguous."""
    header, at = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [at, at + len(data)]}
        at += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in sorted(tensors):
            f.write(tensors[name][2])


# ---------------------------------------------------------------- rounding ----

def round_bf16(x):
    """float32 -> bf16 bits (uint16), round to nearest even: (bits + 0x7FFF + lsb) >> 16."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def round_to(v, dtype):
    """Bytes of float32 array v rounded once to dtype."""
    if dtype == "F32":
        return v.astype(np.float32).tobytes()
    if dtype == "F16":
        return v.astype(np.float16).tobytes()
    if dtype == "BF16":
        return round_bf16(v).tobytes()
    sys.exit(f"cannot round to {dtype}")


# ---------------------------------------------------------------- the adapter ----

SUFFIXES = [(".lora_A.weight", "A"), (".lora_B.weight", "B"),
            (".lora_embedding_A", "EA"), (".lora_embedding_B", "EB"),
            (".lora_magnitude_vector", "M")]


def pattern_value(patterns, module, default):
    """PEFT's get_pattern_key: the first pattern in file order with
    re.match(rf"(.*\\.)?({pattern})$", module)."""
    for pattern, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def load_adapter(path):
    with open(os.path.join(path, "adapter_config.json")) as f:
        config = json.load(f)
    tensors = read_safetensors(os.path.join(path, "adapter_model.safetensors"))
    modules, whole = {}, {}
    for key, t in tensors.items():
        name = key[len(KEY_PREFIX):] if key.startswith(KEY_PREFIX) else key
        for suffix, kind in SUFFIXES:
            if name.endswith(suffix):
                modules.setdefault(name[:-len(suffix)], {})[kind] = t
                break
        else:
            whole[name] = t
    return config, modules, whole


# ---------------------------------------------------------------- the math ----

def lora_delta(a, b, transposed):
    """Unscaled delta: f32 products summed over k in order, starting from 0."""
    r = a.shape[0]
    if transposed:  # delta[row][col] = sum_k A[k][row] * B[col][k]
        delta = np.zeros((a.shape[1], b.shape[0]), dtype=np.float32)
        for k in range(r):
            delta = delta + np.outer(a[k, :], b[:, k])
    else:           # delta[row][col] = sum_k B[row][k] * A[k][col]
        delta = np.zeros((b.shape[0], a.shape[1]), dtype=np.float32)
        for k in range(r):
            delta = delta + np.outer(b[:, k], a[k, :])
    assert delta.dtype == np.float32
    return delta


def dora_rescale(v, magnitude, transposed):
    """V_j *= f32(m_j / sqrt(sequential f64 sum of V_j^2)), j a row (a column if transposed)."""
    v64 = v.astype(np.float64)
    axis = 0 if transposed else 1
    sums = np.cumsum(v64 * v64, axis=axis).take(-1, axis=axis)
    factor = (magnitude.astype(np.float64) / np.sqrt(sums)).astype(np.float32)
    return v * (factor[np.newaxis, :] if transposed else factor[:, np.newaxis])


def orientation(module, parts, base_shape, fan_in_fan_out):
    """1 when the base stores the weight transposed ([in, out], or an embedding)."""
    if "EA" in parts:
        return True
    out, inp = parts["B"].shape[0], parts["A"].shape[1]
    if out != inp:
        return list(base_shape) == [inp, out]
    return bool(fan_in_fan_out)


def adapted(module, parts, w, config):
    """Bytes of the adapted weight w (a Tensor of the base)."""
    a = (parts.get("A") or parts["EA"]).f32()
    b = (parts.get("B") or parts["EB"]).f32()
    rank = a.shape[0]
    alpha = pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8))
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    scale = np.float32(scale)  # computed in double, rounded to f32
    transposed = orientation(module, dict(parts, A=a, B=b), w.shape, config.get("fan_in_fan_out"))
    delta = lora_delta(a, b, transposed)
    if list(delta.shape) != list(w.shape):
        sys.exit(f"{module}: the adapter's delta is {list(delta.shape)}, the base {w.shape}")
    v = w.f32() + delta * scale
    if config.get("use_dora"):
        v = dora_rescale(v, parts["M"].f32(), transposed)
    assert v.dtype == np.float32
    return round_to(v, w.dtype)


def expected_model(base_path, adapter_path):
    """{name: Tensor} that smelt lora apply should write."""
    base = read_model(base_path)
    config, modules, whole = load_adapter(adapter_path)
    out = dict(base)
    for module, parts in modules.items():
        name = module + ".weight"
        w = base[name]
        out[name] = Tensor(name, w.dtype, w.shape, adapted(module, parts, w, config))
    for name, t in whole.items():
        w = base[name]
        data = t.data if t.dtype == w.dtype else round_to(t.f32(), w.dtype)
        out[name] = Tensor(name, w.dtype, w.shape, data)
    return out


# ---------------------------------------------------------------- comparison ----

def values(t):
    if t.dtype in FLOAT_DTYPES:
        return t.f32().reshape(-1)
    return np.frombuffer(t.data, dtype=NP_DTYPES.get(t.dtype, np.uint8))


def compare(expected, got):
    """Lines describing every mismatch (empty when all match bit for bit)."""
    lines = []
    for name in sorted(set(expected) - set(got)):
        lines.append(f"{name}: missing from the output")
    for name in sorted(set(got) - set(expected)):
        lines.append(f"{name}: in the output but not expected")
    for name in sorted(set(expected) & set(got)):
        e, g = expected[name], got[name]
        if e.dtype != g.dtype or e.shape != g.shape:
            lines.append(f"{name}: expected {e.dtype} {e.shape}, got {g.dtype} {g.shape}")
            continue
        if e.data == g.data:
            continue
        size = np.dtype(NP_DTYPES.get(e.dtype, np.uint8)).itemsize
        eb = np.frombuffer(e.data, dtype=f"V{size}")
        gb = np.frombuffer(g.data, dtype=f"V{size}")
        diff = np.flatnonzero(eb != gb)
        first = int(diff[0])
        index = list(np.unravel_index(first, e.shape)) if e.shape else []
        lines.append(f"{name}: {len(diff)} of {len(eb)} elements differ; first at "
                     f"{[int(i) for i in index]}: expected {values(e)[first]!r}, "
                     f"got {values(g)[first]!r}")
    return lines


def cmd_check(base, adapter, out):
    expected = expected_model(base, adapter)
    got = read_model(out)
    lines = compare(expected, got)
    for line in lines:
        print(line)
    if lines:
        print(f"lora_ref: {len(lines)} of {len(expected)} tensors do not match")
        return 1
    print(f"lora_ref: all {len(expected)} tensors match bit for bit")
    return 0


# ---------------------------------------------------------------- fixtures ----

def f32_tensor(values):
    v = np.ascontiguousarray(values, dtype=np.float32)
    return ("F32", v.shape, v.tobytes())


def cmd_make_conv1d(path):
    rng = np.random.default_rng(1234)
    base, adapter = os.path.join(path, "base"), os.path.join(path, "adapter")
    os.makedirs(base, exist_ok=True)
    os.makedirs(adapter, exist_ok=True)
    d, r = 64, 4
    weights = {
        "transformer.h.0.attn.c_attn.weight": f32_tensor(rng.normal(0, 0.02, (d, 3 * d))),
        "transformer.h.0.mlp.c_fc.weight": f32_tensor(rng.normal(0, 0.02, (d, d))),
        "transformer.h.0.ln_1.weight": f32_tensor(1 + rng.normal(0, 0.1, d)),
    }
    write_safetensors(os.path.join(base, "model.safetensors"), weights, {"format": "pt"})
    with open(os.path.join(base, "config.json"), "w") as f:
        json.dump({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, f)
    factors = {}
    for module, (inp, out) in {"transformer.h.0.attn.c_attn": (d, 3 * d),
                               "transformer.h.0.mlp.c_fc": (d, d)}.items():
        factors[KEY_PREFIX + module + ".lora_A.weight"] = f32_tensor(rng.normal(0, 0.1, (r, inp)))
        factors[KEY_PREFIX + module + ".lora_B.weight"] = f32_tensor(rng.normal(0, 0.1, (out, r)))
    write_safetensors(os.path.join(adapter, "adapter_model.safetensors"), factors,
                      {"format": "pt"})
    with open(os.path.join(adapter, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": r, "lora_alpha": 8, "fan_in_fan_out": True,
                   "target_modules": ["c_attn", "c_fc"], "bias": "none"}, f, indent=2)
    return 0


def parse_shape(text):
    return [int(x) for x in text.split(",")] if text else []


def cmd_make_adapter(args):
    """A valid adapter for BASE's q_proj/v_proj (or --modules), then the requested breakage."""
    rng = np.random.default_rng(args.seed)
    base = read_model(args.base)
    r = args.file_rank or args.r
    names = [n for n in sorted(base) if n.endswith(".weight") and
             any(n.endswith("." + m + ".weight") for m in args.modules.split(","))]
    if not names:
        sys.exit(f"{args.base}: no weights for modules {args.modules}")
    tensors = {}
    for name in names:
        module, w = name[:-len(".weight")], base[name]
        out, inp = w.shape
        a = rng.normal(0, 0.1, (r, inp)).astype(np.float32)
        b = rng.normal(0, 0.1, (out, r)).astype(np.float32)
        tensors[KEY_PREFIX + module + ".lora_A.weight"] = (args.factor_dtype, a.shape,
                                                           encode(a, args.factor_dtype))
        tensors[KEY_PREFIX + module + ".lora_B.weight"] = (args.factor_dtype, b.shape,
                                                           encode(b, args.factor_dtype))
        if args.dora:
            norms = np.sqrt((w.f32().astype(np.float64) ** 2).sum(axis=1))
            m = (norms * (1 + rng.normal(0, 0.05, out))).astype(np.float32)
            tensors[KEY_PREFIX + module + ".lora_magnitude_vector"] = (
                args.factor_dtype, m.shape, encode(m, args.factor_dtype))
    for pattern in args.drop:
        tensors = {k: v for k, v in tensors.items() if not re.search(pattern, k)}
    for spec in args.add:  # NAME=DTYPE:D0,D1,...[@VALUE]
        name, _, rest = spec.partition("=")
        rest, _, fill = rest.partition("@")
        dtype, _, shape = rest.partition(":")
        shape = parse_shape(shape)
        v = np.full(shape, float(fill), dtype=np.float32) if fill else \
            rng.normal(0, 0.1, shape).astype(np.float32)
        tensors[name] = (dtype, shape, encode(v, dtype))
    os.makedirs(args.dir, exist_ok=True)
    weights = os.path.join(args.dir, "adapter_model.bin" if args.bin_only
                           else "adapter_model.safetensors")
    write_safetensors(weights, tensors, {"format": "pt"})
    if args.no_config:
        return 0
    config_path = os.path.join(args.dir, "adapter_config.json")
    if args.config_text is not None:
        with open(config_path, "w") as f:
            f.write(args.config_text)
        return 0
    config = {"peft_type": "LORA", "r": args.r, "lora_alpha": args.alpha,
              "target_modules": args.modules.split(","), "bias": "none",
              "fan_in_fan_out": False, "use_rslora": False, "use_dora": args.dora}
    for item in args.set:  # KEY=JSON
        key, _, value = item.partition("=")
        config[key] = json.loads(value)
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    return 0


def main(argv):
    if argv and argv[0] == "make-conv1d":
        if len(argv) != 2:
            sys.exit("usage: lora_ref.py make-conv1d DIR")
        return cmd_make_conv1d(argv[1])
    if argv and argv[0] == "make-adapter":
        p = argparse.ArgumentParser(prog="lora_ref.py make-adapter")
        p.add_argument("dir")
        p.add_argument("--base", required=True)
        p.add_argument("--modules", default="q_proj,v_proj")
        p.add_argument("--r", type=int, default=4, help="the config's r (and the file's rank)")
        p.add_argument("--file-rank", type=int, help="the factors' rank when it differs from r")
        p.add_argument("--alpha", type=float, default=8)
        p.add_argument("--seed", type=int, default=7)
        p.add_argument("--factor-dtype", default="F32", help="F32, F16, BF16, I32, I8...")
        p.add_argument("--dora", action="store_true", help="use_dora with magnitude vectors")
        p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                       help="set a key of adapter_config.json")
        p.add_argument("--config-text", help="write adapter_config.json with exactly this text")
        p.add_argument("--no-config", action="store_true", help="write no adapter_config.json")
        p.add_argument("--drop", action="append", default=[], metavar="REGEX",
                       help="leave out the tensors whose name matches")
        p.add_argument("--add", action="append", default=[], metavar="NAME=DTYPE:SHAPE",
                       help="add (or replace) a tensor, e.g. NAME=F32:4,192 (random) or "
                       "NAME=F32:192@nan (every element VALUE)")
        p.add_argument("--bin-only", action="store_true",
                       help="name the weights adapter_model.bin (no .safetensors)")
        return cmd_make_adapter(p.parse_args(argv[1:]))
    if len(argv) != 3:
        sys.exit(__doc__)
    return cmd_check(*argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
