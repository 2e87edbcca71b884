// Selective activation offloading (ByteScale §5.2, DESIGN.md §3.2) and per-layer recompute:
// the loss and every gradient are bitwise those of training with everything on the device, on
// the cpu backend (synchronous copies run the same schedule) and on cuda when a GPU is present;
// the arena shrinks as r grows; bad --offload values are clear errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "data/loader.h"
#include "model/model.h"
#include "test_util.h"
#include "train/offload.h"
#include "train/trainer.h"

using namespace longctx;
using namespace longctx::testing;

namespace {

Config small_config(AttnKind kind, int layers) {
  Config c;
  c.hidden_size = 32, c.num_hidden_layers = layers, c.num_attention_heads = 2;
  c.num_key_value_heads = 1, c.intermediate_size = 48, c.vocab_size = 97, c.window = 8;
  c.attention = kind;
  return c;
}

struct Step {
  std::vector<double> losses;  // one per step
  std::vector<float> grads;    // after the last step
};

// Two forward+backward passes (no update) of a batch shorter than the reserved T_max, so the
// slots, events and host rows are reused and ⌈r·T⌉ < n_off.
Step run(const Backend& be, const Config& c, double r, bool recompute) {
  Model m(c, be);
  std::vector<float> init(m.layout.total);
  param_init(init.data(), m.layout, c, 3);
  m.params.upload(init.data(), init.size());
  m.recompute = recompute;
  m.offload = r;
  m.reserve(2 * 37 + 11);
  const Batch batch = random_batch(2, 37, c.vocab_size, 9);
  const TokenBatch b = batch_view(batch);
  Step s;
  for (int it = 0; it < 2; it++) {
    be.zero(m.grads.data(), m.grads.size());
    s.losses.push_back(model_forward(m, b, nullptr, 1.0f / float(batch.n_targets())));
    model_backward(m, b);
  }
  s.grads = m.grads.to_host();
  return s;
}

void expect_bitwise(const Step& want, const Step& got, const std::string& what) {
  ASSERT_EQ(want.losses.size(), got.losses.size());
  for (size_t i = 0; i < want.losses.size(); i++) EXPECT_EQ(want.losses[i], got.losses[i]) << what;
  ASSERT_EQ(want.grads.size(), got.grads.size());
  EXPECT_EQ(0, std::memcmp(want.grads.data(), got.grads.data(), want.grads.size() * sizeof(float)))
      << what << ": gradients differ";
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); i++) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

}  // namespace

TEST(Offload, BitwiseEqualToOffOnCpu) {
  for (AttnKind kind : {AttnKind::swat, AttnKind::softmax}) {
    const Config c = small_config(kind, 5);
    const Step off = run(backend_cpu(), c, 0.0, false);
    for (bool recompute : {false, true}) {
      if (recompute) expect_bitwise(off, run(backend_cpu(), c, 0.0, true), "recompute");
      for (double r : {0.25, 0.5, 1.0})
        expect_bitwise(off, run(backend_cpu(), c, r, recompute),
                       fmt::format("{} r={} recompute={}", to_string(kind), r, recompute));
    }
  }
}

// cuda: the same schedule on real streams. The backward kernels accumulate with atomics, so two
// runs WITHOUT offloading may already differ in the last bits; offloading must then stay within
// that run-to-run spread, and be bitwise equal wherever the backend is.
TEST(Offload, EqualToOffOnCuda) {
  SKIP_WITHOUT_GPU();
  const Backend& be = backend_cuda();
  const Config c = small_config(AttnKind::swat, 5);
  const Step off = run(be, c, 0.0, false), again = run(be, c, 0.0, false);
  const double spread = max_abs_diff(off.grads, again.grads);
  double gmax = 0;
  for (float g : off.grads) gmax = std::max(gmax, double(std::fabs(g)));
  for (bool recompute : {false, true})
    for (double r : {0.25, 0.5, 1.0}) {
      const Step on = run(be, c, r, recompute);
      const std::string what = fmt::format("cuda r={} recompute={}", r, recompute);
      EXPECT_EQ(off.losses, on.losses) << what;
      if (spread == 0)
        expect_bitwise(off, on, what);
      else
        EXPECT_LE(max_abs_diff(off.grads, on.grads), 4 * spread + 1e-6 * gmax) << what;
    }
  fmt::print("cuda run-to-run gradient spread without offloading: {:.3g} (max |g| {:.3g})\n", spread,
             gmax);
}

TEST(Offload, ArenaShrinksAndHostHoldsTheRest) {
  const Config c = small_config(AttnKind::swat, 10);
  auto sizes = [&](double r, bool recompute) {
    Model m(c, backend_cpu());
    m.recompute = recompute;
    m.offload = r;
    m.reserve(1024);
    return std::pair<size_t, size_t>{m.activation_bytes(), m.offload_host_bytes()};
  };
  const auto [off, off_host] = sizes(0, false);
  EXPECT_EQ(off_host, 0u);
  size_t prev = off;
  for (double r : {0.25, 0.5, 1.0}) {
    const auto [dev, host] = sizes(r, false);
    EXPECT_LT(dev, prev) << "r=" << r;
    EXPECT_GT(host, 0u);
    prev = dev;
  }
  // r = 1: 2 staging layers of 10 stay (+ the scratch every layer shares)
  EXPECT_LT(double(sizes(1.0, false).first), 0.6 * double(off));
  // recompute + r = 1: the per-layer inputs go too
  EXPECT_LT(sizes(1.0, true).first, sizes(0.0, true).first);
}

TEST(Offload, PolicyParsing) {
  EXPECT_EQ(offload_policy_from_string("off").r, 0.0);
  EXPECT_TRUE(offload_policy_from_string("auto").automatic);
  EXPECT_EQ(offload_policy_from_string("0.5").r, 0.5);
  for (const char* bad : {"1.5", "-0.1", "abc", "0.5x", "", "nan"})
    expect_error([&] { offload_policy_from_string(bad); }, {"--offload", "ratio r in [0, 1]"});
  // Eq. 3 split by direction, clamped to [0, 1]: D2H under the forward (T/3), H2D under the backward (2T/3): min(0.01/3·50e9, 0.02/3·40e9)/1e9
  EXPECT_DOUBLE_EQ(offload_ratio_auto(0.03, 1e9, 50e9, 40e9), 0.5);
  EXPECT_DOUBLE_EQ(offload_ratio_auto(0.03, 1e9, 50e9, 10e9), 0.2);  // the H2D side limits
  EXPECT_DOUBLE_EQ(offload_ratio_auto(1.0, 1e9, 50e9, 40e9), 1.0);
  Model m(small_config(AttnKind::swat, 2), backend_cpu());
  m.offload = 2;
  expect_error([&] { m.reserve(16); }, {"offload ratio r must be in [0, 1]"});
}

TEST(Offload, CliErrors) {
  EXPECT_CLI_ERROR(run_cli("bench train --offload 1.5"), "--offload: '1.5'");
  EXPECT_CLI_ERROR(run_cli("bench train --offload auto"), "--offload auto needs --offload-cost");
  EXPECT_CLI_ERROR(run_cli("train --data /nonexistent --out /tmp/x --offload half"), "--offload: 'half'");
  const CliRun ok = run_cli("bench train --preset tiny -S 64 --steps 1 --offload 0.5 --recompute");
  EXPECT_EQ(ok.code, 0) << ok.out;
  EXPECT_NE(ok.out.find("\"offload\":0.5"), std::string::npos) << ok.out;
}
