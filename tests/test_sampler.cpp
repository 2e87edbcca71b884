// Next-token sampler (infer/sampler.h): the drawn frequencies match softmax(logits / T) after the
// top-k / top-p cut, on the O(V) path (no cut) and the sorted path alike; greedy is argmax.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "infer/sampler.h"

namespace longctx {
namespace {

constexpr int draws = 40000;

std::vector<double> frequencies(const SamplerParams& p, const std::vector<float>& logits) {
  Sampler s(p);
  std::vector<double> f(logits.size(), 0.0);
  for (int i = 0; i < draws; i++) f[size_t(s.sample(logits.data(), int(logits.size())))] += 1.0 / draws;
  return f;
}

// softmax(logits / T) restricted to `keep` (renormalised)
std::vector<double> expected(const std::vector<float>& logits, float T, const std::vector<bool>& keep) {
  std::vector<double> e(logits.size(), 0.0);
  double z = 0.0;
  for (size_t i = 0; i < logits.size(); i++)
    if (keep[i]) z += e[i] = std::exp(logits[i] / T);
  for (double& x : e) x /= z;
  return e;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want) {
  for (size_t i = 0; i < got.size(); i++)  // 40K draws: a binomial's sd is ≤ 0.0025
    EXPECT_NEAR(got[i], want[i], 0.012) << "token " << i;
}

const std::vector<float> logits = {1.0f, 3.0f, -0.5f, 2.0f, 0.0f, 2.5f};

TEST(Sampler, NoCutMatchesSoftmaxAtTemperature) {
  for (float T : {1.0f, 0.7f, 2.0f})
    expect_close(frequencies({T, 0, 1.0f, 3}, logits), expected(logits, T, std::vector<bool>(6, true)));
}

TEST(Sampler, TopKKeepsTheKLargest) {
  expect_close(frequencies({1.0f, 3, 1.0f, 5}, logits),
               expected(logits, 1.0f, {false, true, false, true, false, true}));
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  // softmax at T 1: 3.0 → 0.46, 2.5 → 0.28, 2.0 → 0.17 (cumulative 0.90 ≥ 0.8), then 0.06, ...
  expect_close(frequencies({1.0f, 0, 0.8f, 7}, logits),
               expected(logits, 1.0f, {false, true, false, true, false, true}));
}

TEST(Sampler, GreedyIsArgmaxAndSeedsRepeat) {
  Sampler g({0.0f, 0, 1.0f, 0});
  EXPECT_EQ(g.sample(logits.data(), 6), 1);
  Sampler a({0.9f, 0, 1.0f, 42}), b({0.9f, 0, 1.0f, 42});
  for (int i = 0; i < 100; i++) EXPECT_EQ(a.sample(logits.data(), 6), b.sample(logits.data(), 6));
}

TEST(Sampler, BadParametersAreErrors) {
  EXPECT_THROW(Sampler({-1.0f, 0, 1.0f, 0}).sample(logits.data(), 6), Error);
  EXPECT_THROW(Sampler({1.0f, 0, 0.0f, 0}).sample(logits.data(), 6), Error);
  EXPECT_THROW(Sampler({1.0f, -2, 1.0f, 0}).sample(logits.data(), 6), Error);
}

}  // namespace
}  // namespace longctx
