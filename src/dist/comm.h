// The communicator of the multi-process runtime (DESIGN.md §3.1 "dynamic communication"): ONE
// global communicator over all ranks; ranks that share a sequence talk point-to-point, so no
// per-sequence communicator is ever created. This header has no MPI in it: `comm_mpi_init`
// (src/dist/comm.cpp, library longctx_mpi, built when CMake finds MPI) returns the MPI backend;
// an NCCL backend implements the same class later.
//
// Every blocking call (wait, all-reduce, barrier) has a deadline, `timeout_s`: a rank that died
// or hangs makes the others print which call, peer and tag they were waiting for, and abort the
// whole job (MPI_Abort) instead of hanging forever.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace longctx {

// A pending isend/irecv; finished by Comm::wait. Opaque to the caller.
struct CommRequest {
  int64_t id = -1;
};

// Traffic this rank initiated (isend and the all-reduce's own messages).
struct CommStats {
  int64_t bytes_sent = 0;
  int64_t messages_sent = 0;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual const char* name() const = 0;  // "mpi", later "nccl"
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Point-to-point fp32 messages. Tags in [0, kMaxUserTag]; messages between one (sender,
  // receiver, tag) triple arrive in the order they were sent. The buffer must stay untouched
  // (isend) or unread (irecv) until wait() returns. Callers post matching sends and receives in
  // the same order on both sides, so a backend without tags (NCCL: matched in issue order per
  // peer, buffers on the device, wait = stream synchronisation) can implement this unchanged.
  static constexpr int kMaxUserTag = 29999;
  virtual CommRequest isend(const float* buf, size_t n, int peer, int tag) = 0;
  virtual CommRequest irecv(float* buf, size_t n, int peer, int tag) = 0;
  // Blocks until the request is done (or aborts the job after timeout_s). A receive of a
  // message of another length throws Error.
  virtual void wait(CommRequest& r) = 0;
  void wait_all(std::vector<CommRequest>& rs) {
    for (auto& r : rs) wait(r);
    rs.clear();
  }

  // buf (n) = Σ over ranks of buf, fp32, bit-identical on every rank and summed in rank order
  // 0, 1, …, size−1 (a reduce-scatter to chunk owners + all-gather, each 2·(size−1)/size·n floats
  // per rank), so the result does not depend on the MPI library's reduction tree.
  virtual void allreduce_sum(float* buf, size_t n) = 0;

  // The two halves of allreduce_sum, for ZeRO-1 (optimizer state sharded over ranks). Rank i
  // owns chunk i = [chunk_begin(n, i), chunk_begin(n, i + 1)) of an n-float buffer.
  //  reduce_scatter_sum: chunk `rank()` of buf = Σ over ranks of it, in rank order (bit-identical
  //                      to allreduce_sum's result there); the rest of buf is left unspecified.
  //  all_gather:         every rank's chunk i = rank i's chunk i.
  size_t chunk_begin(size_t n, int i) const { return n * size_t(i) / size_t(size()); }
  virtual void reduce_scatter_sum(float* buf, size_t n) = 0;
  virtual void all_gather(float* buf, size_t n) = 0;
  virtual void barrier() = 0;

  // Lets the library move this rank's pending messages along (MPI: a large isend travels only
  // while its sender is inside MPI). A communicator that blocks on another one (NCCL waiting
  // while the remote loader's MPI sends are pending) calls it from its wait loops.
  virtual void progress() {}

  // Prints "longctx: rank R: MSG" to stderr and ends every rank of the job with exit code `code`.
  [[noreturn]] virtual void abort(const std::string& msg, int code = 1) = 0;

  double timeout_s = 60;  // deadline of every blocking call
  CommStats stats;
};

// MPI_Init (thread level FUNNELED, errors returned, not fatal) and a Comm over MPI_COMM_WORLD;
// MPI_Finalize when the object is destroyed. Defined only in longctx_mpi (when MPI was found).
std::unique_ptr<Comm> comm_mpi_init(int* argc, char*** argv, double timeout_s = 60);

}  // namespace longctx
