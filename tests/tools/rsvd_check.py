#!/usr/bin/env python3
"""Checks `smelt lora extract` against numpy's exact SVD (numpy only; the safetensors reader and
writer are lora_ref.py's).

  rsvd_check.py make BASE_DIR MODEL_DIR
      a float32 base and a "fine-tune" whose 2-D deltas have decaying spectra
      (U diag(s) V^T with s_i = 0.5^i or i^-1.5, plus small noise), an embedding, an lm_head,
      norms and a bfloat16 weight.
  rsvd_check.py check BASE MODEL ADAPTER [--slack 0.01]
      for every module of the adapter: the relative Frobenius error ||D - scale B A|| / ||D||
      (D = MODEL - BASE in f64) must be at most (1 + slack) * the optimum of numpy's SVD
      truncated to the module's rank, + 1e-7; modules_to_save tensors must equal MODEL's.
      Prints one line per module.
  rsvd_check.py recon BASE MODEL APPLIED
      prints ||APPLIED - MODEL|| / ||MODEL - BASE|| over all decomposed weights together and the
      worst tensor, and fails when APPLIED lacks a tensor of MODEL.
"""
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lora_ref import (KEY_PREFIX, Tensor, encode, pattern_value, read_model,  # noqa: E402
                      read_safetensors, write_safetensors)


def f64(t):
    return t.f32().astype(np.float64)


def spectrum_delta(rng, rows, cols, kind, scale):
    n = min(rows, cols)
    i = np.arange(n, dtype=np.float64)
    s = 0.5 ** i if kind == "geometric" else (i + 1) ** -1.5
    u, _ = np.linalg.qr(rng.standard_normal((rows, n)))
    v, _ = np.linalg.qr(rng.standard_normal((cols, n)))
    d = (u * s) @ v.T
    d += 1e-4 * rng.standard_normal((rows, cols)) / np.sqrt(max(rows, cols))
    return scale * d


def cmd_make(base_dir, model_dir):
    rng = np.random.default_rng(1234)
    shapes = {
        "model.layers.0.self_attn.q_proj.weight": (96, 96, "geometric"),
        "model.layers.0.self_attn.k_proj.weight": (48, 96, "power"),
        "model.layers.0.mlp.up_proj.weight": (160, 96, "power"),
        "model.layers.0.mlp.down_proj.weight": (96, 160, "geometric"),
        "model.layers.1.self_attn.o_proj.weight": (96, 96, "power"),
        "model.embed_tokens.weight": (200, 96, "power"),
        "lm_head.weight": (200, 96, "geometric"),
    }
    base, model = {}, {}
    for name, (rows, cols, kind) in shapes.items():
        w = (0.02 * rng.standard_normal((rows, cols))).astype(np.float32)
        d = spectrum_delta(rng, rows, cols, kind, 0.01)
        ft = (w.astype(np.float64) + d).astype(np.float32)
        base[name] = ("F32", (rows, cols), encode(w, "F32"))
        model[name] = ("F32", (rows, cols), encode(ft, "F32"))
    # A bfloat16 weight: the delta of the rounded values is what smelt decomposes.
    w = 0.02 * rng.standard_normal((64, 96))
    d = spectrum_delta(rng, 64, 96, "power", 0.05)
    base["model.layers.1.mlp.gate_proj.weight"] = ("BF16", (64, 96), encode(w, "BF16"))
    model["model.layers.1.mlp.gate_proj.weight"] = ("BF16", (64, 96), encode(w + d, "BF16"))
    for name in ("model.layers.0.input_layernorm.weight", "model.norm.weight"):
        base[name] = ("F32", (96,), encode(np.ones(96), "F32"))
        model[name] = ("F32", (96,), encode(1 + 0.01 * rng.standard_normal(96), "F32"))
    # An integer weight: skipped with a notice.
    q = rng.integers(-8, 8, size=(8, 96), dtype=np.int8)
    base["model.layers.1.mlp.qweight.weight"] = ("I8", (8, 96), q.tobytes())
    model["model.layers.1.mlp.qweight.weight"] = ("I8", (8, 96), (q // 2).tobytes())
    for d, tensors in ((base_dir, base), (model_dir, model)):
        os.makedirs(d, exist_ok=True)
        write_safetensors(os.path.join(d, "model.safetensors"), tensors, {"format": "pt"})


def load_adapter(path):
    with open(os.path.join(path, "adapter_config.json")) as f:
        config = json.load(f)
    tensors = read_safetensors(os.path.join(path, "adapter_model.safetensors"))
    return config, tensors


def cmd_check(base_path, model_path, adapter_path, slack):
    base, model = read_model(base_path), read_model(model_path)
    config, tensors = load_adapter(adapter_path)
    assert config["peft_type"] == "LORA" and config["lora_alpha"] == config["r"], config
    failures, modules = 0, 0
    for key in sorted(tensors):
        name = key[len(KEY_PREFIX):]
        m = re.match(r"(.*)\.lora_(embedding_)?A(\.weight)?$", name)
        if not m:
            if re.search(r"\.lora_(embedding_)?B(\.weight)?$", name):
                continue
            t, want = tensors[key], model[name]
            if t.dtype != want.dtype or t.shape != want.shape or t.data != want.data:
                print(f"FAIL {name}: stored whole but differs from the model's")
                failures += 1
            continue
        module, emb = m.group(1), bool(m.group(2))
        a = f64(tensors[key])
        b = f64(tensors[KEY_PREFIX + module + (".lora_embedding_B" if emb else ".lora_B.weight")])
        rank = pattern_value(config.get("rank_pattern"), module, config["r"])
        alpha = pattern_value(config.get("alpha_pattern"), module, config["lora_alpha"])
        assert a.shape[0] == rank and b.shape[1] == rank, (module, a.shape, b.shape, rank)
        scale = alpha / rank
        approx = scale * (b @ a)
        if emb:
            approx = approx.T
        d = f64(model[module + ".weight"]) - f64(base[module + ".weight"])
        norm = np.linalg.norm(d)
        s = np.linalg.svd(d, compute_uv=False)
        opt = np.sqrt(max(np.sum(s[rank:] ** 2), 0)) / norm
        got = np.linalg.norm(d - approx) / norm
        ok = got <= (1 + slack) * opt + 1e-7
        failures += not ok
        modules += 1
        print(f"{'ok  ' if ok else 'FAIL'} {module} {list(d.shape)} rank {rank}: rel. error "
              f"{got:.6g}, optimum {opt:.6g} (ratio {got / opt if opt else float('nan'):.5f})")
    if modules == 0:
        print("FAIL: the adapter has no modules")
        failures += 1
    return 1 if failures else 0


def cmd_recon(base_path, model_path, applied_path):
    base, model, applied = read_model(base_path), read_model(model_path), read_model(applied_path)
    num = den = 0.0
    worst, worst_name = 0.0, None
    for name, t in model.items():
        if name not in applied:
            print(f"FAIL: {name} is missing from {applied_path}")
            return 1
        if t.dtype not in ("F32", "F16", "BF16") or len(t.shape) != 2 or \
                t.shape != base[name].shape:
            continue
        d = f64(t) - f64(base[name])
        e = f64(applied[name]) - f64(t)
        num += np.sum(e * e)
        den += np.sum(d * d)
        r = np.linalg.norm(e) / max(np.linalg.norm(d), 1e-300)
        if r > worst:
            worst, worst_name = r, name
    print(f"reconstruction: ||applied - model|| / ||model - base|| = {np.sqrt(num / den):.6f} "
          f"over the 2-D weights; worst {worst:.6f} ({worst_name})")
    return 0


def main(argv):
    if len(argv) >= 3 and argv[0] == "make":
        return cmd_make(argv[1], argv[2]) or 0
    if len(argv) >= 4 and argv[0] == "check":
        slack = float(argv[argv.index("--slack") + 1]) if "--slack" in argv else 0.01
        return cmd_check(argv[1], argv[2], argv[3], slack)
    if len(argv) == 4 and argv[0] == "recon":
        return cmd_recon(argv[1], argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
