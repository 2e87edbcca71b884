// Kernel benchmarks (Google Benchmark): attention forward and forward+backward on the CPU backends,
// FLOPs by DESIGN.md §2.1 (pairs = S·w − w²/2 per head, forward = 4·pairs·D·H, fwd+bwd = 3.5×),
// plus the attention's peak extra resident memory (to show it is flat in S).
//   ./bench_ops --benchmark_format=json --benchmark_filter=swat
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/memstat.h"
#include "core/rng.h"
#include "infer/sampler.h"
#include "kernels/backend.h"

using namespace longctx;

namespace {

std::vector<float> randn(size_t n, uint64_t seed) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = r.normal();
  return v;
}


// args: S, window, H, D; backend and kind from the benchmark's name
void BM_attention(benchmark::State& st, const char* backend, bool softmax, bool backward) {
  const Backend& b = backend_get(backend);
  const int S = (int)st.range(0), w = (int)st.range(1), H = (int)st.range(2), D = (int)st.range(3);
  std::vector<float> slopes(H);
  alibi_slopes(slopes.data(), softmax ? Alibi::none : Alibi::balanced, H);
  AttnShape s;
  s.T = S, s.H = H, s.Hkv = H, s.D = D, s.window = w, s.slopes = slopes.data();
  s.scale = 1.0f / std::sqrt(float(D));
  const size_t n = (size_t)S * H * D;
  std::vector<float> q = randn(n, 1), k = randn(n, 2), v = randn(n, 3), dout = randn(n, 4);
  std::vector<float> out(n), lse((size_t)S * H), dq(n), dk(n), dv(n);
  auto step = [&] {
    if (softmax) b.softmax_attn_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s);
    else b.swat_forward(out.data(), q.data(), k.data(), v.data(), s);
    if (!backward) return;
    if (softmax)
      b.softmax_attn_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(),
                              lse.data(), q.data(), k.data(), v.data(), s);
    else b.swat_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(),
                         v.data(), s);
  };
  const double rss0 = proc_status_mb("VmRSS:");
  reset_peak_rss();
  step();  // warm-up, and the memory measurement
  const double extra = proc_status_mb("VmHWM:") - rss0;
  for (auto _ : st) {
    step();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const double flops = attention_flops_fwd(S, w, H, D) * (backward ? 3.5 : 1.0);
  st.counters["GFLOPs"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["peak_extra_MB"] = extra;
}

void attn_args(benchmark::internal::Benchmark* b) {
  b->Args({4096, 256, 8, 64})->Args({65536, 256, 8, 64})->Args({4096, 256, 8, 128})
      ->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_attention, swat_fwd, "cpu", false, false)->Apply(attn_args);
BENCHMARK_CAPTURE(BM_attention, swat_fwdbwd, "cpu", false, true)->Apply(attn_args);
BENCHMARK_CAPTURE(BM_attention, softmax_fwd, "cpu", true, false)->Apply(attn_args);
BENCHMARK_CAPTURE(BM_attention, softmax_fwdbwd, "cpu", true, true)->Apply(attn_args);
BENCHMARK_CAPTURE(BM_attention, swat_fwdbwd_ref, "cpu_ref", false, true)
    ->Args({1024, 256, 8, 64})->Unit(benchmark::kMillisecond)->UseRealTime();

// out (T,OC) = inp (T,C) · weightᵀ: the sgemm the model spends its non-attention time in
void BM_matmul(benchmark::State& st) {
  const int T = (int)st.range(0), C = (int)st.range(1), OC = (int)st.range(2);
  std::vector<float> x = randn((size_t)T * C, 1), w = randn((size_t)OC * C, 2), y((size_t)T * OC);
  for (auto _ : st) backend_cpu().matmul_forward(y.data(), x.data(), w.data(), T, C, OC);
  st.counters["GFLOPs"] = benchmark::Counter(2.0 * T * C * OC * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_matmul)->Args({1024, 1024, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();

// lm head + cross-entropy forward+backward, T 1024, C 256, V 8192
void BM_lm_head_xent(benchmark::State& st) {
  const int T = (int)st.range(0), C = (int)st.range(1), V = (int)st.range(2);
  std::vector<float> x = randn((size_t)T * C, 1), w = randn((size_t)V * C, 2), loss(T);
  std::vector<float> dx((size_t)T * C), dw((size_t)V * C);
  std::vector<int32_t> tg(T);
  for (int t = 0; t < T; t++) tg[t] = (t * 7919) % V;
  for (auto _ : st)
    backend_cpu().lm_head_xent(loss.data(), dx.data(), dw.data(), x.data(), w.data(), tg.data(),
                               T, C, V, 1.0f / T);
  st.counters["GFLOPs"] = benchmark::Counter(8.0 * T * C * V * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_lm_head_xent)->Args({1024, 256, 8192})->Unit(benchmark::kMillisecond)->UseRealTime();

// One token drawn from V logits at temperature 0.7 (a decode step samples every sequence this
// way): top_p 1 takes the O(V) path, top_p < 1 sorts the vocabulary (what every draw did before
// 2026-11-26). args: V, top_p × 100
void BM_sample(benchmark::State& st) {
  const int V = (int)st.range(0);
  std::vector<float> logits = randn((size_t)V, 3);
  for (float& x : logits) x *= 3.0f;
  Sampler s({0.7f, 0, float(st.range(1)) / 100.0f, 1});
  for (auto _ : st) benchmark::DoNotOptimize(s.sample(logits.data(), V));
}
BENCHMARK(BM_sample)->ArgsProduct({{8192, 32000}, {100, 99}})->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
