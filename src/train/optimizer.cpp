#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

namespace longctx {

void adamw_step(const Backend& be, AdamW& opt, float* params, const float* grads,
                const ParamLayout& layout, float lr) {
  if (opt.m.empty()) {
    opt.m = Buffer<float>(be, layout.total);
    opt.v = Buffer<float>(be, layout.total);
  }
  opt.step++;
  for (const auto& t : layout.tensors)
    be.adamw_update(params + t.offset, grads + t.offset, opt.m.data() + t.offset,
                    opt.v.data() + t.offset, t.numel, lr, opt.beta1, opt.beta2, opt.eps,
                    t.decay ? opt.weight_decay : 0.0f, int(opt.step));
}

float lr_at(int64_t step, int64_t warmup, int64_t total, float lr_max, float lr_min) {
  if (step < warmup) return lr_max * float(step + 1) / float(warmup);
  if (step >= total) return lr_min;
  double progress = double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
  return lr_min + 0.5f * (lr_max - lr_min) * float(1.0 + std::cos(M_PI * progress));
}

double grad_norm(const Backend& be, const float* g, size_t n) {
  return std::sqrt(be.sum_squares(g, n));
}
double grad_norm(const float* g, size_t n) { return grad_norm(backend_cpu(), g, n); }

float grad_clip(const Backend& be, float* g, size_t n, double norm, float max_norm) {
  if (max_norm <= 0.0f || !(norm > max_norm)) return 1.0f;
  const float scale = float(max_norm / norm);
  be.scale(g, n, scale);
  return scale;
}
float grad_clip(float* g, size_t n, double norm, float max_norm) {
  return grad_clip(backend_cpu(), g, n, norm, max_norm);
}

std::string first_nonfinite(const float* buf, const ParamLayout& layout) {
  for (const auto& t : layout.tensors)
    for (size_t i = 0; i < t.numel; i++)
      if (!std::isfinite(buf[t.offset + i])) return t.name;
  return "";
}

}  // namespace longctx
