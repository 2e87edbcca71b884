// Softmax attention of a block of queries against a block of keys/values at ARBITRARY positions of
// one packed token stream: the building block of ring attention (src/dist/ring_attention.h, Ring
// Attention / ByteScale §5.1), where each rank holds some rows of a sequence (zig-zag chunks) and
// sees the other ranks' K/V one block at a time.
//
// Rows carry their index in the packed stream (the m, n of DESIGN.md §2.1, so ALiBi adds
// s_h·(m−n)) and, for queries, the first index of their document. Key n is visible from query m iff
//     doc_begin(m) ≤ n ≤ m   and   m − n < window          (causal, documents respected)
// so a full-attention call is window ≥ the stream length. GQA: query head h reads KV head h/(H/Hkv).
//
// Forward of one block gives a PARTIAL result: out_b = Σ_{n visible} p_mn v_n with
// p_mn = exp(z_mn − lse_b,m), lse_b,m = log Σ_{n visible} exp(z_mn) (−inf and out_b = 0 for a row
// that sees no key of the block). Partials over disjoint key blocks merge by log-sum-exp
// (online softmax, FlashAttention-2 §3.1):
//     lse = log(e^lse_1 + e^lse_2),   out = e^(lse_1 − lse) out_1 + e^(lse_2 − lse) out_2.
// Backward of one block, given the FINAL out and lse over all blocks (softmax backward restricted
// to the block's keys: p_mn = exp(z_mn − lse_m) is already the final probability):
//     Δ_m = dO_m·O_m,  dZ_mn = p_mn (dO_m·v_n − Δ_m),  dv_n += Σ_m p_mn dO_m,
//     dq_m += Σ_n dZ_mn k_n·scale,  dk_n += Σ_m dZ_mn q_m·scale.
// Conventions as backend.h: forward overwrites, backward accumulates (+=), null gradient = not
// needed. AttnShape gives H, Hkv, D, window, slopes, scale; its T, Tk, cu_seqlens and bias are not
// used (the rows say where each row is; softmax has no bias).
//
// `ref::attn_block_*` (plain loops, templates so the gradcheck runs in double) define the ops;
// `cpu::attn_block_*` are the fast versions (sgemm on query × key tiles, tiles outside the mask
// skipped, OpenMP), checked against them by tests/test_ring_ops.cpp. The op table (backend.h)
// carries them: cpu_ref → ref::, cpu → cpu::, both with the one attn_block_merge below; cuda →
// kernels/cuda/attn_block.cu (checked against ref:: by the same test, on a GPU).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/cpu/ref.h"

namespace longctx {

// The rows of a block are an AttnRows (backend.h). Throws Error unless the shape and rows
// (host memory) describe a valid block call.
void attn_block_check(const AttnShape& s, const AttnRows& qr, const AttnRows& kr, const char* op);

namespace ref {

inline bool block_visible(const AttnRows& qr, const AttnRows& kr, int i, int j, int window) {
  const int m = qr.idx[i], n = kr.idx[j];
  return n >= qr.doc_begin[i] && n <= m && m - n < window;
}

template <class F>
F block_logit(const F* q, const F* k, const AttnShape& s, const AttnRows& qr, const AttnRows& kr,
              int i, int j, int h, int g) {
  const F* qi = q + ((size_t)i * s.H + h) * s.D;
  const F* kj = k + ((size_t)j * s.Hkv + g) * s.D;
  F dot = 0;
  for (int d = 0; d < s.D; d++) dot += qi[d] * kj[d];
  return dot * F(s.scale) + F(slope_of(s, h)) * F(qr.idx[i] - kr.idx[j]);
}

// out (nq,H,D), lse (nq,H) = the block's partial result; q (nq,H,D); k, v (nk,Hkv,D).
template <class F>
void attn_block_forward(F* out, F* lse, const F* q, const F* k, const F* v, const AttnRows& qr,
                        const AttnRows& kr, const AttnShape& s) {
  attn_block_check(s, qr, kr, "attn_block_forward");
  const int rep = s.H / s.Hkv;
  for (int i = 0; i < qr.n; i++)
    for (int h = 0; h < s.H; h++) {
      const int g = h / rep;
      F mx = -INFINITY;
      for (int j = 0; j < kr.n; j++)
        if (block_visible(qr, kr, i, j, s.window))
          mx = std::max(mx, block_logit(q, k, s, qr, kr, i, j, h, g));
      F* o = out + ((size_t)i * s.H + h) * s.D;
      std::fill(o, o + s.D, F(0));
      if (mx == -INFINITY) {  // no visible key in this block
        lse[(size_t)i * s.H + h] = -INFINITY;
        continue;
      }
      F sum = 0;
      for (int j = 0; j < kr.n; j++)
        if (block_visible(qr, kr, i, j, s.window))
          sum += std::exp(block_logit(q, k, s, qr, kr, i, j, h, g) - mx);
      const F l = mx + std::log(sum);
      for (int j = 0; j < kr.n; j++)
        if (block_visible(qr, kr, i, j, s.window)) {
          const F p = std::exp(block_logit(q, k, s, qr, kr, i, j, h, g) - l);
          const F* vj = v + ((size_t)j * s.Hkv + g) * s.D;
          for (int d = 0; d < s.D; d++) o[d] += p * vj[d];
        }
      lse[(size_t)i * s.H + h] = l;
    }
}

// Backward of one block given the final out, lse (nq,H); accumulates dq (nq,H,D), dk, dv (nk,Hkv,D).
template <class F>
void attn_block_backward(F* dq, F* dk, F* dv, const F* dout, const F* out, const F* lse,
                         const F* q, const F* k, const F* v, const AttnRows& qr,
                         const AttnRows& kr, const AttnShape& s) {
  attn_block_check(s, qr, kr, "attn_block_backward");
  const int rep = s.H / s.Hkv, D = s.D;
  for (int i = 0; i < qr.n; i++)
    for (int h = 0; h < s.H; h++) {
      const int g = h / rep;
      const F* doi = dout + ((size_t)i * s.H + h) * D;
      const F* oi = out + ((size_t)i * s.H + h) * D;
      const F* qi = q + ((size_t)i * s.H + h) * D;
      F delta = 0;
      for (int d = 0; d < D; d++) delta += doi[d] * oi[d];
      for (int j = 0; j < kr.n; j++) {
        if (!block_visible(qr, kr, i, j, s.window)) continue;
        const F* kj = k + ((size_t)j * s.Hkv + g) * D;
        const F* vj = v + ((size_t)j * s.Hkv + g) * D;
        const F p = std::exp(block_logit(q, k, s, qr, kr, i, j, h, g) - lse[(size_t)i * s.H + h]);
        F dp = 0;
        for (int d = 0; d < D; d++) dp += doi[d] * vj[d];
        const F dz = p * (dp - delta) * F(s.scale);
        for (int d = 0; d < D; d++) {
          if (dv) dv[((size_t)j * s.Hkv + g) * D + d] += p * doi[d];
          if (dq) dq[((size_t)i * s.H + h) * D + d] += dz * kj[d];
          if (dk) dk[((size_t)j * s.Hkv + g) * D + d] += dz * qi[d];
        }
      }
    }
}

}  // namespace ref

// Online-softmax merge of a block's partial (out_b, lse_b) into the running (out, lse), rows × H
// heads of D: the header's formula; a side with lse = −inf contributes nothing.
template <class F>
void attn_block_merge(F* out, F* lse, const F* out_b, const F* lse_b, int rows, int H, int D) {
  for (size_t r = 0; r < (size_t)rows * H; r++) {
    const F a = lse[r], b = lse_b[r];
    if (b == -INFINITY) continue;
    F* o = out + r * D;
    const F* ob = out_b + r * D;
    if (a == -INFINITY) {
      std::copy(ob, ob + D, o);
      lse[r] = b;
      continue;
    }
    const F mx = std::max(a, b), l = mx + std::log(std::exp(a - mx) + std::exp(b - mx));
    const F wa = std::exp(a - l), wb = std::exp(b - l);
    for (int d = 0; d < D; d++) o[d] = wa * o[d] + wb * ob[d];
    lse[r] = l;
  }
}

namespace cpu {
// Fast versions (attn_block.cpp), same contracts as ref:: (float).
void attn_block_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                        const AttnRows& qr, const AttnRows& kr, const AttnShape& s);
void attn_block_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                         const float* lse, const float* q, const float* k, const float* v,
                         const AttnRows& qr, const AttnRows& kr, const AttnShape& s);
}  // namespace cpu

}  // namespace longctx
