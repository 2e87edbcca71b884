#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/progress.h"
#include "data/loader.h"
#include "data/shard.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "train/optimizer.h"

namespace fs = std::filesystem;

namespace longctx {

double validation_loss(Model& m, const std::string& val_path, int B, int S, int64_t max_tokens) {
  ValidationBatches val(val_path, B, S, max_tokens);
  double sum = 0.0;
  int64_t n = 0;
  Batch b;
  while (val.next(b)) {
    int64_t k = 0;
    sum += model_forward(m, batch_view(b), &k);
    n += k;
  }
  LCX_CHECK(n > 0, "validation split {} has no tokens to predict", val_path);
  return sum / double(n);
}

namespace {

class Metrics {
 public:
  Metrics(const std::string& path, bool append) : f_(path, append ? std::ios::app : std::ios::trunc) {
    LCX_CHECK(f_.good(), "cannot write metrics file {}", path);
  }
  void write(const nlohmann::json& j) { f_ << j.dump() << '\n' << std::flush; }

 private:
  std::ofstream f_;
};

}  // namespace

TokenBatch batch_view(const Batch& b) {
  TokenBatch t;
  t.tokens = b.tokens.data();
  t.targets = b.targets.data();
  t.pos = b.pos.data();
  t.cu_seqlens = b.cu_seqlens.data();
  t.T = int(b.tokens.size());
  t.n_docs = int(b.cu_seqlens.size()) - 1;
  return t;
}

TrainResult train(const TrainOptions& o) {
  LCX_CHECK(o.batch > 0 && o.seq > 0 && o.grad_accum > 0, "batch, seq and grad_accum must be > 0");
  LCX_CHECK(o.steps > 0, "steps must be > 0, got {}", o.steps);
  const std::string train_bin = o.data_dir + "/train.bin", val_bin = o.data_dir + "/val.bin";
  const std::string tok_model = o.data_dir + "/tokenizer.model";
  const std::string ckpt_dir = o.out_dir + "/checkpoint";
  fs::create_directories(o.out_dir);

  Config cfg = o.config;
  cfg.vocab_size = shard_vocab_size(train_bin);
  cfg.validate("training config");
  const Backend& be = backend_get(o.backend.c_str());
  Model model(cfg, be);
  model.recompute = o.recompute;
  model.offload = o.offload;
  LCX_CHECK(o.chunk >= 0 && (o.chunk == 0 || o.forward_backward),
            "chunk {}: chunked training needs its forward_backward (src/dist/chunked_seq.h)", o.chunk);
  const int eval_seq = o.chunk > 0 ? std::clamp(o.chunk / o.batch, 1, o.seq) : o.seq;
  model.reserve(o.chunk > 0 ? std::min(o.chunk, o.batch * o.seq) : o.batch * o.seq);
  AdamW opt;
  opt.beta1 = o.beta1, opt.beta2 = o.beta2, opt.weight_decay = o.weight_decay;
  Loader loader(train_bin, o.batch, o.seq, o.seed);

  int64_t step = 0;
  if (o.resume) {
    LCX_CHECK(train_state_exists(ckpt_dir),
              "--resume: no training checkpoint in {} (train without --resume first)", ckpt_dir);
    LoadedModel lm = checkpoint_load(ckpt_dir);
    checkpoint_check_config(cfg, lm.config, ckpt_dir + "/config.json");
    LCX_CHECK(lm.params.size() == model.params.size(), "{}: {} parameters, the model has {}",
              ckpt_dir, lm.params.size(), model.params.size());
    model.params.upload(lm.params.data(), lm.params.size());
    TrainState st = train_state_load(ckpt_dir, model.layout.total);
    step = st.step;
    opt.step = st.step;
    opt.m = Buffer<float>::from_host(be, st.m.data(), st.m.size());
    opt.v = Buffer<float>::from_host(be, st.v.data(), st.v.size());
    LCX_CHECK(st.meta.contains("loader"),
              "{}/training_state.safetensors: metadata has no data-loader cursor ('loader')", ckpt_dir);
    loader.restore(st.meta["loader"]);
  } else {
    std::vector<float> init(model.layout.total);
    param_init(init.data(), model.layout, cfg, o.seed);
    model.params.upload(init.data(), init.size());
  }

  auto save = [&](int64_t at_step) {
    TrainState st;
    st.step = at_step;
    st.m = opt.m.to_host();
    st.v = opt.v.to_host();
    st.meta = {{"loader", loader.state()}, {"seed", o.seed}};
    checkpoint_save(ckpt_dir, cfg, model.params.to_host().data(), model.layout, &st,
                    fs::exists(tok_model) ? tok_model : "");
  };

  Metrics metrics(o.out_dir + "/metrics.jsonl", o.resume);
  const int64_t last = o.stop_after >= 0 ? std::min(o.steps, o.stop_after) : o.steps;
  Progress bar("train", uint64_t(last), "steps", o.quiet || !progress_is_tty());
  TrainResult res;
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  int64_t tokens_seen = 0;
  std::vector<Batch> micro(o.grad_accum);

  for (; step < last; step++) {
    const auto ts = std::chrono::steady_clock::now();
    // All micro-batches first: the mean loss divides by the step's predicted-token count.
    int64_t n_targets = 0;
    for (auto& mb : micro) {
      mb = loader.next();
      for (int32_t t : mb.targets) n_targets += t >= 0;
    }
    LCX_CHECK(n_targets > 0, "step {}: the batch has no tokens to predict", step);
    be.zero(model.grads.data(), model.grads.size());
    double loss_sum = 0.0;
    for (auto& mb : micro) {
      TokenBatch tb = batch_view(mb);
      const float dloss = 1.0f / float(n_targets);
      if (o.forward_backward) {
        loss_sum += o.forward_backward(model, tb, dloss);
      } else {
        loss_sum += model_forward(model, tb, nullptr, dloss);
        model_backward(model, tb);
      }
      tokens_seen += tb.T;
    }
    const double loss = loss_sum / double(n_targets);
    if (step == o.inject_nonfinite_at) {
      const float nan = NAN;
      model.grads.upload(&nan, 1, model.layout.wq);
    }
    double norm = grad_norm(be, model.grads.data(), model.grads.size());
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      std::string where = std::isfinite(loss) ? first_nonfinite(model.grads.to_host().data(), model.layout)
                                              : std::string("the loss");
      std::string msg = fmt::format("step {}: non-finite {} (loss {}, grad norm {})", step + 1,
                                    where == "the loss" ? where : "gradient in tensor '" + where + "'",
                                    loss, norm);
      if (!o.skip_nonfinite)
        fail("{}; stopping. The last good checkpoint in {} is intact; rerun with --resume "
             "(and a lower --lr) or --skip-nonfinite", msg, ckpt_dir);
      metrics.write({{"step", step + 1}, {"skipped", msg}});
      continue;
    }
    grad_clip(be, model.grads.data(), model.grads.size(), norm, o.clip);
    const float lr = lr_at(step, o.warmup, o.steps, o.lr, o.min_lr);
    adamw_step(be, opt, model.params.data(), model.grads.data(), model.layout, lr);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    const double tps = double(int64_t(o.batch) * o.seq * o.grad_accum) / dt;
    res.losses.push_back(loss);

    nlohmann::json row = {{"step", step + 1},         {"loss", loss},
                          {"lr", lr},                 {"grad_norm", norm},
                          {"tokens_per_s", tps},      {"tokens", tokens_seen},
                          {"elapsed_s", elapsed()}};
    const bool final_step = step + 1 == last;
    const bool out_of_time = o.max_minutes > 0 && elapsed() > o.max_minutes * 60.0;
    if ((o.eval_every > 0 && (step + 1) % o.eval_every == 0) || final_step || out_of_time) {
      double vl = validation_loss(model, val_bin, o.batch, eval_seq, o.eval_tokens);
      row["val_loss"] = vl;
      res.val_losses.push_back(vl);
      if (!o.quiet)
        fmt::print(stderr, "{}step {:>5}  loss {:.4f}  val_loss {:.4f}  lr {:.2e}  {:.0f} tok/s\n",
                   progress_is_tty() ? "\r\033[K" : "", step + 1, loss, vl, lr, tps);
    }
    metrics.write(row);
    bar.update(uint64_t(step + 1));
    if ((o.save_every > 0 && (step + 1) % o.save_every == 0) || final_step || out_of_time)
      save(step + 1);
    res.steps_done++;
    if (out_of_time) {
      step++;
      break;
    }
  }
  bar.finish();
  res.tokens_per_s = double(tokens_seen) / std::max(1e-9, elapsed());
  return res;
}

}  // namespace longctx
