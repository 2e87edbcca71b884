// `longctx bench train`: training throughput of a preset model against the machine's sgemm.
#include <algorithm>
#include <chrono>
#include <numeric>
#include <sys/resource.h>

#include "cli/bench.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/rng.h"
#include "dist/chunked_seq.h"
#include "kernels/profile.h"
#include "model/model.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace longctx {

namespace {

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

// The --profile-ops table on stderr (stdout holds the JSON).
void print_profile(const nlohmann::json& p) {
  print_op_table(stderr, p["ops"]);
  fmt::print(stderr,
             "calls over {} steps; ops {:.3f} ms/step; profiled step {:.3f} ms, unprofiled step "
             "{:.3f} ms\n",
             p["steps"].get<int>(), p["ops_ms_per_step"].get<double>(), p["step_ms"].get<double>(),
             p["unprofiled_step_ms"].get<double>());
}

}  // namespace

double bench_sgemm_gflops(const std::string& backend, int n) {
  const Backend& be = backend_get(backend.c_str());
  std::vector<float> host(size_t(n) * n);
  Rng rng(7);
  for (auto& x : host) x = rng.normal();
  const Buffer<float> a = Buffer<float>::from_host(be, host.data(), host.size()), b = a;
  Buffer<float> c(be, host.size());
  std::vector<double> times;
  for (int r = 0; r < 7; r++) {
    be.sync();
    auto t0 = std::chrono::steady_clock::now();
    be.matmul_forward(c.data(), a.data(), b.data(), n, n, n);
    be.sync();
    times.push_back(seconds_since(t0));
  }
  std::sort(times.begin(), times.end());
  return 2.0 * double(n) * n * n / times[times.size() / 2] / 1e9;
}

bool chunk_halo_on_host(const std::string& flag) {
  LCX_CHECK(flag == "device" || flag == "host", "--chunk-halo must be device or host, got '{}'", flag);
  return flag == "host";
}

nlohmann::json bench_train(const BenchTrainOpts& o) {
  Config c = config_preset(o.preset);
  if (!o.attention.empty()) c.attention = attn_kind_from_string(o.attention);
  if (o.window > 0) c.window = o.window;
  const Backend& be = backend_get(o.backend.c_str());
  Model m(c, be);
  std::vector<float> init(m.layout.total);
  param_init(init.data(), m.layout, c, 1);
  m.params.upload(init.data(), init.size());
  const int T = o.batch * o.S;
  m.recompute = o.recompute;
  m.offload = o.offload;
  LCX_CHECK(o.chunk >= 0, "--chunk must be ≥ 0 tokens (0: whole batches), got {}", o.chunk);
  LCX_CHECK(o.steps >= 1 && o.warmup >= 0, "--steps must be ≥ 1 and --warmup ≥ 0 (got {} and {})",
            o.steps, o.warmup);
  m.reserve(o.chunk > 0 ? std::min(o.chunk, T) : T);
  const Batch batch = random_batch(o.batch, o.S, c.vocab_size, 3);
  const TokenBatch b = batch_view(batch);
  AdamW opt;
  const int64_t n_targets = batch.n_targets();
  ChunkedStats chunked;
  ChunkedStep chunked_step({o.chunk, o.chunk_halo_host});
  // Times `n` training steps (forward, backward, clip, AdamW) on m.backend after `warmup` more;
  // returns the median step time in seconds.
  auto median_step_s = [&](int warmup, int n) {
    const Backend& sb = *m.backend;
    std::vector<double> times;
    for (int s = 0; s < warmup + n; s++) {
      sb.sync();
      auto t0 = std::chrono::steady_clock::now();
      sb.zero(m.grads.data(), m.grads.size());
      if (o.chunk > 0) {
        chunked_step(m, b, 1.0f / float(n_targets), nullptr, &chunked);
      } else {
        model_forward(m, b, nullptr, 1.0f / float(n_targets));
        model_backward(m, b);
      }
      double norm = grad_norm(sb, m.grads.data(), m.grads.size());
      grad_clip(sb, m.grads.data(), m.grads.size(), norm, 1.0f);
      adamw_step(sb, opt, m.params.data(), m.grads.data(), m.layout, 1e-4f);
      sb.sync();
      if (s >= warmup) times.push_back(seconds_since(t0));
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  };
  const double step_s = median_step_s(o.warmup, o.steps);
  // --profile-ops: --steps more steps of the same model on the profiled table (its memory ops
  // are be's own, so m's buffers stay valid), every op timed between syncs.
  nlohmann::json profile;
  if (o.profile_ops) {
    OpProfile prof;
    prof.steps = o.steps;
    m.backend = &backend_profiled(be, prof);
    const double profiled_s = median_step_s(0, o.steps);
    m.backend = &be;
    profile = {{"steps", o.steps},
               {"step_ms", profiled_s * 1e3},
               {"unprofiled_step_ms", step_s * 1e3},
               {"ops_ms_per_step", prof.seconds() * 1e3 / o.steps},
               {"ops", prof.to_json()}};
    print_profile(profile);
  }
  // 6N FLOPs per token, N = parameters used per token (the tied embedding counts once, as the
  // output projection; the input lookup does no FLOPs).
  const double N = double(m.layout.total);
  const double flops_per_token = 6.0 * N;
  const double tps = double(T) / step_s;
  // The GEMM peak through the backend's own matmul (cuda: bf16 tensor cores, 8192³).
  const double sgemm = bench_sgemm_gflops(o.backend, be.device ? 8192 : 1024);
  const double model_gflops = tps * flops_per_token / 1e9;
  nlohmann::json out = {{"bench", "train"},
                        {"backend", o.backend},
                        {"preset", o.preset},
                        {"attention", to_string(c.attention)},
                        {"window", c.window},
                        {"batch", o.batch},
                        {"S", o.S},
                        {"recompute", o.recompute},
                        {"offload", o.offload},
                        {"offload_host_mb", double(m.offload_host_bytes()) / 1048576.0},
                        {"chunk", o.chunk},
                        {"chunks", chunked.chunks},
                        {"halo_on_host", o.chunk_halo_host},
                        {"halo_mb", double(chunked.peak_halo_bytes) / 1048576.0},
                        {"params", m.layout.total},
                        {"step_ms", step_s * 1e3},
                        {"tokens_per_s", tps},
                        {"flops_per_token", flops_per_token},
                        {"model_gflops", model_gflops},
                        {"sgemm_gflops", sgemm},
                        {"pct_of_sgemm", 100.0 * model_gflops / sgemm},
                        {"activation_mb", double(m.activation_bytes()) / 1048576.0},
                        {"peak_rss_mb", peak_rss_mb()},
                        {"peak_device_mb", double(be.peak_bytes()) / 1048576.0}};
  if (o.profile_ops) out["profile"] = std::move(profile);
  return out;
}

}  // namespace longctx
