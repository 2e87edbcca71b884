// Cluster simulator (DESIGN.md §3.3, ByteScale §8 ablation): predicts the step time of a
// mixed-length global batch on a GPU cluster for the ablation stages
//   (a) static DP×CP  (b) + dynamic communication (naive HDP)  (c) + selective offloading
//   (d) + balance scheduler  (e) + remote dataloader
// from a model shape, public hardware specs and a length distribution. Nothing is fitted to the
// paper's answers; the constants are in cost_model.cpp and SimOptions.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist/cost_model.h"
#include "dist/hdp_planner.h"

namespace longctx {

struct SimOptions {
  std::string model = "7b", hardware = "h100";
  std::string dist = "bytescale", lengths_file;  // lengths_file overrides dist
  int gpus = 1024;
  int64_t context = 2 << 20;            // longest sequence (the distribution is capped here)
  int64_t global_tokens = 32 << 20;     // tokens per global batch
  int tp = 0, pp = 0;                   // 0: the model preset's
  int window = 0;                       // > 0: simulate a SWAT model with this window
  // Attention kind of the simulated model (same shape, same data, same cluster): "full" (causal
  // softmax: quadratic T(s), ring exchange of whole K/V slices) or "swat" (sliding window: linear
  // T(s), halo of w−1 rows; window defaults to kSwatWindow); "" = swat iff window > 0.
  std::string attention;
  double mfu = 0.5;                     // achieved fraction of peak FLOP/s in GEMMs/attention
  double mem_usable = 0.9;              // fraction of HBM usable (allocator, workspace)
  int64_t capacity = 0;                 // C; 0 = from memory
  std::string cost_file;                // profile JSON overriding the spec-derived T/Act
  double delta = 0;                     // balance tolerance (s)
  int steps = 3;                        // global batches averaged
  uint64_t seed = 1;
  // Local dataloader without the remote loader: every node reads and tokenizes the whole global
  // batch to learn the lengths for global planning (ByteScale §7).
  double tokenize_rate = 1e6;           // tokens/s per host core (SentencePiece BPE order)
  int loader_cores = 32;                // host cores per node doing it
  double bytes_per_token = 4;           // raw text bytes per token read from storage
  double storage_bw = 12.5e9;           // bytes/s per node from the distributed file system
};

struct StageResult {
  std::string name, label;
  double step_s = 0, tokens_per_s = 0, speedup = 0;
  double compute_s = 0, exposed_comm_s = 0, imbalance_s = 0, loader_s = 0, grad_sync_s = 0;
};

struct SimResult {
  nlohmann::json setup;                 // derived constants: C, d_hdp, d_cp, r, …
  std::vector<StageResult> stages;      // (a)–(e)
  Plan plan_static, plan_naive, plan_balance;  // of the first global batch (for plots)
  double plan_time_s = 0;               // wall time of one balance plan (our planner)
};

// The resolved cluster: model shape (TP/PP applied), hardware and the planner's options (no
// offloading; set plan.offload_bw = hw.pcie.bandwidth to enable it).
struct SimSetup {
  ModelShape model;
  Hardware hw;
  PlanOptions plan;
  double state_bytes = 0;  // model states per GPU
};
SimSetup sim_setup(const SimOptions& o);

constexpr int kSwatWindow = 256;  // SWAT paper's window, the default of --attention swat

// The window `o` simulates: 0 for full attention. Throws Error for an unknown kind or a window
// given with --attention full.
int sim_window(const SimOptions& o);

// The paper's ablation (7B, 2M context, 1,024 GPUs): speedups of (a)–(e) over (a).
extern const double kPaperAblation[5];

// Resolves the setup (throws Error on bad settings: unknown model/hardware/distribution, a
// model that does not fit, more ranks needed than exist) and runs every stage.
SimResult simulate(const SimOptions& o);
nlohmann::json sim_to_json(const SimResult& r);
std::string sim_table(const SimResult& r, bool compare_paper);
// The same model shape, data and cluster with full attention and with SWAT (o.window, else
// kSwatWindow): step time per stage side by side, and SWAT's speedup over full attention.
struct SimComparison {
  SimResult full, swat;
};
SimComparison simulate_attention_kinds(SimOptions o);
std::string sim_comparison_table(const SimComparison& c);

}  // namespace longctx
