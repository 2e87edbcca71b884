// Fast block attention (see attn_block.h for the math): query tiles of BQ rows × key tiles of BK
// rows, both in the blocks' own (ascending) row order. Rows are sorted by stream index, so the
// keys a query m sees are one contiguous range [jlo_m, jhi_m) of key rows (binary search once per
// call): no per-element mask, and tile pairs outside every range are skipped (with zig-zag
// placement about half of the cross-rank blocks are fully masked).
//   forward per (head h, query tile): for each key tile  S = Q·Kᵀ (sgemm), online softmax over
//     the visible range (running max and sum, rescale of O), O += P·V (sgemm); out = O / l.
//   backward, two passes so that no two threads write one gradient row (no atomics, deterministic):
//     (g, key tile) → dV += Pᵀ·dO, dK += dZᵀ·Q over its query heads and query tiles;
//     (h, query tile) → dQ += dZ·K;  P and dZ = P(dP − Δ)·scale recomputed in each (7 GEMMs a pair
//     instead of 5).
// q/k/v are read in place (sgemm takes the row stride); gradients accumulate in place (β = 1).
#include "kernels/cpu/attn_block.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu.h"
#include "kernels/cpu/simd.h"

namespace longctx {

void attn_block_check(const AttnShape& s, const AttnRows& qr, const AttnRows& kr, const char* op) {
  LCX_CHECK(s.H >= 1 && s.Hkv >= 1 && s.D >= 1 && s.H % s.Hkv == 0,
            "{}: bad heads H={} Hkv={} D={} (H must be a multiple of Hkv)", op, s.H, s.Hkv, s.D);
  LCX_CHECK(s.window >= 1, "{}: window must be >= 1, got {}", op, s.window);
  LCX_CHECK(qr.n >= 0 && kr.n >= 0, "{}: negative row count {} / {}", op, qr.n, kr.n);
  LCX_CHECK(qr.n == 0 || (qr.idx && qr.doc_begin), "{}: query rows need idx and doc_begin", op);
  LCX_CHECK(kr.n == 0 || kr.idx, "{}: key rows need idx", op);
  for (const AttnRows* r : {&qr, &kr})
    for (int i = 1; i < r->n; i++)
      LCX_CHECK(r->idx[i] > r->idx[i - 1],
                "{}: {} row indices must increase, row {} is {} after {}", op,
                r == &qr ? "query" : "key", i, r->idx[i], r->idx[i - 1]);
  for (int i = 0; i < qr.n; i++)
    LCX_CHECK(qr.doc_begin[i] <= qr.idx[i], "{}: query row {} at {} has document start {}", op, i,
              qr.idx[i], qr.doc_begin[i]);
}

namespace cpu {
namespace {

constexpr int BQ = 64;   // query rows per tile
constexpr int BK = 256;  // key rows per tile (multiple of 16: exp in 16-lane vectors)

// Visible key range [lo[i], hi[i]) of every query row (key rows ascending).
struct KeyRanges {
  std::vector<int> lo, hi;
  KeyRanges(const AttnRows& qr, const AttnRows& kr, int window) : lo(size_t(qr.n)), hi(size_t(qr.n)) {
    const int32_t* kb = kr.idx;
    const int32_t* ke = kr.idx + kr.n;
    for (int i = 0; i < qr.n; i++) {
      const int64_t m = qr.idx[i];
      const int64_t first = std::max<int64_t>(qr.doc_begin[i], m - window + 1);
      lo[size_t(i)] = int(std::lower_bound(kb, ke, first) - kb);
      hi[size_t(i)] = int(std::upper_bound(kb, ke, m) - kb);
    }
  }
  // Does any row of [i0, i1) see a key of [k0, k1)?
  bool meets(int i0, int i1, int k0, int k1) const {
    for (int i = i0; i < i1; i++)
      if (std::max(lo[size_t(i)], k0) < std::min(hi[size_t(i)], k1)) return true;
    return false;
  }
};

// x[j] = exp(x[j] − sub) for j in [a, b): 16-lane exp of simd.h, scalar tail.
void exp_range(float* x, int a, int b, float sub) {
  int j = a;
  for (; j + 16 <= b; j += 16) store16(x + j, exp16(load16(x + j) - sub));
  for (; j < b; j++) x[j] = std::exp(x[j] - sub);
}

// Per-row visible key range of one tile pair, relative to the key tile: [a[i], b[i]).
struct TileRange {
  int a[BQ], b[BQ];
};

// The tile pair (head h, query rows [i0, i0+nq), key rows [k0, k0+nk)): S = Q·Kᵀ into P (nq × BK,
// sgemm), then z = S·scale + s_h(m−n) on each row's visible range tr (entries outside it are
// garbage: callers read [a, b) only or zero the rest).
void tile_logits(float* P, TileRange& tr, const float* q, const float* k, const AttnRows& qr,
                 const AttnRows& kr, const KeyRanges& ranges, const AttnShape& s, int h, int i0,
                 int nq, int k0, int nk) {
  const int g = h / (s.H / s.Hkv);
  const size_t ldq = size_t(s.H) * s.D, ldk = size_t(s.Hkv) * s.D;
  sgemm(false, true, nq, nk, s.D, s.scale, q + size_t(i0) * ldq + size_t(h) * s.D, int(ldq),
        k + size_t(k0) * ldk + size_t(g) * s.D, int(ldk), 0.0f, P, BK);
  const float slope = ref::slope_of(s, h);
  for (int i = 0; i < nq; i++) {
    float* z = P + size_t(i) * BK;
    const int a = std::clamp(ranges.lo[size_t(i0 + i)] - k0, 0, nk);
    const int b = std::clamp(ranges.hi[size_t(i0 + i)] - k0, a, nk);
    const int32_t m = qr.idx[i0 + i];
    for (int j = a; j < b; j++) z[j] += slope * float(m - kr.idx[k0 + j]);
    tr.a[i] = a, tr.b[i] = b;
  }
}

// z → p = exp(z − lse_i) (the final probabilities; 0 outside the visible range) and
// dZ = p (dP − Δ_i)·scale with dP = dO·Vᵀ (sgemm into dZ).
void tile_grads(float* P, float* dZ, const TileRange& tr, const float* dout, const float* v,
                const float* lse, const float* delta, const AttnShape& s, int h, int i0, int nq,
                int k0, int nk) {
  const int g = h / (s.H / s.Hkv);
  const size_t ldq = size_t(s.H) * s.D, ldk = size_t(s.Hkv) * s.D;
  sgemm(false, true, nq, nk, s.D, 1.0f, dout + size_t(i0) * ldq + size_t(h) * s.D, int(ldq),
        v + size_t(k0) * ldk + size_t(g) * s.D, int(ldk), 0.0f, dZ, BK);
  for (int i = 0; i < nq; i++) {
    float* p = P + size_t(i) * BK;
    float* dz = dZ + size_t(i) * BK;
    const size_t r = size_t(i0 + i) * s.H + h;
    const int a = tr.a[i], b = tr.b[i];
    exp_range(p, a, b, lse[r]);
    std::fill(p, p + a, 0.0f);
    std::fill(p + b, p + nk, 0.0f);
    for (int j = 0; j < nk; j++) dz[j] = p[j] * (dz[j] - delta[r]) * s.scale;
  }
}

}  // namespace

void attn_block_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                        const AttnRows& qr, const AttnRows& kr, const AttnShape& s) {
  attn_block_check(s, qr, kr, "attn_block_forward");
  const int H = s.H, D = s.D, rep = s.H / s.Hkv;
  const size_t ldq = size_t(H) * D, ldk = size_t(s.Hkv) * D;
  const KeyRanges ranges(qr, kr, s.window);
  const int nqt = (qr.n + BQ - 1) / BQ;
  const long units = long(H) * nqt;
#pragma omp parallel if (units > 1)
  {
    std::vector<float> P(size_t(BQ) * BK), O(size_t(BQ) * D), mx(BQ), l(BQ);
    TileRange tr;
#pragma omp for schedule(dynamic)
    for (long u = 0; u < units; u++) {
      const int h = int(u / nqt), i0 = int(u % nqt) * BQ, nq = std::min(BQ, qr.n - i0);
      std::fill(O.begin(), O.end(), 0.0f);
      std::fill(mx.begin(), mx.end(), -INFINITY);
      std::fill(l.begin(), l.end(), 0.0f);
      for (int k0 = 0; k0 < kr.n; k0 += BK) {
        const int nk = std::min(BK, kr.n - k0);
        if (!ranges.meets(i0, i0 + nq, k0, k0 + nk)) continue;
        tile_logits(P.data(), tr, q, k, qr, kr, ranges, s, h, i0, nq, k0, nk);
        for (int i = 0; i < nq; i++) {  // online softmax: rescale by e^(m_old − m_new)
          float* z = P.data() + size_t(i) * BK;
          const int a = tr.a[i], b = tr.b[i];
          std::fill(z, z + a, 0.0f);
          std::fill(z + b, z + nk, 0.0f);
          if (a == b) continue;
          const float mnew = std::max(mx[size_t(i)], *std::max_element(z + a, z + b));
          const float alpha = std::exp(mx[size_t(i)] - mnew);  // 0 on the first visible tile
          exp_range(z, a, b, mnew);
          float sum = 0.0f;
          for (int j = a; j < b; j++) sum += z[j];
          l[size_t(i)] = l[size_t(i)] * alpha + sum;
          mx[size_t(i)] = mnew;
          if (alpha != 1.0f)
            for (int d = 0; d < D; d++) O[size_t(i) * D + size_t(d)] *= alpha;
        }
        sgemm(false, false, nq, D, nk, 1.0f, P.data(), BK,
              v + size_t(k0) * ldk + size_t(h / rep) * D, int(ldk), 1.0f, O.data(), D);
      }
      for (int i = 0; i < nq; i++) {
        float* o = out + size_t(i0 + i) * ldq + size_t(h) * D;
        const float li = l[size_t(i)];
        for (int d = 0; d < D; d++) o[d] = li > 0 ? O[size_t(i) * D + size_t(d)] / li : 0.0f;
        lse[size_t(i0 + i) * H + h] = li > 0 ? mx[size_t(i)] + std::log(li) : -INFINITY;
      }
    }
  }
}

void attn_block_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                         const float* lse, const float* q, const float* k, const float* v,
                         const AttnRows& qr, const AttnRows& kr, const AttnShape& s) {
  attn_block_check(s, qr, kr, "attn_block_backward");
  if ((!dq && !dk && !dv) || qr.n == 0 || kr.n == 0) return;
  const int H = s.H, D = s.D, rep = s.H / s.Hkv;
  const size_t ldq = size_t(H) * D, ldk = size_t(s.Hkv) * D;
  const KeyRanges ranges(qr, kr, s.window);
  const int nqt = (qr.n + BQ - 1) / BQ, nkt = (kr.n + BK - 1) / BK;
  std::vector<float> delta(size_t(qr.n) * H);  // Δ_m = dO_m·O_m
  for (size_t r = 0; r < delta.size(); r++) {
    float acc = 0.0f;
    for (int d = 0; d < D; d++) acc += dout[r * D + size_t(d)] * out[r * D + size_t(d)];
    delta[r] = acc;
  }
  // Pass 1: dK, dV of each (KV head, key tile).
  if (dk || dv) {
    const long units = long(s.Hkv) * nkt;
#pragma omp parallel if (units > 1)
    {
      std::vector<float> P(size_t(BQ) * BK), dZ(size_t(BQ) * BK);
      TileRange tr;
#pragma omp for schedule(dynamic)
      for (long u = 0; u < units; u++) {
        const int g = int(u / nkt), k0 = int(u % nkt) * BK, nk = std::min(BK, kr.n - k0);
        for (int h = g * rep; h < (g + 1) * rep; h++)
          for (int i0 = 0; i0 < qr.n; i0 += BQ) {
            const int nq = std::min(BQ, qr.n - i0);
            if (!ranges.meets(i0, i0 + nq, k0, k0 + nk)) continue;
            tile_logits(P.data(), tr, q, k, qr, kr, ranges, s, h, i0, nq, k0, nk);
            tile_grads(P.data(), dZ.data(), tr, dout, v, lse, delta.data(), s, h, i0, nq, k0, nk);
            const size_t qo = size_t(i0) * ldq + size_t(h) * D, ko = size_t(k0) * ldk + size_t(g) * D;
            if (dv)  // dV += Pᵀ·dO
              sgemm(true, false, nk, D, nq, 1.0f, P.data(), BK, dout + qo, int(ldq), 1.0f, dv + ko, int(ldk));
            if (dk)  // dK += dZᵀ·Q
              sgemm(true, false, nk, D, nq, 1.0f, dZ.data(), BK, q + qo, int(ldq), 1.0f, dk + ko, int(ldk));
          }
      }
    }
  }
  // Pass 2: dQ of each (head, query tile).
  if (dq) {
    const long units = long(H) * nqt;
#pragma omp parallel if (units > 1)
    {
      std::vector<float> P(size_t(BQ) * BK), dZ(size_t(BQ) * BK);
      TileRange tr;
#pragma omp for schedule(dynamic)
      for (long u = 0; u < units; u++) {
        const int h = int(u / nqt), i0 = int(u % nqt) * BQ, nq = std::min(BQ, qr.n - i0);
        for (int k0 = 0; k0 < kr.n; k0 += BK) {
          const int nk = std::min(BK, kr.n - k0);
          if (!ranges.meets(i0, i0 + nq, k0, k0 + nk)) continue;
          tile_logits(P.data(), tr, q, k, qr, kr, ranges, s, h, i0, nq, k0, nk);
          tile_grads(P.data(), dZ.data(), tr, dout, v, lse, delta.data(), s, h, i0, nq, k0, nk);
          sgemm(false, false, nq, D, nk, 1.0f, dZ.data(), BK,  // dQ += dZ·K
                k + size_t(k0) * ldk + size_t(h / rep) * D, int(ldk), 1.0f,
                dq + size_t(i0) * ldq + size_t(h) * D, int(ldq));
        }
      }
    }
  }
}

}  // namespace cpu
}  // namespace longctx
