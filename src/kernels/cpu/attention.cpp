// Fast sliding-window attention on the CPU: SWAT (sigmoid) and softmax, forward and backward
// (DESIGN.md §2.1, SWAT paper Eq. 3–4). The math is ref.h's; here it is blocked:
//
//   query tile (BQ queries, inside one document) × key tile (≤ BK keys); only the key tiles that
//   intersect the band W(m) = {n : m−w < n ≤ m, same document} are visited. Per tile pair the
//   scores are kept transposed, Sᵀ (keys × queries), so only the query tile needs a transposed
//   copy (once, for all its key tiles); K/V tiles are plain row copies:
//     Sᵀ = K·Qᵀ (register-blocked 4 × 64 micro-kernel)  →  Pᵀ = σ(Sᵀ·scale + s_h(m−n) + b)
//     O += P·V
//   softmax: online softmax (running max and sum per query, rescale of O), lse saved.
//   backward per tile pair: Pᵀ recomputed, dPᵀ = V·dOᵀ, dZ = p(1−p)dP (softmax: p(dP − Δ_m)),
//     dV += Pᵀ·dO, dK += dZᵀ·Q·scale, dQ += dZ·K·scale.
// GQA: a work unit is one KV head g with all its query heads.
// Threads: forward over (g, query tile). Backward over (g, chunk of consecutive query tiles):
// the unit owns dq of its queries and dk/dv of keys ≥ its first query; the keys before that
// (≤ w−1 rows: the "halo") go to a private buffer added after the parallel loop. No races, no
// atomics, 5 tile GEMMs per tile pair, scratch O(tile) per thread (+ the halo, O(w·D) per unit).
// Cost O(T·w). Head dims that are not a multiple of 16 fall back to the reference loops.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu.h"
#include "kernels/cpu/ref.h"
#include "kernels/cpu/simd.h"

namespace longctx::cpu {
namespace {

constexpr int BQ = 64;  // queries per tile: 4 vectors of 16, the width of gemm_t_tile
constexpr int BK = 64;  // keys per tile; = BQ, so key tiles sit on the query tiles' grid
static_assert(BQ == 64 && BK == BQ, "micro-kernels and the key-tile grid assume these sizes");

int round4(int n) { return (n + 3) & ~3; }

// ---------------------------------------------------------------- tiles
struct QTile {
  int q0, q1;       // queries [q0, q1), q1 − q0 ≤ BQ
  int doc, doc_end;  // their document [doc, doc_end); q0 − doc is a multiple of BQ
};
struct KTile {
  int k0, k1;  // keys [k0, k1), k1 − k0 ≤ BK
  bool full;   // every (m, n) of the tile is visible: no mask needed
};

std::vector<QTile> make_query_tiles(const AttnShape& s) {
  std::vector<QTile> tiles;
  for (int d = 0; d < ref::attn_docs(s); d++) {
    int b = ref::doc_begin(s, d), e = ref::doc_begin(s, d + 1);
    for (int q0 = b; q0 < e; q0 += BQ) tiles.push_back({q0, std::min(q0 + BQ, e), b, e});
  }
  return tiles;
}

// Key tiles meeting the band of queries [q0, q1): the diagonal tile [q0, q1) (it holds every
// query's own key), then the grid tiles before it down to the window's start (the last one
// clipped there, or at the document start). Every key tile lies inside one grid tile.
template <class Fn>
void for_each_key_tile(const QTile& qt, int w, Fn fn) {
  const int klo = std::max(qt.doc, qt.q0 - w + 1);
  for (int kend = qt.q1, kstart = qt.q0; kend > klo; kend = kstart, kstart -= BK) {
    const int k0 = std::max(klo, kstart);
    const bool full = qt.q1 - qt.q0 == BQ && kend - 1 <= qt.q0 && k0 > qt.q1 - 1 - w;
    fn(KTile{k0, kend, full});
  }
}

// Contiguous copies of K and V grid tiles of one KV head (rows [n0, n0 + BK) of a document,
// zero-padded to BK + 4 rows), direct-mapped on n0: consecutive query tiles share all key tiles
// but one, so each is copied about once per pass instead of once per query tile. Rows of q/k/v
// sit H·D floats apart, a power of two that maps a strided tile onto a few L1 sets — hence copies.
struct KVCache {
  static constexpr int kRows = BK + 4;
  int slots = 0, D = 0;
  std::vector<int> tag;  // n0 held by each slot, −1 = empty
  float *K = nullptr, *V = nullptr;
  void reset() { std::fill(tag.begin(), tag.end(), -1); }
  // The copies holding key tile kt of query tile qt (KV head at k, v + g·D, row stride ld): row 0
  // of the returned pointers is key kt.k0; rows past the document end read zeros.
  std::pair<const float*, const float*> get(const QTile& qt, const KTile& kt, const float* k,
                                            const float* v, size_t ld) {
    const int n0 = qt.doc + (kt.k0 - qt.doc) / BK * BK;
    const int s = (n0 / BK) % slots;
    float* Ks = K + (size_t)s * kRows * D;
    float* Vs = V + (size_t)s * kRows * D;
    if (tag[s] != n0) {
      const int n = std::min(BK, qt.doc_end - n0);
      for (int i = 0; i < n; i++) {
        std::memcpy(Ks + (size_t)i * D, k + (size_t)(n0 + i) * ld, sizeof(float) * D);
        std::memcpy(Vs + (size_t)i * D, v + (size_t)(n0 + i) * ld, sizeof(float) * D);
      }
      std::memset(Ks + (size_t)n * D, 0, sizeof(float) * D * (kRows - n));
      std::memset(Vs + (size_t)n * D, 0, sizeof(float) * D * (kRows - n));
      tag[s] = n0;
    }
    return {Ks + (size_t)(kt.k0 - n0) * D, Vs + (size_t)(kt.k0 - n0) * D};
  }
};
// Slots for window w: the tiles one query tile needs plus one, at most 10 (beyond that, e.g. full
// causal attention, tiles are simply copied again).
int kv_cache_slots(int w) { return (int)std::min<long>(10, ((long)w + BK - 1) / BK + 2); }

// Work units are (KV head g, chunk of consecutive query tiles): enough of them for every thread
// to stay busy, few enough that K/V tile copies are reused. Chunk c of n = tiles [b, e).
int chunks_per_head(int ntiles, int Hkv) {
  return std::clamp((4 * omp_get_max_threads() + Hkv - 1) / Hkv, 1, std::max(1, ntiles));
}
void chunk_range(int ntiles, int nchunks, int c, int& b, int& e) {
  b = (int)((long)ntiles * c / nchunks);
  e = (int)((long)ntiles * (c + 1) / nchunks);
}

// dst (D × BQ) = (src rows i < n, row stride ld)ᵀ, zero columns after
void load_transposed(float* dst, const float* src, size_t ld, int n, int D) {
  for (int i = 0; i < n; i++)
    for (int d = 0; d < D; d++) dst[(size_t)d * BQ + i] = src[i * ld + d];
  for (int d = 0; d < D; d++)
    for (int i = n; i < BQ; i++) dst[(size_t)d * BQ + i] = 0.0f;
}

// ---------------------------------------------------------------- micro-kernels
// The band inside one tile pair (queries q0.., keys k0..): which queries a block of key rows can
// see and which keys a block of query rows can see. The GEMMs skip what lies outside (half of the
// diagonal tile and of the tile at the window's far edge).
struct Band {
  int q0, nq, k0, nk, w;
  // visible query indices [lo, hi) for key rows [j0, j1)
  void queries_of(int j0, int j1, int& lo, int& hi) const {
    lo = std::max(0, k0 + j0 - q0);
    hi = (int)std::min<long>(nq, (long)k0 + j1 - 1 + w - q0);
  }
  // visible key indices [lo, hi) for query rows [i0, i1)
  void keys_of(int i0, int i1, int& lo, int& hi) const {
    lo = (int)std::max<long>(0, (long)q0 + i0 - w + 1 - k0);
    hi = std::min(nk, q0 + i1 - k0);
  }
};

// Rows j..j+3 of C (· × BQ) = A (· × D) · Bt (D × BQ), query vectors [C0, C1) only: the 4 × 16·(C1−C0)
// block of C stays in vector registers while d runs.
template <int C0, int C1>
void gemm_t_block(float* C, const float* A, const float* Bt, int j, int D) {
  v16f acc[4][C1 - C0] = {};
  const float* a = A + (size_t)j * D;
  for (int d = 0; d < D; d++) {
    v16f b[C1 - C0];
    for (int c = C0; c < C1; c++) {
      v16f t = load16(Bt + (size_t)d * BQ + 16 * c);
      LCX_IN_REGISTER(t);
      b[c - C0] = t;
    }
    for (int r = 0; r < 4; r++) {
      v16f ar = splat16(a[(size_t)r * D + d]);
      for (int c = C0; c < C1; c++) acc[r][c - C0] += ar * b[c - C0];
    }
  }
  for (int r = 0; r < 4; r++)
    for (int c = C0; c < C1; c++) store16(C + (size_t)(j + r) * BQ + 16 * c, acc[r][c - C0]);
}
// C (rows × BQ) = A (rows × D) · Bt (D × BQ), rows = keys (a multiple of 4), columns = queries.
// Columns a row block cannot see are left unwritten: the masked epilogue zeroes them.
void gemm_t_tile(float* C, const float* A, const float* Bt, int rows, int D, const Band& band) {
  for (int j = 0; j < rows; j += 4) {
    int lo, hi;
    band.queries_of(j, j + 4, lo, hi);
    if (lo >= hi) continue;
    switch ((lo / 16) * 5 + (hi + 15) / 16) {
      case 0 * 5 + 1: gemm_t_block<0, 1>(C, A, Bt, j, D); break;
      case 0 * 5 + 2: gemm_t_block<0, 2>(C, A, Bt, j, D); break;
      case 0 * 5 + 3: gemm_t_block<0, 3>(C, A, Bt, j, D); break;
      case 0 * 5 + 4: gemm_t_block<0, 4>(C, A, Bt, j, D); break;
      case 1 * 5 + 2: gemm_t_block<1, 2>(C, A, Bt, j, D); break;
      case 1 * 5 + 3: gemm_t_block<1, 3>(C, A, Bt, j, D); break;
      case 1 * 5 + 4: gemm_t_block<1, 4>(C, A, Bt, j, D); break;
      case 2 * 5 + 3: gemm_t_block<2, 3>(C, A, Bt, j, D); break;
      case 2 * 5 + 4: gemm_t_block<2, 4>(C, A, Bt, j, D); break;
      default: gemm_t_block<3, 4>(C, A, Bt, j, D); break;
    }
  }
}

// C rows (M × D, row i at crow[i]) += A (M × K) · B (K × D, row stride ldb); M a multiple of 4.
// Trans = false: rows are keys, A = Pᵀ as stored (row stride ldp), k runs over queries.
// Trans = true: rows are queries, A read transposed from Pᵀ, k runs over keys.
// Only the k the row block can see (band) are visited. Columns of C in blocks of NV vectors: a
// 4 × 16·NV block of C stays in registers while k runs.
template <int NV, bool Trans>
void gemm_acc_block(float* const* crow, int c0, const float* P, int ldp, const float* B,
                    size_t ldb, int M, int K, const Band& band) {
  for (int i = 0; i < M; i += 4) {
    int lo, hi;
    if (Trans) band.keys_of(i, i + 4, lo, hi);
    else band.queries_of(i, i + 4, lo, hi);
    hi = std::min(hi, K);
    if (lo >= hi) continue;
    v16f acc[4][NV];
    for (int r = 0; r < 4; r++)
      for (int c = 0; c < NV; c++) acc[r][c] = load16(crow[i + r] + c0 + 16 * c);
    for (int j = lo; j < hi; j++) {
      v16f b[NV];
      for (int c = 0; c < NV; c++) {
        v16f t = load16(B + j * ldb + c0 + 16 * c);
        LCX_IN_REGISTER(t);
        b[c] = t;
      }
      for (int r = 0; r < 4; r++) {
        v16f pr = splat16(Trans ? P[(size_t)j * ldp + i + r] : P[(size_t)(i + r) * ldp + j]);
        for (int c = 0; c < NV; c++) acc[r][c] += pr * b[c];
      }
    }
    for (int r = 0; r < 4; r++)
      for (int c = 0; c < NV; c++) store16(crow[i + r] + c0 + 16 * c, acc[r][c]);
  }
}
template <bool Trans>
void gemm_acc(float* const* crow, const float* P, int ldp, const float* B, size_t ldb, int M,
              int K, int D, const Band& band) {
  for (int c0 = 0; c0 < D; c0 += 64) {
    switch (std::min(4, (D - c0) / 16)) {
      case 4: gemm_acc_block<4, Trans>(crow, c0, P, ldp, B, ldb, M, K, band); break;
      case 3: gemm_acc_block<3, Trans>(crow, c0, P, ldp, B, ldb, M, K, band); break;
      case 2: gemm_acc_block<2, Trans>(crow, c0, P, ldp, B, ldb, M, K, band); break;
      default: gemm_acc_block<1, Trans>(crow, c0, P, ldp, B, ldb, M, K, band); break;
    }
  }
}

// ---------------------------------------------------------------- logits → probabilities
// Sᵀ holds keys as rows, queries as 16-lane vectors. Calls fn(j, c, z, vis) for every key row
// j < nk and query vector c, with z = Sᵀ·scale + s_h(m−n) + add and vis the visibility mask
// (all ones when kt.full), then zeroes rows nk..round4(nk).
template <class Fn>
inline void for_each_logit(float* St, const QTile& qt, const KTile& kt, const AttnShape& s,
                           float slope, float add, Fn fn) {
  const int nq = qt.q1 - qt.q0, nk = kt.k1 - kt.k0;
  const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const v16f lanef = iota16();
  for (int j = 0; j < nk; j++) {
    const int n = kt.k0 + j;
    for (int c = 0; c < BQ / 16; c++) {
      v16f dist = float(qt.q0 + 16 * c - n) + lanef;  // m − n, exact integers
      v16f z = load16(St + (size_t)j * BQ + 16 * c) * s.scale + slope * dist + add;
      v16i vis;
      if (kt.full) {
        vis = v16i{} - 1;
      } else {
        v16i i = lane + 16 * c;
        v16i m = i + qt.q0;
        vis = (i < nq) & (n <= m) & (n > m - s.window);
      }
      fn(j, c, z, vis);
    }
  }
  std::memset(St + (size_t)nk * BQ, 0, sizeof(float) * BQ * (round4(nk) - nk));
}
inline v16f select16(v16i mask, v16f x) { return (v16f)(mask & (v16i)x); }

// Pᵀ = σ(z + b), 0 where not visible.
void sigmoid_probs(float* St, const QTile& qt, const KTile& kt, const AttnShape& s, float slope) {
  for_each_logit(St, qt, kt, s, slope, s.bias, [&](int j, int c, v16f z, v16i vis) {
    store16(St + (size_t)j * BQ + 16 * c, select16(vis, sigmoid16(z)));
  });
}
// Pᵀ = exp(z − lse_m), 0 where not visible (softmax backward).
void softmax_probs(float* St, const float* lse, const QTile& qt, const KTile& kt,
                   const AttnShape& s, float slope) {
  for_each_logit(St, qt, kt, s, slope, 0.0f, [&](int j, int c, v16f z, v16i vis) {
    store16(St + (size_t)j * BQ + 16 * c, select16(vis, exp16(z - load16(lse + 16 * c))));
  });
}
// Online softmax step (forward): per query the running max mx and sum l take this tile in, O rows
// are rescaled by exp(mx_old − mx_new) and Pᵀ ← exp(z − mx_new) (0 where not visible).
// mx starts at −1e30 (finite), so exp(mx_old − mx_new) is never exp(−∞ + ∞).
void softmax_online(float* St, float* mx, float* l, float* O, int D, const QTile& qt,
                    const KTile& kt, const AttnShape& s, float slope) {
  const int nk = kt.k1 - kt.k0;
  v16f tmax[BQ / 16];
  for (int c = 0; c < BQ / 16; c++) tmax[c] = splat16(-INFINITY);
  for_each_logit(St, qt, kt, s, slope, 0.0f, [&](int j, int c, v16f z, v16i vis) {
    z = vis ? z : splat16(-INFINITY);
    store16(St + (size_t)j * BQ + 16 * c, z);
    tmax[c] = max16(tmax[c], z);
  });
  for (int c = 0; c < BQ / 16; c++) {
    v16f mold = load16(mx + 16 * c), mnew = max16(mold, tmax[c]);
    v16f alpha = exp16(mold - mnew), sum = {};
    for (int j = 0; j < nk; j++) {
      float* row = St + (size_t)j * BQ + 16 * c;
      v16f z = load16(row);
      v16f p = select16(z > -INFINITY, exp16(z - mnew));
      store16(row, p);
      sum += p;
    }
    store16(l + 16 * c, load16(l + 16 * c) * alpha + sum);
    store16(mx + 16 * c, mnew);
    for (int i = 0; i < 16; i++) {
      float* o = O + (size_t)(16 * c + i) * D;
      for (int d = 0; d < D; d++) o[d] *= alpha[i];
    }
  }
}

// Aligned per-thread scratch, carved into tiles.
struct Scratch {
  std::vector<v16f> mem;
  size_t used = 0;
  explicit Scratch(size_t floats) : mem(floats / 16 + 64) {}
  float* take(size_t n) {
    float* p = reinterpret_cast<float*>(mem.data()) + used;
    used += (n + 15) & ~size_t(15);
    return p;
  }
};

// dst (round4(n) × D) = rows i < n of src (row stride ld), zero rows after (contiguous copy:
// see KVCache for why).
void load_rows(float* dst, const float* src, size_t ld, int n, int D) {
  for (int i = 0; i < n; i++) std::memcpy(dst + (size_t)i * D, src + i * ld, sizeof(float) * D);
  std::memset(dst + (size_t)n * D, 0, sizeof(float) * D * (round4(n) - n));
}

// ---------------------------------------------------------------- forward
template <bool Softmax>
void attn_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                  const AttnShape& s) {
  const int H = s.H, Hkv = s.Hkv, D = s.D, rep = H / Hkv;
  const size_t ldq = (size_t)H * D, ldk = (size_t)Hkv * D;
  const std::vector<QTile> tiles = make_query_tiles(s);
  const int ntiles = (int)tiles.size(), nchunks = chunks_per_head(ntiles, Hkv);
  const long nunits = (long)Hkv * nchunks;
#pragma omp parallel if (nunits > 1)
  {
    KVCache cache;
    cache.slots = kv_cache_slots(s.window), cache.D = D, cache.tag.resize(cache.slots);
    Scratch sc((size_t)rep * BQ * (2 * D + 2) + (size_t)BK * BQ +
               2 * (size_t)cache.slots * KVCache::kRows * D + 64 * 8);
    float* Qt = sc.take((size_t)rep * D * BQ);  // per query head of the group, transposed
    float* Os = sc.take((size_t)rep * BQ * D);
    float* mx = sc.take((size_t)rep * BQ);
    float* l = sc.take((size_t)rep * BQ);
    float* St = sc.take((size_t)BK * BQ);
    cache.K = sc.take((size_t)cache.slots * KVCache::kRows * D);
    cache.V = sc.take((size_t)cache.slots * KVCache::kRows * D);
    std::vector<float*> orow((size_t)rep * BQ);
    for (size_t i = 0; i < orow.size(); i++) orow[i] = Os + i * D;
#pragma omp for schedule(dynamic)
    for (long u = 0; u < nunits; u++) {
      const int g = (int)(u / nchunks);
      int tb, te;
      chunk_range(ntiles, nchunks, (int)(u % nchunks), tb, te);
      cache.reset();
      for (int ti = tb; ti < te; ti++) {
      const QTile& qt = tiles[ti];
      const int nq = qt.q1 - qt.q0, rows = round4(nq);
      for (int r = 0; r < rep; r++) {
        load_transposed(Qt + (size_t)r * D * BQ,
                        q + (size_t)qt.q0 * ldq + (size_t)(g * rep + r) * D, ldq, nq, D);
        std::fill(Os + (size_t)r * BQ * D, Os + (size_t)(r + 1) * BQ * D, 0.0f);
        std::fill(mx + (size_t)r * BQ, mx + (size_t)(r + 1) * BQ, -1e30f);
        std::fill(l + (size_t)r * BQ, l + (size_t)(r + 1) * BQ, 0.0f);
      }
      for_each_key_tile(qt, s.window, [&](const KTile& kt) {
        const int nk = kt.k1 - kt.k0;
        const Band band{qt.q0, nq, kt.k0, nk, s.window};
        const auto [Ks, Vs] = cache.get(qt, kt, k + (size_t)g * D, v + (size_t)g * D, ldk);
        for (int r = 0; r < rep; r++) {
          const float slope = ref::slope_of(s, g * rep + r);
          float* Or = Os + (size_t)r * BQ * D;
          gemm_t_tile(St, Ks, Qt + (size_t)r * D * BQ, round4(nk), D, band);
          if constexpr (Softmax)
            softmax_online(St, mx + (size_t)r * BQ, l + (size_t)r * BQ, Or, D, qt, kt, s, slope);
          else
            sigmoid_probs(St, qt, kt, s, slope);
          gemm_acc<true>(orow.data() + (size_t)r * BQ, St, BQ, Vs, D, rows, nk, D, band);  // O += P·V
        }
      });
      for (int r = 0; r < rep; r++) {
        const int h = g * rep + r;
        for (int i = 0; i < nq; i++) {
          const float* o = Os + ((size_t)r * BQ + i) * D;
          float* dst = out + (size_t)(qt.q0 + i) * ldq + (size_t)h * D;
          if constexpr (Softmax) {
            const float li = l[(size_t)r * BQ + i];
            for (int d = 0; d < D; d++) dst[d] = o[d] / li;
            lse[(size_t)(qt.q0 + i) * H + h] = mx[(size_t)r * BQ + i] + std::log(li);
          } else {
            std::memcpy(dst, o, sizeof(float) * D);
          }
        }
      }
      }
    }
  }
}

// ---------------------------------------------------------------- backward
template <bool Softmax>
void attn_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                   const float* lse, const float* q, const float* k, const float* v,
                   const AttnShape& s) {
  if (!dq && !dk && !dv) return;
  const int H = s.H, Hkv = s.Hkv, D = s.D, rep = H / Hkv;
  const size_t ldq = (size_t)H * D, ldk = (size_t)Hkv * D;
  const std::vector<QTile> tiles = make_query_tiles(s);
  const int ntiles = (int)tiles.size();
  if (ntiles == 0) return;
  const int nchunks = chunks_per_head(ntiles, Hkv);
  const long nunits = (long)Hkv * nchunks;
  struct Halo {
    int lo = 0, hi = 0;  // keys [lo, hi) before the chunk's first query
    std::vector<float> dk, dv;
  };
  std::vector<Halo> halos(nunits);

#pragma omp parallel if (nunits > 1)
  {
    KVCache cache;
    cache.slots = kv_cache_slots(s.window), cache.D = D, cache.tag.resize(cache.slots);
    Scratch sc((size_t)rep * BQ * (5 * D + 2) + 2 * (size_t)BK * BQ +
               2 * (size_t)cache.slots * KVCache::kRows * D + D + 64 * 12);
    float* Qt = sc.take((size_t)rep * D * BQ);   // per query head of the group, transposed
    float* dOt = sc.take((size_t)rep * D * BQ);
    float* Qs = sc.take((size_t)rep * BQ * D);   // and as rows
    float* dOs = sc.take((size_t)rep * BQ * D);
    cache.K = sc.take((size_t)cache.slots * KVCache::kRows * D);
    cache.V = sc.take((size_t)cache.slots * KVCache::kRows * D);
    float* dQs = sc.take((size_t)rep * BQ * D);
    float* delta = sc.take((size_t)rep * BQ);    // softmax: Δ_m = dO_m·O_m
    float* lses = sc.take((size_t)rep * BQ);     // softmax: lse_m
    float* Pt = sc.take((size_t)BK * BQ);
    float* dZt = sc.take((size_t)BK * BQ);
    float* trash = sc.take(D);                   // destination of padded key rows
    std::vector<float*> dqrow((size_t)rep * BQ);
    for (size_t i = 0; i < dqrow.size(); i++) dqrow[i] = dQs + i * D;
    float* dkrow[BK];
    float* dvrow[BK];
#pragma omp for schedule(dynamic)
    for (long u = 0; u < nunits; u++) {
      const int g = (int)(u / nchunks);
      int tb, te;
      chunk_range(ntiles, nchunks, (int)(u % nchunks), tb, te);
      if (tb == te) continue;
      cache.reset();
      const int c0 = tiles[tb].q0;
      Halo& halo = halos[u];
      halo.lo = std::max(tiles[tb].doc, c0 - s.window + 1);
      halo.hi = c0;
      if (dk) halo.dk.assign((size_t)(halo.hi - halo.lo) * D, 0.0f);
      if (dv) halo.dv.assign((size_t)(halo.hi - halo.lo) * D, 0.0f);
      for (int ti = tb; ti < te; ti++) {
        const QTile& qt = tiles[ti];
        const int nq = qt.q1 - qt.q0, rows = round4(nq);
        for (int r = 0; r < rep; r++) {
          const int h = g * rep + r;
          const size_t off = (size_t)qt.q0 * ldq + (size_t)h * D;
          load_transposed(Qt + (size_t)r * D * BQ, q + off, ldq, nq, D);
          load_transposed(dOt + (size_t)r * D * BQ, dout + off, ldq, nq, D);
          load_rows(Qs + (size_t)r * BQ * D, q + off, ldq, nq, D);
          load_rows(dOs + (size_t)r * BQ * D, dout + off, ldq, nq, D);
          std::fill(dQs + (size_t)r * BQ * D, dQs + (size_t)(r + 1) * BQ * D, 0.0f);
          if constexpr (Softmax) {
            for (int i = 0; i < BQ; i++) {
              float acc = 0, ls = 0;
              if (i < nq) {
                const float* o = out + off + i * ldq;
                const float* d_o = dout + off + i * ldq;
                for (int d = 0; d < D; d++) acc += d_o[d] * o[d];
                ls = lse[(size_t)(qt.q0 + i) * H + h];
              }
              delta[(size_t)r * BQ + i] = acc;
              lses[(size_t)r * BQ + i] = ls;
            }
          }
        }
        for_each_key_tile(qt, s.window, [&](const KTile& kt) {
          const int nk = kt.k1 - kt.k0;
          const Band band{qt.q0, nq, kt.k0, nk, s.window};
          const auto [Ks, Vs] = cache.get(qt, kt, k + (size_t)g * D, v + (size_t)g * D, ldk);
          for (int j = 0; j < round4(nk); j++) {
            const int n = kt.k0 + j;
            if (j >= nk) {
              dkrow[j] = dvrow[j] = trash;
            } else if (n >= c0) {
              dkrow[j] = dk ? dk + (size_t)n * ldk + (size_t)g * D : trash;
              dvrow[j] = dv ? dv + (size_t)n * ldk + (size_t)g * D : trash;
            } else {
              dkrow[j] = dk ? halo.dk.data() + (size_t)(n - halo.lo) * D : trash;
              dvrow[j] = dv ? halo.dv.data() + (size_t)(n - halo.lo) * D : trash;
            }
          }
          for (int r = 0; r < rep; r++) {
            const int h = g * rep + r;
            const float slope = ref::slope_of(s, h);
            const float* Qr = Qs + (size_t)r * BQ * D;
            const float* dOr = dOs + (size_t)r * BQ * D;
            gemm_t_tile(Pt, Ks, Qt + (size_t)r * D * BQ, round4(nk), D, band);  // Sᵀ = K·Qᵀ
            if constexpr (Softmax)
              softmax_probs(Pt, lses + (size_t)r * BQ, qt, kt, s, slope);
            else
              sigmoid_probs(Pt, qt, kt, s, slope);
            gemm_t_tile(dZt, Vs, dOt + (size_t)r * D * BQ, round4(nk), D, band);  // dPᵀ = V·dOᵀ
            for (int j = 0; j < nk; j++)
              for (int c = 0; c < BQ / 16; c++) {
                v16f p = load16(Pt + (size_t)j * BQ + 16 * c);
                v16f dp = load16(dZt + (size_t)j * BQ + 16 * c);
                v16f dz = Softmax ? p * (dp - load16(delta + (size_t)r * BQ + 16 * c))
                                  : p * (1.0f - p) * dp;
                store16(dZt + (size_t)j * BQ + 16 * c, dz * s.scale);
              }
            if (dv) gemm_acc<false>(dvrow, Pt, BQ, dOr, D, round4(nk), nq, D, band);   // dV += Pᵀ·dO
            if (dk) gemm_acc<false>(dkrow, dZt, BQ, Qr, D, round4(nk), nq, D, band);   // dK += dZᵀ·Q
            if (dq)                                                               // dQ += dZ·K
              gemm_acc<true>(dqrow.data() + (size_t)r * BQ, dZt, BQ, Ks, D, rows, nk, D, band);
          }
        });
        if (dq)
          for (int r = 0; r < rep; r++)
            for (int i = 0; i < nq; i++) {
              float* dst = dq + (size_t)(qt.q0 + i) * ldq + (size_t)(g * rep + r) * D;
              const float* src = dQs + ((size_t)r * BQ + i) * D;
              for (int d = 0; d < D; d++) dst[d] += src[d];
            }
      }
    }
  }
  // halos: keys before each chunk, summed in chunk order (KV heads are independent)
#pragma omp parallel for if (Hkv > 1)
  for (int g = 0; g < Hkv; g++)
    for (int ch = 0; ch < nchunks; ch++) {
      const Halo& halo = halos[(size_t)g * nchunks + ch];
      for (int n = halo.lo; n < halo.hi; n++) {
        const size_t src = (size_t)(n - halo.lo) * D, dst = (size_t)n * ldk + (size_t)g * D;
        if (dk)
          for (int d = 0; d < D; d++) dk[dst + d] += halo.dk[src + d];
        if (dv)
          for (int d = 0; d < D; d++) dv[dst + d] += halo.dv[src + d];
      }
    }
}

bool fast_ok(const AttnShape& s) { return s.D % 16 == 0; }

// Queries after a KV cache (AttnShape::Tk > T: inference prefill chunks and decode). Few queries
// against up to w cached keys: one (query, head) pair per work item, scores in a row buffer,
// vectorised dot products and V accumulation; the math is ref::swat_forward's /
// ref::softmax_attn_forward's.
template <bool softmax>
void attn_forward_cached(float* out, float* lse, const float* q, const float* k, const float* v,
                         const AttnShape& s) {
  const int T = s.T, H = s.H, Hkv = s.Hkv, D = s.D, rep = H / Hkv, off = s.Tk - s.T;
#pragma omp parallel
  {
    std::vector<float> p(size_t(std::min(s.window, s.Tk)));
#pragma omp for collapse(2) schedule(static)
    for (int i = 0; i < T; i++)
      for (int h = 0; h < H; h++) {
        const int m = off + i, lo = std::max(0, m - s.window + 1), g = h / rep;
        const float* qm = q + (size_t(i) * H + h) * D;
        const float sl = ref::slope_of(s, h);
        float mx = -INFINITY;
        for (int n = lo; n <= m; n++) {
          const float* kn = k + (size_t(n) * Hkv + g) * D;
          float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
          for (int d = 0; d < D; d++) dot += qm[d] * kn[d];
          const float z = dot * s.scale + sl * float(m - n);
          p[n - lo] = z;
          mx = std::max(mx, z);
        }
        float sum = 0.0f;
        for (int n = lo; n <= m; n++) {
          float& z = p[n - lo];
          if constexpr (softmax) {
            z = std::exp(z - mx);
            sum += z;
          } else {
            z = 1.0f / (1.0f + std::exp(-(z + s.bias)));
          }
        }
        const float norm = softmax ? 1.0f / sum : 1.0f;
        float* o = out + (size_t(i) * H + h) * D;
        std::fill(o, o + D, 0.0f);
        for (int n = lo; n <= m; n++) {
          const float* vn = v + (size_t(n) * Hkv + g) * D;
          const float pn = p[n - lo] * norm;
#pragma omp simd
          for (int d = 0; d < D; d++) o[d] += pn * vn[d];
        }
        if constexpr (softmax) lse[size_t(i) * H + h] = mx + std::log(sum);
      }
  }
}

}  // namespace

void swat_forward(float* out, const float* q, const float* k, const float* v, const AttnShape& s) {
  ref::attn_check(s, "swat_forward");
  if (s.Tk > s.T) return attn_forward_cached<false>(out, nullptr, q, k, v, s);
  if (!fast_ok(s)) return ref::swat_forward(out, q, k, v, s);
  attn_forward<false>(out, nullptr, q, k, v, s);
}
void swat_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                   const float* k, const float* v, const AttnShape& s) {
  ref::attn_check(s, "swat_backward");
  LCX_CHECK(s.Tk <= s.T, "swat_backward: Tk > T (queries after a KV cache) is forward only");
  if (!fast_ok(s)) return ref::swat_backward(dq, dk, dv, dout, q, k, v, s);
  attn_backward<false>(dq, dk, dv, dout, nullptr, nullptr, q, k, v, s);
}
void softmax_attn_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                          const AttnShape& s) {
  ref::attn_check(s, "softmax_attn_forward");
  if (s.Tk > s.T) return attn_forward_cached<true>(out, lse, q, k, v, s);
  if (!fast_ok(s)) return ref::softmax_attn_forward(out, lse, q, k, v, s);
  attn_forward<true>(out, lse, q, k, v, s);
}
void softmax_attn_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                           const float* lse, const float* q, const float* k, const float* v,
                           const AttnShape& s) {
  ref::attn_check(s, "softmax_attn_backward");
  LCX_CHECK(s.Tk <= s.T, "softmax_attn_backward: Tk > T (queries after a KV cache) is forward only");
  if (!fast_ok(s)) return ref::softmax_attn_backward(dq, dk, dv, dout, out, lse, q, k, v, s);
  attn_backward<true>(dq, dk, dv, dout, out, lse, q, k, v, s);
}

}  // namespace longctx::cpu
