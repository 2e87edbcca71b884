// Training/validation batches from a token shard: whole documents packed into a continuous
// token stream, cut into sequences of S tokens (varlen packing, no padding).
//
// The stream is the shard's documents in a per-epoch order (a Philox shuffle of (seed, epoch)),
// concatenated, and epochs follow each other without a gap. Batch k holds stream tokens
// [k·B·S, (k+1)·B·S), as B sequences of S. A "segment" is the part of one document inside one
// sequence: a document longer than the space left in a sequence is cut at the sequence end and
// continues at the start of the next sequence as a new segment (so a document longer than S
// becomes several segments of ≤ S tokens). Attention and positions work per segment:
//   pos[t]        position of t within its segment (0 at each segment start)
//   targets[t]    tokens[t+1] when t+1 is in the same segment, else -1 (last token of a document
//                 or of a sequence: no prediction across a boundary)
//   cu_seqlens    segment boundaries in the packed B·S stream, flash-attn varlen style:
//                 0 = c_0 < c_1 < … < c_n = B·S, and every multiple of S is among them.
// Every token of the shard appears exactly once per epoch.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "data/shard.h"

namespace longctx {

struct Batch {
  int B = 0, S = 0;                 // sequences × tokens per sequence; T = B·S
  std::vector<int32_t> tokens;      // [T]
  std::vector<int32_t> targets;     // [T] next token or -1
  std::vector<int32_t> pos;         // [T] position within the segment
  std::vector<int32_t> cu_seqlens;  // [n_segments + 1]
  int64_t n_targets() const;        // number of targets != -1 (the loss denominator)
};

// B sequences of S uniformly random tokens in [0, V), one document per sequence (benchmarks and
// tests that need a batch but no data).
Batch random_batch(int B, int S, int V, uint64_t seed);

class Loader {
 public:
  Loader(const std::string& shard_path, int B, int S, uint64_t seed);

  Batch next();
  void next(Batch& out);  // reuses out's buffers

  // The cursor: {"epoch", "position" (tokens of this epoch already served), "seed",
  // "n_tokens", "n_docs"}. Independent of B and S. restore() checks seed/n_tokens/n_docs against
  // this loader (a state from another shard or seed is an Error) and continues bit-exactly.
  nlohmann::json state() const;
  void restore(const nlohmann::json& state);

  uint64_t epoch() const { return epoch_; }
  uint64_t position() const { return position_; }
  const Shard& shard() const { return shard_; }
  // The document order of `epoch` (a permutation of 0..n_docs-1), as used by next().
  std::vector<uint64_t> epoch_order(uint64_t epoch) const;

 private:
  void start_epoch(uint64_t epoch);
  Shard shard_;
  int B_, S_;
  uint64_t seed_;
  uint64_t epoch_ = 0, position_ = 0;  // cursor
  std::vector<uint64_t> order_;        // document order of epoch_
  std::vector<uint64_t> starts_;       // starts_[i]: stream offset of order_[i] within the epoch
  uint64_t doc_ = 0, offset_ = 0;      // order_ index and token offset inside it, at position_
};

// Validation batches: the shard's documents in file order, packed the same way, one pass over
// the first `max_tokens` tokens of that stream (all of them when max_tokens <= 0). The last batch
// is completed with padding (token 0, target -1, its own segment per sequence) so every batch is
// B·S; a document cut by max_tokens has no target at its cut.
class ValidationBatches {
 public:
  ValidationBatches(const std::string& shard_path, int B, int S, int64_t max_tokens = -1);
  bool next(Batch& out);  // false when all tokens were served
  void reset();
  uint64_t num_batches() const;
  uint64_t n_tokens() const { return limit_; }  // tokens served per pass
  const Shard& shard() const { return shard_; }

 private:
  Shard shard_;
  int B_, S_;
  uint64_t limit_;
  uint64_t doc_ = 0, offset_ = 0, served_ = 0;
};
using ValLoader = ValidationBatches;

}  // namespace longctx
