// Ring attention's block kernels on the GPU (attn_block.cuh; math and reference:
// kernels/cpu/attn_block.h). fp32 in and out, fp32 arithmetic.
//   forward:  one warp per (query row i, head h). Key rows are ascending, so the keys row i sees
//             are one contiguous range [lo, hi) of the block (two binary searches on kr.idx);
//             the warp walks it key by key with online softmax (running max, Σexp, rescaled O;
//             FlashAttention-2 §3.1) and writes the block's partial out and lse.
//   backward: the same walk given the final lse: p = exp(z − lse), dZ = p(dO·v − Δ)·scale,
//             Δ = dO·O; dq of the row in registers (one warp owns it), dk/dv by fp32 atomics (the
//             query rows and the GQA group's heads add up; the sum order is not deterministic).
//   merge:    one warp per (row, head): the log-sum-exp merge, lanes over D.
// Speed: the straightforward kernel, chosen for being easy to check: every key costs a 5-step
// warp reduction (two in the backward) and a few dependent exps per (row, head), q·k and p·v run
// on CUDA cores in fp32, and every query row re-reads its keys from L2 — roughly the structure of
// window_attention.cu's backward. Estimated from the instruction count (~20 dependent warp
// instructions a key at D 64): a few fp32 TFLOP/s on an H100, some 50× below the wgmma SWAT
// kernel's 285+ (bench/results/cuda_attention_2026-11-25.md); not yet measured. A tiled tensor-core version (swat_attention.cu's tiles with a row-index mask) is the
// next step if ring attention on GPUs becomes a training path.
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/attn_block.cuh"
#include "kernels/cuda/ops.h"  // check_launch
#include "kernels/cuda/warp.cuh"

namespace longctx::cuda {

namespace {

constexpr int per_lane = attn_block_max_d / 32;
constexpr int merge_warps = 4;  // (row, head) pairs per CTA of the merge

struct BlockArgs {
  const int32_t* qidx;  // query rows' stream indices (nq)
  const int32_t* qdoc;  // their documents' first indices (nq)
  const int32_t* kidx;  // key rows' stream indices (nk), ascending
  int nq, nk, H, Hkv, D, window;
  const float* slopes;  // null: no ALiBi
  float scale;
};

// First row of idx[0, n) (ascending) with idx ≥ x (strict = false) or idx > x (strict = true).
__device__ int search_rows(const int32_t* idx, int n, long long x, bool strict) {
  int l = 0, r = n;
  while (l < r) {
    const int mid = (l + r) / 2;
    if (idx[mid] < x || (strict && idx[mid] == x)) l = mid + 1;
    else r = mid;
  }
  return l;
}

// Query row i's stream index m and its visible key rows [lo, hi): doc_begin(m) ≤ n ≤ m, m−n < w.
__device__ void visible_keys(const BlockArgs& a, int i, int* m, int* lo, int* hi) {
  *m = a.qidx[i];
  const long long first = max((long long)a.qdoc[i], (long long)*m - a.window + 1);
  *lo = search_rows(a.kidx, a.nk, first, false);
  *hi = search_rows(a.kidx, a.nk, *m, true);
}

// z = q·k·scale + s_h·(m − n) of this warp's query row (qr: its lanes' elements) and key row j.
__device__ float block_logit(const BlockArgs& a, const float* qr, const float* kj, int lane,
                             float slope, int m, int j) {
  float dot = 0.0f;
  for (int e = 0; e < per_lane; e++) {
    const int d = lane + 32 * e;
    if (d < a.D) dot += qr[e] * kj[d];
  }
  return warp_sum(dot) * a.scale + slope * float(m - a.kidx[j]);
}

// The row's elements this lane holds (d = lane + 32e), 0 past D.
__device__ void load_row(float* r, const float* x, int lane, int D) {
  for (int e = 0; e < per_lane; e++) {
    const int d = lane + 32 * e;
    r[e] = d < D ? x[d] : 0.0f;
  }
}

__global__ void k_block_forward(float* out, float* lse, const float* q, const float* k,
                                const float* v, BlockArgs a) {
  const int i = blockIdx.x, h = blockIdx.y, lane = threadIdx.x, g = h / (a.H / a.Hkv);
  int m, lo, hi;
  visible_keys(a, i, &m, &lo, &hi);
  const size_t row = (size_t(i) * a.H + h) * a.D;
  const float slope = a.slopes ? a.slopes[h] : 0.0f;
  float qr[per_lane], o[per_lane] = {};
  load_row(qr, q + row, lane, a.D);
  float mx = -INFINITY, l = 0.0f;  // running max and Σexp
  for (int j = lo; j < hi; j++) {
    const size_t kv = (size_t(j) * a.Hkv + g) * a.D;
    const float z = block_logit(a, qr, k + kv, lane, slope, m, j);
    const float mn = fmaxf(mx, z), c = expf(mx - mn), p = expf(z - mn);  // c = 0 on the first key
    l = l * c + p;
    for (int e = 0; e < per_lane; e++) {
      const int d = lane + 32 * e;
      o[e] = o[e] * c + (d < a.D ? p * v[kv + d] : 0.0f);
    }
    mx = mn;
  }
  for (int e = 0; e < per_lane; e++) {
    const int d = lane + 32 * e;
    if (d < a.D) out[row + d] = l > 0.0f ? o[e] / l : 0.0f;
  }
  if (lane == 0) lse[size_t(i) * a.H + h] = l > 0.0f ? mx + logf(l) : -INFINITY;
}

__global__ void k_block_backward(float* dq, float* dk, float* dv, const float* dout,
                                 const float* out, const float* lse, const float* q,
                                 const float* k, const float* v, BlockArgs a) {
  const int i = blockIdx.x, h = blockIdx.y, lane = threadIdx.x, g = h / (a.H / a.Hkv);
  int m, lo, hi;
  visible_keys(a, i, &m, &lo, &hi);
  if (lo >= hi) return;  // warp-uniform
  const size_t row = (size_t(i) * a.H + h) * a.D;
  const float slope = a.slopes ? a.slopes[h] : 0.0f;
  float qr[per_lane], dor[per_lane], orow[per_lane], dqr[per_lane] = {};
  load_row(qr, q + row, lane, a.D);
  load_row(dor, dout + row, lane, a.D);
  load_row(orow, out + row, lane, a.D);
  float delta = 0.0f;  // Δ = dO·O
  for (int e = 0; e < per_lane; e++) delta += dor[e] * orow[e];
  delta = warp_sum(delta);
  const float L = lse[size_t(i) * a.H + h];
  for (int j = lo; j < hi; j++) {
    const size_t kv = (size_t(j) * a.Hkv + g) * a.D;
    const float p = expf(block_logit(a, qr, k + kv, lane, slope, m, j) - L);
    float dp = 0.0f;
    for (int e = 0; e < per_lane; e++) {
      const int d = lane + 32 * e;
      if (d < a.D) dp += dor[e] * v[kv + d];
    }
    const float dz = p * (warp_sum(dp) - delta) * a.scale;
    for (int e = 0; e < per_lane; e++) {
      const int d = lane + 32 * e;
      if (d >= a.D) continue;
      dqr[e] += dz * k[kv + d];
      if (dk) atomicAdd(&dk[kv + d], dz * qr[e]);
      if (dv) atomicAdd(&dv[kv + d], p * dor[e]);
    }
  }
  if (dq)
    for (int e = 0; e < per_lane; e++) {
      const int d = lane + 32 * e;
      if (d < a.D) dq[row + d] += dqr[e];
    }
}

// lse = log(e^lse + e^lse_b), out = e^(lse_old − lse) out + e^(lse_b − lse) out_b; a side with
// lse = −inf contributes nothing (kernels/cpu/attn_block.h attn_block_merge).
__global__ void k_block_merge(float* out, float* lse, const float* out_b, const float* lse_b,
                              size_t pairs, int D) {
  const size_t r = size_t(blockIdx.x) * merge_warps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= pairs) return;  // warp-uniform, as below
  const float a = lse[r], b = lse_b[r];
  if (b == -INFINITY) return;
  float* o = out + r * D;
  const float* ob = out_b + r * D;
  float l = b;
  if (a == -INFINITY) {
    for (int d = lane; d < D; d += 32) o[d] = ob[d];
  } else {
    const float mx = fmaxf(a, b);
    l = mx + logf(expf(a - mx) + expf(b - mx));
    const float wa = expf(a - l), wb = expf(b - l);
    for (int d = lane; d < D; d += 32) o[d] = wa * o[d] + wb * ob[d];
  }
  __syncwarp();  // every lane has read lse[r]
  if (lane == 0) lse[r] = l;
}

BlockArgs block_args(const AttnRows& qr, const AttnRows& kr, const AttnShape& s) {
  if (s.D < 1 || s.D > attn_block_max_d)
    throw std::invalid_argument("head dim " + std::to_string(s.D) + " is outside [1, " +
                                std::to_string(attn_block_max_d) + "]");
  return {qr.idx, qr.doc_begin, kr.idx, qr.n, kr.n, s.H, s.Hkv, s.D, s.window, s.slopes, s.scale};
}

}  // namespace

void attn_block_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                        const AttnRows& qr, const AttnRows& kr, const AttnShape& s) {
  const BlockArgs a = block_args(qr, kr, s);
  if (a.nq == 0) return;  // (a block without keys still writes out = 0, lse = −inf)
  k_block_forward<<<dim3(a.nq, a.H), 32>>>(out, lse, q, k, v, a);
  check_launch("attn_block_forward");
}

void attn_block_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                         const float* lse, const float* q, const float* k, const float* v,
                         const AttnRows& qr, const AttnRows& kr, const AttnShape& s) {
  const BlockArgs a = block_args(qr, kr, s);
  if (a.nq == 0 || a.nk == 0 || (!dq && !dk && !dv)) return;
  k_block_backward<<<dim3(a.nq, a.H), 32>>>(dq, dk, dv, dout, out, lse, q, k, v, a);
  check_launch("attn_block_backward");
}

void attn_block_merge(float* out, float* lse, const float* out_b, const float* lse_b, int rows,
                      int H, int D) {
  const size_t pairs = size_t(rows) * size_t(H);
  if (pairs == 0) return;
  const unsigned blocks = unsigned((pairs + merge_warps - 1) / merge_warps);
  k_block_merge<<<blocks, 32 * merge_warps>>>(out, lse, out_b, lse_b, pairs, D);
  check_launch("attn_block_merge");
}

}  // namespace longctx::cuda
