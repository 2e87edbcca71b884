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
  const int k = (p.top_k > 0 && p.top_k < V) ? p.top_k : V;
  std::vector<double>& prob = prob_;
  prob.resize(size_t(V));
  if (k == V && p.top_p >= 1.0f) {  // no cut: softmax at temperature over all V, in id order
    const double mx = *std::max_element(logits, logits + V);
    double total = 0.0;
    for (int i = 0; i < V; i++) total += prob[size_t(i)] = std::exp((logits[i] - mx) / p.temperature);
    double u = double(rng.uniform()) * total;
    for (int i = 0; i < V; i++)
      if ((u -= prob[size_t(i)]) < 0.0) return i;
    return V - 1;
  }
  // Candidates sorted by logit, cut to top-k.
  std::vector<int32_t>& idx = idx_;
  idx.resize(size_t(V));
  std::iota(idx.begin(), idx.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b]; };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), by_logit);
  // Softmax at temperature over the candidates.
  const double mx = logits[idx[0]];
  double sum = 0.0;
  for (int i = 0; i < k; i++) sum += prob[size_t(i)] = std::exp((logits[idx[size_t(i)]] - mx) / p.temperature);
  for (int i = 0; i < k; i++) prob[size_t(i)] /= sum;
  // Nucleus: smallest prefix with mass ≥ top_p.
  int n = k;
  if (p.top_p < 1.0f) {
    double mass = 0.0;
    for (int i = 0; i < k; i++) {
      mass += prob[size_t(i)];
      if (mass >= p.top_p) { n = i + 1; break; }
    }
  }
  double total = 0.0;
  for (int i = 0; i < n; i++) total += prob[size_t(i)];
  double u = double(rng.uniform()) * total;
  for (int i = 0; i < n; i++) {
    u -= prob[size_t(i)];
    if (u < 0.0) return idx[size_t(i)];
  }
  return idx[size_t(n) - 1];
}

}  // namespace longctx
