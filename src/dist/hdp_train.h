// The HDP training runtime (DESIGN.md §3.1, ByteScale §5.1): every rank runs its micro-batches of
// the step's plan in plan order — packed short sequences locally, a long sequence over several
// ranks with context-parallel attention (cp_layer.h): halo exchange of contiguous slices for SWAT,
// ring attention of zig-zag chunks for a softmax model that attends to the whole sequence
// (RingRule, hdp_data.h) — then the gradients are summed over ranks and every rank takes the same
// clipped AdamW step.
//
//  - Token-level loss: Σ token losses / N, N = predicted tokens of the GLOBAL batch, so the summed
//    gradient equals single-process training on the whole batch (dloss = 1/N on every rank).
//  - A slice keeps its sequence's global positions (RoPE) and, for its last token, the target
//    from the next slice (HdpStepData carries one token past the slice); a ring part is two such
//    runs (zig-zag chunks i and 2N−1−i), each with its own positions and targets.
//  - ZeRO-1 (zero1): rank i owns chunk i of the flat buffers (Comm::chunk_begin): reduce-scatter
//    of gradients, AdamW on its chunk (moments only for it), all-gather of parameters. The same
//    elementwise arithmetic as without ZeRO-1, so both give bit-identical parameters.
//
//  - Packed dist-attn (ByteScale §7): a static DP×CP micro-batch of a full-attention softmax
//    model (Plan::cp_degree = N > 1, every sequence of it ≤ the window) is ONE ring call per layer
//    over the CP group's whole packed micro-batch instead of one exchange per sequence
//    (hdp_packed_placement): each rank holds zig-zag chunks i and 2N−1−i of every sequence of
//    ≥ 2N tokens, so the causal work is balanced per sequence.
//
// Message order (no deadlock): a halo or ring exchange blocks until the partner ranks reach the
// same attention call (a ring exchange: every rank of the sequence, at each of its N steps), and
// messages between two ranks with one tag (the layer) match in posting order, so ranks must meet
// their exchanges in a consistent order. Each rank runs, per micro-batch in plan order, the
// forward of layers 0..L−1 and the backward of L−1..0, each over the micro-batch's exchanges: its
// shared sequences in slice order, or the one packed ring call. The rule, checked by
// hdp_check_order for every plan: the graph whose nodes are these exchanges (sequence or packed
// micro-batch, layer, direction; each one involving EVERY rank of the sequence or CP group, which
// covers the ring and over-approximates the halo) and whose edges follow each rank's order is
// acyclic. Then all schedules are sub-sequences of one global order (a topological order), and
// the first unfinished exchange always has all its ranks ready. The planner's plans satisfy it:
// it places units in one global order, backfills only single-rank micro-batches, and a static
// DP×CP micro-batch holds the same sequences, in the same order, on every rank of its CP group.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "dist/cp_layer.h"
#include "dist/hdp_data.h"
#include "dist/hdp_planner.h"
#include "model/model.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace longctx {

// Throws Error when the plan breaks the message-order rule above (model of `layers` layers whose
// ring sequences and packed micro-batches `rule` names).
void hdp_check_order(const Plan& p, int layers, const RingRule& rule);

// The placement of sequence `seq` (over ≥ 2 ranks) as context-parallel parts: its ranks in
// token order and their slice bounds; one document.
CpPlacement hdp_placement(const Plan& p, int32_t seq);
// The zig-zag ring placement of a ring sequence (RingRule) over its ranks; one document.
RingPlacement hdp_ring_placement(const Plan& p, int32_t seq);

// ByteScale §7 "packed dist-attn": micro-batch k of `rank`'s CP group of a static DP×CP plan
// (ranks [gN, gN + N), N = Plan::cp_degree; micro-batch k of each of them holds slices of the same
// sequences) as one packed stream: its sequences in ascending id order, and as the rows of group
// rank r the slice_rows of r's slices (under a softmax rule: zig-zag chunks i and 2N−1−i of every
// sequence of ≥ 2N tokens, the planner's contiguous slice of a shorter one; under RingRule{}: the
// slices, i.e. contiguous splitting). The parts are the group ranks holding rows.
struct PackedMicroBatch {
  std::vector<int32_t> seqs;  // the stream's documents (sequence ids, ascending)
  RingPlacement ring;
};
PackedMicroBatch hdp_packed_placement(const Plan& p, int rank, size_t k, const RingRule& rule);
// Whether `rank`'s micro-batch k runs packed dist-attn: a static DP×CP plan (cp_degree > 1), a
// softmax rule whose window covers every sequence of the micro-batch, one of them over ≥ 2 ranks.
bool hdp_packed(const Plan& p, int rank, size_t k, const RingRule& rule);

struct HdpStepResult {
  double loss = 0;       // mean over the global batch's predicted tokens
  double grad_norm = 0;  // before clipping
  int64_t tokens = 0;    // tokens of the global batch
  int64_t cp_bytes = 0;  // context-parallel (halo and ring) bytes all ranks sent in this step
};

// One rank's model, optimizer (its shard under ZeRO-1) and context-parallel attention (ring for
// the sequences ring_rule(model.config) names). comm's buffers are in the model's backend memory
// (MPI with host backends, NCCL with cuda); parameters, gradients and moments are only touched
// through Backend ops.
class HdpTrainer {
 public:
  HdpTrainer(Comm& comm, Model& model, AdamW opt, bool zero1);
  // One optimizer step on the step's data; the same result on every rank. Throws Error for a
  // non-finite loss or gradient (every rank throws).
  HdpStepResult step(const HdpStepData& d, float lr, float clip);
  // Full AdamW moments (gathered from the shards under ZeRO-1; collective: every rank calls).
  void gather_moments(std::vector<float>& m, std::vector<float>& v);
  // Install full moments (resume); each rank keeps its shard under ZeRO-1.
  void set_moments(int64_t step, const std::vector<float>& m, const std::vector<float>& v);
  const AdamW& optimizer() const { return opt_; }

 private:
  Comm& comm_;
  Model& model_;
  AdamW opt_;
  bool zero1_;
  size_t lo_ = 0, hi_ = 0;   // this rank's chunk of the flat buffers
  ParamLayout shard_;        // the tensors' pieces inside [lo_, hi_), offsets from lo_
  RingRule ring_;
  CpLayerAttention attn_;
  std::vector<int32_t> tok_, tgt_, pos_, cu_;  // one micro-batch's packed stream
};

struct HdpOptions {
  TrainOptions train;            // data, out, model, schedule, optimizer, seed, checkpoints
  Scheduler scheduler = Scheduler::balance_dp;
  int64_t capacity = 1024;       // C: tokens per rank per micro-batch
  int64_t step_tokens = 0;       // global batch token budget (0: ranks·C)
  int64_t max_len = 0;           // longest sequence; longer documents are cut (0: ranks·C)
  std::string cost_path;         // cost model JSON (`longctx bench profile`); empty: T(s) ∝ s
  bool zero1 = false;
  bool remote_loader = false;    // rank 0 plans and sends each rank its plan and slices
};

// The planner of a run: plan_make + plan_check + hdp_check_order over `ranks` ranks (ring rule of
// o.train.config).
HdpPlanner hdp_planner(const HdpOptions& o, int ranks);

// `mpirun -np N longctx train --hdp`: the training loop on every rank; rank 0 writes metrics
// (OUT/metrics.jsonl) and checkpoints (OUT/checkpoint, resumable with --resume).
// comm carries the training messages (halo exchange, gradients) in the memory of the backend
// o.train.backend: MPI for host backends, NCCL for cuda (one GPU per rank). loader_comm carries
// the remote loader's host messages (null: comm; with NCCL pass the MPI communicator).
TrainResult hdp_train(Comm& comm, const HdpOptions& o, Comm* loader_comm = nullptr);

}  // namespace longctx
