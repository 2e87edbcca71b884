// ByteScale HDP planning (DESIGN.md §3.1–3.3): offload ratio r and rank count D(s) (Eq. 3),
// naive HDP (Alg. 1), the balance scheduler (Alg. 2, DP- and PP-balance) and the static DP×CP
// baseline (MegaScale). A Plan is what the runtime consumes: for every rank, its micro-batches in
// order, each a list of (sequence id, token range) slices; for every sequence, the ranks it spans
// (in slice order) and its offload ratio. Times are predictions of the cost model.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "dist/cost_model.h"

namespace longctx {

struct PlanOptions {
  int ranks = 0;             // d_hdp: HDP ranks (each a TP×PP group)
  int64_t capacity = 0;      // C: tokens per rank per micro-batch without offloading
  int layers = 1;            // l: transformer layers held by one rank (pipeline stage)
  int pp = 1;                // pipeline stages: rank time += (pp − 1) · its largest micro-batch
  CostModel cost;            // per-layer T(s), Act(s) of one rank
  double offload_bw = 0;     // min(B_d2h, B_h2d) bytes/s; 0 disables selective offloading
  double delta = 0;          // balance tolerance δ (seconds)
  // Context-parallel communication of a sequence over several ranks (per layer, per GPU).
  double kv_bytes_per_token = 0;  // K+V bytes one GPU sends per token
  int window = 0;                 // > 0: SWAT halo exchange of w−1 rows; 0: ring over all KV
  Link link_intra, link_inter;    // ranks on one node / on different nodes
  int ranks_per_node = 1;
  uint64_t seed = 1;              // static baseline: data order of micro-batches
};

// ByteScale Eq. 3: r* = min(1, T(s)·B / Act(s)) (offload hidden under compute), then lowered to
// the smallest r that reaches the same minimal D (no more PCIe traffic than needed). 0 when
// offloading is off, s ≤ C, or l ≤ 2.
double offload_ratio(int64_t s, const PlanOptions& o);
// ByteScale Eq. 3: D(s) = ceil((2·Act(s) + (1 − r)(l − 2)·Act(s)) / (l·Act(C))), at least 1.
int ranks_for(int64_t s, double r, const PlanOptions& o);

// The smallest r with ranks_for(s, r) ≤ d (0 if d ≥ D(s) without offloading).
double offload_ratio_for(int64_t s, int d, const PlanOptions& o);

struct Slice {
  int32_t seq = 0;              // index into the length list
  int64_t begin = 0, end = 0;   // tokens [begin, end) of that sequence
};
struct MicroBatch {
  std::vector<Slice> slices;
  int64_t tokens = 0;
  double time_s = 0;            // predicted time on this rank (compute + exposed comm)
};
struct RankPlan {
  std::vector<MicroBatch> micro_batches;
  double busy_s = 0;            // Σ micro-batch times
  double time_s = 0;            // finish time: waits for partner ranks + pipeline bubble
};
struct SeqPlan {
  int64_t length = 0;
  std::vector<int32_t> ranks;   // ranks holding its slices, in token order
  double offload_ratio = 0;
};
struct Plan {
  std::string scheduler;        // static | naive | balance-dp | balance-pp
  int64_t capacity = 0;
  int cp_degree = 0;            // static baseline's d_cp (0 for HDP)
  std::vector<RankPlan> ranks;
  std::vector<SeqPlan> seqs;
  double step_time_s = 0;       // max over ranks of time_s
  double imbalance_s = 0;       // max − min of time_s
  double delta_s = 0;
  double comm_s = 0;            // Σ over ranks of exposed CP communication
};

enum class Scheduler { static_dpcp, naive, balance_dp, balance_pp };
Scheduler scheduler_from_string(const std::string& s);  // static | naive | balance | balance-dp | balance-pp
const char* to_string(Scheduler s);

// Alg. 1 / Alg. 2 / baseline. Throw Error when a sequence needs more ranks than exist.
Plan plan_static(const std::vector<int64_t>& lengths, const PlanOptions& o);
Plan plan_naive(const std::vector<int64_t>& lengths, const PlanOptions& o);
Plan plan_balance(const std::vector<int64_t>& lengths, const PlanOptions& o, bool pp_balance);
Plan plan_make(Scheduler s, const std::vector<int64_t>& lengths, const PlanOptions& o);

// Invariants (tests): every token of every sequence is in exactly one slice; a packed
// micro-batch holds ≤ C tokens; a slice of a sequence split over D ranks fits the device memory
// l·Act(C) with its offload ratio; seqs[i].ranks matches the slices. Throws Error on violation.
void plan_check(const Plan& p, const std::vector<int64_t>& lengths, const PlanOptions& o);

// JSON for the runtime and tools; `full` includes every rank's micro-batches and slices.
nlohmann::json plan_to_json(const Plan& p, bool full);
// The inverse of plan_to_json(p, true) (a scheduler process sends plans this way). Throws Error
// naming `where` and the field for anything malformed; run plan_check for the invariants.
Plan plan_from_json(const nlohmann::json& j, const std::string& where);
// A readable summary: ranks per sequence, micro-batches per rank, predicted times, imbalance.
std::string plan_summary(const Plan& p);
}  // namespace longctx
