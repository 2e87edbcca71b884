# Anchor for `bench train --profile-ops` (bench/results/opprof_2026-11-26_h200.md), run on the GPU
# machine: `python3 bench/cuda/gemm_anchor.py`. Pure bf16 GEMM time (PyTorch/cuBLAS, bf16 in,
# fp32 accumulate) of one swat-340m training step's 168 layer GEMMs (B4 x S4096 = 16384 tokens),
# and the fp32->bf16 conversions the cuda backend makes around them (each matmul_forward converts
# inp + weight; each matmul_backward dout once, inp, weight).
import torch
T, d, F, L = 16384, 1024, 2816, 24
shapes = [(d, d)] * 4 + [(d, F)] * 2 + [(F, d)]  # (C, OC): q k v o, gate up, down
def t(fn, n=20):
    for _ in range(3): fn()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n): fn()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e) / n
fwd = bwd = conv_f = conv_b = 0.0
for C, OC in shapes:
    x = torch.randn(T, C, device='cuda'); w = torch.randn(OC, C, device='cuda'); g = torch.randn(T, OC, device='cuda')
    xb, wb, gb = x.bfloat16(), w.bfloat16(), g.bfloat16()
    fwd += L * t(lambda: xb @ wb.t())
    bwd += L * (t(lambda: gb @ wb) + t(lambda: gb.t() @ xb))
    conv_f += L * (t(lambda: x.bfloat16()) + t(lambda: w.bfloat16()))
    conv_b += L * (t(lambda: g.bfloat16()) + t(lambda: x.bfloat16()) + t(lambda: w.bfloat16()))
print(f"pure bf16 GEMM ms/step: forward {fwd:.2f} backward {bwd:.2f}; fp32->bf16 conversions: forward {conv_f:.2f} backward {conv_b:.2f}")
x = torch.randn(T, d, device='cuda').bfloat16(); w = torch.randn(32000, d, device='cuda').bfloat16()
print(f"lm_head: one (T,d)x(V,d)^T GEMM {t(lambda: x @ w.t()):.2f} ms (x4 = sweep, recompute, dx, dW)")
a = torch.randn(8192, 8192, device='cuda').bfloat16()
ms = t(lambda: a @ a, 10); print(f"8192^3 bf16: {2*8192**3/ms/1e9:.0f} TFLOP/s")
