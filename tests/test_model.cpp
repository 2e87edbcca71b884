// Model-level parity with PyTorch: tools/torch_reference.py builds the same model in float64
// from our checkpoint and computes logits, loss and every parameter gradient; ours (fp32) must
// agree to relative error < 1e-4. Runs for every CPU backend and several configs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "core/rng.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "model/safetensors.h"

namespace fs = std::filesystem;
using namespace longctx;

namespace {

bool torch_available() {
  return std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
}

double rel_err(const float* a, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

std::vector<double> as_f64(const StTensor& t) {
  std::vector<double> v(t.numel);
  std::memcpy(v.data(), t.data, t.numel * sizeof(double));
  return v;
}

struct Case {
  const char* name;
  Config cfg;
  std::vector<int32_t> cu;  // document boundaries
};

std::vector<Case> cases() {
  Config base;
  base.hidden_size = 64, base.num_hidden_layers = 2, base.num_attention_heads = 4;
  base.num_key_value_heads = 2, base.intermediate_size = 96, base.vocab_size = 97;
  base.window = 5, base.sigmoid_bias = -1.0f, base.alibi = Alibi::balanced;
  Case swat{"swat_balanced_gqa_tied", base, {0, 9, 10, 23}};
  Config sm = base;
  sm.attention = AttnKind::softmax, sm.alibi = Alibi::none, sm.window = 64;
  sm.tie_word_embeddings = false, sm.num_key_value_heads = 4, sm.sigmoid_bias = 0;
  Case soft{"softmax_full_untied", sm, {0, 17, 23}};
  Config neg = base;
  neg.alibi = Alibi::neg, neg.window = 1, neg.num_attention_heads = 2, neg.num_key_value_heads = 1;
  neg.rope_theta = 500.0f;
  Case w1{"swat_neg_window1", neg, {0, 23}};
  return {swat, soft, w1};
}

class ModelParity : public ::testing::TestWithParam<std::tuple<int, std::string>> {};

TEST_P(ModelParity, MatchesPyTorch) {
  if (!torch_available()) {
    if (std::getenv("CI")) FAIL() << "CI must have Debian's python3-torch for the parity test";
    GTEST_SKIP() << "/usr/bin/python3 has no torch (apt-get install python3-torch)";
  }
  const Case c = cases()[std::get<0>(GetParam())];
  const std::string backend = std::get<1>(GetParam());
  fs::path dir = fs::temp_directory_path() / fmt::format("lcx_parity_{}_{}_{}", c.name, backend, getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);

  Model m(c.cfg, backend_get(backend.c_str()));
  param_init(m.params.data(), m.layout, c.cfg, 42);
  // Non-trivial norm weights, so their gradients and scaling are really tested.
  Rng rng(5);
  for (const auto& t : m.layout.tensors)
    if (t.shape.size() == 1)
      for (size_t i = 0; i < t.numel; i++) m.params[t.offset + i] = 1.0f + 0.2f * rng.normal();
  checkpoint_save((dir / "ckpt").string(), c.cfg, m.params.data(), m.layout);

  const int T = c.cu.back();
  std::vector<int32_t> tokens(T), targets(T), pos(T);
  for (int t = 0; t < T; t++) tokens[t] = int32_t(rng.below(uint64_t(c.cfg.vocab_size)));
  for (size_t d = 0; d + 1 < c.cu.size(); d++)
    for (int t = c.cu[d]; t < c.cu[d + 1]; t++) {
      pos[t] = t - c.cu[d];
      targets[t] = t + 1 < c.cu[d + 1] ? tokens[t + 1] : -1;
    }
  nlohmann::json bj = {{"tokens", tokens}, {"targets", targets}, {"pos", pos}, {"cu_seqlens", c.cu}};
  std::ofstream((dir / "batch.json").string()) << bj.dump();
  std::string cmd = fmt::format("/usr/bin/python3 {}/tools/torch_reference.py --ckpt {} --batch {} --out {}",
                                LONGCTX_SOURCE_DIR, (dir / "ckpt").string(),
                                (dir / "batch.json").string(), (dir / "ref.safetensors").string());
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  SafeTensors ref = safetensors_read((dir / "ref.safetensors").string());

  m.reserve(T);
  TokenBatch b{tokens.data(), targets.data(), pos.data(), c.cu.data(), T, int(c.cu.size()) - 1};
  int64_t n = 0;
  std::fill(m.grads.begin(), m.grads.end(), 0.0f);
  // Forward once without the fused head gradient, to check the plain loss path too.
  const double loss_plain = model_forward(m, b, &n);
  const double loss = model_forward(m, b, &n, 1.0f / float(n)) / double(n);
  model_backward(m, b);
  const double ref_loss = as_f64(ref.get("loss"))[0];
  EXPECT_NEAR(loss, ref_loss, 1e-4 * std::abs(ref_loss)) << c.name;
  EXPECT_EQ(loss_plain / double(n), loss);

  std::vector<float> logits(size_t(T) * c.cfg.vocab_size);
  m.backend->matmul_forward(logits.data(), m.acts.lnf, m.params.data() + m.layout.lm_head, T,
                            c.cfg.hidden_size, c.cfg.vocab_size);
  EXPECT_LT(rel_err(logits.data(), as_f64(ref.get("logits"))), 1e-4) << "logits";
  for (const auto& t : m.layout.tensors) {
    double e = rel_err(m.grads.data() + t.offset, as_f64(ref.get("grad." + t.name)));
    EXPECT_LT(e, 1e-4) << "gradient of " << t.name;
  }
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(AllConfigs, ModelParity,
                         ::testing::Combine(::testing::Values(0, 1, 2),
                                            ::testing::Values("cpu", "cpu_ref")),
                         [](const auto& info) {
                           return std::string(cases()[std::get<0>(info.param)].name) + "_" +
                                  std::get<1>(info.param);
                         });

}  // namespace
