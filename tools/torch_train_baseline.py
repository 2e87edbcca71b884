#!/usr/bin/python3
"""PyTorch CPU baseline for `longctx bench train`: the same SWAT model (DESIGN.md §2, presets of
src/model/config.cpp) written as a PyTorch user would — nn.Parameters, autograd, blocked-einsum
sigmoid sliding-window attention (tools/torch_attention_baseline.py), full logits +
F.cross_entropy, torch.optim.AdamW — timed for whole training steps at the same thread count.
Prints one JSON object with tokens/s and torch's measured 1024³ sgemm GFLOP/s (Debian's torch
uses libblas.so.3: OpenBLAS once libopenblas is installed, else the slow reference BLAS).

  /usr/bin/python3 tools/torch_train_baseline.py --preset tiny --S 1024 --batch 1 --threads 2
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_attention_baseline import alibi_balanced, attention, sgemm_gflops  # noqa: E402

PRESETS = {  # d, layers, heads, ffn, vocab, window (src/model/config.cpp)
    "tiny": (256, 4, 4, 768, 8192, 256),
    "small": (512, 8, 8, 1536, 16384, 256),
}


class Swat(torch.nn.Module):
    def __init__(self, d, L, H, F, V, w, softmax):
        super().__init__()
        self.H, self.w, self.softmax = H, w, softmax
        p = lambda *s: torch.nn.Parameter(torch.randn(*s) * 0.02)
        self.wte = p(V, d)
        self.layers = torch.nn.ModuleList()
        for _ in range(L):
            m = torch.nn.Module()
            m.ln1, m.ln2 = torch.nn.Parameter(torch.ones(d)), torch.nn.Parameter(torch.ones(d))
            m.q, m.k, m.v, m.o = p(d, d), p(d, d), p(d, d), p(d, d)
            m.gate, m.up, m.down = p(F, d), p(F, d), p(d, F)
            self.layers.append(m)
        self.lnf = torch.nn.Parameter(torch.ones(d))
        self.register_buffer("slopes", alibi_balanced(H) if not softmax else torch.zeros(H))

    @staticmethod
    def rms(x, w):
        return w * x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6)

    @staticmethod
    def rope(x, S):  # x (H, S, D), rotate-half
        D = x.shape[-1]
        inv = 10000.0 ** (-torch.arange(0, D // 2, dtype=torch.float64) * 2.0 / D)
        ang = (torch.arange(S, dtype=torch.float64)[:, None] * inv[None]).float()
        cos, sin = torch.cos(ang), torch.sin(ang)
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def forward(self, tokens, targets):  # one sequence (S,)
        S, H = tokens.shape[0], self.H
        x = self.wte[tokens]
        for m in self.layers:
            h = self.rms(x, m.ln1)
            heads = lambda t: t.view(S, H, -1).transpose(0, 1)
            q, k, v = heads(h @ m.q.T), heads(h @ m.k.T), heads(h @ m.v.T)
            a = attention(self.rope(q, S), self.rope(k, S), v, self.slopes, self.w, 0.0, self.softmax)
            x = x + a.transpose(0, 1).reshape(S, -1) @ m.o.T
            h = self.rms(x, m.ln2)
            x = x + (torch.nn.functional.silu(h @ m.gate.T) * (h @ m.up.T)) @ m.down.T
        logits = self.rms(x, self.lnf) @ self.wte.T
        return torch.nn.functional.cross_entropy(logits, targets)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--attention", default="swat", choices=["swat", "softmax"])
    ap.add_argument("--S", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    d, L, H, F, V, w = PRESETS[a.preset]
    model = Swat(d, L, H, F, V, w, a.attention == "softmax")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    tokens = torch.randint(0, V, (a.batch, a.S + 1))
    times = []
    for step in range(a.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        for b in range(a.batch):
            loss = model(tokens[b, :-1], tokens[b, 1:]) / a.batch
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step > 0:  # first step warms up
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    n_params = sum(p.numel() for p in model.parameters())
    tps = a.batch * a.S / step_s
    print(json.dumps({"bench": "torch_train", "preset": a.preset, "attention": a.attention,
                      "S": a.S, "batch": a.batch, "threads": a.threads, "torch": torch.__version__,
                      "params": n_params, "step_ms": step_s * 1e3, "tokens_per_s": tps,
                      "model_gflops": tps * 6 * n_params / 1e9,
                      "sgemm_gflops": sgemm_gflops(1024)}))


if __name__ == "__main__":
    main()
