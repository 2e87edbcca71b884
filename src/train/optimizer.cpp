#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace longctx {

void adamw_step(const Backend& be, AdamW& opt, float* params, const float* grads,
                const ParamLayout& layout, float lr) {
  if (opt.m.empty()) {
    opt.m = Buffer<float>(be, layout.total);
    opt.v = Buffer<float>(be, layout.total);
  }
  opt.step++;
  // AdamW is elementwise: one update per maximal run of adjacent tensors with the same decay.
  // The layout stacks each kind over the layers, so that is a few launches, not one per tensor.
  std::vector<const ParamTensor*> order;
  for (const auto& t : layout.tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](const ParamTensor* a, const ParamTensor* b) { return a->offset < b->offset; });
  for (size_t i = 0; i < order.size();) {
    const size_t at = order[i]->offset;
    const bool decay = order[i]->decay;
    size_t n = 0;
    for (; i < order.size() && order[i]->offset == at + n && order[i]->decay == decay; i++)
      n += order[i]->numel;
    be.adamw_update(params + at, grads + at, opt.m.data() + at, opt.v.data() + at, n, lr,
                    opt.beta1, opt.beta2, opt.eps, decay ? opt.weight_decay : 0.0f, int(opt.step));
  }
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
