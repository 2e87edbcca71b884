// The remote dataloader (ByteScale §7, DESIGN.md §3.3): ONE scheduler reads only the sequence
// lengths (shard metadata), plans, and sends each rank its step: the plan (plan_to_json, which
// holds the placements of shared sequences) and the tokens of that rank's slices only (zig-zag
// chunks for a ring sequence, RingRule). A loader thread on rank 0 reads lengths, plans and
// gathers tokens for the next steps while training runs (up to two steps ahead), and rank 0 posts
// the next step's messages before the current step's compute, so the data is in flight during it.
//
// Messages, per step and rank r ≠ 0, tags kTagHeader / kTagData (above any layer's tag):
//   header  4 floats: int64 bytes of the plan JSON, int64 tokens — bit-copied
//   data    the plan JSON (UTF-8, zero-padded to 4 bytes) then the slices' tokens (int32 bits)
// Each rank receives exactly the steps that will run (`steps`), so none is left in flight.
// MPI is called only from the main thread (Comm is MPI_THREAD_FUNNELED).
#pragma once
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "dist/comm.h"
#include "dist/hdp_data.h"

namespace longctx {

class RemoteStepSource final : public StepSource {
 public:
  static constexpr int kTagHeader = Comm::kMaxUserTag, kTagData = Comm::kMaxUserTag - 1;

  // Every rank constructs one; rank 0 opens the shard, the others never touch it.
  RemoteStepSource(Comm& comm, const std::string& shard_path, uint64_t seed, int64_t max_len,
                   HdpPlanner planner, RingRule rule, int64_t budget, int64_t steps);
  ~RemoteStepSource() override;
  HdpStepData next() override;
  void restore(const nlohmann::json& cursor) override;  // before the first next()

 private:
  // One step as the scheduler prepared it: rank 0's own data and every other rank's messages.
  struct Package {
    HdpStepData own;
    std::vector<std::vector<float>> header, data;  // [rank]
    std::vector<CommRequest> sends;
    std::exception_ptr error;
  };
  Package prepare();
  void loader_loop();
  void send(Package& p);
  HdpStepData receive();

  Comm& comm_;
  HdpPlanner planner_;
  RingRule rule_;
  int64_t budget_, steps_, served_ = 0;
  std::unique_ptr<DocStream> stream_;  // rank 0 only
  // rank 0: the loader thread's queue of prepared steps, and the steps whose sends are in flight
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Package> ready_, inflight_;
  bool stop_ = false;
  int64_t produced_ = 0;
  // other ranks: the next step's header, posted one step ahead
  std::vector<float> header_;
  CommRequest header_req_;
};

}  // namespace longctx
