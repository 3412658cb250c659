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

The GGUF reader is written here from the spec (ggml/docs/gguf.md), sharing nothing with smelt.
Tensor types: F32, F16, BF16, Q8_0 (dequantized as ggml does). The forward pass is llama.cpp's
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
F32, F16, Q8_0, BF16 = 0, 1, 8, 30
TYPE_BLOCK = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q8_0: (32, 34)}


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

    def tensor(self, name):
        """The tensor as float64, numpy shape = ne reversed (a [out, in] matrix for ne {in, out})."""
        ttype, ne, off = self.tensors[name]
        if ttype not in TYPE_BLOCK:
            die(f"{self.path}: tensor {name}: ggml type {ttype} is not F32, F16, BF16 or Q8_0")
        n = int(np.prod(ne))
        block, size = TYPE_BLOCK[ttype]
        start = self.data + off
        raw = np.frombuffer(self.buf, np.uint8, n // block * size, start)
        if ttype == F32:
            x = raw.view("<f4").astype(np.float64)
        elif ttype == F16:
            x = raw.view("<f2").astype(np.float64)
        elif ttype == BF16:
            x = (raw.view("<u2").astype(np.uint32) << 16).view("<f4").astype(np.float64)
        else:  # Q8_0: per 32 elements an fp16 scale d and 32 int8 q; x = q * d, in f32
            blocks = raw.reshape(-1, 34)
            d = blocks[:, :2].copy().view("<f2").astype(np.float32)
            q = blocks[:, 2:].view(np.int8).astype(np.float32)
            x = (q * d).astype(np.float64).reshape(-1)
        return x.reshape(list(reversed(ne)))


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


def main():
    cmds = {"probs": cmd_probs, "compare": cmd_compare, "transpose": cmd_transpose, "hf": cmd_hf}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        die("usage: llama_ref.py probs|compare|transpose|hf ...")
    sys.exit(cmds[sys.argv[1]](sys.argv[2:]))


if __name__ == "__main__":
    main()
