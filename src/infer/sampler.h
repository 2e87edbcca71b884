// Next-token sampling: greedy (temperature 0), temperature, top-k, top-p (nucleus), seeded.
#pragma once
#include <cstdint>

#include "core/rng.h"

namespace longctx {

struct SamplerParams {
  float temperature = 1.0f;  // 0 → greedy (argmax)
  int top_k = 0;             // 0 → no limit
  float top_p = 1.0f;        // 1 → no nucleus cut
  uint64_t seed = 0;
};

struct Sampler {
  SamplerParams params;
  Rng rng;
  explicit Sampler(const SamplerParams& p) : params(p), rng(p.seed) {}
  // Draws a token from logits (V); throws Error on invalid parameters. Without a top-k cut it is
  // O(V) plus a sort of the few tokens near the top for top-p (a decode batch samples every
  // sequence each step); top-k sorts k.
  int32_t sample(const float* logits, int V);
  // No top-k/top-p cut: the draw is kernels/cpu/sample.h's sample_draw, which a device backend
  // runs as Backend::sample_rows (infer/engine.cpp) with u = next_u().
  bool plain() const { return params.top_k == 0 && params.top_p >= 1.0f; }
  // The uniform of the next draw from this sampler's stream (none at temperature 0: 0).
  float next_u() { return params.temperature > 0.0f ? rng.uniform() : 0.0f; }
};

}  // namespace longctx
