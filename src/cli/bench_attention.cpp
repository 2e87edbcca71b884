// `longctx bench attention`: times SWAT or softmax sliding-window attention, forward and
// forward+backward, on one backend at one shape, with DESIGN.md §2.1's FLOP convention
// (pairs = S·w − w²/2 per head, w clipped to S; forward = 4·pairs·D·H; fwd+bwd = 3.5 × forward)
// and the attention's peak extra resident memory (VmHWM after the calls − VmRSS before, with the
// high-water mark reset through /proc/self/clear_refs), which must not grow with S.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <omp.h>

#include "cli/bench.h"
#include "core/error.h"
#include "core/memstat.h"
#include "core/rng.h"
#include "kernels/backend.h"

namespace longctx {

namespace {

// {median, min} of `repeats` timed calls, in ms (the min is the least disturbed run on a shared
// machine)
template <class Fn>
std::pair<double, double> time_ms(int repeats, Fn fn) {
  std::vector<double> t;
  for (int i = 0; i < std::max(1, repeats); i++) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                    .count());
  }
  std::sort(t.begin(), t.end());
  return {t[t.size() / 2], t[0]};
}

}  // namespace

nlohmann::json bench_attention(const BenchAttentionOpts& o) {
  LCX_CHECK(o.kind == "swat" || o.kind == "softmax",
            "bench attention: --kind must be 'swat' or 'softmax', got '{}'", o.kind);
  LCX_CHECK(o.S >= 1 && o.window >= 1 && o.H >= 1 && o.Hkv >= 1 && o.D >= 2 && o.H % o.Hkv == 0,
            "bench attention: bad shape S={} window={} H={} Hkv={} D={} (need H a multiple of "
            "Hkv)", o.S, o.window, o.H, o.Hkv, o.D);
  const Backend& b = backend_get(o.backend.c_str());
  const bool softmax = o.kind == "softmax";

  std::vector<float> host_slopes(o.H);
  alibi_slopes(host_slopes.data(), softmax ? Alibi::none : (o.H % 2 ? Alibi::neg : Alibi::balanced),
               o.H);
  const Buffer<float> slopes = Buffer<float>::from_host(b, host_slopes.data(), host_slopes.size());
  AttnShape s;
  s.T = o.S, s.H = o.H, s.Hkv = o.Hkv, s.D = o.D, s.window = o.window;
  s.slopes = slopes.data();
  s.scale = 1.0f / std::sqrt(float(o.D));
  const size_t nq = (size_t)o.S * o.H * o.D, nk = (size_t)o.S * o.Hkv * o.D;
  Rng rng(1234);
  auto randn = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = rng.normal();
    return Buffer<float>::from_host(b, v.data(), v.size());
  };
  const Buffer<float> q = randn(nq), k = randn(nk), v = randn(nk), dout = randn(nq);
  Buffer<float> out(b, nq), lse(b, (size_t)o.S * o.H), dq(b, nq), dk(b, nk), dv(b, nk);

  // each timed call waits for the device (b.sync: nothing to wait for on a host backend)
  auto fwd = [&] {
    if (softmax) b.softmax_attn_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s);
    else b.swat_forward(out.data(), q.data(), k.data(), v.data(), s);
    b.sync();
  };
  auto bwd = [&] {
    if (softmax)
      b.softmax_attn_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(),
                              lse.data(), q.data(), k.data(), v.data(), s);
    else b.swat_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(),
                         v.data(), s);
    b.sync();
  };

  // first calls (untimed): warm-up and the memory measurement
  const double rss_before = proc_status_mb("VmRSS:");
  const bool peak_ok = reset_peak_rss();
  fwd();
  if (o.backward) bwd();
  const double peak_extra = proc_status_mb("VmHWM:") - rss_before;

  const auto [fwd_ms, fwd_min] = time_ms(o.repeats, fwd);
  std::pair<double, double> fb{NAN, NAN};
  if (o.backward) fb = time_ms(o.repeats, [&] { fwd(); bwd(); });
  const double fwdbwd_ms = fb.first;

  const double flops_fwd = attention_flops_fwd(o.S, o.window, o.H, o.D);
  nlohmann::json j = {
      {"op", softmax ? "softmax_attention" : "swat_attention"},
      {"backend", o.backend},
      {"threads", omp_get_max_threads()},
      {"S", o.S}, {"window", o.window}, {"H", o.H}, {"Hkv", o.Hkv}, {"D", o.D},
      {"repeats", o.repeats},
      {"fwd_ms", fwd_ms},
      {"fwd_ms_min", fwd_min},
      {"gflops_fwd", flops_fwd / (fwd_ms * 1e-3) * 1e-9},
      {"peak_rss_mb", proc_status_mb("VmHWM:")},
      {"peak_extra_mb", peak_ok ? nlohmann::json(peak_extra) : nlohmann::json(nullptr)},
      {"peak_device_mb", double(b.peak_bytes()) / 1048576.0},
  };
  if (o.backward) {
    j["fwdbwd_ms"] = fwdbwd_ms;
    j["fwdbwd_ms_min"] = fb.second;
    j["gflops_fwdbwd"] = 3.5 * flops_fwd / (fwdbwd_ms * 1e-3) * 1e-9;
  }
  return j;
}

}  // namespace longctx
