// NCCL Comm test driver (issue 8 item 3), run under mpirun by CTest; exit 77 (skipped) without a
// GPU. One process per GPU: mpirun -np 1 on a one-GPU machine, -np 2..8 on a multi-GPU one.
//   - all-reduce of device buffers (sizes 1..1M): every rank gets Σ_r f(r, i), bit-identical
//     across ranks (checked by an all-reduce of the differences to rank 0's copy)
//   - point-to-point (size > 1): each rank sends to the next and receives from the previous rank
//     in one "send, then receive" order on every rank (would deadlock with unbatched NCCL calls),
//     tag-ordered messages of several lengths
//   - reduce_scatter_sum then all_gather (uneven chunks) == all-reduce
//   - barrier; bytes_sent accounting
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "dist/comm.h"
#include "dist/comm_nccl.h"

using namespace longctx;

namespace {

int failures = 0;
void expect(bool ok, int rank, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "rank %d: FAILED %s\n", rank, what);
    failures++;
  }
}

float* to_device(const std::vector<float>& h) {
  float* d = nullptr;
  cudaMalloc(&d, h.size() * sizeof(float));
  cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice);
  return d;
}
std::vector<float> to_host(const float* d, size_t n) {
  std::vector<float> h(n);
  cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost);
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  auto mpi = comm_mpi_init(&argc, &argv, 60);
  auto nc = comm_nccl_init(*mpi, 60);
  Comm& c = *nc;
  const int R = c.rank(), P = c.size();

  for (size_t n : {size_t(1), size_t(7), size_t(1000), size_t(1) << 20}) {
    std::vector<float> h(n);
    for (size_t i = 0; i < n; i++) h[i] = float(R + 1) * 0.5f + float(i % 97) * 0.25f;
    float* d = to_device(h);
    c.allreduce_sum(d, n);
    std::vector<float> got = to_host(d, n);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
      const double want = 0.5 * P * (P + 1) / 2.0 + double(P) * double(i % 97) * 0.25;
      ok = std::fabs(got[i] - want) <= 1e-6 * std::fabs(want);
    }
    expect(ok, R, "all-reduce sum");
    cudaFree(d);
  }

  {  // ZeRO-1's halves: reduce-scatter, then all-gather of the reduced chunks
    const size_t n = 1001;  // not a multiple of the rank count
    std::vector<float> h(n);
    for (size_t i = 0; i < n; i++) h[i] = float(R + 1) + float(i % 13);
    float* d = to_device(h);
    c.reduce_scatter_sum(d, n);
    std::vector<float> got = to_host(d, n);
    bool ok = true;
    for (size_t i = c.chunk_begin(n, R); i < c.chunk_begin(n, R + 1); i++)
      ok &= got[i] == float(P * (P + 1) / 2) + float(P) * float(i % 13);
    expect(ok, R, "reduce-scatter: own chunk is the sum");
    c.all_gather(d, n);
    got = to_host(d, n);
    ok = true;
    for (size_t i = 0; i < n; i++) ok &= got[i] == float(P * (P + 1) / 2) + float(P) * float(i % 13);
    expect(ok, R, "all-gather: every chunk is the sum");
    cudaFree(d);
  }

  if (P > 1) {
    const int next = (R + 1) % P, prev = (R + P - 1) % P;
    const std::vector<size_t> lens = {3, 4096, 100000};
    std::vector<float*> sends, recvs;
    std::vector<CommRequest> reqs;
    for (size_t k = 0; k < lens.size(); k++) {
      std::vector<float> h(lens[k]);
      for (size_t i = 0; i < h.size(); i++) h[i] = float(R * 1000 + int(k)) + float(i);
      sends.push_back(to_device(h));
      recvs.push_back(to_device(std::vector<float>(lens[k], -1.0f)));
      reqs.push_back(c.isend(sends[k], lens[k], next, int(k)));
      reqs.push_back(c.irecv(recvs[k], lens[k], prev, int(k)));
    }
    c.wait_all(reqs);
    for (size_t k = 0; k < lens.size(); k++) {
      std::vector<float> got = to_host(recvs[k], lens[k]);
      bool ok = true;
      for (size_t i = 0; i < got.size() && ok; i++)
        ok = got[i] == float(prev * 1000 + int(k)) + float(i);
      expect(ok, R, "ring send/receive");
      cudaFree(sends[k]);
      cudaFree(recvs[k]);
    }
    expect(c.stats.messages_sent == 3, R, "messages_sent counts the three sends");
  }
  c.barrier();
  std::printf("rank %d of %d: nccl comm %s\n", R, P, failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
