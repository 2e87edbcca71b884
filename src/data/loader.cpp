#include "data/loader.h"

#include <algorithm>

#include "core/error.h"
#include "core/rng.h"

namespace longctx {

int64_t Batch::n_targets() const {
  int64_t n = 0;
  for (int32_t t : targets) n += (t >= 0);
  return n;
}

namespace {

void batch_resize(Batch& out, int B, int S) {
  size_t T = size_t(B) * size_t(S);
  out.B = B;
  out.S = S;
  out.tokens.resize(T);
  out.targets.resize(T);
  out.pos.resize(T);
  out.cu_seqlens.clear();
  out.cu_seqlens.push_back(0);
}

// Writes one segment of k tokens at t0 (tokens already in out.tokens[t0 .. t0+k)).
void segment_finish(Batch& out, size_t t0, size_t k) {
  for (size_t i = 0; i < k; i++) {
    out.pos[t0 + i] = int32_t(i);
    out.targets[t0 + i] = i + 1 < k ? out.tokens[t0 + i + 1] : -1;
  }
  out.cu_seqlens.push_back(int32_t(t0 + k));
}

void check_shape(const std::string& path, int B, int S) {
  LCX_CHECK(B >= 1 && S >= 1, "loader '{}': batch size {} and sequence length {} must be >= 1", path,
            B, S);
  LCX_CHECK(int64_t(B) * S <= INT32_MAX, "loader '{}': B·S = {} exceeds int32 range", path,
            int64_t(B) * S);
}

}  // namespace

Loader::Loader(const std::string& shard_path, int B, int S, uint64_t seed)
    : shard_(Shard::open(shard_path)), B_(B), S_(S), seed_(seed) {
  check_shape(shard_path, B, S);
  LCX_CHECK(shard_.n_tokens() > 0, "loader '{}': shard has no tokens", shard_path);
  start_epoch(0);
}

std::vector<uint64_t> Loader::epoch_order(uint64_t epoch) const {
  uint64_t n = shard_.n_docs();
  std::vector<uint64_t> order(n);
  for (uint64_t i = 0; i < n; i++) order[i] = i;
  // Fisher–Yates; epoch e draws from Philox counters [e·2^32, (e+1)·2^32) of the seed's stream
  Rng rng(seed_, epoch << 32);
  for (uint64_t i = n; i > 1; i--) std::swap(order[i - 1], order[rng.below(i)]);
  return order;
}

void Loader::start_epoch(uint64_t epoch) {
  epoch_ = epoch;
  order_ = epoch_order(epoch);
  starts_.assign(order_.size() + 1, 0);
  for (size_t i = 0; i < order_.size(); i++) starts_[i + 1] = starts_[i] + shard_.doc_length(order_[i]);
  position_ = doc_ = offset_ = 0;
}

Batch Loader::next() {
  Batch b;
  next(b);
  return b;
}

void Loader::next(Batch& out) {
  batch_resize(out, B_, S_);
  const uint64_t n = order_.size();
  for (int b = 0; b < B_; b++) {
    size_t s = 0;
    while (s < size_t(S_)) {
      while (doc_ < n && offset_ == shard_.doc_length(order_[doc_])) {
        doc_++;
        offset_ = 0;
      }
      if (doc_ == n) {
        start_epoch(epoch_ + 1);
        continue;
      }
      uint64_t d = order_[doc_];
      size_t k = size_t(std::min<uint64_t>(shard_.doc_length(d) - offset_, uint64_t(S_) - s));
      size_t t0 = size_t(b) * size_t(S_) + s;
      shard_.copy_tokens(shard_.doc_begin(d) + offset_, k, &out.tokens[t0]);
      segment_finish(out, t0, k);
      offset_ += k;
      position_ += k;
      s += k;
    }
  }
}

nlohmann::json Loader::state() const {
  return {{"version", 1},           {"epoch", epoch_},
          {"position", position_},  {"seed", seed_},
          {"n_tokens", shard_.n_tokens()}, {"n_docs", shard_.n_docs()}};
}

void Loader::restore(const nlohmann::json& st) {
  const std::string& path = shard_.path();
  LCX_CHECK(st.is_object(), "loader '{}': state must be a JSON object, got {}", path, st.type_name());
  auto get = [&](const char* key) -> uint64_t {
    auto it = st.find(key);
    LCX_CHECK(it != st.end() && (it->is_number_unsigned() ||
                                  (it->is_number_integer() && it->get<int64_t>() >= 0)),
              "loader '{}': state field \"{}\" missing or not a non-negative integer (state: {})",
              path, key, st.dump());
    return it->get<uint64_t>();
  };
  LCX_CHECK(get("version") == 1, "loader '{}': unsupported state version {}", path, get("version"));
  uint64_t seed = get("seed"), n_tokens = get("n_tokens"), n_docs = get("n_docs");
  LCX_CHECK(seed == seed_, "loader '{}': state was saved with data seed {}, this loader uses {}",
            path, seed, seed_);
  LCX_CHECK(n_tokens == shard_.n_tokens() && n_docs == shard_.n_docs(),
            "loader '{}': state was saved for a shard with {} tokens in {} documents, this shard has "
            "{} tokens in {} documents", path, n_tokens, n_docs, shard_.n_tokens(), shard_.n_docs());
  uint64_t epoch = get("epoch"), position = get("position");
  LCX_CHECK(position <= shard_.n_tokens(), "loader '{}': state position {} beyond the shard's {} "
            "tokens", path, position, shard_.n_tokens());
  start_epoch(epoch);
  position_ = position;
  doc_ = uint64_t(std::upper_bound(starts_.begin(), starts_.end(), position) - starts_.begin()) - 1;
  offset_ = position - starts_[doc_];
}

ValidationBatches::ValidationBatches(const std::string& shard_path, int B, int S, int64_t max_tokens)
    : shard_(Shard::open(shard_path)), B_(B), S_(S) {
  check_shape(shard_path, B, S);
  limit_ = max_tokens > 0 ? std::min<uint64_t>(uint64_t(max_tokens), shard_.n_tokens()) : shard_.n_tokens();
}

void ValidationBatches::reset() { doc_ = offset_ = served_ = 0; }

uint64_t ValidationBatches::num_batches() const {
  uint64_t T = uint64_t(B_) * uint64_t(S_);
  return (limit_ + T - 1) / T;
}

bool ValidationBatches::next(Batch& out) {
  const uint64_t n = shard_.n_docs();
  auto skip_done = [&] {
    while (doc_ < n && offset_ == shard_.doc_length(doc_)) {
      doc_++;
      offset_ = 0;
    }
  };
  if (served_ >= limit_) return false;
  batch_resize(out, B_, S_);
  for (int b = 0; b < B_; b++) {
    size_t s = 0;
    while (s < size_t(S_)) {
      skip_done();
      size_t t0 = size_t(b) * size_t(S_) + s;
      if (served_ >= limit_ || doc_ == n) {  // padding to the end of this sequence: one segment
        size_t k = size_t(S_) - s;
        std::fill_n(&out.tokens[t0], k, 0);
        for (size_t i = 0; i < k; i++) {
          out.pos[t0 + i] = int32_t(i);
          out.targets[t0 + i] = -1;
        }
        out.cu_seqlens.push_back(int32_t(t0 + k));
        s += k;
        continue;
      }
      uint64_t k = std::min<uint64_t>(shard_.doc_length(doc_) - offset_, uint64_t(S_) - s);
      k = std::min(k, limit_ - served_);
      shard_.copy_tokens(shard_.doc_begin(doc_) + offset_, k, &out.tokens[t0]);
      segment_finish(out, t0, size_t(k));
      offset_ += k;
      served_ += k;
      s += size_t(k);
    }
  }
  return true;
}

Batch random_batch(int B, int S, int V, uint64_t seed) {
  LCX_CHECK(B > 0 && S > 0 && V > 0, "random_batch: B, S and V must be > 0 (got {}, {}, {})", B, S, V);
  Batch b;
  b.B = B, b.S = S;
  const size_t T = size_t(B) * S;
  b.tokens.resize(T), b.targets.resize(T), b.pos.resize(T);
  Rng rng(seed);
  for (auto& t : b.tokens) t = int32_t(rng.below(uint64_t(V)));
  for (size_t t = 0; t < T; t++) {
    b.pos[t] = int32_t(t % size_t(S));
    b.targets[t] = (t % size_t(S) == size_t(S) - 1) ? -1 : b.tokens[t + 1];
  }
  for (int s = 0; s <= B; s++) b.cu_seqlens.push_back(s * S);
  return b;
}

}  // namespace longctx
