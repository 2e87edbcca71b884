// Context parallelism over time (see chunked_seq.h).
#include "dist/chunked_seq.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "core/error.h"

namespace longctx {

SequentialComm::SequentialComm(const Backend& be, int parts, bool host_store, HaloPool* pool)
    : be_(be), parts_(parts), host_store_(host_store), finished_(size_t(std::max(parts, 0)), 0),
      pool_(pool) {
  LCX_CHECK(parts >= 1, "SequentialComm: needs at least one part, got {}", parts);
}

SequentialComm::~SequentialComm() {
  if (pool_)
    for (auto& [key, msg] : box_) pool_->push_back(std::move(msg));
}

void SequentialComm::set_rank(int part) {
  LCX_CHECK(part >= 0 && part < parts_, "SequentialComm: part {} outside [0, {})", part, parts_);
  LCX_CHECK(!finished_[size_t(part)], "SequentialComm: part {} already finished", part);
  rank_ = part;
}

void SequentialComm::finish(int part) {
  LCX_CHECK(part >= 0 && part < parts_, "SequentialComm: part {} outside [0, {})", part, parts_);
  finished_[size_t(part)] = 1;
  for (auto it = box_.begin(); it != box_.end();) {
    if (std::get<1>(it->first) != part) {
      ++it;
      continue;
    }
    held_bytes_ -= it->second.n * sizeof(float);
    if (pool_) pool_->push_back(std::move(it->second));
    it = box_.erase(it);
  }
}

CommRequest SequentialComm::isend(const float* buf, size_t n, int peer, int tag) {
  LCX_CHECK(peer >= 0 && peer < parts_ && peer != rank_,
            "SequentialComm: part {} sends to part {} (of {})", rank_, peer, parts_);
  if (!finished_[size_t(peer)]) {
    HaloMessage& m = box_[Key{rank_, peer, tag}];
    const size_t bytes = n * sizeof(float);
    if (m.n != n) {  // a spare of this size and kind (searched from the end: O(1) when all
                     // messages have one size, as a step's halos do), else a new one
      held_bytes_ += bytes - m.n * sizeof(float);
      auto fits = [&](const HaloMessage& x) { return x.n == n && bool(x.host) == host_store_; };
      auto spare = pool_ ? std::find_if(pool_->rbegin(), pool_->rend(), fits) : HaloPool::reverse_iterator{};
      if (pool_ && spare != pool_->rend()) {
        m = std::move(*spare);
        std::swap(*spare, pool_->back());  // the moved-from spare leaves the pool
        pool_->pop_back();
      } else {
        m.n = n;
        if (host_store_) m.host = {be_.pinned_alloc(bytes), be_.pinned_release};
        else m.dev = Buffer<float>(be_, n);
      }
    }
    if (host_store_) be_.copy(m.host.get(), buf, bytes, Copy::to_host);
    else be_.copy(m.dev.data(), buf, bytes, Copy::within);
    peak_bytes_ = std::max(peak_bytes_, held_bytes_);
  }
  stats.bytes_sent += int64_t(n * sizeof(float));
  stats.messages_sent++;
  return CommRequest{};  // a send is complete when isend returns
}

CommRequest SequentialComm::irecv(float* buf, size_t n, int peer, int tag) {
  LCX_CHECK(peer >= 0 && peer < parts_ && peer != rank_,
            "SequentialComm: part {} receives from part {} (of {})", rank_, peer, parts_);
  pending_[next_id_] = Recv{buf, n, Key{peer, rank_, tag}};
  return CommRequest{next_id_++};
}

void SequentialComm::wait(CommRequest& r) {
  if (r.id < 0) return;  // a send
  auto it = pending_.find(r.id);
  LCX_CHECK(it != pending_.end(), "SequentialComm: wait on an unknown request");
  const Recv rv = it->second;
  pending_.erase(it);
  r.id = -1;
  const auto [from, to, tag] = rv.key;
  auto m = box_.find(rv.key);
  LCX_CHECK(m != box_.end(), "SequentialComm: part {} waits for a message part {} has not sent "
            "(tag {}): the parts ran out of order", to, from, tag);
  const HaloMessage& msg = m->second;
  LCX_CHECK(msg.n == rv.n, "SequentialComm: part {} expects {} floats from part {} (tag {}), the "
            "message has {}", to, rv.n, from, tag, msg.n);
  if (host_store_) be_.copy(rv.buf, msg.host.get(), rv.n * sizeof(float), Copy::to_device);
  else be_.copy(rv.buf, msg.dev.data(), rv.n * sizeof(float), Copy::within);
}

void SequentialComm::allreduce_sum(float*, size_t) {
  fail("SequentialComm: no all-reduce between the parts of one process");
}
void SequentialComm::reduce_scatter_sum(float*, size_t) {
  fail("SequentialComm: no reduce-scatter between the parts of one process");
}
void SequentialComm::all_gather(float*, size_t) {
  fail("SequentialComm: no all-gather between the parts of one process");
}
void SequentialComm::abort(const std::string& msg, int code) {
  std::fprintf(stderr, "longctx: %s\n", msg.c_str());
  std::exit(code);
}

namespace {

// Restores m.attention however the call ends.
struct AttentionScope {
  Model& m;
  LayerAttention* saved;
  AttentionScope(Model& model, LayerAttention* a) : m(model), saved(model.attention) {
    m.attention = a;
  }
  ~AttentionScope() { m.attention = saved; }
};

}  // namespace

double chunked_forward_backward(Model& m, const TokenBatch& b, const ChunkedOptions& o,
                                float dloss, int64_t* n_targets, ChunkedStats* stats,
                                HaloPool* pool) {
  const int chunk = o.chunk;
  LCX_CHECK(chunk >= 1, "--chunk must be ≥ 1 token, got {}", chunk);
  LCX_CHECK(b.T >= 1 && b.n_docs >= 1, "chunked forward/backward: empty batch");
  const int n = (b.T + chunk - 1) / chunk;
  if (stats) *stats = ChunkedStats{n, 0};
  if (n == 1) {  // fits: the ordinary step
    m.reserve(b.T);
    const double loss = model_forward(m, b, n_targets, dloss);
    model_backward(m, b);
    return loss;
  }
  LCX_CHECK(m.config.window < chunk,
            "--chunk {}: the model's window {} must be shorter than a chunk (a chunk's queries "
            "see only the w−1 keys before it; a full-attention model needs them all)",
            chunk, m.config.window);
  const Backend& be = *m.backend;
  m.reserve(chunk);

  // The halo placement of the whole stream, one part per chunk (cp_attention.h).
  CpPlacement p;
  p.cu_seqlens.assign(b.cu_seqlens, b.cu_seqlens + b.n_docs + 1);
  for (int c = 0; c < n; c++) p.ranks.push_back(c), p.bounds.push_back(int64_t(c) * chunk);
  p.bounds.push_back(b.T);
  SequentialComm comm(be, n, o.halo_on_host, pool);
  CpLayerAttention attn(comm, m.config.num_hidden_layers);
  AttentionScope scope(m, &attn);
  // Chunk c as a batch of its own: the stream's rows [b_c, b_c+1) at their global RoPE
  // positions; its documents are the hook's business (the halo run knows the placement).
  std::vector<int32_t> cu_local(2, 0);
  auto enter = [&](int c, bool targets) {
    const int64_t b0 = p.bounds[size_t(c)], rows = p.bounds[size_t(c) + 1] - b0;
    comm.set_rank(c);
    CpRun r;
    r.kind = CpRun::Kind::halo;
    r.row_end = rows;
    r.placement = p;
    r.part = c;
    std::vector<CpRun> runs;
    runs.push_back(std::move(r));
    attn.set_runs(std::move(runs));
    cu_local[1] = int32_t(rows);
    return TokenBatch{b.tokens + b0, targets ? b.targets + b0 : nullptr, b.pos + b0,
                      cu_local.data(), int(rows), 1};
  };

  for (int c = 0; c + 1 < n; c++) model_forward(m, enter(c, false), nullptr);  // pass 1
  double loss = 0;
  int64_t targets = 0;
  for (int c = n - 1; c >= 0; c--) {  // pass 2
    const TokenBatch tb = enter(c, true);
    int64_t k = 0;
    loss += model_forward(m, tb, &k, dloss);
    model_backward(m, tb);
    targets += k;
    be.sync();
    comm.finish(c);
  }
  if (n_targets) *n_targets = targets;
  if (stats) stats->peak_halo_bytes = comm.peak_mailbox_bytes();
  return loss;
}

}  // namespace longctx
