// Output projection fused with cross-entropy, vocabulary-chunked (never a T×V buffer):
//   logits_t = x_t · weightᵀ,  loss_t = logsumexp(logits_t) − logits_t[y_t]   (0 where y_t < 0)
//   g_tv = dloss (softmax(logits_t)_v − [v = y_t]);  dx_t += Σ_v g_tv weight_v;  dweight_v += Σ_t g_tv x_t
// Per block of tokens (those with a target, gathered): pass 1 runs an online log-sum-exp over
// vocabulary chunks (logits chunk = one sgemm); pass 2 recomputes each chunk's logits, turns them
// into g in place and applies the two gradient sgemms. Scratch: O(block · (chunk + C)).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/simd.h"

namespace longctx::cpu {

static constexpr int kTokenBlock = 256;
static constexpr int kVocabChunk = 2048;

// y[i] = exp(x[i] − sub) for i < n
static void exp_shifted(float* y, const float* x, int n, float sub) {
  int i = 0;
  for (; i + 16 <= n; i += 16) store16(y + i, exp16(load16(x + i) - sub));
  if (i < n) {
    float tmp[16] = {};
    for (int j = i; j < n; j++) tmp[j - i] = x[j];
    v16f e = exp16(load16(tmp) - sub);
    for (int j = i; j < n; j++) y[j] = e[j - i];
  }
}

void lm_head_xent(float* losses, float* dx, float* dweight, const float* x, const float* weight,
                  const int32_t* targets, int T, int C, int V, float dloss) {
  for (int t = 0; t < T; t++)
    LCX_CHECK(targets[t] < V, "lm_head_xent: target {} at position {} is >= vocab size {}",
              targets[t], t, V);
  const bool grad = dx || dweight;
  std::vector<int> rows;               // positions t of the block that have a target
  std::vector<float> xb((size_t)kTokenBlock * C), dxb(grad ? (size_t)kTokenBlock * C : 0);
  std::vector<float> logits((size_t)kTokenBlock * kVocabChunk);
  std::vector<float> mx(kTokenBlock), sum(kTokenBlock), tgt(kTokenBlock), lse(kTokenBlock);

  for (int t0 = 0; t0 < T; t0 += kTokenBlock) {
    int t1 = std::min(T, t0 + kTokenBlock);
    rows.clear();
    for (int t = t0; t < t1; t++) {
      if (targets[t] < 0) losses[t] = 0.0f;
      else rows.push_back(t);
    }
    const int nb = (int)rows.size();
    if (nb == 0) continue;
    for (int r = 0; r < nb; r++)
      std::copy(x + (size_t)rows[r] * C, x + (size_t)rows[r] * C + C, xb.begin() + (size_t)r * C);
    std::fill(mx.begin(), mx.end(), -INFINITY);
    std::fill(sum.begin(), sum.end(), 0.0f);

    // pass 1: online log-sum-exp over vocabulary chunks
    for (int v0 = 0; v0 < V; v0 += kVocabChunk) {
      int vc = std::min(kVocabChunk, V - v0);
      sgemm(false, true, nb, vc, C, 1.0f, xb.data(), C, weight + (size_t)v0 * C, C, 0.0f,
            logits.data(), vc);
#pragma omp parallel for if (nb * vc >= 65536)
      for (int r = 0; r < nb; r++) {
        float* l = logits.data() + (size_t)r * vc;
        float m = *std::max_element(l, l + vc);
        float mnew = std::max(mx[r], m);
        exp_shifted(l, l, vc, mnew);   // logits row no longer needed after this pass
        float s = 0;
        for (int j = 0; j < vc; j++) s += l[j];
        sum[r] = sum[r] * std::exp(mx[r] - mnew) + s;
        mx[r] = mnew;
      }
    }
    // target logits: one dot product per row
    for (int r = 0; r < nb; r++) {
      const float* w = weight + (size_t)targets[rows[r]] * C;
      const float* xr = xb.data() + (size_t)r * C;
      float acc = 0;
      for (int c = 0; c < C; c++) acc += xr[c] * w[c];
      tgt[r] = acc;
      lse[r] = mx[r] + std::log(sum[r]);
      losses[rows[r]] = lse[r] - tgt[r];
    }
    if (!grad) continue;

    // pass 2: g = dloss (softmax − onehot) per chunk, then dx += g·W_chunk, dW_chunk += gᵀ·x
    if (dx) std::fill(dxb.begin(), dxb.begin() + (size_t)nb * C, 0.0f);
    for (int v0 = 0; v0 < V; v0 += kVocabChunk) {
      int vc = std::min(kVocabChunk, V - v0);
      sgemm(false, true, nb, vc, C, 1.0f, xb.data(), C, weight + (size_t)v0 * C, C, 0.0f,
            logits.data(), vc);
#pragma omp parallel for if (nb * vc >= 65536)
      for (int r = 0; r < nb; r++) {
        float* l = logits.data() + (size_t)r * vc;
        exp_shifted(l, l, vc, lse[r]);
        for (int j = 0; j < vc; j++) l[j] *= dloss;
        int y = targets[rows[r]];
        if (y >= v0 && y < v0 + vc) l[y - v0] -= dloss;
      }
      if (dx)
        sgemm(false, false, nb, C, vc, 1.0f, logits.data(), vc, weight + (size_t)v0 * C, C, 1.0f,
              dxb.data(), C);
      if (dweight)
        sgemm(true, false, vc, C, nb, 1.0f, logits.data(), vc, xb.data(), C, 1.0f,
              dweight + (size_t)v0 * C, C);
    }
    if (dx)
      for (int r = 0; r < nb; r++) {
        float* d = dx + (size_t)rows[r] * C;
        const float* s = dxb.data() + (size_t)r * C;
        for (int c = 0; c < C; c++) d[c] += s[c];
      }
  }
}

}  // namespace longctx::cpu
