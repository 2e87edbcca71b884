// Vector ops, reductions and the model's pointwise/row ops on the GPU (ops.h). Each kernel is
// the CUDA form of the op of the same name in kernels/cpu/ref.h (same equations, fp32).
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda/ops.h"

namespace longctx::cuda {

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("cuda backend: ") + what + ": " + cudaGetErrorString(e));
}

namespace {

constexpr int threads = 256;
unsigned blocks_for(size_t n) { return unsigned(std::min<size_t>((n + threads - 1) / threads, 1u << 16)); }

// Block-wide sum (blockDim.x a multiple of 32, ≤ 1024); the result is valid in every thread.
template <class F>
__device__ F block_sum(F x) {
  __shared__ F s[32];
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();  // s may still be read by a previous call
  if (lane == 0) s[warp] = x;
  __syncthreads();
  x = lane < nw ? s[lane] : F(0);
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

#define GRID_STRIDE(i, n) for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < (n); i += size_t(gridDim.x) * blockDim.x)

__global__ void k_add(float* y, const float* x, size_t n) { GRID_STRIDE(i, n) y[i] += x[i]; }
__global__ void k_scale(float* x, size_t n, float a) { GRID_STRIDE(i, n) x[i] *= a; }
__global__ void k_fill(float* x, size_t n, float value) { GRID_STRIDE(i, n) x[i] = value; }
__global__ void k_to_bf16(__nv_bfloat16* d, const float* s, size_t n) { GRID_STRIDE(i, n) d[i] = __float2bfloat16(s[i]); }
__global__ void k_add_bf16(float* d, const __nv_bfloat16* s, size_t n) { GRID_STRIDE(i, n) d[i] += __bfloat162float(s[i]); }
__global__ void k_to_f32(float* d, const __nv_bfloat16* s, size_t n) { GRID_STRIDE(i, n) d[i] = __bfloat162float(s[i]); }

// Pass 1: block b sums a fixed slice; pass 2: one block sums the partials in order.
__global__ void k_sum_partial(double* partial, const float* x, size_t n, bool squares) {
  const size_t per = (n + gridDim.x - 1) / gridDim.x, lo = blockIdx.x * per;
  const size_t hi = lo + per < n ? lo + per : n;
  double s = 0.0;
  for (size_t i = lo + threadIdx.x; i < hi; i += blockDim.x) s += squares ? double(x[i]) * x[i] : double(x[i]);
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
__global__ void k_sum_final(double* partial, int n) {
  double s = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  s = block_sum(s);
  if (threadIdx.x == 0) partial[0] = s;
}

__global__ void k_embedding_forward(float* out, const int32_t* tokens, const float* wte, int T, int C) {
  GRID_STRIDE(i, size_t(T) * C) out[i] = wte[size_t(tokens[i / C]) * C + i % C];
}
__global__ void k_embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int T, int C) {
  GRID_STRIDE(i, size_t(T) * C) atomicAdd(&dwte[size_t(tokens[i / C]) * C + i % C], dout[i]);
}

// One block per row: r = 1/sqrt(mean(x²) + eps), y = w ⊙ x r
__global__ void k_rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int C, float eps) {
  const float* x = inp + size_t(blockIdx.x) * C;
  float ss = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) ss += x[c] * x[c];
  const float r = 1.0f / sqrtf(block_sum(ss) / float(C) + eps);
  for (int c = threadIdx.x; c < C; c += blockDim.x) out[size_t(blockIdx.x) * C + c] = w[c] * (x[c] * r);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
}
// dx_i += r w_i dy_i − r³/C x_i Σ_j w_j dy_j x_j
__global__ void k_rmsnorm_backward_x(float* dinp, const float* dout, const float* inp, const float* w,
                                     const float* rstd, int C) {
  const size_t row = size_t(blockIdx.x) * C;
  const float r = rstd[blockIdx.x];
  float dot = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) dot += w[c] * dout[row + c] * inp[row + c];
  dot = block_sum(dot);
  for (int c = threadIdx.x; c < C; c += blockDim.x)
    dinp[row + c] += r * w[c] * dout[row + c] - r * r * r / float(C) * inp[row + c] * dot;
}
// dw_c += Σ_t dy_tc x_tc r_t over a slice of rows per block (one atomic per block and column)
constexpr int rms_rows = 64;
__global__ void k_rmsnorm_backward_w(float* dw, const float* dout, const float* inp, const float* rstd,
                                     int T, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int t0 = blockIdx.y * rms_rows, t1 = min(T, t0 + rms_rows);
  float s = 0.0f;
  for (int t = t0; t < t1; t++) s += dout[size_t(t) * C + c] * inp[size_t(t) * C + c] * rstd[t];
  atomicAdd(&dw[c], s);
}

// Rotate-half RoPE, angle = pos·θ^(−2i/D) in fp64 (as ref.h); one thread per (t, i), all heads.
__global__ void k_rope(float* x, const int32_t* pos, int T, int nh, int D, float theta, double sign) {
  const int half = D / 2;
  GRID_STRIDE(j, size_t(T) * half) {
    const int t = int(j / half), i = int(j % half);
    double sn, cs;
    sincos(double(pos[t]) * pow(double(theta), -2.0 * i / D), &sn, &cs);
    const float c = float(cs), s = float(sign * sn);
    for (int h = 0; h < nh; h++) {
      float* v = x + (size_t(t) * nh + h) * D;
      const float x1 = v[i], x2 = v[i + half];
      v[i] = x1 * c - x2 * s;
      v[i + half] = x2 * c + x1 * s;
    }
  }
}

__device__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
__global__ void k_swiglu_forward(float* h, const float* g, const float* u, size_t n) {
  GRID_STRIDE(i, n) h[i] = g[i] * sigmoidf(g[i]) * u[i];
}
// add: dg, du += …; else = … (their old contents are not read)
__global__ void k_swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, size_t n,
                                  bool add) {
  GRID_STRIDE(i, n) {
    const float sg = sigmoidf(g[i]);
    const float dgi = dh[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg)), dui = dh[i] * g[i] * sg;
    if (dg) dg[i] = add ? dg[i] + dgi : dgi;
    if (du) du[i] = add ? du[i] + dui : dui;
  }
}

__global__ void k_adamw(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1,
                        float b2, float eps, float wd, float bc1, float bc2) {
  GRID_STRIDE(i, n) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    const float mhat = m[i] / bc1, vhat = v[i] / bc2;
    p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p[i]);
  }
}

}  // namespace

void add(float* y, const float* x, size_t n) {
  if (!n) return;
  k_add<<<blocks_for(n), threads>>>(y, x, n);
  check_launch("add");
}
void scale(float* x, size_t n, float a) {
  if (!n) return;
  k_scale<<<blocks_for(n), threads>>>(x, n, a);
  check_launch("scale");
}
void fill(float* x, size_t n, float value) {
  if (!n) return;
  k_fill<<<blocks_for(n), threads>>>(x, n, value);
  check_launch("fill");
}
double sum(const float* x, size_t n, bool squares, double* partial) {
  if (!n) return 0.0;
  k_sum_partial<<<reduce_partials, threads>>>(partial, x, n, squares);
  k_sum_final<<<1, 1024>>>(partial, reduce_partials);
  check_launch("sum");
  double r = 0.0;
  if (cudaMemcpy(&r, partial, sizeof r, cudaMemcpyDeviceToHost) != cudaSuccess) check_launch("sum (copy)");
  return r;
}
void to_bf16(__nv_bfloat16* d, const float* s, size_t n) {
  if (!n) return;
  k_to_bf16<<<blocks_for(n), threads>>>(d, s, n);
  check_launch("to_bf16");
}
void add_bf16(float* d, const __nv_bfloat16* s, size_t n) {
  if (!n) return;
  k_add_bf16<<<blocks_for(n), threads>>>(d, s, n);
  check_launch("add_bf16");
}
void to_f32(float* d, const __nv_bfloat16* s, size_t n) {
  if (!n) return;
  k_to_f32<<<blocks_for(n), threads>>>(d, s, n);
  check_launch("to_f32");
}

void embedding_forward(float* out, const int32_t* tokens, const float* wte, int T, int C) {
  if (T <= 0) return;
  k_embedding_forward<<<blocks_for(size_t(T) * C), threads>>>(out, tokens, wte, T, C);
  check_launch("embedding_forward");
}
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int T, int C) {
  if (T <= 0 || !dwte) return;
  k_embedding_backward<<<blocks_for(size_t(T) * C), threads>>>(dwte, dout, tokens, T, C);
  check_launch("embedding_backward");
}
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int T, int C, float eps) {
  if (T <= 0) return;
  k_rmsnorm_forward<<<T, threads>>>(out, rstd, inp, w, C, eps);
  check_launch("rmsnorm_forward");
}
void rmsnorm_backward(float* dinp, float* dw, const float* dout, const float* inp, const float* w,
                      const float* rstd, int T, int C) {
  if (T <= 0) return;
  if (dinp) k_rmsnorm_backward_x<<<T, threads>>>(dinp, dout, inp, w, rstd, C);
  if (dw)
    k_rmsnorm_backward_w<<<dim3((C + threads - 1) / threads, (T + rms_rows - 1) / rms_rows), threads>>>(
        dw, dout, inp, rstd, T, C);
  check_launch("rmsnorm_backward");
}
void rope(float* x, const int32_t* pos, int T, int nh, int D, float theta, double sign) {
  if (T <= 0) return;
  k_rope<<<blocks_for(size_t(T) * (D / 2)), threads>>>(x, pos, T, nh, D, theta, sign);
  check_launch("rope");
}
void swiglu_forward(float* h, const float* g, const float* u, int T, int F) {
  const size_t n = size_t(T) * F;
  if (!n) return;
  k_swiglu_forward<<<blocks_for(n), threads>>>(h, g, u, n);
  check_launch("swiglu_forward");
}
void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int T, int F,
                     Grad mode) {
  const size_t n = size_t(T) * F;
  if (!n) return;
  k_swiglu_backward<<<blocks_for(n), threads>>>(dg, du, dh, g, u, n, mode == Grad::add);
  check_launch("swiglu_backward");
}
void adamw(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2,
           float eps, float wd, float bc1, float bc2) {
  if (!n) return;
  k_adamw<<<blocks_for(n), threads>>>(p, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2);
  check_launch("adamw");
}

}  // namespace longctx::cuda
