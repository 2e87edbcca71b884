#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/sample.h"

namespace longctx {

int32_t Sampler::sample(const float* logits, int V) {
  const SamplerParams& p = params;
  LCX_CHECK(p.temperature >= 0.0f, "temperature must be ≥ 0, got {}", p.temperature);
  LCX_CHECK(p.top_p > 0.0f && p.top_p <= 1.0f, "top_p must be in (0, 1], got {}", p.top_p);
  LCX_CHECK(p.top_k >= 0, "top_k must be ≥ 0, got {}", p.top_k);
  const int k = (p.top_k > 0 && p.top_k < V) ? p.top_k : V;
  // Greedy, or no cut: the plain draw, one O(V) pass in id order.
  if (p.temperature == 0.0f || (k == V && p.top_p >= 1.0f))
    return sample_draw(logits, V, p.temperature, next_u());
  // Scratch per thread, not per sequence (a decode step samples its sequences on all threads):
  // w[token] = exp((logit − max) / T), the softmax at temperature, unnormalised; idx = the
  // candidates, largest logit first.
  thread_local std::vector<double> w;
  thread_local std::vector<int32_t> idx;
  w.resize(size_t(V));
  double total = 0.0;                // Σ w over the candidates
  if (k == V) {
    total = softmax_weights(w.data(), logits, V, p.temperature);
    // The nucleus lies within any set of the largest tokens that holds top_p of the mass: sort
    // only the tokens of weight ≥ cut for the largest cut whose set does (cut 0: all of them).
    for (double cut : {1e-4, 1e-8, 1e-16, 0.0}) {
      idx.clear();
      double held = 0.0;
      for (int i = 0; i < V; i++)
        if (w[size_t(i)] >= cut) idx.push_back(i), held += w[size_t(i)];
      if (held >= p.top_p * total) break;
    }
    std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  } else {  // top-k: the k largest, sorted
    idx.resize(size_t(V));
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    idx.resize(size_t(k));
    const double mx = logits[idx[0]];
    for (int32_t i : idx) total += w[size_t(i)] = std::exp((logits[i] - mx) / p.temperature);
  }
  // Nucleus: the smallest prefix of the candidates with mass ≥ top_p; draw within it.
  size_t n = idx.size();
  if (p.top_p < 1.0f) {
    double mass = 0.0;
    for (size_t i = 0; i < idx.size(); i++)
      if ((mass += w[size_t(idx[i])]) >= p.top_p * total) {
        n = i + 1;
        break;
      }
  }
  double kept = 0.0;
  for (size_t i = 0; i < n; i++) kept += w[size_t(idx[i])];
  double u = double(rng.uniform()) * kept;
  for (size_t i = 0; i < n; i++)
    if ((u -= w[size_t(idx[i])]) < 0.0) return idx[i];
  return idx[n - 1];
}

}  // namespace longctx
