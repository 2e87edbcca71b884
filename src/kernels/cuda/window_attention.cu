// Simple sliding-window attention on the GPU (ops.h): SWAT (σ) and softmax, any head dim ≤ 256,
// documents (cu_seqlens), GQA, ALiBi, queries after a KV cache (Tk > T, forward). One warp per
// (query, head) walks W(m) = [lo, m] key by key (kernels/cpu/ref.h's loops, DESIGN.md §2.1);
// correct but not fast: the model uses the wgmma kernel (swat_attention.cu) for SWAT at D 64/128.
#include <cmath>
#include <stdexcept>

#include "kernels/cuda/ops.h"

namespace longctx::cuda {

namespace {

constexpr int max_per_lane = 8;  // D ≤ 256

__device__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Key index m of query row i and the first key lo of its window W(m).
__device__ void window_of(const WindowArgs& a, int i, int* m, int* lo) {
  if (a.Tk > a.T) {  // one document of Tk keys; the queries are its last T positions
    *m = a.Tk - a.T + i;
    *lo = max(0, *m - a.window + 1);
    return;
  }
  int begin = 0;
  if (a.cu_seqlens) {  // last document start ≤ i
    int l = 0, r = a.n_docs - 1;
    while (l < r) {
      const int mid = (l + r + 1) / 2;
      if (a.cu_seqlens[mid] <= i) l = mid; else r = mid - 1;
    }
    begin = a.cu_seqlens[l];
  }
  *m = i;
  *lo = max(begin, i - a.window + 1);
}

__device__ float logit(const WindowArgs& a, const float* qr, const float* kn, int lane, int h,
                       int m, int n) {
  float dot = 0.0f;
  for (int j = 0; j < max_per_lane; j++) {
    const int d = lane + 32 * j;
    if (d < a.D) dot += qr[j] * kn[d];
  }
  return warp_sum(dot) * a.scale + (a.slopes ? a.slopes[h] : 0.0f) * float(m - n);
}

template <bool softmax>
__global__ void k_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                          WindowArgs a) {
  const int i = blockIdx.x, h = blockIdx.y, lane = threadIdx.x, g = h / (a.H / a.Hkv);
  int m, lo;
  window_of(a, i, &m, &lo);
  float qr[max_per_lane], o[max_per_lane] = {};
  for (int j = 0; j < max_per_lane; j++) {
    const int d = lane + 32 * j;
    qr[j] = d < a.D ? q[(size_t(i) * a.H + h) * a.D + d] : 0.0f;
  }
  float mx = -INFINITY, l = 0.0f;  // softmax: running max and Σexp (online softmax)
  for (int n = lo; n <= m; n++) {
    const float* kn = k + (size_t(n) * a.Hkv + g) * a.D;
    const float* vn = v + (size_t(n) * a.Hkv + g) * a.D;
    const float z = logit(a, qr, kn, lane, h, m, n);
    float p;
    if (softmax) {
      const float mn = fmaxf(mx, z), c = expf(mx - mn);
      p = expf(z - mn);
      l = l * c + p;
      for (int j = 0; j < max_per_lane; j++) o[j] *= c;
      mx = mn;
    } else {
      p = 1.0f / (1.0f + expf(-(z + a.bias)));
    }
    for (int j = 0; j < max_per_lane; j++) {
      const int d = lane + 32 * j;
      if (d < a.D) o[j] += p * vn[d];
    }
  }
  for (int j = 0; j < max_per_lane; j++) {
    const int d = lane + 32 * j;
    if (d < a.D) out[(size_t(i) * a.H + h) * a.D + d] = softmax ? o[j] / l : o[j];
  }
  if (softmax && lane == 0) lse[size_t(i) * a.H + h] = mx + logf(l);
}

// dP = dO·v; dZ = p(1−p)dP (σ) or p(dP − Δ), Δ = dO·O (softmax); dq += dZ k·scale (this warp's
// row), dk += dZ q·scale and dv += p dO by atomics (GQA: the group's heads add up).
template <bool softmax>
__global__ void k_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                           const float* lse, const float* q, const float* k, const float* v,
                           WindowArgs a) {
  const int i = blockIdx.x, h = blockIdx.y, lane = threadIdx.x, g = h / (a.H / a.Hkv);
  int m, lo;
  window_of(a, i, &m, &lo);
  const size_t row = (size_t(i) * a.H + h) * a.D;
  float qr[max_per_lane], dor[max_per_lane], dqr[max_per_lane] = {};
  float delta = 0.0f;
  for (int j = 0; j < max_per_lane; j++) {
    const int d = lane + 32 * j;
    qr[j] = d < a.D ? q[row + d] : 0.0f;
    dor[j] = d < a.D ? dout[row + d] : 0.0f;
    if (softmax && d < a.D) delta += dor[j] * out[row + d];
  }
  if (softmax) delta = warp_sum(delta);
  const float l = softmax ? lse[size_t(i) * a.H + h] : 0.0f;
  for (int n = lo; n <= m; n++) {
    const size_t kv = (size_t(n) * a.Hkv + g) * a.D;
    const float z = logit(a, qr, k + kv, lane, h, m, n);
    const float p = softmax ? expf(z - l) : 1.0f / (1.0f + expf(-(z + a.bias)));
    float dp = 0.0f;
    for (int j = 0; j < max_per_lane; j++) {
      const int d = lane + 32 * j;
      if (d < a.D) dp += dor[j] * v[kv + d];
    }
    dp = warp_sum(dp);
    const float dz = (softmax ? p * (dp - delta) : p * (1.0f - p) * dp) * a.scale;
    for (int j = 0; j < max_per_lane; j++) {
      const int d = lane + 32 * j;
      if (d >= a.D) continue;
      dqr[j] += dz * k[kv + d];
      if (dk) atomicAdd(&dk[kv + d], dz * qr[j]);
      if (dv) atomicAdd(&dv[kv + d], p * dor[j]);
    }
  }
  if (dq)
    for (int j = 0; j < max_per_lane; j++) {
      const int d = lane + 32 * j;
      if (d < a.D) dq[row + d] += dqr[j];
    }
}

void check(const WindowArgs& a) {
  if (a.D < 1 || a.D > 32 * max_per_lane)
    throw std::invalid_argument("cuda window attention: head dim " + std::to_string(a.D) +
                                " is outside [1, 256]");
}

}  // namespace

void window_attention_forward(float* out, float* lse, const float* q, const float* k,
                              const float* v, const WindowArgs& a, bool softmax) {
  check(a);
  if (a.T <= 0) return;
  const dim3 grid(a.T, a.H);
  if (softmax) k_forward<true><<<grid, 32>>>(out, lse, q, k, v, a);
  else k_forward<false><<<grid, 32>>>(out, lse, q, k, v, a);
  check_launch("window_attention_forward");
}

void window_attention_backward(float* dq, float* dk, float* dv, const float* dout,
                               const float* out, const float* lse, const float* q,
                               const float* k, const float* v, const WindowArgs& a, bool softmax) {
  check(a);
  if (a.T <= 0) return;
  const dim3 grid(a.T, a.H);
  if (softmax) k_backward<true><<<grid, 32>>>(dq, dk, dv, dout, out, lse, q, k, v, a);
  else k_backward<false><<<grid, 32>>>(dq, dk, dv, dout, out, lse, q, k, v, a);
  check_launch("window_attention_backward");
}

}  // namespace longctx::cuda
