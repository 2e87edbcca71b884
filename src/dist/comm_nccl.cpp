#define OMPI_SKIP_MPICXX 1  // C API only
#include "dist/comm_nccl.h"

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>
#include <sched.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"

namespace longctx {
namespace {

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("{} failed: {}", what, cudaGetErrorString(e));
}
void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) fail("{} failed: {}", what, ncclGetErrorString(r));
}

class NcclComm final : public Comm {
 public:
  NcclComm(Comm& mpi, double timeout) : mpi_(mpi) {
    LCX_CHECK(std::string(mpi.name()) == "mpi", "comm_nccl_init needs the MPI communicator, got {}",
              mpi.name());
    timeout_s = timeout;
    rank_ = mpi.rank();
    size_ = mpi.size();
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    int devices = 0;
    cuda_check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    LCX_CHECK(devices > 0, "rank {}: no CUDA device visible for the NCCL communicator", rank_);
    // Ranks of one node get consecutive devices (mpirun's default by-slot mapping).
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    device_ = (local ? std::atoi(local) : rank_) % devices;
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    ncclUniqueId id{};
    if (rank_ == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    LCX_CHECK(MPI_Bcast(&id, int(sizeof id), MPI_BYTE, 0, MPI_COMM_WORLD) == MPI_SUCCESS,
              "rank {}: MPI_Bcast of the NCCL unique id failed", rank_);
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    cuda_check(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreate");
    // Non-blocking init, so a missing peer ends in our deadline rather than a hang.
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&comm_, size_, id, rank_, &cfg);
    issued(r, "ncclCommInitRankConfig");
  }
  ~NcclComm() override {
    if (comm_) ncclCommDestroy(comm_);
    if (scratch_) cudaFree(scratch_);
    if (done_) cudaEventDestroy(done_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  const char* name() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  cudaStream_t stream() const { return stream_; }

  CommRequest isend(const float* buf, size_t n, int peer, int tag) override {
    return record(true, const_cast<float*>(buf), n, peer, tag);
  }
  CommRequest irecv(float* buf, size_t n, int peer, int tag) override {
    return record(false, buf, n, peer, tag);
  }

  void wait(CommRequest& r) override {
    LCX_CHECK(r.id >= 0 && size_t(r.id) < ops_.size() && ops_[size_t(r.id)].live,
              "Comm::wait on rank {}: not a pending request (id {})", rank_, r.id);
    if (!ops_[size_t(r.id)].launched) launch();
    Op& op = ops_[size_t(r.id)];
    sync(op);
    op.live = false;
    r.id = -1;
    // Every operation finished: the slots can be reused.
    bool any = false;
    for (const Op& o : ops_) any |= o.live;
    if (!any) ops_.clear();
  }

  void allreduce_sum(float* buf, size_t n) override {
    if (size_ == 1 || n == 0) return;
    launch();  // operations recorded before the all-reduce go first, as with MPI
    issued(ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, comm_, stream_), "ncclAllReduce");
    stats.bytes_sent += int64_t(2 * (size_ - 1) * n / size_ * sizeof(float));
    Op op;
    op.what = fmt::format("an all-reduce of {} floats", n);
    sync(op);
  }

  // Chunks of uneven size (chunk_begin), so one grouped in-place ncclReduce / ncclBroadcast per
  // chunk, rooted at its owner, rather than ncclReduceScatter / ncclAllGather (equal counts).
  void reduce_scatter_sum(float* buf, size_t n) override { per_chunk(buf, n, true); }
  void all_gather(float* buf, size_t n) override { per_chunk(buf, n, false); }

  void barrier() override {
    if (!scratch_) cuda_check(cudaMalloc(&scratch_, sizeof(float)), "cudaMalloc");
    cuda_check(cudaMemsetAsync(scratch_, 0, sizeof(float), stream_), "cudaMemsetAsync");
    const int64_t before = stats.bytes_sent;
    allreduce_sum(scratch_, 1);  // waits for it, against the deadline
    stats.bytes_sent = before;
  }

  [[noreturn]] void abort(const std::string& msg, int code) override {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    mpi_.abort(msg, code);
    std::_Exit(code);  // not reached: Comm::abort ends the job
  }

 private:
  struct Op {
    bool live = false, launched = false, send = false;
    float* buf = nullptr;
    size_t n = 0;
    int peer = -1, tag = -1;
    std::string what;
  };

  CommRequest record(bool send, float* buf, size_t n, int peer, int tag) {
    LCX_CHECK(tag >= 0 && tag <= kMaxUserTag, "Comm: tag {} outside [0, {}]", tag, kMaxUserTag);
    LCX_CHECK(peer >= 0 && peer < size_ && peer != rank_,
              "Comm on rank {}: peer {} is not another rank of [0, {})", rank_, peer, size_);
    Op op{true, false, send, buf, n, peer, tag,
          fmt::format("the {} of {} floats {} rank {} (tag {})", send ? "send" : "receive", n,
                      send ? "to" : "from", peer, tag)};
    ops_.push_back(std::move(op));
    if (send) {
      stats.bytes_sent += int64_t(n * sizeof(float));
      stats.messages_sent++;
    }
    return CommRequest{int64_t(ops_.size()) - 1};
  }

  void per_chunk(float* buf, size_t n, bool reduce) {
    if (size_ == 1 || n == 0) return;
    launch();
    nccl_check(ncclGroupStart(), "ncclGroupStart");
    for (int i = 0; i < size_; i++) {
      const size_t lo = chunk_begin(n, i), cnt = chunk_begin(n, i + 1) - lo;
      if (!cnt) continue;
      ncclResult_t r = reduce ? ncclReduce(buf + lo, buf + lo, cnt, ncclFloat, ncclSum, i, comm_, stream_)
                              : ncclBroadcast(buf + lo, buf + lo, cnt, ncclFloat, i, comm_, stream_);
      if (r != ncclSuccess && r != ncclInProgress) nccl_check(r, reduce ? "ncclReduce" : "ncclBroadcast");
    }
    issued(ncclGroupEnd(), "ncclGroupEnd");
    stats.bytes_sent += int64_t((size_ - 1) * n / size_ * sizeof(float));
    Op op;
    op.what = fmt::format("a {} of {} floats", reduce ? "reduce-scatter" : "all-gather", n);
    sync(op);
  }

  // One NCCL group for every recorded, not yet launched operation.
  void launch() {
    bool any = false;
    for (const Op& o : ops_) any |= o.live && !o.launched;
    if (!any) return;
    nccl_check(ncclGroupStart(), "ncclGroupStart");
    for (Op& o : ops_) {
      if (!o.live || o.launched) continue;
      ncclResult_t r = o.send ? ncclSend(o.buf, o.n, ncclFloat, o.peer, comm_, stream_)
                              : ncclRecv(o.buf, o.n, ncclFloat, o.peer, comm_, stream_);
      if (r != ncclSuccess && r != ncclInProgress) nccl_check(r, o.send ? "ncclSend" : "ncclRecv");
      o.launched = true;
    }
    issued(ncclGroupEnd(), "ncclGroupEnd");
  }

  // Waits for everything enqueued on the stream so far, against the deadline.
  void sync(const Op& op) {
    cuda_check(cudaEventRecord(done_, stream_), "cudaEventRecord");
    poll([&] {
      cudaError_t e = cudaEventQuery(done_);
      if (e == cudaSuccess) return true;
      if (e != cudaErrorNotReady) fail("rank {}: CUDA error during {}: {}", rank_, op.what, cudaGetErrorString(e));
      return false;
    }, op.what);
  }

  // The result of a call on the non-blocking communicator: ncclInProgress means it is still
  // being issued, and NCCL refuses every other call on the communicator until it has been
  // ("Attempt to use communicator before the previous operation returned ncclSuccess"), so wait.
  void issued(ncclResult_t r, const char* what) {
    if (r == ncclInProgress) settle(what);
    else nccl_check(r, what);
  }

  // Waits until a non-blocking NCCL call has finished (ncclInProgress → ncclSuccess).
  void settle(const char* what) {
    poll([&] {
      ncclResult_t st = ncclInProgress;
      ncclCommGetAsyncError(comm_, &st);
      if (st == ncclInProgress) return false;
      nccl_check(st, what);
      return true;
    }, what);
  }

  template <class Done>
  void poll(Done&& done, const std::string& what) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    for (long spins = 0; !done(); spins++) {
      if (spins < 1000) continue;
      mpi_.progress();  // the remote loader's MPI sends travel while this rank waits here
      std::this_thread::sleep_for(std::chrono::microseconds(20));
      if ((spins & 1023) != 0) continue;
      ncclResult_t st = ncclSuccess;
      if (comm_ && ncclCommGetAsyncError(comm_, &st) == ncclSuccess && st != ncclSuccess &&
          st != ncclInProgress)
        abort(fmt::format("NCCL error while waiting for {}: {}. Aborting all ranks.", what,
                          ncclGetErrorString(st)), 3);
      if (std::chrono::duration<double>(clock::now() - start).count() > timeout_s)
        abort(fmt::format("timed out after {:g} s waiting for {}; another rank died, hangs or "
                          "disagrees on the message schedule. Aborting all ranks.", timeout_s, what),
              3);
    }
  }

  Comm& mpi_;
  int rank_ = 0, size_ = 1, device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t done_ = nullptr;
  float* scratch_ = nullptr;
  std::vector<Op> ops_;
};

}  // namespace

std::unique_ptr<Comm> comm_nccl_init(Comm& mpi, double timeout_s) {
  return std::make_unique<NcclComm>(mpi, timeout_s);
}

void* comm_nccl_stream(Comm& c) {
  auto* n = dynamic_cast<NcclComm*>(&c);
  LCX_CHECK(n, "comm_nccl_stream: communicator '{}' is not NCCL", c.name());
  return n->stream();
}

}  // namespace longctx
