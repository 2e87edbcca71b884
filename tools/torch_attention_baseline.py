#!/usr/bin/python3
"""PyTorch CPU baseline for sliding-window attention, written the way a PyTorch user would:
blocked einsum. Queries in blocks of w attend to [previous block, current block] keys (2w) with a
band mask, so the cost is O(S·w) like ours, with a (H, S/w, w, 2w) score tensor materialised.

  SWAT:    p = σ(q·k·scale + s_h (m − n) + b) · mask,  out = p·v      (DESIGN.md §2.1)
  softmax: p = softmax over the band of q·k·scale + s_h (m − n),  out = p·v

Times forward and forward+backward (autograd) at one shape and prints one JSON object, including
torch's measured 1024³ sgemm GFLOP/s (Debian's torch calls libblas.so.3, OpenBLAS when installed)
so the baseline's BLAS can be compared with ours. FLOPs as DESIGN.md §2.1: pairs = S·w − w²/2 per
head, forward = 4·pairs·D·H, forward+backward = 3.5 × forward.

Run with Debian's interpreter (python3-torch 1.13, CPU):
  /usr/bin/python3 tools/torch_attention_baseline.py --S 4096 --window 256 --H 8 --D 64 --threads 2
"""
import argparse
import json
import math
import statistics
import time

import torch


def alibi_balanced(H):
    """SWAT's balanced slopes (DESIGN.md §2.1): head k−1 gets −2^(−8k/half), head half+k−1 +."""
    half = H // 2
    s = [0.0] * H
    for k in range(1, half + 1):
        a = 2.0 ** (-8.0 * k / half)
        s[k - 1], s[half + k - 1] = -a, a
    return torch.tensor(s)


def blocked(x, w):
    """x (H, S, D), S a multiple of w → (H, S/w, 2w, D): each block's previous block + itself."""
    H, S, D = x.shape
    xb = x.view(H, S // w, w, D)
    prev = torch.cat([torch.zeros_like(xb[:, :1]), xb[:, :-1]], dim=1)
    return torch.cat([prev, xb], dim=2)


def attention(q, k, v, slopes, w, bias, softmax):
    """q, k, v (H, S, D), S a multiple of w; returns (H, S, D)."""
    H, S, D = q.shape
    nb = S // w
    qb = q.view(H, nb, w, D)
    kb, vb = blocked(k, w), blocked(v, w)
    # m − n for query row i of a block and key column j of [previous block, block]: i + w − j
    rel = (torch.arange(w)[:, None] + w - torch.arange(2 * w)[None, :]).to(q.dtype)
    band = (rel >= 0) & (rel < w)                           # m − w < n ≤ m
    first = torch.ones(nb, 1, 1, dtype=torch.bool)
    first[0] = False                                        # block 0 has no previous block
    mask = band[None] & (first | (torch.arange(2 * w) >= w)[None, None, :])  # (nb, w, 2w)
    z = torch.einsum("hbqd,hbkd->hbqk", qb, kb) / math.sqrt(D) + slopes[:, None, None, None] * rel
    if softmax:
        p = torch.softmax(z.masked_fill(~mask, float("-inf")), dim=-1)
    else:
        p = torch.sigmoid(z + bias) * mask
    return torch.einsum("hbqk,hbkd->hbqd", p, vb).reshape(H, S, D)


def attention_dense(q, k, v, slopes, w, bias, softmax):
    """The same op with a dense S×S mask (small S only): checks the blocked formulation."""
    H, S, D = q.shape
    rel = (torch.arange(S)[:, None] - torch.arange(S)[None, :]).float()
    mask = (rel >= 0) & (rel < w)
    z = q @ k.transpose(1, 2) / math.sqrt(D) + slopes[:, None, None] * rel
    if softmax:
        p = torch.softmax(z.masked_fill(~mask, float("-inf")), dim=-1)
    else:
        p = torch.sigmoid(z + bias) * mask
    return p @ v


def self_check():
    torch.manual_seed(1)
    for softmax in (False, True):
        for S, w in ((96, 32), (64, 64), (60, 20)):
            H, D = 4, 16
            q, k, v = (torch.randn(H, S, D, dtype=torch.float64) for _ in range(3))
            sl = torch.zeros(H) if softmax else alibi_balanced(H)
            a = attention(q, k, v, sl.double(), w, -0.5, softmax)
            b = attention_dense(q, k, v, sl.double(), w, -0.5, softmax)
            assert torch.allclose(a, b, atol=1e-10), (softmax, S, w, (a - b).abs().max())
    print("self-check ok: blocked == dense-mask attention")


def time_ms(fn, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts)


def sgemm_gflops(n=1024, repeats=10):
    a, b = torch.randn(n, n), torch.randn(n, n)
    med, _ = time_ms(lambda: torch.mm(a, b), repeats)
    return 2.0 * n ** 3 / (med * 1e-3) * 1e-9


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--S", type=int, default=4096)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--H", type=int, default=8)
    ap.add_argument("--D", type=int, default=64)
    ap.add_argument("--kind", choices=["swat", "softmax"], default="swat")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--check", action="store_true", help="verify blocked == dense mask, then exit")
    a = ap.parse_args()
    if a.check:
        return self_check()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    S, w, H, D = a.S, a.window, a.H, a.D
    Sp = (S + w - 1) // w * w  # pad to whole blocks; padded queries are extra work torch pays
    softmax = a.kind == "softmax"
    slopes = torch.zeros(H) if softmax else alibi_balanced(H)
    q, k, v = (torch.randn(H, Sp, D) for _ in range(3))
    dout = torch.randn(H, Sp, D)

    def fwd():
        with torch.no_grad():
            attention(q, k, v, slopes, w, 0.0, softmax)

    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))

    def fwdbwd():
        for t in (qg, kg, vg):
            t.grad = None
        attention(qg, kg, vg, slopes, w, 0.0, softmax).backward(dout)

    fwd_ms, fwd_min = time_ms(fwd, a.repeats)
    fb_ms, fb_min = time_ms(fwdbwd, a.repeats)
    wc = min(w, S)
    flops = 4.0 * (S * wc - wc * wc / 2) * D * H
    print(json.dumps({
        "impl": "torch_blocked_einsum", "torch": torch.__version__, "threads": a.threads,
        "op": a.kind, "S": S, "window": w, "H": H, "D": D,
        "fwd_ms": round(fwd_ms, 3), "fwd_ms_min": round(fwd_min, 3),
        "fwdbwd_ms": round(fb_ms, 3), "fwdbwd_ms_min": round(fb_min, 3),
        "gflops_fwd": round(flops / (fwd_ms * 1e-3) * 1e-9, 2),
        "gflops_fwdbwd": round(3.5 * flops / (fb_ms * 1e-3) * 1e-9, 2),
        "sgemm_1024_gflops": round(sgemm_gflops(), 2),
    }))


if __name__ == "__main__":
    main()
