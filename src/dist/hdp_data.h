// The data side of HDP training (DESIGN.md §3.1, §3.3): a global batch is a token budget filled
// with whole documents (mixed lengths, as they come), the planner places them on ranks, and each
// rank needs only the tokens of its own slices.
//
//   DocStream      documents of a token shard in a per-epoch shuffled order (the Loader's), READ AS
//                  LENGTHS ONLY: next(budget) returns the step's sequences as (document, offset,
//                  length). A document longer than max_len, or than what is left of the budget, is
//                  cut; the rest continues as the next sequence (RoPE positions restart at each cut).
//   HdpStepData    what one rank needs for one step: the whole plan (placements of shared
//                  sequences) and the tokens of its slices (for a ring sequence: its zig-zag
//                  chunks, RingRule).
//   StepSource     where HdpStepData comes from: every rank reading and planning for itself
//                  (LocalStepSource, here), or a scheduler rank sending it (remote_loader.h).
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/loader.h"
#include "dist/hdp_planner.h"
#include "model/config.h"

namespace longctx {

// Tokens [offset, offset + length) of document `doc` of the shard: one sequence of a step.
struct SeqRef {
  uint64_t doc = 0;
  int64_t offset = 0, length = 0;
};

class DocStream {
 public:
  DocStream(const std::string& shard_path, uint64_t seed, int64_t max_len);
  std::vector<SeqRef> next(int64_t budget);
  // {"epoch", "doc", "offset", "seed"}; restore() checks the seed and continues exactly.
  nlohmann::json state() const;
  void restore(const nlohmann::json& state);
  const Shard& shard() const { return order_src_.shard(); }

 private:
  Loader order_src_;  // the shuffled document order of each epoch (Loader::epoch_order)
  uint64_t seed_;
  int64_t max_len_;
  uint64_t epoch_ = 0, index_ = 0;  // position: order_[index_], token offset_ inside it
  int64_t offset_ = 0;
  std::vector<uint64_t> order_;
};

std::vector<int64_t> seq_lengths(const std::vector<SeqRef>& seqs);

// Which sequences spread over several ranks run RING attention (ring_attention.h, ByteScale
// §5.1) rather than the halo exchange (cp_attention.h): those a softmax model attends to in full
// (its window covers the whole sequence: Llama-style full causal attention) and that have ≥ 2N
// tokens for their N ranks, so that every zig-zag chunk holds a token. Shorter shared sequences
// (only the static DP×CP baseline splits them) keep the planner's contiguous slices: the halo
// exchange, or for a full-attention model the micro-batch's one packed ring call (packed
// dist-attn, hdp_train.h), which carries every sequence of the micro-batch.
struct RingRule {
  int64_t window = 0;  // the window of a softmax model; 0: SWAT (never ring)
  bool ring(const SeqPlan& s) const {
    const int64_t N = int64_t(s.ranks.size());
    return window > 0 && N > 1 && s.length <= window && s.length >= 2 * N;
  }
};
RingRule ring_rule(const Config& c);

// Tokens [begin, end) of one sequence.
struct SeqRange {
  int64_t begin = 0, end = 0;
};

// The rows of its sequence that slice `sl` of `rank` trains, ascending: the slice itself, or for
// a ring sequence zig-zag chunks i and 2N−1−i (zigzag_chunk), i = the rank's place among the
// sequence's N ranks. The planner's slices say which ranks hold a sequence; zig-zag only changes
// which rows each of them gets.
std::vector<SeqRange> slice_rows(const Plan& p, const Slice& sl, int rank, const RingRule& rule);
// One past a range: the tokens a rank reads for it (the last one is only a target).
inline int64_t fetch_end(const SeqRange& r, int64_t length) { return std::min(r.end + 1, length); }
// Tokens read for `rows`: Σ (fetch_end − begin).
int64_t rows_fetch_count(const std::vector<SeqRange>& rows, int64_t length);

// One rank's share of a step. tokens[i] belongs to this rank's i-th slice (micro-batches in plan
// order, slices in order): for each of its rows' ranges (slice_rows), the sequence's tokens
// [begin, fetch_end), back to back.
struct HdpStepData {
  Plan plan;
  std::vector<std::vector<int32_t>> tokens;
  int64_t n_targets = 0;  // predicted tokens of the GLOBAL batch: Σ over sequences (length − 1)
  nlohmann::json cursor;  // data position after this step (for checkpoints)
};

// Copies tokens [begin, begin + n) of the step's sequence `seq` to out.
using TokenReader = std::function<void(int32_t seq, int64_t begin, int64_t n, int32_t* out)>;
// The tokens `rank` needs for `plan`.
HdpStepData hdp_step_data(Plan plan, const TokenReader& read, int rank, const RingRule& rule);
// The same, read from the shard.
HdpStepData hdp_step_data(Plan plan, const std::vector<SeqRef>& seqs, const Shard& shard, int rank,
                          const RingRule& rule);

// Makes a checked plan from the step's sequence lengths (the same on every rank).
using HdpPlanner = std::function<Plan(const std::vector<int64_t>&)>;

class StepSource {
 public:
  virtual ~StepSource() = default;
  virtual HdpStepData next() = 0;
  virtual void restore(const nlohmann::json& cursor) = 0;
};

// Every rank reads the lengths, plans (deterministically: all plans agree), reads its slices.
class LocalStepSource final : public StepSource {
 public:
  LocalStepSource(DocStream stream, HdpPlanner planner, int64_t budget, int rank, RingRule rule)
      : stream_(std::move(stream)), planner_(std::move(planner)), budget_(budget), rank_(rank),
        rule_(rule) {}
  HdpStepData next() override;
  void restore(const nlohmann::json& cursor) override { stream_.restore(cursor); }

 private:
  DocStream stream_;
  HdpPlanner planner_;
  int64_t budget_;
  int rank_;
  RingRule rule_;
};

}  // namespace longctx
