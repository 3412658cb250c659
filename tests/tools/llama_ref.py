#!/usr/bin/env python3
"""An independent llama forward pass in numpy over a GGUF file, to check llama.cpp's numbers
(tests/tools/llama_eval.mjs) and smelt's GGUF output.

  llama_ref.py probs MODEL.gguf [--tokens 1,5,9]
      prints {"model", "n_vocab", "tokens", "probs", "top"} as llama_eval.mjs does
  llama_ref.py compare MODEL.gguf LLAMA.json [--tol 1e-5] [--logtol 1e-4]
      the reference for LLAMA.json's tokens against its probabilities: prints the largest
      |p_llama - p_ref| and |log p_llama - log p_ref|; exit 1 when either is over its tolerance
  llama_ref.py transpose IN.gguf TENSOR OUT.gguf
      a copy of IN with the square F32 tensor TENSOR transposed (a file llama.cpp loads silently
      and that compare must catch)
  llama_ref.py hf MODEL.gguf MODEL_DIR
      checks that an F32 GGUF holds what convert_hf_to_gguf.py makes of the float32 safetensors
      model in MODEL_DIR (names mapped, q/k rows permuted); exit 1 on the first difference
  llama_ref.py dequant LIBGGML_BASE MODEL.gguf
      this script's dequantization of every tensor against libggml-base's (ctypes), bit for bit

The GGUF reader is written here from the spec (ggml/docs/gguf.md), sharing nothing with smelt.
Tensor types: F32, F16, BF16, Q8_0, Q4_K, Q6_K (dequantized as ggml does, bit for bit). The forward pass is llama.cpp's
for arch llama, computed in float64: RMS norm with the file's epsilon, rotary embedding of type
"normal" (LLAMA_ROPE_TYPE_NORM: adjacent pairs (2i, 2i+1) of each head rotated by
pos * freq_base^(-2i/n_rot), on q and k as the GGUF stores them), grouped-query attention with
a causal mask and scale 1/sqrt(head size), a SwiGLU MLP, the output projection (token_embd when
output.weight is missing). Exit 2 on bad arguments or an unsupported file.
"""
import json
import struct
import sys

import numpy as np

GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                10: "<Q", 11: "<q", 12: "<d"}
def die(msg):
    print(f"llama_ref: {msg}", file=sys.stderr)
    sys.exit(2)


class Gguf:
    """The header of a GGUF v2/v3 file: kv (dict), tensors (name -> (type, ne, offset)), data."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.buf = f.read()
        self.pos = 0
        if self.buf[:4] != b"GGUF":
            die(f"{path}: not a GGUF file")
        self.pos = 4
        version, = self._read("<I")
        if version not in (2, 3):
            die(f"{path}: GGUF version {version}")
        nt, nkv = self._read("<QQ")
        self.kv = {}
        for _ in range(nkv):
            key = self._str()
            vtype, = self._read("<I")
            self.kv[key] = self._value(vtype)
        self.tensors = {}
        self.order = []
        for _ in range(nt):
            name = self._str()
            ndim, = self._read("<I")
            ne = list(self._read("<" + "Q" * ndim))
            ttype, off = self._read("<IQ")
            self.tensors[name] = (ttype, ne, off)
            self.order.append(name)
        align = self.kv.get("general.alignment", 32)
        self.data = (self.pos + align - 1) // align * align

    def _read(self, fmt):
        vals = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return vals

    def _str(self):
        n, = self._read("<Q")
        s = self.buf[self.pos:self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return s

    def _value(self, vtype):
        if vtype in GGUF_SCALARS:
            return self._read(GGUF_SCALARS[vtype])[0]
        if vtype == 8:
            return self._str()
        if vtype == 9:
            etype, n = self._read("<IQ")
            return [self._value(etype) for _ in range(n)]
        die(f"{self.path}: value type {vtype}")

    def tensor_f32(self, name):
        """The tensor's values as ggml dequantizes them (float32), numpy shape = ne reversed (a
        [out, in] matrix for ne {in, out})."""
        ttype, ne, off = self.tensors[name]
        if ttype not in TYPE_BLOCK:
            die(f"{self.path}: tensor {name}: ggml type {ttype} is not one of "
                "F32, F16, BF16, Q8_0, Q4_K, Q6_K")
        n = int(np.prod(ne))
        block, size = TYPE_BLOCK[ttype]
        raw = np.frombuffer(self.buf, np.uint8, n // block * size, self.data + off)
        return DEQUANT[ttype](raw).reshape(list(reversed(ne)))

    def tensor(self, name):
        """tensor_f32 in float64, for the forward pass."""
        return self.tensor_f32(name).astype(np.float64)


# Dequantization as ggml's dequantize_row_* (ggml-quants.c) computes it, in float32 one
# operation at a time (libggml-base is built without FMA contraction), so that it matches ggml
# bit for bit (`llama_ref.py dequant` checks that against libggml-base itself).
def fp16(b):
    return b.copy().view("<f2").astype(np.float32).reshape(-1)


def dq_f32(raw):
    return raw.view("<f4").copy()


def dq_f16(raw):
    return raw.view("<f2").astype(np.float32)


def dq_bf16(raw):
    return (raw.view("<u2").astype(np.uint32) << 16).view("<f4")


def dq_q8_0(raw):  # 32 elements: fp16 d, 32 x int8 q; y = q * d
    b = raw.reshape(-1, 34)
    d = fp16(b[:, :2])[:, None]
    return (b[:, 2:].view(np.int8).astype(np.float32) * d).reshape(-1)


def dq_q4_k(raw):
    """256 elements: fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles.
    Sub-block j (32 elements) is d * sc[j] * q - dmin * m[j]."""
    b = raw.reshape(-1, 144)
    d, dmin = fp16(b[:, 0:2])[:, None], fp16(b[:, 2:4])[:, None]
    s = b[:, 4:16].astype(np.uint8)
    sc = np.empty((len(b), 8), np.uint8)
    mn = np.empty((len(b), 8), np.uint8)
    sc[:, :4], mn[:, :4] = s[:, 0:4] & 63, s[:, 4:8] & 63
    sc[:, 4:] = (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)
    mn[:, 4:] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    d_sc = d * sc.astype(np.float32)     # [blocks, 8], rounded to f32 like ggml's d1, d2
    m_mn = dmin * mn.astype(np.float32)
    qs = b[:, 16:].reshape(-1, 4, 32)    # 4 chunks of 32 bytes: low nibbles, then high
    q = np.stack([qs & 0xF, qs >> 4], axis=2).reshape(-1, 8, 32).astype(np.float32)
    return (d_sc[:, :, None] * q - m_mn[:, :, None]).reshape(-1)


def dq_q6_k(raw):
    """256 elements: 128 bytes of low 4 bits, 64 of high 2 bits, 16 int8 scales, fp16 d.
    Element = d * scale * (6-bit q - 32), evaluated as (d * scale) * q."""
    b = raw.reshape(-1, 210)
    ql, qh = b[:, 0:128].reshape(-1, 2, 64), b[:, 128:192].reshape(-1, 2, 32)
    sc = b[:, 192:208].view(np.int8).astype(np.float32).reshape(-1, 2, 8)
    d = fp16(b[:, 208:210])[:, None, None]
    out = np.empty((len(b), 2, 128), np.float32)
    for half in range(2):
        lo, hi = ql[:, half, :], qh[:, half, :]
        quads = [(lo[:, 0:32] & 0xF) | (((hi >> 0) & 3) << 4),
                 (lo[:, 32:64] & 0xF) | (((hi >> 2) & 3) << 4),
                 (lo[:, 0:32] >> 4) | (((hi >> 4) & 3) << 4),
                 (lo[:, 32:64] >> 4) | (((hi >> 6) & 3) << 4)]
        for k, qv in enumerate(quads):
            q = qv.astype(np.int8).astype(np.float32) - np.float32(32)
            for part in range(2):  # 16 elements per scale
                scale = sc[:, half, 2 * k + part][:, None]
                out[:, half, 32 * k + 16 * part:32 * k + 16 * part + 16] = \
                    (d[:, 0] * scale) * q[:, 16 * part:16 * part + 16]
    return out.reshape(-1)


F32, F16, Q8_0, Q4_K, Q6_K, BF16 = 0, 1, 8, 12, 14, 30
TYPE_BLOCK = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q8_0: (32, 34), Q4_K: (256, 144),
              Q6_K: (256, 210)}
DEQUANT = {F32: dq_f32, F16: dq_f16, BF16: dq_bf16, Q8_0: dq_q8_0, Q4_K: dq_q4_k, Q6_K: dq_q6_k}


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_normal(x, n_rot, base):
    """x: [T, heads, head_dim]; rotates the pairs (2i, 2i+1) of the first n_rot dims."""
    t = x.shape[0]
    i = np.arange(n_rot // 2, dtype=np.float64)
    theta = np.arange(t, dtype=np.float64)[:, None] * base ** (-2.0 * i / n_rot)[None, :]
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    out = x.copy()
    x0, x1 = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
    out[..., 0:n_rot:2] = x0 * cos - x1 * sin
    out[..., 1:n_rot:2] = x0 * sin + x1 * cos
    return out


def forward(g, tokens):
    """The next-token probabilities after `tokens` (float64)."""
    kv = g.kv
    if kv.get("general.architecture") != "llama":
        die(f"{g.path}: architecture {kv.get('general.architecture')!r} is not llama")
    n_layer = kv["llama.block_count"]
    n_head = kv["llama.attention.head_count"]
    n_kv = kv.get("llama.attention.head_count_kv", n_head)
    n_embd = kv["llama.embedding_length"]
    eps = kv["llama.attention.layer_norm_rms_epsilon"]
    base = kv.get("llama.rope.freq_base", 10000.0)
    hd = n_embd // n_head
    n_rot = kv.get("llama.rope.dimension_count", hd)
    emb = g.tensor("token_embd.weight")
    if max(tokens) >= emb.shape[0]:
        die(f"token {max(tokens)} is past the vocabulary of {emb.shape[0]}")
    x = emb[tokens]
    t = len(tokens)
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for layer in range(n_layer):
        w = lambda name: g.tensor(f"blk.{layer}.{name}.weight")  # noqa: E731
        h = rms_norm(x, w("attn_norm"), eps)
        q = (h @ w("attn_q").T).reshape(t, n_head, hd)
        k = (h @ w("attn_k").T).reshape(t, n_kv, hd)
        v = (h @ w("attn_v").T).reshape(t, n_kv, hd)
        q, k = rope_normal(q, n_rot, base), rope_normal(k, n_rot, base)
        group = n_head // n_kv
        out = np.empty((t, n_head, hd))
        for hh in range(n_head):
            kh = hh // group
            s = q[:, hh, :] @ k[:, kh, :].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            out[:, hh, :] = s @ v[:, kh, :]
        x = x + out.reshape(t, n_embd) @ w("attn_output").T
        h = rms_norm(x, w("ffn_norm"), eps)
        gate, up = h @ w("ffn_gate").T, h @ w("ffn_up").T
        x = x + (gate / (1.0 + np.exp(-gate)) * up) @ w("ffn_down").T
    h = rms_norm(x[-1], g.tensor("output_norm.weight"), eps)
    out_w = g.tensor("output.weight") if "output.weight" in g.tensors else emb
    logits = out_w @ h
    p = np.exp(logits - logits.max())
    return p / p.sum()


def parse_opts(args, known):
    opts, rest = {}, []
    i = 0
    while i < len(args):
        if args[i] in known:
            if i + 1 >= len(args):
                die(f"{args[i]} needs a value")
            opts[args[i]] = args[i + 1]
            i += 2
        elif args[i].startswith("--"):
            die(f"unknown option {args[i]}")
        else:
            rest.append(args[i])
            i += 1
    return opts, rest


def cmd_probs(args):
    opts, rest = parse_opts(args, {"--tokens"})
    if len(rest) != 1:
        die("usage: llama_ref.py probs MODEL.gguf [--tokens 1,5,9]")
    tokens = [int(x) for x in opts.get("--tokens", "1,3,10,100,200,255,258").split(",")]
    p = forward(Gguf(rest[0]), tokens)
    top = sorted(range(len(p)), key=lambda i: -p[i])[:5]
    print(json.dumps({"model": rest[0], "n_vocab": len(p), "tokens": tokens,
                      "probs": p.tolist(), "top": [[i, p[i]] for i in top]}))
    return 0


def cmd_compare(args):
    opts, rest = parse_opts(args, {"--tol", "--logtol"})
    if len(rest) != 2:
        die("usage: llama_ref.py compare MODEL.gguf LLAMA.json [--tol 1e-5] [--logtol 1e-4]")
    tol, logtol = float(opts.get("--tol", 1e-5)), float(opts.get("--logtol", 1e-4))
    with open(rest[1]) as f:
        got = json.load(f)
    ref = forward(Gguf(rest[0]), got["tokens"])
    llama = np.array(got["probs"], dtype=np.float64)
    if llama.shape != ref.shape:
        print(f"vocabulary sizes differ: llama.cpp {llama.size}, reference {ref.size}")
        return 1
    dp = float(np.max(np.abs(llama - ref)))
    # Log-probabilities: a relative measure, sensitive where every probability is small.
    dl = float(np.max(np.abs(np.log(np.maximum(llama, 1e-300)) - np.log(ref))))
    same_top = int(np.argmax(llama)) == int(np.argmax(ref))
    ok = dp <= tol and dl <= logtol
    print(f"{'agree' if ok else 'DIFFER'}: max |p diff| = {dp:.3e} (tolerance {tol:g}), "
          f"max |log p diff| = {dl:.3e} (tolerance {logtol:g}), {ref.size} tokens, "
          f"top token {'the same' if same_top else 'differs'} ({int(np.argmax(ref))})")
    return 0 if ok else 1


def cmd_transpose(args):
    if len(args) != 3:
        die("usage: llama_ref.py transpose IN.gguf TENSOR OUT.gguf")
    src, name, dst = args
    g = Gguf(src)
    if name not in g.tensors:
        die(f"{src}: no tensor {name}")
    ttype, ne, off = g.tensors[name]
    if ttype != F32 or len(ne) != 2 or ne[0] != ne[1]:
        die(f"{src}: {name} is not a square F32 matrix")
    buf = bytearray(g.buf)
    start, n = g.data + off, ne[0] * ne[1] * 4
    m = np.frombuffer(g.buf, "<f4", ne[0] * ne[1], start).reshape(ne[1], ne[0])
    buf[start:start + n] = np.ascontiguousarray(m.T).tobytes()
    with open(dst, "wb") as f:
        f.write(buf)
    return 0


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n, = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            die(f"{path}: {name} is {info['dtype']}, not F32")
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw, "<f4", (b - a) // 4, 8 + n + a).reshape(info["shape"])
    return out


def hf_permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: each head's rotary halves interleaved."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def cmd_hf(args):
    if len(args) != 2:
        die("usage: llama_ref.py hf MODEL.gguf MODEL_DIR")
    g = Gguf(args[0])
    hf = load_safetensors(f"{args[1]}/model.safetensors")
    n_head = g.kv["llama.attention.head_count"]
    n_kv = g.kv.get("llama.attention.head_count_kv", n_head)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight", "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
                 "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
                 "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for layer in range(g.kv["llama.block_count"]):
        for a, b in per_layer.items():
            names[f"model.layers.{layer}.{a}.weight"] = f"blk.{layer}.{b}.weight"
    if sorted(n for n in names.values() if n in g.tensors) != sorted(g.order) or \
            sorted(hf) != sorted(n for n, m in names.items() if m in g.tensors):
        print(f"tensor names differ: gguf {sorted(g.order)}, safetensors {sorted(hf)}")
        return 1
    for hname, w in hf.items():
        gname = names[hname]
        if ".attn_q." in gname:
            w = hf_permute(w, n_head)
        elif ".attn_k." in gname:
            w = hf_permute(w, n_kv)
        if g.tensors[gname][0] != F32:
            die(f"{args[0]}: {gname} is not F32")
        got = g.tensor(gname)
        if got.shape != w.shape or not np.array_equal(got, w.astype(np.float64)):
            print(f"{gname} differs from the converted {hname}")
            return 1
    print(f"{len(hf)} tensors equal convert_hf_to_gguf.py's conversion of {args[1]}")
    return 0


def cmd_dequant(args):
    """Every tensor's dequantization here against libggml-base's own row functions."""
    import ctypes
    if len(args) != 2:
        die("usage: llama_ref.py dequant LIBGGML_BASE MODEL.gguf")
    lib = ctypes.CDLL(args[0])
    fns = {F16: "ggml_fp16_to_fp32_row", BF16: "ggml_bf16_to_fp32_row",
           Q8_0: "dequantize_row_q8_0", Q4_K: "dequantize_row_q4_K", Q6_K: "dequantize_row_q6_K"}
    g = Gguf(args[1])
    counts = {}
    for name in g.order:
        ttype, ne, off = g.tensors[name]
        if ttype == F32:
            continue
        ours = g.tensor_f32(name).reshape(-1)
        n = ours.size
        block, size = TYPE_BLOCK[ttype]
        src = np.frombuffer(g.buf, np.uint8, n // block * size, g.data + off).copy()
        theirs = np.empty(n, np.float32)
        fn = getattr(lib, fns[ttype])
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn.restype = None
        fn(src.ctypes.data, theirs.ctypes.data, n)
        if not np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)):
            i = int(np.argmax(ours.view(np.uint32) != theirs.view(np.uint32)))
            print(f"{name}: element {i}: numpy {ours[i]!r}, ggml {theirs[i]!r}")
            return 1
        counts[fns[ttype]] = counts.get(fns[ttype], 0) + 1
    print(f"dequantized bit for bit as ggml: {counts}")
    return 0


def main():
    cmds = {"probs": cmd_probs, "compare": cmd_compare, "transpose": cmd_transpose, "hf": cmd_hf,
            "dequant": cmd_dequant}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        die("usage: llama_ref.py probs|compare|transpose|hf|dequant ...")
    sys.exit(cmds[sys.argv[1]](sys.argv[2:]))


if __name__ == "__main__":
    main()
