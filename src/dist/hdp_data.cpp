// Documents → step sequences → one rank's slices (see hdp_data.h).
#include "dist/hdp_data.h"

#include <algorithm>

#include "core/error.h"
#include "dist/ring_attention.h"

namespace longctx {

DocStream::DocStream(const std::string& shard_path, uint64_t seed, int64_t max_len)
    : order_src_(shard_path, 1, 1, seed), seed_(seed), max_len_(max_len) {
  LCX_CHECK(max_len > 0, "HDP data: the longest sequence must be > 0 tokens, got {}", max_len);
  LCX_CHECK(shard().n_tokens() > 0, "HDP data: shard {} has no tokens", shard_path);
  order_ = order_src_.epoch_order(0);
}

std::vector<SeqRef> DocStream::next(int64_t budget) {
  LCX_CHECK(budget > 0, "HDP data: the step's token budget must be > 0, got {}", budget);
  std::vector<SeqRef> seqs;
  for (int64_t left = budget; left > 0;) {
    if (index_ == order_.size()) {  // next epoch
      order_ = order_src_.epoch_order(++epoch_);
      index_ = 0;
    }
    const uint64_t doc = order_[index_];
    const int64_t len = int64_t(shard().doc_length(doc));
    const int64_t take = std::min({len - offset_, max_len_, left});
    if (take > 0) seqs.push_back({doc, offset_, take});
    offset_ += std::max<int64_t>(take, 0);
    left -= std::max<int64_t>(take, 0);
    if (offset_ >= len) {
      index_++;
      offset_ = 0;
    }
  }
  return seqs;
}

nlohmann::json DocStream::state() const {
  return {{"epoch", epoch_}, {"doc", index_}, {"offset", offset_}, {"seed", seed_}};
}

void DocStream::restore(const nlohmann::json& st) {
  try {
    LCX_CHECK(st.at("seed").get<uint64_t>() == seed_,
              "HDP data cursor: seed {} differs from this run's {}", st.at("seed").dump(), seed_);
    epoch_ = st.at("epoch").get<uint64_t>();
    index_ = st.at("doc").get<uint64_t>();
    offset_ = st.at("offset").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    fail("HDP data cursor {}: {}", st.dump(), e.what());
  }
  order_ = order_src_.epoch_order(epoch_);
  LCX_CHECK(index_ <= order_.size(), "HDP data cursor: document {} of {}", index_, order_.size());
}

std::vector<int64_t> seq_lengths(const std::vector<SeqRef>& seqs) {
  std::vector<int64_t> len;
  for (const SeqRef& s : seqs) len.push_back(s.length);
  return len;
}

RingRule ring_rule(const Config& c) {
  return RingRule{c.attention == AttnKind::softmax ? int64_t(c.window) : 0};
}

std::vector<SeqRange> slice_rows(const Plan& p, const Slice& sl, int rank, const RingRule& rule) {
  const SeqPlan& sp = p.seqs[size_t(sl.seq)];
  if (!rule.ring(sp)) return {{sl.begin, sl.end}};
  const int N = int(sp.ranks.size());
  const int i = int(std::find(sp.ranks.begin(), sp.ranks.end(), rank) - sp.ranks.begin());
  LCX_CHECK(i < N, "HDP data: rank {} holds a slice of sequence {} but is not among its ranks", rank,
            sl.seq);
  const auto [b0, e0] = zigzag_chunk(sp.length, N, i);
  const auto [b1, e1] = zigzag_chunk(sp.length, N, 2 * N - 1 - i);
  return {{b0, e0}, {b1, e1}};
}

int64_t rows_fetch_count(const std::vector<SeqRange>& rows, int64_t length) {
  int64_t n = 0;
  for (const SeqRange& r : rows) n += fetch_end(r, length) - r.begin;
  return n;
}

HdpStepData hdp_step_data(Plan plan, const TokenReader& read, int rank, const RingRule& rule) {
  LCX_CHECK(rank >= 0 && size_t(rank) < plan.ranks.size(), "HDP data: rank {} not in the plan's {}",
            rank, plan.ranks.size());
  HdpStepData d;
  for (const SeqPlan& s : plan.seqs) d.n_targets += s.length - 1;
  for (const MicroBatch& mb : plan.ranks[size_t(rank)].micro_batches)
    for (const Slice& sl : mb.slices) {
      const int64_t len = plan.seqs[size_t(sl.seq)].length;
      const std::vector<SeqRange> rows = slice_rows(plan, sl, rank, rule);
      std::vector<int32_t> tok(size_t(rows_fetch_count(rows, len)));
      int32_t* at = tok.data();
      for (const SeqRange& r : rows) {
        read(sl.seq, r.begin, fetch_end(r, len) - r.begin, at);
        at += fetch_end(r, len) - r.begin;
      }
      d.tokens.push_back(std::move(tok));
    }
  d.plan = std::move(plan);
  return d;
}

HdpStepData hdp_step_data(Plan plan, const std::vector<SeqRef>& seqs, const Shard& shard, int rank,
                          const RingRule& rule) {
  LCX_CHECK(plan.seqs.size() == seqs.size(), "HDP data: plan has {} sequences, the step {}",
            plan.seqs.size(), seqs.size());
  return hdp_step_data(
      std::move(plan),
      [&](int32_t q, int64_t begin, int64_t n, int32_t* out) {
        const SeqRef& s = seqs[size_t(q)];
        shard.copy_tokens(shard.doc_begin(s.doc) + uint64_t(s.offset + begin), size_t(n), out);
      },
      rank, rule);
}

HdpStepData LocalStepSource::next() {
  const std::vector<SeqRef> seqs = stream_.next(budget_);
  HdpStepData d = hdp_step_data(planner_(seq_lengths(seqs)), seqs, stream_.shard(), rank_, rule_);
  d.cursor = stream_.state();
  return d;
}

}  // namespace longctx
