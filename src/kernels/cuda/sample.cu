// Backend::sample_rows on the GPU: the plain draw of kernels/cpu/sample.h, one block per row,
// each thread owning a contiguous chunk of the row's ids (so chunks in thread order are id order):
//  1. the row's max and its first index (T = 0: that index is the token);
//  2. w_i = exp((l_i − max)/T) in fp64, each thread's Σ w over its chunk, and a block-wide
//     inclusive scan of those sums: I_t = Σ w over chunks 0..t, the total Σ w = I_last;
//  3. the first thread with I_t > u·total walks its chunk again from I_{t−1} and takes the first
//     id whose prefix passes u·total.
// The sums run in another order than sample_draw's sequential one, so a draw differs from the
// host's only where u·total lies within rounding (~1e-16 relative) of a prefix sum.
#include <climits>
#include <cmath>

#include "kernels/cuda/ops.h"

namespace longctx::cuda {

namespace {

constexpr int threads = 256;

// Is (b, ib) before (a, ia) in argmax order: larger value, then smaller index?
__device__ bool before(float a, int ia, float b, int ib) { return b > a || (b == a && ib < ia); }

// Block-wide argmax (first index of the largest value); the result is valid in every thread.
__device__ void block_argmax(float& v, int& i) {
  __shared__ float sv[threads / 32];
  __shared__ int si[threads / 32];
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (before(v, i, ov, oi)) v = ov, i = oi;
  }
  if ((threadIdx.x & 31) == 0) sv[threadIdx.x >> 5] = v, si[threadIdx.x >> 5] = i;
  __syncthreads();
  v = sv[0], i = si[0];
  for (int w = 1; w < threads / 32; w++)
    if (before(v, i, sv[w], si[w])) v = sv[w], i = si[w];
}

// logits (rows,V), tokens/u/temperature [rows]; grid rows, block `threads`.
__global__ void k_sample_rows(int32_t* tokens, const float* logits, const float* u,
                              const float* temperature, int V) {
  const int row = blockIdx.x, t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const float* l = logits + size_t(row) * V;
  const int chunk = (V + threads - 1) / threads, lo = min(V, t * chunk), hi = min(V, lo + chunk);
  // 1. argmax
  float mx = -INFINITY;
  int arg = INT_MAX;
  for (int j = lo; j < hi; j++)
    if (before(mx, arg, l[j], j)) mx = l[j], arg = j;
  block_argmax(mx, arg);
  const float T = temperature[row];
  if (T == 0.0f) {
    if (t == 0) tokens[row] = arg;
    return;
  }
  // 2. chunk sums of w, then their inclusive scan over the block (warps, then warp totals)
  auto weight = [&](int j) { return exp((double(l[j]) - double(mx)) / double(T)); };
  double s = 0.0;
  for (int j = lo; j < hi; j++) s += weight(j);
  __shared__ double incl[threads], warp_sum[threads / 32];
  __shared__ int owner;
  for (int o = 1; o < 32; o <<= 1) {
    const double y = __shfl_up_sync(0xffffffffu, s, o);
    if (lane >= o) s += y;
  }
  if (lane == 31) warp_sum[warp] = s;
  if (t == 0) owner = INT_MAX;
  __syncthreads();
  double prior = 0.0;
  for (int w = 0; w < warp; w++) prior += warp_sum[w];
  incl[t] = prior + s;
  __syncthreads();
  // 3. the first chunk whose inclusive sum passes the target draws within itself
  const double target = double(u[row]) * incl[threads - 1];
  if (incl[t] > target) atomicMin(&owner, t);
  __syncthreads();
  if (owner == INT_MAX) {  // only for NaN logits, as sample_draw
    if (t == 0) tokens[row] = V - 1;
    return;
  }
  if (t != owner) return;
  double prefix = t > 0 ? incl[t - 1] : 0.0;
  int last = lo;  // the chunk's last id of positive weight (if rounding never passes the target)
  for (int j = lo; j < hi; j++) {
    const double w = weight(j);
    if (w > 0.0) last = j;
    if ((prefix += w) > target) {
      tokens[row] = j;
      return;
    }
  }
  tokens[row] = last;
}

}  // namespace

void sample_rows(int32_t* tokens, const float* logits, const float* u, const float* temperature,
                 int rows, int V) {
  if (rows == 0) return;
  k_sample_rows<<<rows, threads>>>(tokens, logits, u, temperature, V);
  check_launch("sample_rows");
}

}  // namespace longctx::cuda
