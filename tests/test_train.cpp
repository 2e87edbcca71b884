// Trainer: bit-exact resume, the NaN/Inf guard, gradient accumulation and learning.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fmt/format.h>
#include <unistd.h>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/rng.h"
#include "data/shard.h"
#include "model/checkpoint.h"
#include "model/params.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace longctx;

namespace {

// A small corpus with learnable structure: documents of repeated short "phrases".
fs::path make_data(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / fmt::format("lcx_train_{}_{}", name, getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  Rng rng(11);
  auto docs = [&](int n) {
    std::vector<std::vector<int32_t>> out;
    for (int d = 0; d < n; d++) {
      std::vector<int32_t> doc = {1};
      int len = 20 + int(rng.below(60));
      int32_t base = int32_t(3 + rng.below(20));
      for (int i = 0; i < len; i++) doc.push_back(int32_t(3 + (base + i % 7) % 60));
      doc.push_back(2);
      out.push_back(doc);
    }
    return out;
  };
  shard_write((dir / "train.bin").string(), 64, docs(200));
  shard_write((dir / "val.bin").string(), 64, docs(20));
  return dir;
}

TrainOptions small_options(const fs::path& data, const fs::path& out) {
  TrainOptions o;
  o.data_dir = data.string();
  o.out_dir = out.string();
  o.config.hidden_size = 32, o.config.num_hidden_layers = 2, o.config.num_attention_heads = 2;
  o.config.num_key_value_heads = 1, o.config.intermediate_size = 64, o.config.window = 16;
  o.batch = 2, o.seq = 64, o.steps = 20, o.warmup = 3, o.lr = 3e-3f, o.min_lr = 3e-4f;
  o.eval_every = 5, o.eval_tokens = 512, o.save_every = 5, o.quiet = true;
  return o;
}

TEST(Train, ResumeIsBitExact) {
  fs::path data = make_data("resume");
  TrainOptions a = small_options(data, data / "straight");
  a.grad_accum = 2;
  TrainResult ra = train(a);
  ASSERT_EQ(ra.losses.size(), 20u);

  TrainOptions b = a;
  b.out_dir = (data / "resumed").string();
  b.stop_after = 10;
  TrainResult rb1 = train(b);
  ASSERT_EQ(rb1.losses.size(), 10u);
  b.stop_after = -1;
  b.resume = true;
  TrainResult rb2 = train(b);
  ASSERT_EQ(rb2.losses.size(), 10u);

  for (int i = 0; i < 10; i++) {
    EXPECT_EQ(ra.losses[i], rb1.losses[i]) << "step " << i + 1;
    EXPECT_EQ(ra.losses[10 + i], rb2.losses[i]) << "step " << i + 11;
  }
  LoadedModel pa = checkpoint_load(a.out_dir + "/checkpoint");
  LoadedModel pb = checkpoint_load(b.out_dir + "/checkpoint");
  ASSERT_EQ(pa.params.size(), pb.params.size());
  EXPECT_EQ(0, std::memcmp(pa.params.data(), pb.params.data(), pa.params.size() * sizeof(float)))
      << "parameters differ after resume";
  // It learned: validation loss fell from near the uniform log(64) = 4.16.
  EXPECT_LT(ra.val_losses.back(), std::log(64.0) - 0.6);
  EXPECT_LT(ra.val_losses.back(), ra.val_losses.front());
  fs::remove_all(data);
}

TEST(Train, NonFiniteGradientStopsAndKeepsLastCheckpoint) {
  fs::path data = make_data("nan");
  TrainOptions o = small_options(data, data / "run");
  o.inject_nonfinite_at = 7;  // 0-based: the 8th step
  try {
    train(o);
    FAIL() << "expected the NaN guard to stop training";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("step 8"), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.layers.0.self_attn.q_proj.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("last good checkpoint"), std::string::npos) << msg;
  }
  // The step-5 checkpoint is intact and resumable.
  TrainState st = train_state_load(o.out_dir + "/checkpoint", checkpoint_load(o.out_dir + "/checkpoint").params.size());
  EXPECT_EQ(st.step, 5);
  o.inject_nonfinite_at = -1;
  o.resume = true;
  TrainResult r = train(o);
  EXPECT_EQ(r.steps_done, 15);
  fs::remove_all(data);
}

TEST(Train, SkipNonFiniteContinues) {
  fs::path data = make_data("skip");
  TrainOptions o = small_options(data, data / "run");
  o.inject_nonfinite_at = 3;
  o.skip_nonfinite = true;
  o.steps = 8;
  TrainResult r = train(o);
  EXPECT_EQ(r.steps_done, 7);  // one of 8 skipped
  std::ifstream f(o.out_dir + "/metrics.jsonl");
  std::string all((std::istreambuf_iterator<char>(f)), {});
  EXPECT_NE(all.find("\"skipped\""), std::string::npos);
  fs::remove_all(data);
}

}  // namespace

// adamw_step merges adjacent tensors of equal decay into one update: it must equal one
// Backend::adamw_update per tensor (the definition), bit for bit, decay and no-decay alike.
TEST(Train, AdamwStepEqualsOneUpdatePerTensor) {
  const Config c = config_preset("tiny");
  const ParamLayout layout = param_layout(c);
  const Backend& be = backend_cpu();
  Rng rng(7);
  std::vector<float> p0(layout.total), g(layout.total);
  for (size_t i = 0; i < layout.total; i++) p0[i] = rng.normal(), g[i] = rng.normal();
  std::vector<float> p_ref = p0, m_ref(layout.total), v_ref(layout.total);
  AdamW opt;
  opt.weight_decay = 0.1f;
  std::vector<float> p = p0;
  for (int step = 1; step <= 2; step++) {
    adamw_step(be, opt, p.data(), g.data(), layout, 1e-3f);
    for (const auto& t : layout.tensors)
      be.adamw_update(p_ref.data() + t.offset, g.data() + t.offset, m_ref.data() + t.offset,
                      v_ref.data() + t.offset, t.numel, 1e-3f, opt.beta1, opt.beta2, opt.eps,
                      t.decay ? opt.weight_decay : 0.0f, step);
  }
  ASSERT_EQ(0, std::memcmp(p.data(), p_ref.data(), p.size() * sizeof(float)));
  ASSERT_EQ(0, std::memcmp(opt.m.data(), m_ref.data(), m_ref.size() * sizeof(float)));
}
