// Training on a sequence longer than one device's activation memory: CONTEXT PARALLELISM OVER
// TIME. A windowed model (SWAT, softmax sliding window) lets token m see only keys m−w+1..m, so a
// packed stream of T tokens cut into chunks of C tokens is exactly the halo placement of
// cp_attention.h with one part per chunk — except that the parts run one after another in ONE
// process instead of side by side on several ranks. The halo messages a part would send over the
// network (the w−1 post-RoPE K/V rows of each layer; in backward their dK/dV) are kept in device
// memory by SequentialComm until the part that receives them runs:
//
//   pass 1, c = 0 … n−2:   forward of chunk c (no output head): its layers' last w−1 K/V rows
//                          are sent to chunk c+1;
//   pass 2, c = n−1 … 0:   forward of chunk c (again, but for the last chunk, which runs only
//                          here), reading the K/V halo chunk c−1 sent in pass 1; loss;
//                          backward: dK/dV of its halo go to chunk c−1, and the dK/dV that
//                          chunk c+1 sent back are added to its own keys.
//
// The gradients are those of the whole stream (the same sums, in another order: fp32 rounding
// differs), for one forward more on all chunks but the last: ≈ 4/3 of a step's work
// (forward F, backward 2F), so a 1M- or 2M-token sequence trains in the memory of C tokens plus
// n·L·(w−1) K/V rows of halo. Per-layer recompute (Model::recompute) inside a chunk composes with
// it (then ≈ 5/3). With the halo store in pinned host memory (ChunkedOptions::halo_on_host) the
// device holds one chunk whatever the sequence length.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "dist/comm.h"
#include "dist/cp_layer.h"
#include "kernels/backend.h"
#include "model/model.h"

namespace longctx {

// One stored message of SequentialComm: n floats in the backend's memory (dev) or in pinned
// host memory (host). Spare ones (a HaloPool) are reused by size, so a training loop allocates
// its halo store once rather than every step (pinned allocations cost milliseconds each).
struct HaloMessage {
  size_t n = 0;
  Buffer<float> dev;
  std::unique_ptr<void, void (*)(void*)> host{nullptr, nullptr};
};
using HaloPool = std::vector<HaloMessage>;

// A Comm whose "ranks" are the parts of one placement run sequentially in this process
// (set_rank picks the running one). isend copies the message into a mailbox at once — in the
// backend's memory, or with `host_store` in page-locked host memory (a device backend's halo then
// costs no device memory: two PCIe copies per message instead); a receive is served at wait()
// from the LAST message sent on its (sender, receiver, tag): a part that runs again (pass 2's
// forward) reads its halo a second time. A receive of a message not yet sent is an Error (the
// parts ran in a wrong order). finish(part) frees the messages to a part that will not run again
// (into `pool` when given, also at destruction) and drops later ones to it. Collectives do not
// exist between the parts of one process: they throw.
class SequentialComm final : public Comm {
 public:
  SequentialComm(const Backend& be, int parts, bool host_store = false, HaloPool* pool = nullptr);
  ~SequentialComm() override;
  const char* name() const override { return "sequential"; }
  int rank() const override { return rank_; }
  int size() const override { return parts_; }
  void set_rank(int part);
  void finish(int part);
  size_t mailbox_bytes() const { return held_bytes_; }  // messages held now
  size_t peak_mailbox_bytes() const { return peak_bytes_; }

  CommRequest isend(const float* buf, size_t n, int peer, int tag) override;
  CommRequest irecv(float* buf, size_t n, int peer, int tag) override;
  void wait(CommRequest& r) override;
  void allreduce_sum(float* buf, size_t n) override;
  void reduce_scatter_sum(float* buf, size_t n) override;
  void all_gather(float* buf, size_t n) override;
  void barrier() override {}
  [[noreturn]] void abort(const std::string& msg, int code = 1) override;

 private:
  using Key = std::tuple<int, int, int>;  // sender, receiver, tag
  struct Recv {
    float* buf;
    size_t n;
    Key key;
  };
  const Backend& be_;
  int parts_, rank_ = 0;
  bool host_store_;
  std::vector<char> finished_;
  HaloPool* pool_;
  std::map<Key, HaloMessage> box_;
  std::map<int64_t, Recv> pending_;
  int64_t next_id_ = 0;
  size_t held_bytes_ = 0, peak_bytes_ = 0;
};

// Forward + backward of the packed stream b (host memory, as model_forward takes it) in chunks
// of `chunk` tokens, as the header describes: returns the sum of token losses, sets *n_targets,
// and accumulates dloss·∂(Σ loss)/∂θ into m.grads. The model's window must be shorter than a
// chunk (a full-attention model needs every earlier key: the ring, not a halo). m.attention is
// used for the call and restored; m is reserved for `chunk` tokens. A stream of ≤ chunk tokens
// is one ordinary forward/backward.
struct ChunkedOptions {
  int chunk = 0;              // tokens per chunk (≥ 1)
  bool halo_on_host = false;  // keep the halo store in pinned host memory (SequentialComm)
};
struct ChunkedStats {
  int chunks = 0;
  size_t peak_halo_bytes = 0;  // K/V (and dK/dV) halo rows kept between chunks
};
double chunked_forward_backward(Model& m, const TokenBatch& b, const ChunkedOptions& o,
                                float dloss, int64_t* n_targets, ChunkedStats* stats = nullptr,
                                HaloPool* pool = nullptr);

// chunked_forward_backward for a training loop: the options and the halo store's buffers, kept
// from one step to the next.
class ChunkedStep {
 public:
  explicit ChunkedStep(ChunkedOptions o) : o_(o) {}
  double operator()(Model& m, const TokenBatch& b, float dloss, int64_t* n_targets = nullptr,
                    ChunkedStats* stats = nullptr) {
    return chunked_forward_backward(m, b, o_, dloss, n_targets, stats, &pool_);
  }

 private:
  ChunkedOptions o_;
  HaloPool pool_;
};

}  // namespace longctx
