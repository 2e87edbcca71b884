#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace longctx {

int32_t Sampler::sample(const float* logits, int V) {
  const SamplerParams& p = params;
  LCX_CHECK(p.temperature >= 0.0f, "temperature must be ≥ 0, got {}", p.temperature);
  LCX_CHECK(p.top_p > 0.0f && p.top_p <= 1.0f, "top_p must be in (0, 1], got {}", p.top_p);
  LCX_CHECK(p.top_k >= 0, "top_k must be ≥ 0, got {}", p.top_k);
  if (p.temperature == 0.0f) return int32_t(std::max_element(logits, logits + V) - logits);

  // Candidates sorted by logit, cut to top-k.
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  int k = (p.top_k > 0 && p.top_k < V) ? p.top_k : V;
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b]; };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), by_logit);
  idx.resize(k);
  // Softmax at temperature over the candidates.
  std::vector<double> prob(k);
  const double mx = logits[idx[0]];
  double sum = 0.0;
  for (int i = 0; i < k; i++) sum += prob[i] = std::exp((logits[idx[i]] - mx) / p.temperature);
  for (double& q : prob) q /= sum;
  // Nucleus: smallest prefix with mass ≥ top_p.
  int n = k;
  if (p.top_p < 1.0f) {
    double mass = 0.0;
    for (int i = 0; i < k; i++) {
      mass += prob[i];
      if (mass >= p.top_p) { n = i + 1; break; }
    }
  }
  double total = 0.0;
  for (int i = 0; i < n; i++) total += prob[i];
  double u = double(rng.uniform()) * total;
  for (int i = 0; i < n; i++) {
    u -= prob[i];
    if (u < 0.0) return idx[i];
  }
  return idx[n - 1];
}

}  // namespace longctx
