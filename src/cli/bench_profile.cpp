// `longctx bench profile`: the HDP cost model from measurements (ByteScale §5.2). For each
// sequence length s, time forward+backward of a 1-layer and a 3-layer copy of the preset on one
// sequence; the per-layer time is half the difference (embedding and head cancel), and so are
// the per-layer activation bytes of the arena. Then least-squares fits of T(s) and Act(s), and
// the pinned host↔device bandwidths of the offload streams (Eq. 3's B_d2h, B_h2d).
#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>

#include "cli/bench.h"
#include "core/error.h"
#include "core/json_file.h"
#include "core/rng.h"
#include "dist/cost_model.h"
#include "model/model.h"
#include "train/offload.h"
#include "train/trainer.h"

namespace longctx {

namespace {

// Median seconds of forward+backward on one random sequence of S tokens; sets *act_bytes.
double time_fwd_bwd(const Config& c, const Backend& be, int S, int repeats, double* act_bytes) {
  Model m(c, be);
  std::vector<float> init(m.layout.total);
  param_init(init.data(), m.layout, c, 1);
  m.params.upload(init.data(), init.size());
  m.reserve(S);
  *act_bytes = double(m.activation_bytes());
  const Batch batch = random_batch(1, S, c.vocab_size, 5);
  const TokenBatch b = batch_view(batch);
  std::vector<double> times;
  for (int r = 0; r < repeats + 1; r++) {  // first run warms up
    be.zero(m.grads.data(), m.grads.size());
    be.sync();
    auto t0 = std::chrono::steady_clock::now();
    model_forward(m, b, nullptr, 1.0f / float(S - 1));
    model_backward(m, b);
    be.sync();
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) times.push_back(dt);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Bytes/s of one copy between pinned host memory and the backend on the stream offloading
// uses for that direction (median of 5; 256 MiB on a device, 16 MiB on host backends).
double copy_bandwidth(const Backend& be, Copy dir) {
  const size_t bytes = be.device ? size_t(256) << 20 : size_t(16) << 20;
  Buffer<float> dev(be, bytes / sizeof(float));
  const std::unique_ptr<void, void (*)(void*)> host(be.pinned_alloc(bytes), be.pinned_release);
  const bool d2h = dir == Copy::to_host;
  std::vector<double> times;
  for (int r = 0; r < 6; r++) {  // first run warms up
    be.sync();
    auto t0 = std::chrono::steady_clock::now();
    be.copy_async(d2h ? host.get() : dev.data(), d2h ? static_cast<const void*>(dev.data()) : host.get(),
                  bytes, dir, d2h ? Stream::d2h : Stream::h2d);
    be.sync();
    if (r > 0) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return double(bytes) / times[times.size() / 2];
}

}  // namespace

double offload_from_flag(const std::string& flag, const std::string& path, int S, int hidden,
                         bool recompute) {
  const OffloadPolicy p = offload_policy_from_string(flag);
  if (!p.automatic) return p.r;
  LCX_CHECK(!path.empty(),
            "--offload auto needs --offload-cost PROFILE.json (from `longctx bench profile`)");
  const nlohmann::json j = json_from_file(path, "cost profile");
  const CostModel cm = cost_from_json(j, path);
  for (const char* k : {"d2h_bytes_per_s", "h2d_bytes_per_s"})
    LCX_CHECK(j.contains(k) && j[k].is_number(),
              "{}: no '{}' (profile with `longctx bench profile` of this version)", path, k);
  const double act = recompute ? double(S) * hidden * sizeof(float) : cm.act(double(S));
  const double r = offload_ratio_auto(cm.time(double(S)), act, j["d2h_bytes_per_s"].get<double>(),
                                      j["h2d_bytes_per_s"].get<double>());
  fmt::print(stderr, "--offload auto: r = {:.3f} (Eq. 3, S = {}, profile {})\n", r, S, path);
  return r;
}

nlohmann::json bench_profile(const BenchProfileOpts& o) {
  LCX_CHECK(o.repeats > 0, "--repeats must be > 0, got {}", o.repeats);
  LCX_CHECK(o.lengths.size() >= 3, "need at least 3 sequence lengths to fit T(s), got {}", o.lengths.size());
  for (int s : o.lengths) LCX_CHECK(s >= 2, "sequence lengths must be ≥ 2, got {}", s);
  Config c = config_preset(o.preset);
  if (o.window > 0) c.window = o.window;
  const Backend& be = backend_get(o.backend.c_str());
  std::vector<ProfilePoint> pts;
  nlohmann::json jp = nlohmann::json::array();
  for (int s : o.lengths) {
    Config c1 = c, c3 = c;
    c1.num_hidden_layers = 1;
    c3.num_hidden_layers = 3;
    double a1 = 0, a3 = 0;
    const double t1 = time_fwd_bwd(c1, be, s, o.repeats, &a1);
    const double t3 = time_fwd_bwd(c3, be, s, o.repeats, &a3);
    ProfilePoint p{double(s), std::max(0.0, (t3 - t1) / 2.0), (a3 - a1) / 2.0};
    pts.push_back(p);
    jp.push_back({{"s", s}, {"time_s", p.time_s}, {"act_bytes", p.act_bytes}});
  }
  CostModel cm;
  cost_fit_time(cm, pts);
  cost_fit_act(cm, pts);
  nlohmann::json j = cost_to_json(cm);
  j["bench"] = "profile";
  j["backend"] = o.backend;
  j["preset"] = o.preset;
  j["attention"] = to_string(c.attention);
  j["window"] = c.window;
  j["hidden_size"] = c.hidden_size;
  j["layers"] = c.num_hidden_layers;
  j["points"] = jp;
  j["d2h_bytes_per_s"] = copy_bandwidth(be, Copy::to_host);
  j["h2d_bytes_per_s"] = copy_bandwidth(be, Copy::to_device);
  if (!o.out.empty()) {
    std::ofstream f(o.out);
    LCX_CHECK(f.good(), "cannot write {}", o.out);
    f << j.dump(2) << "\n";
  }
  return j;
}

}  // namespace longctx
