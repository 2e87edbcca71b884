// Per-op profiler (kernels/profile.h): a model trained through the profiled table computes bitwise
// what it computes without it; the GEMM calls and FLOPs match the model's config; to_json sorts
// and shares; `bench train --profile-ops` reports a profile.
#include <gtest/gtest.h>

#include <cstring>

#include "data/loader.h"
#include "kernels/profile.h"
#include "model/model.h"
#include "test_util.h"
#include "train/trainer.h"

using namespace longctx;
using namespace longctx::testing;

namespace {

Config two_layer_config() {
  Config c;
  c.hidden_size = 32, c.num_hidden_layers = 2, c.num_attention_heads = 4;
  c.num_key_value_heads = 2, c.intermediate_size = 48, c.vocab_size = 97, c.window = 8;
  return c;
}

struct Step {
  double loss;
  std::vector<float> grads;
};

// One forward+backward of a fixed batch on be.
Step forward_backward(const Backend& be, const Config& c, const Batch& batch) {
  Model m(c, be);
  std::vector<float> init(m.layout.total);
  param_init(init.data(), m.layout, c, 5);
  m.params.upload(init.data(), init.size());
  m.reserve(int(batch.tokens.size()));
  const TokenBatch b = batch_view(batch);
  Step s;
  s.loss = model_forward(m, b, nullptr, 1.0f / float(batch.n_targets()));
  model_backward(m, b);
  s.grads = m.grads.to_host();
  return s;
}

const OpProfile::Entry& entry(const OpProfile& p, const std::string& op) {
  for (const auto& e : p.entries)
    if (e.op == op) return e;
  throw std::runtime_error("no entry " + op);
}

}  // namespace

TEST(Profile, SameResultsAndGemmCountsOnCpuRef) {
  const Config c = two_layer_config();
  const Batch batch = random_batch(2, 24, c.vocab_size, 11);
  const Step plain = forward_backward(backend_cpu_ref(), c, batch);
  OpProfile prof;
  const Step timed = forward_backward(backend_profiled(backend_cpu_ref(), prof), c, batch);
  EXPECT_EQ(plain.loss, timed.loss);
  ASSERT_EQ(plain.grads.size(), timed.grads.size());
  EXPECT_EQ(0, std::memcmp(plain.grads.data(), timed.grads.data(), plain.grads.size() * 4));

  // Per layer: o and down alone, q/k/v and gate/up as two groups of one input (the head is
  // lm_head_xent); every backward GEMM asks for both gradients.
  const double T = double(batch.tokens.size()), d = c.hidden_size, F = c.intermediate_size,
               qd = c.num_attention_heads * c.head_dim(), kvd = c.num_key_value_heads * c.head_dim();
  const int64_t L = c.num_hidden_layers;
  const double flops = L * 2 * T * (qd * d + d * F),
               group_flops = L * 2 * T * (d * qd + 2 * d * kvd + 2 * d * F);
  const auto& fwd = entry(prof, "matmul_forward");
  const auto& bwd = entry(prof, "matmul_backward");
  const auto& fwd_group = entry(prof, "matmul_forward_group");
  const auto& bwd_group = entry(prof, "matmul_backward_group");
  const auto& head = entry(prof, "lm_head_xent");
  EXPECT_EQ(fwd.calls, 2 * L);
  EXPECT_EQ(fwd.flops, flops);
  EXPECT_EQ(bwd.calls, 2 * L);
  EXPECT_EQ(bwd.flops, 2 * flops);
  EXPECT_EQ(fwd_group.calls, 2 * L);
  EXPECT_EQ(fwd_group.flops, group_flops);
  EXPECT_EQ(bwd_group.calls, 2 * L);
  EXPECT_EQ(bwd_group.flops, 2 * group_flops);
  EXPECT_EQ(head.calls, 1);
  EXPECT_EQ(head.flops, 4 * 2 * T * d * c.vocab_size);  // sweep, recompute, dx, dweight
  EXPECT_EQ(entry(prof, "swat_forward").calls, c.num_hidden_layers);
  EXPECT_GT(fwd.seconds, 0);
}

TEST(Profile, JsonSortedBySecondsWithShares) {
  OpProfile p;
  p.steps = 2;
  p.add("add", 0.001, 0);
  p.add("matmul_forward", 0.002, 4e9);
  p.add("matmul_forward", 0.001, 2e9);
  const auto j = p.to_json();
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["op"], "matmul_forward");
  EXPECT_EQ(j[0]["calls"], 2);
  EXPECT_DOUBLE_EQ(j[0]["ms_per_step"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(j[0]["share"].get<double>(), 75.0);
  EXPECT_DOUBLE_EQ(j[0]["tflops"].get<double>(), 2.0);
  EXPECT_FALSE(j[1].contains("tflops"));
}

TEST(Profile, OneInnerBackendPerProcess) {
  OpProfile a, b;
  const Backend& first = backend_profiled(backend_cpu_ref(), a);
  EXPECT_EQ(&first, &backend_profiled(backend_cpu_ref(), b));  // re-pointed at b
  EXPECT_STREQ(first.name, "cpu_ref");
  expect_error([&] { backend_profiled(backend_cpu(), a); }, {"already wraps", "cpu_ref", "cpu"});
}

TEST(Profile, BenchTrainProfileOps) {
  const auto r =
      run_cli("bench train --preset tiny --seq 64 --steps 1 --warmup 0 --profile-ops");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("matmul_forward"), std::string::npos) << r.out;  // the stderr table
  const auto at = r.out.find("{\"");
  ASSERT_NE(at, std::string::npos) << r.out;
  const auto j = nlohmann::json::parse(r.out.substr(at, r.out.find('\n', at) - at));
  ASSERT_TRUE(j.contains("profile")) << r.out;
  const auto& p = j["profile"];
  double share = 0;
  for (const auto& e : p["ops"]) share += e["share"].get<double>();
  EXPECT_NEAR(share, 100.0, 1e-6);
  EXPECT_GT(p["step_ms"].get<double>(), 0);
  EXPECT_EQ(p["unprofiled_step_ms"].get<double>(), j["step_ms"].get<double>());
}
