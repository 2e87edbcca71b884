// Context-parallel sliding-window attention by HALO EXCHANGE (DESIGN.md §3.1 "For SWAT we do
// better"). One packed token stream (documents back to back, cu_seqlens) is split contiguously
// over parts held by ranks r_0..r_k of the one global communicator. A query only sees the
// previous w−1 keys of its document, so part i needs just a halo of ≤ w−1 post-RoPE K/V rows that
// precede its slice, sent point-to-point by the part(s) holding them; the backward sends the
// halo's dK/dV back to those parts, which add them. Bytes per part: O(w·Hkv·D), independent of
// the sequence length (a ring exchange of whole KV slices sends O(s·Hkv·D)).
//
// Halo rules:
//  - halo of part i = global rows [max(b_i − (w−1), doc_start(b_i)), b_i), b_i = its first row:
//    a document boundary inside the halo truncates it (nothing from another document is sent);
//  - when earlier parts hold fewer than w−1 rows, the halo is gathered from SEVERAL previous
//    parts (each sends the rows of its slice that fall in the halo); empty parts are allowed.
//
// Memory: every buffer (q/k/v/out/lse and their gradients, the scratch, the kept halo state, the
// messages) lives in the backend's memory and is moved with Backend ops, so one code path serves
// host backends over MPI and the cuda backend over NCCL (device buffers). Before posting messages
// the backend is synchronised (Backend::sync; nothing on the host): NCCL runs on its own stream.
//
// Compute: the op table's attention kernels run on the local stream [halo + own] (rows h + T):
// AttnShape::Tk (inference) is forward-only and single-document, so the halo rows also enter as
// queries (q = 0) whose outputs are discarded and whose dout is 0. Extra cost per part: h ≤ w−1
// queries of ≤ w keys, i.e. a fraction ≈ (w−1)/T of the part's attention FLOPs, plus copies of
// q/k/v/out into (h + T)-row scratch buffers.
#pragma once
#include <cstdint>
#include <vector>

#include "dist/comm.h"
#include "kernels/backend.h"

namespace longctx {

// One packed token stream split contiguously over parts (one part per rank).
struct CpPlacement {
  std::vector<int> ranks;           // communicator rank of part i, in token order (distinct)
  std::vector<int64_t> bounds;      // [parts+1]: part i holds rows [bounds[i], bounds[i+1])
  std::vector<int32_t> cu_seqlens;  // documents of the whole stream: 0 = cu[0] < … = bounds.back()
  int parts() const { return int(ranks.size()); }
};

// Global rows [begin, end) exchanged between two parts.
struct CpPiece {
  int part = 0;  // the other part
  int64_t begin = 0, end = 0;
};

// The halo traffic of one part (derived from the placement and the window only, so every rank
// computes the same schedule without talking).
struct CpHaloPlan {
  int part = 0;
  int64_t own_begin = 0, own_end = 0;  // this part's rows
  int64_t halo_begin = 0;              // halo = [halo_begin, own_begin)
  std::vector<CpPiece> recv;           // from earlier parts, in part order (they tile the halo)
  std::vector<CpPiece> send;           // rows of this part that later parts need, in part order
  std::vector<int32_t> cu_local;       // documents of the local stream [halo_begin, own_end)
  int halo_rows() const { return int(own_begin - halo_begin); }
  int own_rows() const { return int(own_end - own_begin); }
};

// Throws Error for a malformed placement (bounds not increasing from 0, cu_seqlens not covering
// the stream, duplicate ranks, window < 1).
CpHaloPlan cp_halo_plan(const CpPlacement& p, int part, int window);

// What the attention call needs besides the local stream.
struct CpAttnArgs {
  bool softmax = false;  // false: SWAT (sigmoid); true: softmax sliding window
  AttnShape attn;        // heads, KV heads, head dim, window, slopes, bias (SWAT), scale; its T, Tk
                         // and cu_seqlens are not used (the call's local stream has its own)
  int tag = 0;           // message tag of this call (e.g. the layer); [0, Comm::kMaxUserTag]
};

// Kept from one forward to its backward (one per attention call, e.g. per layer): the halo's
// K/V rows (h, Hkv, D) and, for softmax, the halo queries' lse (h, H). O(w·d) floats. Buffers
// grow to the largest call and are reused; only their first rows (plan) are meaningful.
struct CpAttnState {
  CpHaloPlan plan;
  Buffer<int32_t> cu_local;  // plan.cu_local in the backend's memory (AttnShape::cu_seqlens)
  Buffer<float> k_halo, v_halo, lse_halo;
};

// Scratch for the local [halo + own] stream and the messages (pieces back to back), in the
// backend's memory; grown on demand, reusable across calls and layers.
struct CpScratch {
  Buffer<float> q, k, v, out, lse, dout, dq, dk, dv;
  Buffer<float> send, recv;
};

// Forward of this rank's part. q, out (T,H,D); k, v (T,Hkv,D) post-RoPE, T = own rows;
// lse (T,H) written for softmax (ignored for SWAT, may be null). Overwrites out (=). Every
// pointer (a.slopes too) is in be's memory; comm carries buffers of that memory (MPI: host,
// NCCL: device).
void cp_attention_forward(Comm& comm, const Backend& be, const CpPlacement& p, int part,
                          const CpAttnArgs& a, CpAttnState& st, CpScratch& scr, float* out,
                          float* lse, const float* q, const float* k, const float* v);

// Backward of the same call: ACCUMULATES (+=) into dq (T,H,D), dk, dv (T,Hkv,D), including the
// halo gradients that later parts send back. out and lse: the forward's (softmax only).
void cp_attention_backward(Comm& comm, const Backend& be, const CpPlacement& p,
                           const CpAttnArgs& a, CpAttnState& st, CpScratch& scr, float* dq,
                           float* dk, float* dv, const float* dout, const float* out,
                           const float* lse, const float* q, const float* k, const float* v);

// Bytes this part sends in one forward (K/V rows later parts need) or one backward (dK/dV of
// its own halo, back to the earlier parts).
int64_t cp_halo_bytes(const CpHaloPlan& plan, int Hkv, int D, bool backward = false);

}  // namespace longctx
