#!/usr/bin/env python3
"""PyTorch baseline for `bench_infer throughput` (issue 6): the same model shapes as a longctx
preset, written the way a Hugging Face Llama runs with eager attention -- bf16 weights, RMSNorm,
rotate-half RoPE, softmax attention as matmul + mask + softmax + matmul, SwiGLU, tied head, and
a KV cache that grows by torch.cat every step (DynamicCache). Random weights (throughput only).

Prints one JSON object per line, as bench_infer: prefill tokens/s (one 4096-token prompt in a
single forward, as HF's generate does) and greedy decode tokens/s at batch 1 and 32 after
256-token prompts (128 and 48 steps).
    python3 tools/torch_infer_baseline.py [--preset swat-340m] [--device cuda]
"""
import argparse, json, math, time

import torch
import torch.nn as nn
import torch.nn.functional as F

# src/model/config.cpp's presets: hidden, layers, heads, kv heads, ffn, vocab
PRESETS = {
    "tiny": (256, 4, 4, 4, 768, 8192),
    "small": (512, 8, 8, 8, 1536, 16384),
    "swat-340m": (1024, 24, 16, 16, 2816, 32000),
    "swat-760m": (1536, 24, 24, 24, 4096, 32000),
}


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rope(x, pos, theta=10000.0):
    """Rotate-half RoPE (HF Llama) of x (B, H, T, D) at absolute positions pos (T)."""
    D = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D)
    ang = pos.float()[:, None] * inv[None, :]
    cos, sin = torch.cat([ang.cos()] * 2, -1).to(x.dtype), torch.cat([ang.sin()] * 2, -1).to(x.dtype)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Layer(nn.Module):
    def __init__(self, d, H, Hkv, F_):
        super().__init__()
        self.H, self.Hkv, self.D = H, Hkv, d // H
        self.ln1, self.ln2 = RMSNorm(d), RMSNorm(d)
        self.q = nn.Linear(d, H * self.D, bias=False)
        self.k = nn.Linear(d, Hkv * self.D, bias=False)
        self.v = nn.Linear(d, Hkv * self.D, bias=False)
        self.o = nn.Linear(H * self.D, d, bias=False)
        self.gate = nn.Linear(d, F_, bias=False)
        self.up = nn.Linear(d, F_, bias=False)
        self.down = nn.Linear(F_, d, bias=False)

    def forward(self, x, pos, cache):
        B, T, _ = x.shape
        h = self.ln1(x)
        q = self.q(h).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.k(h).view(B, T, self.Hkv, self.D).transpose(1, 2)
        v = self.v(h).view(B, T, self.Hkv, self.D).transpose(1, 2)
        q, k = rope(q, pos), rope(k, pos)
        if cache:  # DynamicCache: the cache grows by concatenation every step
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        cache[:] = [k, v]
        rep = self.H // self.Hkv
        if rep > 1:
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        # eager attention: scores, causal mask, softmax in fp32, weighted sum
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.D)
        Tk = k.shape[2]
        if T > 1:
            mask = torch.ones(T, Tk, dtype=torch.bool, device=x.device).tril(Tk - T)
            s = s.masked_fill(~mask, float("-inf"))
        a = F.softmax(s, -1, dtype=torch.float32).to(q.dtype) @ v
        x = x + self.o(a.transpose(1, 2).reshape(B, T, -1))
        h = self.ln2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, d, L, H, Hkv, F_, V):
        super().__init__()
        self.wte = nn.Embedding(V, d)
        self.layers = nn.ModuleList(Layer(d, H, Hkv, F_) for _ in range(L))
        self.lnf = RMSNorm(d)

    def forward(self, tokens, n_past, caches):
        pos = torch.arange(n_past, n_past + tokens.shape[1], device=tokens.device)
        x = self.wte(tokens)
        for layer, c in zip(self.layers, caches):
            x = layer(x, pos, c)
        return self.lnf(x[:, -1]) @ self.wte.weight.t()  # tied head, last position only


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="swat-340m", choices=sorted(PRESETS))
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    dev = torch.device(args.device)
    d, L, H, Hkv, F_, V = PRESETS[args.preset]
    torch.manual_seed(0)
    model = Llama(d, L, H, Hkv, F_, V).to(dev, torch.bfloat16).eval()
    for p in model.parameters():
        nn.init.normal_(p, std=0.02)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    base = {"impl": "torch-eager-hf-style", "preset": args.preset, "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"}

    def caches():
        return [[] for _ in range(L)]

    with torch.inference_mode():
        prompt = torch.randint(0, V, (1, 4096), device=dev)
        model(prompt[:, :256], 0, caches())  # warm-up
        sync()
        t0 = time.perf_counter()
        model(prompt, 0, caches())
        sync()
        s = time.perf_counter() - t0
        print(json.dumps({**base, "bench": "prefill", "prompt": 4096, "tok_s": 4096 / s}), flush=True)
        for B in (1, 32):
            steps = 128 if B == 1 else 48
            c = caches()
            logits = model(torch.randint(0, V, (B, 256), device=dev), 0, c)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync()
            t0 = time.perf_counter()
            for i in range(steps):  # greedy decode
                logits = model(logits.argmax(-1, keepdim=True), 256 + i, c)
            sync()
            s = time.perf_counter() - t0
            rec = {**base, "bench": "decode", "batch": B, "context": 256 + steps, "steps": steps,
                   "tok_s": steps * B / s, "ms_per_step": 1000 * s / steps}
            if dev.type == "cuda":
                rec["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
