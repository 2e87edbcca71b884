// The NCCL backend of Comm (src/dist/comm.h), for GPU ranks: one global NCCL communicator over
// all MPI ranks, bootstrapped by MPI (rank 0's ncclUniqueId broadcast), one CUDA device per rank
// (local rank modulo the devices visible). Built into longctx_nccl when CUDA, NCCL and MPI are
// found. Buffers passed to isend/irecv/allreduce_sum are DEVICE pointers.
//
// Semantics next to the MPI backend:
//  - isend/irecv only record the operation; the first wait() launches every recorded operation in
//    one ncclGroupStart/End on the communicator's stream (so ranks that post "send, then receive"
//    to each other cannot deadlock, as they could with NCCL calls issued one by one), then waits
//    on an event. NCCL has no tags: messages match in issue order per peer, which the callers of
//    Comm already guarantee (comm.h). Tags are still checked for range.
//  - allreduce_sum is ncclAllReduce: bit-identical on every rank, deterministic for a fixed
//    topology and rank count, but summed in NCCL's ring order rather than rank order;
//    reduce_scatter_sum / all_gather are grouped per-chunk ncclReduce / ncclBroadcast.
//  - every wait has the deadline timeout_s; past it (or on an asynchronous NCCL error) the
//    communicator is aborted and the whole job ends through MPI_Abort with a message.
//  - keep NCCL_NVLS_ENABLE=0 in the environment (multicast objects are not lent on the machines
//    we run on); comm_nccl_init sets it when unset.
#pragma once
#include <memory>

#include "dist/comm.h"

namespace longctx {

// `mpi` must be the MPI Comm of this process (comm_mpi_init); it stays in use for the bootstrap
// and for aborting the job, and must outlive the returned communicator.
std::unique_ptr<Comm> comm_nccl_init(Comm& mpi, double timeout_s = 60);

// The CUDA stream the NCCL communicator runs on (cudaStream_t as void*), so compute kernels can be
// ordered with communication; throws Error if `c` is not an NCCL communicator.
void* comm_nccl_stream(Comm& c);

}  // namespace longctx
