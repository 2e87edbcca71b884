// Cost model for HDP planning and cluster simulation (DESIGN.md §3.2, ByteScale §5.2):
//   T(s)   = α1 s² + β1 s + γ      per-layer forward+backward time of one sequence of s tokens
//   Act(s) = α2 s + β2             per-layer activation bytes of that sequence
// fitted by least squares to a profile (`longctx bench profile`) or derived from FLOP counts and
// public hardware specs (the simulator). Communication is α-β per link: time = α + bytes / β.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace longctx {

struct CostModel {
  double alpha1 = 0, beta1 = 0, gamma = 0;  // T(s), seconds
  double alpha2 = 0, beta2 = 0;             // Act(s), bytes
  double time(double s) const { return (alpha1 * s + beta1) * s + gamma; }
  double act(double s) const { return alpha2 * s + beta2; }
};

// One profiled point: a sequence of s tokens, per-layer fwd+bwd seconds, per-layer activation bytes.
struct ProfilePoint {
  double s = 0, time_s = 0, act_bytes = 0;
};

// Least-squares fits (normal equations on s scaled to thousands of tokens). Need ≥ 3 / ≥ 2
// points with distinct s; throws Error otherwise.
void cost_fit_time(CostModel& c, const std::vector<ProfilePoint>& pts);  // α1, β1, γ
void cost_fit_act(CostModel& c, const std::vector<ProfilePoint>& pts);   // α2, β2

// JSON: {"time": {"alpha1","beta1","gamma"}, "act": {"alpha2","beta2"}, "points": [...], ...}.
// cost_from_file throws Error naming the file and the missing field.
nlohmann::json cost_to_json(const CostModel& c);
CostModel cost_from_json(const nlohmann::json& j, const std::string& where);
CostModel cost_from_file(const std::string& path);

// α-β model of one link type: latency α (s) + bytes / bandwidth β (bytes/s).
struct Link {
  double latency_s = 0, bandwidth = 1;
  double time(double bytes) const { return bytes <= 0 ? 0.0 : latency_s + bytes / bandwidth; }
};

// Public specs of one GPU and its node (per GPU where it says so).
struct Hardware {
  std::string name;
  double flops = 0;        // dense bf16 tensor-core FLOP/s per GPU
  double hbm_bytes = 0;    // device memory per GPU
  Link nvlink;             // intra-node, per GPU per direction
  Link ib;                 // inter-node, per GPU (one NIC per GPU)
  Link pcie;               // host <-> device per GPU per direction (offload)
  int gpus_per_node = 8;
};
Hardware hardware_preset(const std::string& name);  // h100 | a100; throws Error otherwise
std::vector<std::string> hardware_preset_names();

// Transformer shape + the parallelism the paper uses for it.
struct ModelShape {
  std::string name;
  int layers = 0, hidden = 0, heads = 0, kv_heads = 0, ffn = 0, vocab = 32000;
  int tp = 1, pp = 1;
  int window = 0;          // > 0: sliding-window attention (SWAT) with this window; 0 = full causal
  double params() const;   // total parameters
  double layer_params() const;
};
// 7b | 13b | 30b | 70b (LLaMA, the paper's TP/PP) or a longctx preset (model/config.h; TP = PP = 1)
ModelShape model_shape_preset(const std::string& name);
std::vector<std::string> model_shape_preset_names();

// Per-layer cost of one HDP rank (a TP group of tp GPUs holding layers/pp layers) derived from
// FLOPs: T from 6·N_layer·s + 6·h·s² (causal attention fwd+bwd, ×3 of forward) at `mfu` of peak,
// Act = 34·h·s/tp bytes (Korthikanti et al. 2022 with flash attention, sequence parallel).
CostModel cost_from_specs(const ModelShape& m, const Hardware& hw, double mfu);
// Bytes of K and V one GPU of the rank sends per token per layer (bf16, heads split over TP).
double kv_bytes_per_token(const ModelShape& m);
// Model-state bytes per GPU (bf16 params + grads, fp32 Adam + master sharded over dp by ZeRO-1).
double model_state_bytes(const ModelShape& m, int dp);

}  // namespace longctx
