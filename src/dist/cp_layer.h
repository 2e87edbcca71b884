// The model's attention hook (Model::attention) for the HDP runtime: one micro-batch's packed
// stream is a list of RUNS, each one of
//   local  whole documents held by this rank alone: the backend's kernels, as without the hook;
//   halo   this rank's contiguous slice of a sequence spread over several ranks: context-parallel
//          halo exchange (cp_attention.h; SWAT, and softmax with a window shorter than the
//          sequence);
//   ring   this rank's zig-zag part of a sequence that a softmax model attends to in full: ring
//          attention (ring_attention.h; ByteScale §5.1), its rows the part's chunks back to back;
//          or its part of a static DP×CP micro-batch's whole packed stream (ByteScale §7 packed
//          dist-attn, hdp_packed_placement): one ring call over several documents.
// The messages of layer l carry tags 2l (halo; ring K/V) and 2l+1 (ring dK/dV).
// Every run works on any backend: host backends with the MPI communicator, the cuda one with an
// NCCL communicator (device buffers; ring runs use the cuda block kernels, attn_block.cu).
#pragma once
#include <cstdint>
#include <vector>

#include "dist/comm.h"
#include "dist/cp_attention.h"
#include "dist/ring_attention.h"
#include "model/model.h"

namespace longctx {

// Rows [row_begin, row_end) of the local stream.
struct CpRun {
  enum class Kind { local, halo, ring };
  Kind kind = Kind::local;
  int64_t row_begin = 0, row_end = 0;
  std::vector<int32_t> cu_seqlens;  // local: its documents, relative to row_begin
  CpPlacement placement;            // halo: the sequence's contiguous slices over its ranks
  RingPlacement ring;               // ring: the sequence's zig-zag parts over its ranks
  int part = -1;                    // halo, ring: this rank's part
};

class CpLayerAttention final : public LayerAttention {
 public:
  CpLayerAttention(Comm& comm, int layers);
  // The runs of the next micro-batch; they must tile its stream [0, T) in order.
  void set_runs(std::vector<CpRun> runs);
  const std::vector<CpRun>& runs() const { return runs_; }

  void forward(const Model& m, int layer, const AttnShape& s, float* out, float* lse,
               const float* q, const float* k, const float* v) override;
  void backward(const Model& m, int layer, const AttnShape& s, float* dq, float* dk, float* dv,
                const float* dout, const float* out, const float* lse, const float* q,
                const float* k, const float* v) override;

 private:
  // The local runs' cu_seqlens in the backend's memory (AttnShape), uploaded at first use.
  const int32_t* run_cu(const Backend& be, size_t run);

  Comm& comm_;
  std::vector<CpRun> runs_;
  Buffer<int32_t> cu_;           // local runs' cu_seqlens back to back
  std::vector<size_t> cu_at_;    // [run]: offset into cu_
  const Backend* cu_be_ = nullptr;  // where cu_ holds the current runs (null: not uploaded)
  std::vector<std::vector<CpAttnState>> state_;  // [layer][run]: halo K/V kept for backward
  CpScratch scratch_;
  RingScratch ring_scratch_;
};

}  // namespace longctx
