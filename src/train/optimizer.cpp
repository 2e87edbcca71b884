#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

namespace longctx {

void adamw_step(const Backend& be, AdamW& opt, float* params, const float* grads,
                const ParamLayout& layout, float lr) {
  if (opt.m.empty()) {
    opt.m.assign(layout.total, 0.0f);
    opt.v.assign(layout.total, 0.0f);
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

double grad_norm(const float* g, size_t n) {
  // Fixed chunks summed in order: bitwise reproducible whatever the thread count
  // (an OpenMP reduction's combine order is not), which bit-exact resume relies on.
  constexpr size_t chunk = 1 << 16;
  std::vector<double> partial((n + chunk - 1) / chunk, 0.0);
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < partial.size(); c++) {
    double s = 0.0;
    for (size_t i = c * chunk; i < std::min(n, (c + 1) * chunk); i++) s += double(g[i]) * g[i];
    partial[c] = s;
  }
  double sum = 0.0;
  for (double s : partial) sum += s;
  return std::sqrt(sum);
}

float grad_clip(float* g, size_t n, double norm, float max_norm) {
  if (max_norm <= 0.0f || !(norm > max_norm)) return 1.0f;
  const float scale = float(max_norm / norm);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) g[i] *= scale;
  return scale;
}

std::string first_nonfinite(const float* buf, const ParamLayout& layout) {
  for (const auto& t : layout.tensors)
    for (size_t i = 0; i < t.numel; i++)
      if (!std::isfinite(buf[t.offset + i])) return t.name;
  return "";
}

}  // namespace longctx
