#!/usr/bin/python3
"""PyTorch reference of the longctx SWAT model (DESIGN.md §2), for tests/test_model.cpp.

Builds the model from a longctx checkpoint directory (config.json + model.safetensors),
runs one packed batch (JSON: tokens, targets, pos, cu_seqlens) in float64, and writes the
logits, the mean loss and every parameter gradient to a safetensors file (F64).
Uses only Debian's python3-torch (1.13) and numpy; never a runtime dependency of longctx.
"""
import argparse
import json
import math
import struct

import numpy as np
import torch

DT = torch.float64


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    dtypes = {"F32": np.float32, "F64": np.float64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.tensor(arr.astype(np.float64))
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().to(torch.float64).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F64", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def alibi_slopes(kind, H):
    # DESIGN.md §2.1
    if kind == "none":
        return [0.0] * H
    if kind in ("neg", "pos"):
        sign = -1.0 if kind == "neg" else 1.0
        return [sign * 2.0 ** (-8.0 * (i + 1) / H) for i in range(H)]
    half = H // 2
    s = [0.0] * H
    for k in range(1, half + 1):
        a = 2.0 ** (-8.0 * k / half)
        s[k - 1] = -a
        s[half + k - 1] = a
    return s


def rms_norm(x, w, eps):  # torch 1.13 has no F.rms_norm
    return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def rope(x, pos, theta):  # x (T, nh, D), rotate-half
    D = x.shape[-1]
    inv = theta ** (-torch.arange(0, D // 2, dtype=DT) * 2.0 / D)
    ang = pos.to(DT)[:, None] * inv[None, :]  # (T, D/2)
    cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention(q, k, v, cfg, doc, slopes):  # q (T,H,D), k/v (T,Hkv,D)
    T, H, D = q.shape
    rep = H // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    m = torch.arange(T)[:, None]
    n = torch.arange(T)[None, :]
    dist = (m - n).to(DT)
    visible = (m - n >= 0) & (m - n < cfg["window"]) & (doc[:, None] == doc[None, :])
    z = torch.einsum("mhd,nhd->hmn", q, k) / math.sqrt(D)
    z = z + torch.tensor(slopes, dtype=DT)[:, None, None] * dist[None]
    if cfg.get("attention", "swat") == "swat":
        p = torch.sigmoid(z + cfg.get("sigmoid_bias", 0.0)) * visible[None]
    else:
        p = torch.softmax(z.masked_fill(~visible[None], float("-inf")), dim=-1)
    return torch.einsum("hmn,nhd->mhd", p, v)


def forward(params, cfg, batch):
    d, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    H, Hkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd, eps, theta = d // H, cfg.get("rms_norm_eps", 1e-6), cfg.get("rope_theta", 10000.0)
    tokens = torch.tensor(batch["tokens"])
    pos = torch.tensor(batch["pos"])
    cu = batch["cu_seqlens"]
    doc = torch.zeros(len(batch["tokens"]), dtype=torch.long)
    for i in range(len(cu) - 1):
        doc[cu[i]:cu[i + 1]] = i
    slopes = alibi_slopes(cfg.get("alibi", "balanced"), H)
    T = tokens.shape[0]
    x = params["model.embed_tokens.weight"][tokens]
    for i in range(L):
        p = lambda n: params[f"model.layers.{i}.{n}.weight"]
        h = rms_norm(x, p("input_layernorm"), eps)
        q = rope((h @ p("self_attn.q_proj").T).view(T, H, hd), pos, theta)
        k = rope((h @ p("self_attn.k_proj").T).view(T, Hkv, hd), pos, theta)
        v = (h @ p("self_attn.v_proj").T).view(T, Hkv, hd)
        x = x + attention(q, k, v, cfg, doc, slopes).reshape(T, H * hd) @ p("self_attn.o_proj").T
        h = rms_norm(x, p("post_attention_layernorm"), eps)
        g, u = h @ p("mlp.gate_proj").T, h @ p("mlp.up_proj").T
        x = x + (torch.nn.functional.silu(g) * u) @ p("mlp.down_proj").T
    x = rms_norm(x, params["model.norm.weight"], eps)
    head = params["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", True) \
        else params["lm_head.weight"]
    return x @ head.T


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ckpt", required=True, help="checkpoint directory")
    ap.add_argument("--batch", required=True, help="batch JSON: tokens, targets, pos, cu_seqlens")
    ap.add_argument("--out", required=True, help="output safetensors (logits, loss, grad.<name>)")
    a = ap.parse_args()
    cfg = json.load(open(f"{a.ckpt}/config.json"))
    batch = json.load(open(a.batch))
    params = read_safetensors(f"{a.ckpt}/model.safetensors")
    for t in params.values():
        t.requires_grad_(True)
    logits = forward(params, cfg, batch)
    targets = torch.tensor(batch["targets"])
    keep = targets >= 0
    loss = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    loss.backward()
    out = {"logits": logits, "loss": loss.reshape(1)}
    for name, t in params.items():
        out["grad." + name] = t.grad
    write_safetensors(a.out, out)


if __name__ == "__main__":
    main()
