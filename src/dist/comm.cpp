// The MPI backend of Comm (src/dist/comm.h): MPI_COMM_WORLD with MPI_ERRORS_RETURN, nonblocking
// point-to-point messages polled against a deadline, and a deterministic all-reduce built from
// point-to-point messages (reduce-scatter to chunk owners in rank order, then all-gather; each
// half is also exposed for ZeRO-1).
#define OMPI_SKIP_MPICXX 1  // C API only
#include <mpi.h>
#include <sched.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "core/error.h"
#include "dist/comm.h"

namespace longctx {
namespace {

// Tags above Comm::kMaxUserTag are the all-reduce's own.
constexpr int kTagReduceScatter = Comm::kMaxUserTag + 1;
constexpr int kTagAllGather = Comm::kMaxUserTag + 2;

std::string mpi_error_string(int rc) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(rc);
  return std::string(buf, size_t(len));
}

class MpiComm final : public Comm {
 public:
  MpiComm(int* argc, char*** argv, double timeout) {
    timeout_s = timeout;
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        fail("MPI_Init_thread failed (is this process started by mpirun?)");
      owns_mpi_ = true;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiComm() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_mpi_ && !finalized) MPI_Finalize();
  }

  const char* name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  CommRequest isend(const float* buf, size_t n, int peer, int tag) override {
    check_user_tag(tag);
    return post(true, const_cast<float*>(buf), n, peer, tag);
  }
  CommRequest irecv(float* buf, size_t n, int peer, int tag) override {
    check_user_tag(tag);
    return post(false, buf, n, peer, tag);
  }

  void wait(CommRequest& r) override {
    LCX_CHECK(r.id >= 0 && size_t(r.id) < slots_.size() && slots_[size_t(r.id)].live,
              "Comm::wait on rank {}: not a pending request (id {})", rank_, r.id);
    Slot& s = slots_[size_t(r.id)];
    MPI_Status st;
    poll([&] {
      int flag = 0;
      int rc = MPI_Test(&s.req, &flag, &st);
      if (rc != MPI_SUCCESS)
        fail("MPI {} of {} floats {} rank {} (tag {}) failed on rank {}: {}",
             s.send ? "send" : "receive", s.n, s.send ? "to" : "from", s.peer, s.tag, rank_,
             mpi_error_string(rc));
      return flag != 0;
    }, [&] {
      return fmt::format("the {} of {} floats {} rank {} (tag {})", s.send ? "send" : "receive",
                         s.n, s.send ? "to" : "from", s.peer, s.tag);
    });
    if (!s.send) {
      int count = 0;
      MPI_Get_count(&st, MPI_FLOAT, &count);
      LCX_CHECK(size_t(count) == s.n,
                "rank {}: received {} floats from rank {} (tag {}), expected {}: the ranks "
                "disagree on the message schedule", rank_, count, s.peer, s.tag, s.n);
    }
    s.live = false;
    free_.push_back(r.id);
    r.id = -1;
  }

  void allreduce_sum(float* buf, size_t n) override {
    reduce_scatter_sum(buf, n);
    all_gather(buf, n);
  }

  // Chunk i goes to rank i, which sums the P copies in rank order.
  void reduce_scatter_sum(float* buf, size_t n) override {
    if (size_ == 1 || n == 0) return;
    const int P = size_, me = rank_;
    const size_t mlo = chunk_begin(n, me), mlen = chunk_begin(n, me + 1) - mlo;
    std::vector<float> parts(mlen * size_t(P));
    std::vector<CommRequest> reqs;
    for (int j = 0; j < P; j++) {
      if (j == me) continue;
      const size_t lo = chunk_begin(n, j), len = chunk_begin(n, j + 1) - lo;
      if (mlen) reqs.push_back(post(false, parts.data() + mlen * size_t(j), mlen, j, kTagReduceScatter));
      if (len) reqs.push_back(post(true, buf + lo, len, j, kTagReduceScatter));
    }
    wait_all(reqs);
    std::copy(buf + mlo, buf + mlo + mlen, parts.data() + mlen * size_t(me));
    for (size_t t = 0; t < mlen; t++) {
      float acc = parts[t];
      for (int j = 1; j < P; j++) acc += parts[mlen * size_t(j) + t];
      buf[mlo + t] = acc;
    }
  }

  void all_gather(float* buf, size_t n) override {
    if (size_ == 1 || n == 0) return;
    const int P = size_, me = rank_;
    const size_t mlo = chunk_begin(n, me), mlen = chunk_begin(n, me + 1) - mlo;
    std::vector<CommRequest> reqs;
    for (int j = 0; j < P; j++) {
      if (j == me) continue;
      const size_t lo = chunk_begin(n, j), len = chunk_begin(n, j + 1) - lo;
      if (len) reqs.push_back(post(false, buf + lo, len, j, kTagAllGather));
      if (mlen) reqs.push_back(post(true, buf + mlo, mlen, j, kTagAllGather));
    }
    wait_all(reqs);
  }

  void barrier() override {
    MPI_Request req;
    int rc = MPI_Ibarrier(MPI_COMM_WORLD, &req);
    if (rc != MPI_SUCCESS) fail("MPI_Ibarrier failed on rank {}: {}", rank_, mpi_error_string(rc));
    poll([&] {
      int flag = 0;
      int rc2 = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
      if (rc2 != MPI_SUCCESS) fail("MPI barrier failed on rank {}: {}", rank_, mpi_error_string(rc2));
      return flag != 0;
    }, [] { return std::string("a barrier"); });
  }

  void progress() override {  // any MPI call drives the progress engine; a probe is the cheapest
    int flag = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
  }

  [[noreturn]] void abort(const std::string& msg, int code) override {
    std::fprintf(stderr, "longctx: rank %d: %s\n", rank_, msg.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  struct Slot {
    MPI_Request req = MPI_REQUEST_NULL;
    bool live = false, send = false;
    size_t n = 0;
    int peer = -1, tag = -1;
  };

  void check_user_tag(int tag) const {
    LCX_CHECK(tag >= 0 && tag <= kMaxUserTag, "Comm: tag {} outside [0, {}]", tag, kMaxUserTag);
  }

  CommRequest post(bool send, float* buf, size_t n, int peer, int tag) {
    LCX_CHECK(peer >= 0 && peer < size_ && peer != rank_,
              "Comm on rank {}: peer {} is not another rank of [0, {})", rank_, peer, size_);
    LCX_CHECK(n <= size_t(INT_MAX), "Comm: message of {} floats exceeds MPI's int count", n);
    int64_t id;
    if (free_.empty()) {
      id = int64_t(slots_.size());
      slots_.emplace_back();
    } else {
      id = free_.back();
      free_.pop_back();
    }
    Slot& s = slots_[size_t(id)];
    s = Slot{MPI_REQUEST_NULL, true, send, n, peer, tag};
    int rc = send ? MPI_Isend(buf, int(n), MPI_FLOAT, peer, tag, MPI_COMM_WORLD, &s.req)
                  : MPI_Irecv(buf, int(n), MPI_FLOAT, peer, tag, MPI_COMM_WORLD, &s.req);
    if (rc != MPI_SUCCESS)
      fail("MPI_{} of {} floats {} rank {} (tag {}) failed on rank {}: {}", send ? "Isend" : "Irecv",
           n, send ? "to" : "from", peer, tag, rank_, mpi_error_string(rc));
    if (send) {
      stats.bytes_sent += int64_t(n * sizeof(float));
      stats.messages_sent++;
    }
    return CommRequest{id};
  }

  // Polls done() until it returns true; past the deadline, aborts the job naming what().
  // Spins briefly, then yields and sleeps: ranks are often oversubscribed on few cores.
  template <class Done, class What>
  void poll(Done&& done, What&& what) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    for (long spins = 0; !done(); spins++) {
      if (spins < 200) continue;
      if (spins < 2000) {
        sched_yield();
        continue;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      if ((spins & 255) == 0 &&
          std::chrono::duration<double>(clock::now() - start).count() > timeout_s)
        abort(fmt::format("timed out after {:g} s waiting for {}; another rank died, hangs or "
                          "disagrees on the message schedule. Aborting all ranks.",
                          timeout_s, what()),
              3);
    }
  }

  int rank_ = 0, size_ = 1;
  bool owns_mpi_ = false;
  std::vector<Slot> slots_;
  std::vector<int64_t> free_;
};

}  // namespace

std::unique_ptr<Comm> comm_mpi_init(int* argc, char*** argv, double timeout_s) {
  return std::make_unique<MpiComm>(argc, argv, timeout_s);
}

}  // namespace longctx
