// AdamW over the flat parameter buffer (decoupled weight decay on matrices only), the
// learning-rate schedule (linear warmup + cosine decay), and gradient-norm clipping.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/params.h"

namespace longctx {

struct AdamW {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
  Buffer<float> m, v;       // first and second moments, same layout and backend as the parameters
  int64_t step = 0;         // updates taken so far
};

// One AdamW update of every tensor; weight decay only where ParamTensor::decay.
void adamw_step(const Backend& be, AdamW& opt, float* params, const float* grads,
                const ParamLayout& layout, float lr);

// lr at `step` (0-based): linear warmup to lr_max over `warmup` steps, then cosine to lr_min
// at `total` steps (held at lr_min after).
float lr_at(int64_t step, int64_t warmup, int64_t total, float lr_max, float lr_min);

// Global L2 norm of the gradient (fp64 accumulation); NaN/Inf if any element is non-finite.
// Without a backend: host memory.
double grad_norm(const Backend& be, const float* grads, size_t n);
double grad_norm(const float* grads, size_t n);
// Scale grads by max_norm / norm when norm > max_norm; returns the scale applied.
float grad_clip(const Backend& be, float* grads, size_t n, double norm, float max_norm);
float grad_clip(float* grads, size_t n, double norm, float max_norm);
// Name of the first tensor holding a non-finite value, or "" when all are finite.
std::string first_nonfinite(const float* buf, const ParamLayout& layout);

}  // namespace longctx
