// Context-parallel FULL (causal softmax) attention by RING exchange of K/V slices (Ring
// Attention, Liu et al. 2023; ByteScale §5.1 and §7 "packed dist-attn"; DESIGN.md §3.1) over ranks
// of the one global communicator. A softmax query needs every earlier key of its document, so
// unlike SWAT's halo (cp_attention.h) every part's K/V visits every other part:
//
//   forward, N parts on a ring (part i sends to i+1, receives from i−1), N steps: at step s part i
//   holds the K/V slice of part i−s; it posts the transfer of that slice to i+1 (and the receive of
//   the next one) BEFORE computing its queries against it (the transfer overlaps the compute), then
//   merges the block's partial (out, lse) into its running result by log-sum-exp (the op table's
//   attn_block_forward / attn_block_merge; math in kernels/cpu/attn_block.h).
//   backward: the K/V slices travel the ring again, each with a dK/dV accumulator that every part
//   adds its block gradient to; after N hops the accumulator is back at its owner. dQ stays local.
//   The accumulator of step s is sent while step s+1 computes into a fresh buffer.
//   Bytes per part and call: forward (N−1)·|KV slice|, backward (N−1)·|KV| + N·|dKV|, i.e.
//   O(s·Hkv·D) — only the Hkv KV heads travel (GQA), never the H query heads. A ring of one part
//   sends nothing (its accumulator is home after its one step).
//
// Memory: as the halo exchange (cp_attention.h), every buffer (q/k/v/out/lse and gradients, the
// scratch, the messages, the rows of each block) lives in the backend's memory and is moved with
// Backend ops, so one code path serves host backends over MPI and the cuda backend over NCCL; the
// backend is synchronised (Backend::sync) before messages are posted. The placement's rows are
// uploaded once per call (one int32 per stream row).
//
// Placement (which stream rows each part holds; the same function on every rank, no talking):
//  - zig-zag (ByteScale): every document of the packed stream is cut into 2N chunks and part i
//    holds chunks i and 2N−1−i, so each part holds 1/N of EVERY document (packed short sequences
//    included) and the causal work is balanced: with chunks of c rows, chunk j's queries see j
//    whole chunks and half of their own, so part i does (i + (2N−1−i) + 1)·c² = 2N·c² pairs of
//    work per document, the same on every part.
//  - contiguous: the CpPlacement of the halo exchange (part i = rows [b_i, b_{i+1})); the last
//    part does N times the first part's attention work.
// A part's rows are in ascending stream order; the caller's q/k/v/out rows are in that order.
// In training, the HDP runtime's layer hook (cp_layer.h) runs a part of a ring sequence, or of a
// static DP×CP micro-batch's packed stream (packed dist-attn), with these functions (messages of
// layer l: tags 2l and 2l+1).
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "dist/comm.h"
#include "dist/cp_attention.h"
#include "kernels/backend.h"

namespace longctx {

struct RingPlacement {
  std::vector<int> ranks;                  // communicator rank of part i (ring order, distinct)
  std::vector<std::vector<int32_t>> rows;  // rows[i]: stream rows of part i, ascending
  std::vector<int32_t> cu_seqlens;         // documents of the whole stream: 0 = cu[0] < … = T
  int parts() const { return int(ranks.size()); }
};

// Chunk c of the 2N zig-zag chunks of a document of L tokens: rows [L·c/2N, L·(c+1)/2N) of it
// (documents shorter than 2N tokens leave some chunks empty).
inline std::pair<int64_t, int64_t> zigzag_chunk(int64_t L, int N, int c) {
  return {L * c / (2 * N), L * (c + 1) / (2 * N)};
}
// Zig-zag placement of the stream `cu_seqlens` over `ranks`: part i holds zigzag_chunk i and
// 2N−1−i of every document.
RingPlacement ring_zigzag(const std::vector<int>& ranks, const std::vector<int32_t>& cu_seqlens);
// The contiguous placement of a halo-exchange CpPlacement (same parts, same rows).
RingPlacement ring_contiguous(const CpPlacement& p);
// Throws Error unless the parts' rows are ascending and together hold every row of the stream
// exactly once, and the ranks are distinct.
void ring_check(const RingPlacement& p);

// The call's options are the halo exchange's CpAttnArgs (cp_attention.h) with softmax = true and
// bias 0; window ≥ the stream length is full causal attention. K/V messages use a.tag, dK/dV
// a.tag + 1 (both ≤ Comm::kMaxUserTag).

// Scratch in the backend's memory, grown on demand and reused across calls and layers.
struct RingScratch {
  Buffer<int32_t> rows;       // every part's rows back to back (the key rows of each block)
  Buffer<int32_t> doc_begin;  // first row of the document of each of this part's rows
  Buffer<float> cur, nxt;     // K/V slice held, and the next one arriving ([K rows | V rows])
  Buffer<float> dacc, dsend, dtmp;  // backward: dK/dV accumulators (arriving, leaving, this block)
  Buffer<float> out_b, lse_b;       // forward: one block's partial result
};

// Forward of part `part` (on rank p.ranks[part]): q, out (T,H,D); k, v (T,Hkv,D) post-RoPE;
// lse (T,H); T = p.rows[part].size(). Overwrites out and lse. Every pointer (a.attn.slopes too) is
// in be's memory; comm carries buffers of that memory (MPI: host, NCCL: device).
void ring_attention_forward(Comm& comm, const Backend& be, const RingPlacement& p, int part,
                            const CpAttnArgs& a, RingScratch& scr, float* out, float* lse,
                            const float* q, const float* k, const float* v);
// Backward of the same call, given its out and lse: ACCUMULATES (+=) into dq (T,H,D), dk, dv
// (T,Hkv,D) — dk/dv including every other part's contribution to this part's keys.
void ring_attention_backward(Comm& comm, const Backend& be, const RingPlacement& p, int part,
                             const CpAttnArgs& a, RingScratch& scr, float* dq, float* dk,
                             float* dv, const float* dout, const float* out, const float* lse,
                             const float* q, const float* k, const float* v);

// Bytes part `part` sends in one forward or one backward (fp32), as the header's formula.
int64_t ring_bytes(const RingPlacement& p, int part, int Hkv, int D, bool backward = false);
// Visible (query, key) pairs of part `part`'s queries (its attention work: forward FLOPs are
// 4·pairs·D·H): Σ over its rows m of min(m − doc_begin(m) + 1, window).
int64_t ring_pairs(const RingPlacement& p, int part, int window);

}  // namespace longctx
