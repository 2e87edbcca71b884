// `longctx bench train`: training throughput of a preset model against the machine's sgemm.
#include <algorithm>
#include <chrono>
#include <numeric>
#include <sys/resource.h>

#include "cli/bench.h"
#include "core/error.h"
#include "core/rng.h"
#include "dist/chunked_seq.h"
#include "model/model.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace longctx {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
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
  std::vector<double> times;
  ChunkedStats chunked;
  ChunkedStep chunked_step({o.chunk, o.chunk_halo_host});
  for (int s = 0; s < o.warmup + o.steps; s++) {
    be.sync();
    auto t0 = std::chrono::steady_clock::now();
    be.zero(m.grads.data(), m.grads.size());
    if (o.chunk > 0) {
      chunked_step(m, b, 1.0f / float(n_targets), nullptr, &chunked);
    } else {
      model_forward(m, b, nullptr, 1.0f / float(n_targets));
      model_backward(m, b);
    }
    double norm = grad_norm(be, m.grads.data(), m.grads.size());
    grad_clip(be, m.grads.data(), m.grads.size(), norm, 1.0f);
    adamw_step(be, opt, m.params.data(), m.grads.data(), m.layout, 1e-4f);
    be.sync();
    if (s >= o.warmup) times.push_back(seconds_since(t0));
  }
  std::sort(times.begin(), times.end());
  const double step_s = times[times.size() / 2];
  // 6N FLOPs per token, N = parameters used per token (the tied embedding counts once, as the
  // output projection; the input lookup does no FLOPs).
  const double N = double(m.layout.total);
  const double flops_per_token = 6.0 * N;
  const double tps = double(T) / step_s;
  // The GEMM peak through the backend's own matmul (cuda: bf16 tensor cores, 8192³).
  const double sgemm = bench_sgemm_gflops(o.backend, be.device ? 8192 : 1024);
  const double model_gflops = tps * flops_per_token / 1e9;
  return {{"bench", "train"},
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
}

}  // namespace longctx
