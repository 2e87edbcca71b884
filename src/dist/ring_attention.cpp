// Ring attention: full causal softmax attention over K/V slices passed around a ring of ranks
// (see ring_attention.h).
#include "dist/ring_attention.h"

#include <algorithm>
#include <set>
#include <utility>

#include "core/error.h"

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

// The rows of every part (the key rows of each block) and this part's query rows with their
// documents' first rows, uploaded to be's memory once per call.
struct BlockRows {
  AttnRows query;
  std::vector<AttnRows> key;  // [part]
};

BlockRows upload_rows(const Backend& be, const RingPlacement& p, int part, RingScratch& scr) {
  size_t total = 0;
  for (const auto& r : p.rows) total += r.size();
  const int32_t* all = fit(scr.rows, be, total);
  BlockRows br;
  size_t at = 0;
  for (const auto& r : p.rows) {
    scr.rows.upload(r.data(), r.size(), at);
    br.key.push_back(AttnRows{all + at, nullptr, int(r.size())});
    at += r.size();
  }
  const auto& mine = p.rows[size_t(part)];
  const auto& cu = p.cu_seqlens;
  std::vector<int32_t> doc_begin(mine.size());
  for (size_t i = 0; i < mine.size(); i++)
    doc_begin[i] = *(std::upper_bound(cu.begin(), cu.end(), mine[i]) - 1);
  fit(scr.doc_begin, be, doc_begin.size());
  scr.doc_begin.upload(doc_begin.data(), doc_begin.size());
  br.query = AttnRows{br.key[size_t(part)].idx, scr.doc_begin.data(), int(mine.size())};
  return br;
}

// buf = [K rows | V rows] of this part's n rows (kvd floats a row).
void pack_kv(const Backend& be, Buffer<float>& buf, const float* k, const float* v, size_t n,
             size_t kvd) {
  float* b = fit(buf, be, 2 * n * kvd);
  if (n) {
    be.copy(b, k, n * kvd * sizeof(float), Copy::within);
    be.copy(b + n * kvd, v, n * kvd * sizeof(float), Copy::within);
  }
}

// Posts step `step`'s exchange: the slice held now (in cur) to the next part, and the next slice
// from the previous part into nxt; nothing at the last step.
std::vector<CommRequest> pass_slice(Comm& comm, const Backend& be, const RingPlacement& p,
                                    int part, int step, size_t kvd, int tag, RingScratch& scr) {
  const int N = p.parts();
  if (step + 1 >= N) return {};
  const size_t nn = 2 * rows_of(p, ring_prev(part, step + 1, N)) * kvd;
  float* nxt = fit(scr.nxt, be, nn);
  be.sync();  // cur is complete; nxt is neither read by the last step's kernels nor being zeroed
  std::vector<CommRequest> reqs;
  reqs.push_back(comm.irecv(nxt, nn, p.ranks[size_t(ring_prev(part, 1, N))], tag));
  reqs.push_back(comm.isend(scr.cur.data(), 2 * rows_of(p, ring_prev(part, step, N)) * kvd,
                            p.ranks[size_t((part + 1) % N)], tag));
  return reqs;
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
  if (N == 1) return 0;  // a ring of one part sends nothing
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

void ring_attention_forward(Comm& comm, const Backend& be, const RingPlacement& p, int part,
                            const CpAttnArgs& a, RingScratch& scr, float* out, float* lse,
                            const float* q, const float* k, const float* v) {
  check_args(comm, p, part, a);
  const int N = p.parts(), H = a.attn.H, D = a.attn.D;
  const size_t kvd = size_t(a.attn.Hkv) * D, T = rows_of(p, part);
  const AttnShape s = block_shape(a);
  const BlockRows rows = upload_rows(be, p, part, scr);
  pack_kv(be, scr.cur, k, v, T, kvd);
  float* out_b = fit(scr.out_b, be, T * size_t(H) * D);
  float* lse_b = fit(scr.lse_b, be, T * size_t(H));
  for (int step = 0; step < N; step++) {
    const int held = ring_prev(part, step, N);
    const size_t n = rows_of(p, held);
    // the next slice in flight while this one is computed
    std::vector<CommRequest> reqs = pass_slice(comm, be, p, part, step, kvd, a.tag, scr);
    const float* kb = scr.cur.data();
    const float* vb = kb + n * kvd;
    if (step == 0) {
      be.attn_block_forward(out, lse, q, kb, vb, rows.query, rows.key[size_t(held)], s);
    } else {
      be.attn_block_forward(out_b, lse_b, q, kb, vb, rows.query, rows.key[size_t(held)], s);
      be.attn_block_merge(out, lse, out_b, lse_b, int(T), H, D);
    }
    comm.wait_all(reqs);
    scr.cur.swap(scr.nxt);
  }
}

void ring_attention_backward(Comm& comm, const Backend& be, const RingPlacement& p, int part,
                             const CpAttnArgs& a, RingScratch& scr, float* dq, float* dk,
                             float* dv, const float* dout, const float* out, const float* lse,
                             const float* q, const float* k, const float* v) {
  check_args(comm, p, part, a);
  const int N = p.parts();
  const size_t kvd = size_t(a.attn.Hkv) * a.attn.D, T = rows_of(p, part);
  const AttnShape s = block_shape(a);
  const BlockRows rows = upload_rows(be, p, part, scr);
  const int next = p.ranks[size_t((part + 1) % N)], prev = p.ranks[size_t(ring_prev(part, 1, N))];
  pack_kv(be, scr.cur, k, v, T, kvd);
  CommRequest drecv, dsend;
  for (int step = 0; step < N; step++) {
    const int held = ring_prev(part, step, N);
    const size_t n = rows_of(p, held);
    std::vector<CommRequest> reqs = pass_slice(comm, be, p, part, step, kvd, a.tag, scr);
    // This block's dK/dV into a fresh buffer while the accumulator of `held` is still arriving.
    float* dtmp = fit(scr.dtmp, be, 2 * n * kvd);
    be.zero(dtmp, 2 * n * kvd);
    const float* kb = scr.cur.data();
    be.attn_block_backward(dq, dtmp, dtmp + n * kvd, dout, out, lse, q, kb, kb + n * kvd,
                           rows.query, rows.key[size_t(held)], s);
    if (step == 0) {
      be.zero(fit(scr.dacc, be, 2 * n * kvd), 2 * n * kvd);
    } else {
      comm.wait(drecv);
    }
    be.add(scr.dacc.data(), dtmp, 2 * n * kvd);
    if (N == 1) break;  // a ring of one part: the accumulator is home already
    if (step > 0) comm.wait(dsend);
    scr.dsend.swap(scr.dacc);
    // The accumulator of the slice held next (after the last step: this part's own, home).
    const size_t na = 2 * rows_of(p, ring_prev(part, step + 1, N)) * kvd;
    float* acc = fit(scr.dacc, be, na);
    be.sync();  // the leaving accumulator is complete (and a fresh one zeroed) before comm runs
    dsend = comm.isend(scr.dsend.data(), 2 * n * kvd, next, a.tag + 1);
    drecv = comm.irecv(acc, na, prev, a.tag + 1);
    comm.wait_all(reqs);
    scr.cur.swap(scr.nxt);
  }
  if (N > 1) {
    comm.wait(drecv);
    comm.wait(dsend);
  }
  be.add(dk, scr.dacc.data(), T * kvd);
  be.add(dv, scr.dacc.data() + T * kvd, T * kvd);
}

}  // namespace longctx
