// Next-token sampler (infer/sampler.h): the drawn frequencies match softmax(logits / T) after the
// top-k / top-p cut, on the O(V) path (no cut) and the sorted path alike; greedy is argmax; the
// no-cut path is the plain draw of kernels/cpu/sample.h (what Backend::sample_rows computes).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "infer/sampler.h"
#include "kernels/cpu/sample.h"

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

// One large logit and a flat tail each below the first cut (weight e^−10 < 1e-4) but holding 8 %
// of the mass: the nucleus (top_p 0.99) must reach into the tail, so the sampler widens its cut.
TEST(Sampler, TopPReachesIntoAFlatTail) {
  const int tail = 2000;
  std::vector<float> lg(tail + 1, -10.0f);
  lg[0] = 0.0f;
  const double e = std::exp(-10.0), total = 1.0 + tail * e;
  const int m = int(std::ceil((0.99 * total - 1.0) / e));  // tail tokens in the nucleus
  Sampler s({1.0f, 0, 0.99f, 11});
  int top = 0;
  std::vector<bool> seen(lg.size(), false);
  const int n = 10000;
  for (int i = 0; i < n; i++) {
    const int32_t t = s.sample(lg.data(), int(lg.size()));
    top += t == 0;
    seen[size_t(t)] = true;
  }
  EXPECT_NEAR(double(top) / n, 1.0 / (1.0 + m * e), 0.012);  // 0.926
  EXPECT_LE(std::count(seen.begin() + 1, seen.end(), true), m);
  EXPECT_GT(n - top, 400);  // the tail is drawn (~740 times)
}

TEST(Sampler, GreedyIsArgmaxAndSeedsRepeat) {
  Sampler g({0.0f, 0, 1.0f, 0});
  EXPECT_EQ(g.sample(logits.data(), 6), 1);
  Sampler a({0.9f, 0, 1.0f, 42}), b({0.9f, 0, 1.0f, 42});
  for (int i = 0; i < 100; i++) EXPECT_EQ(a.sample(logits.data(), 6), b.sample(logits.data(), 6));
}

// sample_draw is the inverse CDF in id order: the first id whose prefix Σ_{j≤i} w_j passes u·Σw.
TEST(Sampler, PlainDrawIsTheInverseCdfInIdOrder) {
  // T 1: w = {0, 1, 3, 0}, Σ w = 4, the prefix passes 1 at id 1 and 4 at id 2
  const float l[] = {-INFINITY, 0.0f, std::log(3.0f), -INFINITY};
  EXPECT_EQ(sample_draw(l, 4, 1.0f, 0.0f), 1);  // u 0: the first id of positive weight
  EXPECT_EQ(sample_draw(l, 4, 1.0f, 0.2f), 1);  // 0.8 < 1
  EXPECT_EQ(sample_draw(l, 4, 1.0f, 0.3f), 2);  // 1.2 > 1
  EXPECT_EQ(sample_draw(l, 4, 1.0f, std::nextafter(1.0f, 0.0f)), 2);  // never the zero-weight tail
  EXPECT_EQ(sample_draw(l, 4, 2.0f, 0.3f), 1);  // T 2: w = {0, 1, √3, 0}, 0.3·2.73 < 1
  EXPECT_EQ(sample_draw(l, 4, 0.0f, 0.9f), 2);  // greedy: argmax, u unused
  const float tie[] = {1.0f, 2.0f, 2.0f};
  EXPECT_EQ(sample_draw(tie, 3, 0.0f, 0.0f), 1);  // the first of equal maxima
}

// Sampler's no-cut path (top_k 0 or ≥ V, top_p 1) is that draw with u = next_u() of its stream.
TEST(Sampler, NoCutIsThePlainDrawOfItsStream) {
  for (int top_k : {0, 6, 100}) {
    Sampler s({0.7f, top_k, 1.0f, 5});
    EXPECT_EQ(s.plain(), top_k == 0);
    Rng r(5);
    for (int i = 0; i < 200; i++)
      ASSERT_EQ(s.sample(logits.data(), 6), sample_draw(logits.data(), 6, 0.7f, r.uniform())) << "top_k " << top_k;
  }
  Sampler g({0.0f, 0, 1.0f, 5});  // greedy draws no uniform
  const Rng before = g.rng;
  EXPECT_EQ(g.next_u(), 0.0f);
  g.sample(logits.data(), 6);
  Rng a = before, b = g.rng;
  EXPECT_EQ(a.uniform(), b.uniform());
}

TEST(Sampler, BadParametersAreErrors) {
  EXPECT_THROW(Sampler({-1.0f, 0, 1.0f, 0}).sample(logits.data(), 6), Error);
  EXPECT_THROW(Sampler({1.0f, 0, 0.0f, 0}).sample(logits.data(), 6), Error);
  EXPECT_THROW(Sampler({1.0f, -2, 1.0f, 0}).sample(logits.data(), 6), Error);
}

}  // namespace
}  // namespace longctx
