// Cross-entropy over vocabulary chunks (ops.h): the row kernels between the chunk GEMMs of the
// cuda backend's lm_head_xent (same sweep as kernels/cpu/xent.cpp: log-sum-exp, then gradient).
#include <cmath>

#include "kernels/cuda/ops.h"

namespace longctx::cuda {

namespace {

constexpr int threads = 256;

// Block-wide reduction with `op` (identity `id`); the result is valid in every thread.
template <class Op>
__device__ float block_reduce(float x, Op op, float id) {
  __shared__ float s[32];
  for (int o = 16; o > 0; o >>= 1) x = op(x, __shfl_xor_sync(0xffffffffu, x, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) s[warp] = x;
  __syncthreads();
  x = lane < nw ? s[lane] : id;
  for (int o = 16; o > 0; o >>= 1) x = op(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// One block per row: merge this chunk's (max, Σexp) into the running ones.
__global__ void k_stats(const float* logits, int Vc, int v0, const int32_t* targets, float* mx,
                        float* se, float* target_logit) {
  const int t = blockIdx.x;
  const int y = targets[t];
  if (y < 0) return;
  const float* l = logits + size_t(t) * Vc;
  float m = -INFINITY;
  for (int v = threadIdx.x; v < Vc; v += blockDim.x) m = fmaxf(m, l[v]);
  m = block_reduce(m, [](float a, float b) { return fmaxf(a, b); }, -INFINITY);
  float s = 0.0f;
  for (int v = threadIdx.x; v < Vc; v += blockDim.x) s += expf(l[v] - m);
  s = block_reduce(s, [](float a, float b) { return a + b; }, 0.0f);
  if (threadIdx.x == 0) {
    const float m0 = mx[t], mn = fmaxf(m0, m);
    se[t] = se[t] * expf(m0 - mn) + s * expf(m - mn);
    mx[t] = mn;
    if (y >= v0 && y < v0 + Vc) target_logit[t] = l[y - v0];
  }
}

__global__ void k_loss(float* losses, const float* mx, const float* se, const float* tl,
                       const int32_t* targets, int rows) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < rows) losses[t] = targets[t] < 0 ? 0.0f : mx[t] + logf(se[t]) - tl[t];
}

__global__ void k_grad(float* logits, int Vc, int v0, const int32_t* targets, const float* mx,
                       const float* se, float dloss) {
  const int t = blockIdx.x, y = targets[t];
  float* l = logits + size_t(t) * Vc;
  const float lse = y < 0 ? 0.0f : mx[t] + logf(se[t]);
  for (int v = threadIdx.x; v < Vc; v += blockDim.x)
    l[v] = y < 0 ? 0.0f : dloss * (expf(l[v] - lse) - (v0 + v == y ? 1.0f : 0.0f));
}

}  // namespace

void xent_stats(const float* logits, int rows, int Vc, int v0, const int32_t* targets, float* mx,
                float* se, float* target_logit) {
  if (rows <= 0) return;
  k_stats<<<rows, threads>>>(logits, Vc, v0, targets, mx, se, target_logit);
  check_launch("xent_stats");
}
void xent_loss(float* losses, const float* mx, const float* se, const float* target_logit,
               const int32_t* targets, int rows) {
  if (rows <= 0) return;
  k_loss<<<(rows + threads - 1) / threads, threads>>>(losses, mx, se, target_logit, targets, rows);
  check_launch("xent_loss");
}
void xent_grad(float* logits, int rows, int Vc, int v0, const int32_t* targets, const float* mx,
               const float* se, float dloss) {
  if (rows <= 0) return;
  k_grad<<<rows, threads>>>(logits, Vc, v0, targets, mx, se, dloss);
  check_launch("xent_grad");
}

}  // namespace longctx::cuda
