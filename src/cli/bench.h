// Benchmarks behind `longctx bench …`: each prints one JSON object per measured case.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace longctx {

struct BenchAttentionOpts {
  std::string backend = "cpu";   // cpu | cpu_ref | cuda
  std::string kind = "swat";     // swat | softmax
  int S = 4096, window = 256, H = 8, Hkv = 0 /* 0: = H */, D = 64;
  int repeats = 5;
  bool backward = true;          // time forward+backward (else forward only)
};
// Times attention forward (and backward) at one shape; returns
// {"op","S","window","H","D","fwd_ms","fwdbwd_ms","gflops_fwd","gflops_fwdbwd","peak_rss_mb",...}.
nlohmann::json bench_attention(const BenchAttentionOpts& o);   // bench_attention.cpp

}  // namespace longctx

namespace longctx {

struct BenchTrainOpts {
  std::string backend = "cpu";
  std::string preset = "tiny";
  std::string attention;  // override: swat | softmax
  int window = 0;         // override (0: the preset's)
  bool recompute = false; // per-layer activation recompute (Model::recompute)
  double offload = 0;     // activation offloading ratio r (Model::offload)
  int chunk = 0;          // context parallelism over time (dist/chunked_seq.h); 0: one piece
  bool chunk_halo_host = false;  // its halo store in pinned host memory
  int batch = 1, S = 1024, steps = 5, warmup = 1;
  bool profile_ops = false;  // --steps more steps on backend_profiled (kernels/profile.h)
};
// Times full training steps (forward, backward, AdamW) on random tokens; returns
// {"tokens_per_s","step_ms","params","flops_per_token" (6N), "model_gflops","sgemm_gflops",
//  "pct_of_sgemm","peak_rss_mb",...}. sgemm_gflops is a 1024³ matmul timed in the same run.
// profile_ops adds "profile": {"step_ms" (profiled), "unprofiled_step_ms", "ops_ms_per_step",
// "ops": OpProfile::to_json()} and prints it as a table on stderr.
nlohmann::json bench_train(const BenchTrainOpts& o);  // bench_train.cpp
// GFLOP/s of a square n×n×n fp32 matmul through the backend (median of a few runs).
double bench_sgemm_gflops(const std::string& backend, int n = 1024);

}  // namespace longctx

namespace longctx {

struct BenchProfileOpts {
  std::string backend = "cpu";
  std::string preset = "tiny";
  int window = 0;  // override (0: the preset's)
  std::vector<int> lengths = {256, 512, 1024, 2048, 4096};
  int repeats = 3;
  std::string out;  // also write the JSON here (the planner/simulator read it with --cost)
};
// Per-layer forward+backward time and activation bytes over sequence lengths, measured as the
// difference between a 1-layer and a 3-layer copy of the preset (so embedding/head cancel), and the
// least-squares fits T(s) = α1 s² + β1 s + γ, Act(s) = α2 s + β2 (ByteScale §5.2).
// Also the pinned host↔device copy bandwidths of the offload streams, "d2h_bytes_per_s" and
// "h2d_bytes_per_s".
nlohmann::json bench_profile(const BenchProfileOpts& o);  // bench_profile.cpp

// The offloading ratio r of `--offload off|auto|r` (train, bench train). auto: Eq. 3's r
// (offload_ratio_auto) for sequences of S tokens from the profile JSON `cost_path` written by
// bench_profile (T(s), Act(s), bandwidths); with recompute only each layer's input (S·hidden
// floats) is saved, so that is Act(s).
double offload_from_flag(const std::string& flag, const std::string& cost_path, int S, int hidden,
                         bool recompute);
// `--chunk-halo device|host` (train, bench train): true for host.
bool chunk_halo_on_host(const std::string& flag);

}  // namespace longctx
