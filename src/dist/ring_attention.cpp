// Ring attention: full causal softmax attention over K/V slices passed around a ring of ranks
// (see ring_attention.h).
#include "dist/ring_attention.h"

#include <algorithm>
#include <set>
#include <utility>

#include "core/error.h"
#include "kernels/cpu/attn_block.h"

namespace longctx {
namespace {

int ring_prev(int part, int steps, int N) { return ((part - steps) % N + N) % N; }

size_t rows_of(const RingPlacement& p, int part) { return p.rows[size_t(part)].size(); }

void check_args(const Comm& comm, const RingPlacement& p, int part, const CpAttnArgs& a) {
  LCX_CHECK(part >= 0 && part < p.parts(), "ring_attention: part {} outside [0, {})", part,
            p.parts());
  LCX_CHECK(p.ranks[size_t(part)] == comm.rank(),
            "ring_attention: part {} belongs to rank {}, called on rank {}", part,
            p.ranks[size_t(part)], comm.rank());
  LCX_CHECK(a.softmax && a.attn.bias == 0.0f,
            "ring attention is softmax attention; a SWAT model's context parallelism is the halo "
            "exchange (cp_attention.h)");
  LCX_CHECK(a.tag >= 0 && a.tag + 1 <= Comm::kMaxUserTag,
            "ring_attention: tags {} and {} must lie in [0, {}]", a.tag, a.tag + 1,
            Comm::kMaxUserTag);
}

AttnShape block_shape(const CpAttnArgs& a) {
  AttnShape s = a.attn;  // rows and documents come with each block call (AttnRows)
  s.T = s.Tk = s.n_docs = 0;
  s.cu_seqlens = nullptr;
  return s;
}

// This part's query rows (with their documents' first rows).
AttnRows query_rows(const RingPlacement& p, int part, RingScratch& scr) {
  const auto& rows = p.rows[size_t(part)];
  const auto& cu = p.cu_seqlens;
  scr.doc_begin.resize(rows.size());
  for (size_t i = 0; i < rows.size(); i++)
    scr.doc_begin[i] = *(std::upper_bound(cu.begin(), cu.end(), rows[i]) - 1);
  return AttnRows{rows.data(), scr.doc_begin.data(), int(rows.size())};
}

AttnRows key_rows(const RingPlacement& p, int part) {
  return AttnRows{p.rows[size_t(part)].data(), nullptr, int(rows_of(p, part))};
}

// buf = [K rows | V rows] of a slice of n rows.
void pack_kv(std::vector<float>& buf, const float* k, const float* v, size_t n, size_t kvd) {
  buf.resize(2 * n * kvd);
  std::copy(k, k + n * kvd, buf.begin());
  std::copy(v, v + n * kvd, buf.begin() + long(n * kvd));
}

}  // namespace

RingPlacement ring_zigzag(const std::vector<int>& ranks, const std::vector<int32_t>& cu_seqlens) {
  const int N = int(ranks.size());
  LCX_CHECK(N >= 1, "ring placement: no ranks");
  RingPlacement p{ranks, std::vector<std::vector<int32_t>>(size_t(N)), cu_seqlens};
  for (size_t d = 0; d + 1 < cu_seqlens.size(); d++) {
    const int64_t b = cu_seqlens[d], L = int64_t(cu_seqlens[d + 1]) - b;
    for (int c = 0; c < N; c++)  // chunk c and chunk 2N−1−c go to part c
      for (int chunk : {c, 2 * N - 1 - c}) {
        const auto [cb, ce] = zigzag_chunk(L, N, chunk);
        for (int64_t t = b + cb; t < b + ce; t++) p.rows[size_t(c)].push_back(int32_t(t));
      }
  }
  for (auto& r : p.rows) std::sort(r.begin(), r.end());
  ring_check(p);
  return p;
}

RingPlacement ring_contiguous(const CpPlacement& cp) {
  RingPlacement p{cp.ranks, std::vector<std::vector<int32_t>>(cp.ranks.size()), cp.cu_seqlens};
  LCX_CHECK(cp.bounds.size() == cp.ranks.size() + 1,
            "ring placement: bounds must have parts+1 = {} entries (has {})", cp.ranks.size() + 1,
            cp.bounds.size());
  for (size_t i = 0; i < cp.ranks.size(); i++)
    for (int64_t t = cp.bounds[i]; t < cp.bounds[i + 1]; t++) p.rows[i].push_back(int32_t(t));
  ring_check(p);
  return p;
}

void ring_check(const RingPlacement& p) {
  const int N = p.parts();
  LCX_CHECK(N >= 1 && p.rows.size() == size_t(N), "ring placement: {} ranks but {} row lists", N,
            p.rows.size());
  LCX_CHECK(std::set<int>(p.ranks.begin(), p.ranks.end()).size() == p.ranks.size(),
            "ring placement: a rank holds two parts of one stream");
  const auto& cu = p.cu_seqlens;
  LCX_CHECK(cu.size() >= 2 && cu.front() == 0, "ring placement: cu_seqlens must start at 0");
  for (size_t i = 1; i < cu.size(); i++)
    LCX_CHECK(cu[i] > cu[i - 1], "ring placement: cu_seqlens not increasing at index {}", i);
  std::vector<char> seen(size_t(cu.back()), 0);
  for (int i = 0; i < N; i++) {
    const auto& r = p.rows[size_t(i)];
    for (size_t j = 0; j < r.size(); j++) {
      LCX_CHECK(r[j] >= 0 && r[j] < cu.back(), "ring placement: part {} holds row {} outside the "
                "stream of {} tokens", i, r[j], cu.back());
      LCX_CHECK(j == 0 || r[j] > r[j - 1], "ring placement: rows of part {} not ascending at {}",
                i, j);
      LCX_CHECK(!seen[size_t(r[j])], "ring placement: row {} held twice (part {})", r[j], i);
      seen[size_t(r[j])] = 1;
    }
  }
  const auto hole = std::find(seen.begin(), seen.end(), 0);
  LCX_CHECK(hole == seen.end(), "ring placement: row {} is held by no part", hole - seen.begin());
}

int64_t ring_bytes(const RingPlacement& p, int part, int Hkv, int D, bool backward) {
  const int N = p.parts();
  int64_t rows = 0;
  for (int s = 0; s < N - 1; s++) rows += int64_t(rows_of(p, ring_prev(part, s, N)));  // K/V
  if (backward) rows *= 2;  // K/V again + dK/dV over N−1 hops, then the last hop home:
  if (backward) rows += int64_t(rows_of(p, ring_prev(part, N - 1, N)));
  return rows * 2 * Hkv * D * int64_t(sizeof(float));
}

int64_t ring_pairs(const RingPlacement& p, int part, int window) {
  const auto& cu = p.cu_seqlens;
  int64_t pairs = 0;
  for (int32_t m : p.rows[size_t(part)]) {
    const int32_t b = *(std::upper_bound(cu.begin(), cu.end(), m) - 1);
    pairs += std::min<int64_t>(m - b + 1, window);
  }
  return pairs;
}

void ring_attention_forward(Comm& comm, const RingPlacement& p, int part, const CpAttnArgs& a,
                            RingScratch& scr, float* out, float* lse, const float* q,
                            const float* k, const float* v) {
  check_args(comm, p, part, a);
  const int N = p.parts();
  const size_t kvd = size_t(a.attn.Hkv) * a.attn.D, T = rows_of(p, part);
  const AttnShape s = block_shape(a);
  const AttnRows qr = query_rows(p, part, scr);
  const int next = p.ranks[size_t((part + 1) % N)], prev = p.ranks[size_t(ring_prev(part, 1, N))];
  pack_kv(scr.cur, k, v, T, kvd);
  scr.out_b.resize(T * size_t(a.attn.H) * a.attn.D);
  scr.lse_b.resize(T * size_t(a.attn.H));
  for (int step = 0; step < N; step++) {
    const int held = ring_prev(part, step, N);
    std::vector<CommRequest> reqs;
    if (step + 1 < N) {  // next slice in flight while this one is computed
      scr.nxt.resize(2 * rows_of(p, ring_prev(part, step + 1, N)) * kvd);
      reqs.push_back(comm.irecv(scr.nxt.data(), scr.nxt.size(), prev, a.tag));
      reqs.push_back(comm.isend(scr.cur.data(), scr.cur.size(), next, a.tag));
    }
    const size_t n = rows_of(p, held);
    const float* kb = scr.cur.data();
    const float* vb = kb + n * kvd;
    if (step == 0) {
      cpu::attn_block_forward(out, lse, q, kb, vb, qr, key_rows(p, held), s);
    } else {
      cpu::attn_block_forward(scr.out_b.data(), scr.lse_b.data(), q, kb, vb, qr,
                              key_rows(p, held), s);
      attn_block_merge(out, lse, scr.out_b.data(), scr.lse_b.data(), int(T), a.attn.H, a.attn.D);
    }
    comm.wait_all(reqs);
    scr.cur.swap(scr.nxt);
  }
}

void ring_attention_backward(Comm& comm, const RingPlacement& p, int part, const CpAttnArgs& a,
                             RingScratch& scr, float* dq, float* dk, float* dv, const float* dout,
                             const float* out, const float* lse, const float* q, const float* k,
                             const float* v) {
  check_args(comm, p, part, a);
  const int N = p.parts();
  const size_t kvd = size_t(a.attn.Hkv) * a.attn.D, T = rows_of(p, part);
  const AttnShape s = block_shape(a);
  const AttnRows qr = query_rows(p, part, scr);
  const int next = p.ranks[size_t((part + 1) % N)], prev = p.ranks[size_t(ring_prev(part, 1, N))];
  pack_kv(scr.cur, k, v, T, kvd);
  CommRequest drecv, dsend;
  for (int step = 0; step < N; step++) {
    const int held = ring_prev(part, step, N);
    const size_t n = rows_of(p, held);
    std::vector<CommRequest> reqs;
    if (step + 1 < N) {
      scr.nxt.resize(2 * rows_of(p, ring_prev(part, step + 1, N)) * kvd);
      reqs.push_back(comm.irecv(scr.nxt.data(), scr.nxt.size(), prev, a.tag));
      reqs.push_back(comm.isend(scr.cur.data(), scr.cur.size(), next, a.tag));
    }
    // This block's dK/dV into a fresh buffer while the accumulator of `held` is still arriving.
    scr.dtmp.assign(2 * n * kvd, 0.0f);
    const float* kb = scr.cur.data();
    cpu::attn_block_backward(dq, scr.dtmp.data(), scr.dtmp.data() + n * kvd, dout, out, lse, q,
                             kb, kb + n * kvd, qr, key_rows(p, held), s);
    if (step == 0) {
      scr.dacc.assign(2 * n * kvd, 0.0f);
    } else {
      comm.wait(drecv);
    }
    for (size_t i = 0; i < scr.dacc.size(); i++) scr.dacc[i] += scr.dtmp[i];
    if (step > 0) comm.wait(dsend);
    scr.dsend.swap(scr.dacc);
    dsend = comm.isend(scr.dsend.data(), scr.dsend.size(), next, a.tag + 1);
    // The accumulator of the slice held next (after the last step: this part's own, home).
    scr.dacc.resize(2 * rows_of(p, ring_prev(part, step + 1, N)) * kvd);
    drecv = comm.irecv(scr.dacc.data(), scr.dacc.size(), prev, a.tag + 1);
    comm.wait_all(reqs);
    scr.cur.swap(scr.nxt);
  }
  comm.wait(drecv);
  comm.wait(dsend);
  for (size_t i = 0; i < T * kvd; i++) {
    dk[i] += scr.dacc[i];
    dv[i] += scr.dacc[T * kvd + i];
  }
}

}  // namespace longctx
