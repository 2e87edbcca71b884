// Fast element-wise and row-wise ops with OpenMP (same math as ref.h, which documents it):
// embedding, RMSNorm (HF Llama), RoPE rotate-half, SwiGLU, AdamW.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/cpu.h"

namespace longctx::cpu {

// Threads only pay off above this many elements.
static bool big(size_t n) { return n >= 16384; }

// ---------------------------------------------------------------- embedding
void embedding_forward(float* out, const int32_t* tokens, const float* wte, int T, int C) {
  for (int t = 0; t < T; t++)
    LCX_CHECK(tokens[t] >= 0, "embedding: token {} at position {} is negative", tokens[t], t);
#pragma omp parallel for if (big((size_t)T * C))
  for (int t = 0; t < T; t++)
    std::memcpy(out + (size_t)t * C, wte + (size_t)tokens[t] * C, sizeof(float) * C);
}

// dwte[tokens[t]] += dout[t]; threads own column slices, so repeated tokens never race.
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int T, int C) {
#pragma omp parallel if (big((size_t)T * C))
  {
    int nt = omp_get_num_threads(), id = omp_get_thread_num();
    int c0 = (int)((long)C * id / nt), c1 = (int)((long)C * (id + 1) / nt);
    for (int t = 0; t < T; t++) {
      float* dst = dwte + (size_t)tokens[t] * C;
      const float* src = dout + (size_t)t * C;
      for (int c = c0; c < c1; c++) dst[c] += src[c];
    }
  }
}

// ---------------------------------------------------------------- RMSNorm
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int T, int C,
                     float eps) {
#pragma omp parallel for if (big((size_t)T * C))
  for (int t = 0; t < T; t++) {
    const float* x = inp + (size_t)t * C;
    float* y = out + (size_t)t * C;
    float ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; c++) ss += x[c] * x[c];
    float r = 1.0f / std::sqrt(ss / float(C) + eps);
#pragma omp simd
    for (int c = 0; c < C; c++) y[c] = weight[c] * (x[c] * r);
    rstd[t] = r;
  }
}

// dx_i += r w_i dy_i − r³/C x_i Σ_j w_j dy_j x_j;  dw_i += Σ_t dy_i x_i r (per-thread partials)
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int T, int C) {
#pragma omp parallel if (big((size_t)T * C))
  {
    std::vector<float> dw(dweight ? C : 0, 0.0f);
#pragma omp for
    for (int t = 0; t < T; t++) {
      const float* x = inp + (size_t)t * C;
      const float* dy = dout + (size_t)t * C;
      float r = rstd[t], dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int c = 0; c < C; c++) dot += weight[c] * dy[c] * x[c];
      if (dinp) {
        float* dx = dinp + (size_t)t * C;
        float k = r * r * r / float(C) * dot;
#pragma omp simd
        for (int c = 0; c < C; c++) dx[c] += r * weight[c] * dy[c] - k * x[c];
      }
      if (dweight) {
#pragma omp simd
        for (int c = 0; c < C; c++) dw[c] += dy[c] * x[c] * r;
      }
    }
    if (dweight) {
#pragma omp critical
      for (int c = 0; c < C; c++) dweight[c] += dw[c];
    }
  }
}

// ---------------------------------------------------------------- RoPE
// x1 = x[:D/2], x2 = x[D/2:] → [x1 cos − x2 sin, x2 cos + x1 sin], angle = pos·θ^(−2i/D) in fp64
// (once per token, shared by its heads); sign −1 = the backward (rotation by −angle).
static void rope_rotate(float* x, const int32_t* pos, int T, int nh, int D, float theta,
                        double sign) {
  LCX_CHECK(D % 2 == 0, "rope: head dim must be even, got {}", D);
  const int half = D / 2;
  std::vector<double> inv_freq(half);
  for (int i = 0; i < half; i++) inv_freq[i] = std::pow(double(theta), -2.0 * i / D);
#pragma omp parallel if (big((size_t)T * nh * D))
  {
    std::vector<float> cs(half), sn(half);
#pragma omp for
    for (int t = 0; t < T; t++) {
      for (int i = 0; i < half; i++) {
        double a = double(pos[t]) * inv_freq[i];
        cs[i] = float(std::cos(a));
        sn[i] = float(sign * std::sin(a));
      }
      for (int h = 0; h < nh; h++) {
        float* v = x + ((size_t)t * nh + h) * D;
#pragma omp simd
        for (int i = 0; i < half; i++) {
          float x1 = v[i], x2 = v[i + half];
          v[i] = x1 * cs[i] - x2 * sn[i];
          v[i + half] = x2 * cs[i] + x1 * sn[i];
        }
      }
    }
  }
}
void rope_forward(float* x, const int32_t* pos, int T, int nh, int D, float theta) {
  rope_rotate(x, pos, T, nh, D, theta, 1.0);
}
void rope_backward(float* dx, const int32_t* pos, int T, int nh, int D, float theta) {
  rope_rotate(dx, pos, T, nh, D, theta, -1.0);
}

// ---------------------------------------------------------------- SwiGLU
// h = g σ(g) u;  dg += dh u σ(g)(1 + g(1 − σ(g)));  du += dh g σ(g)  (= with Grad::write)
void swiglu_forward(float* h, const float* gate, const float* up, int T, int F) {
  long n = (long)T * F;
#pragma omp parallel for simd if (big(n))
  for (long i = 0; i < n; i++) h[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}
void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate,
                     const float* up, int T, int F, Grad mode) {
  long n = (long)T * F;
  const bool add = mode == Grad::add;
#pragma omp parallel for simd if (big(n))
  for (long i = 0; i < n; i++) {
    float g = gate[i], sg = 1.0f / (1.0f + std::exp(-g));
    const float dg = dh[i] * up[i] * sg * (1.0f + g * (1.0f - sg)), du = dh[i] * g * sg;
    if (dgate) dgate[i] = add ? dgate[i] + dg : dg;
    if (dup) dup[i] = add ? dup[i] + du : du;
  }
}

// ---------------------------------------------------------------- AdamW
// m = b1 m + (1−b1) g; v = b2 v + (1−b2) g²; p −= lr (m̂/(√v̂+eps) + wd p), bias-corrected
void adamw_update(float* param, const float* grad, float* m, float* v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int step) {
  LCX_CHECK(step >= 1, "adamw_update: step must be >= 1, got {}", step);
  const float bc1 = 1.0f - std::pow(beta1, float(step)), bc2 = 1.0f - std::pow(beta2, float(step));
  const long N = (long)n;
#pragma omp parallel for simd if (big(n))
  for (long i = 0; i < N; i++) {
    float mi = beta1 * m[i] + (1.0f - beta1) * grad[i];
    float vi = beta2 * v[i] + (1.0f - beta2) * grad[i] * grad[i];
    m[i] = mi;
    v[i] = vi;
    param[i] -= lr * ((mi / bc1) / (std::sqrt(vi / bc2) + eps) + weight_decay * param[i]);
  }
}

}  // namespace longctx::cpu
