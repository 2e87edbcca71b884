// Context-parallel sliding-window attention by halo exchange (see cp_attention.h).
#include "dist/cp_attention.h"

#include <algorithm>
#include <set>

#include "core/error.h"

namespace longctx {
namespace {

// First row of the document holding row `row` (cu_seqlens of the whole stream).
int64_t doc_start(const std::vector<int32_t>& cu, int64_t row) {
  auto it = std::upper_bound(cu.begin(), cu.end(), row);
  return it == cu.begin() ? 0 : *(it - 1);
}

// Halo start of a part whose rows are [b, e): ≤ w−1 rows back, not past its document's start.
int64_t halo_begin_of(const CpPlacement& p, int64_t b, int64_t e, int window) {
  if (e <= b) return b;  // an empty part needs no halo
  return std::max(b - (window - 1), doc_start(p.cu_seqlens, b));
}

// dst ← src, n floats of be's memory.
void copy_floats(const Backend& be, float* dst, const float* src, size_t n) {
  if (n) be.copy(dst, src, n * sizeof(float), Copy::within);
}

// Floats of the messages of `pieces` (K rows then V rows each, kvd floats a row).
size_t msg_floats(const std::vector<CpPiece>& pieces, size_t kvd) {
  size_t n = 0;
  for (const CpPiece& c : pieces) n += size_t(c.end - c.begin) * 2 * kvd;
  return n;
}

// Copies rows [b, e) of the part starting at `base` from K and V into msg: K rows, then V rows.
void pack(const Backend& be, float* msg, const float* k, const float* v, int64_t base, int64_t b,
          int64_t e, size_t kvd) {
  const size_t n = size_t(e - b) * kvd, at = size_t(b - base) * kvd;
  copy_floats(be, msg, k + at, n);
  copy_floats(be, msg + n, v + at, n);
}

AttnShape local_shape(const CpAttnArgs& a, const CpAttnState& st) {
  const CpHaloPlan& hp = st.plan;
  AttnShape s = a.attn;
  s.T = hp.halo_rows() + hp.own_rows();
  s.Tk = 0;
  s.cu_seqlens = st.cu_local.data();
  s.n_docs = int(hp.cu_local.size()) - 1;
  if (a.softmax) s.bias = 0.0f;
  return s;
}

// [halo rows; own rows] of width `width` into dst: the halo part from `halo` (zeros when null),
// the own part from `own`.
float* stack(const Backend& be, Buffer<float>& dst, const float* halo, const float* own, size_t h,
             size_t T, size_t width) {
  float* d = fit(dst, be, (h + T) * width);
  if (halo) copy_floats(be, d, halo, h * width);
  else if (h) be.zero(d, h * width);
  copy_floats(be, d + h * width, own, T * width);
  return d;
}

// scr.q/k/v = [halo + own] rows: q of halo rows is 0 (their outputs are discarded).
void build_local(const Backend& be, CpScratch& scr, const CpAttnState& st, const CpAttnArgs& a,
                 const float* q, const float* k, const float* v) {
  const size_t h = size_t(st.plan.halo_rows()), T = size_t(st.plan.own_rows());
  const size_t qd = size_t(a.attn.H) * a.attn.D, kvd = size_t(a.attn.Hkv) * a.attn.D;
  stack(be, scr.q, nullptr, q, h, T, qd);
  stack(be, scr.k, st.k_halo.data(), k, h, T, kvd);
  stack(be, scr.v, st.v_halo.data(), v, h, T, kvd);
}

void check_args(const Comm& comm, const CpPlacement& p, const CpAttnArgs& a, int part) {
  LCX_CHECK(part >= 0 && part < p.parts(), "cp_attention: part {} outside [0, {})", part,
            p.parts());
  LCX_CHECK(p.ranks[size_t(part)] == comm.rank(),
            "cp_attention: part {} belongs to rank {}, called on rank {}", part,
            p.ranks[size_t(part)], comm.rank());
  LCX_CHECK(a.attn.H > 0 && a.attn.Hkv > 0 && a.attn.H % a.attn.Hkv == 0 && a.attn.D > 0,
            "cp_attention: H={} must be a multiple of Hkv={} (D={})", a.attn.H, a.attn.Hkv, a.attn.D);
  LCX_CHECK(a.tag >= 0 && a.tag <= Comm::kMaxUserTag, "cp_attention: tag {} outside [0, {}]",
            a.tag, Comm::kMaxUserTag);
}

}  // namespace

CpHaloPlan cp_halo_plan(const CpPlacement& p, int part, int window) {
  const int P = p.parts();
  LCX_CHECK(P >= 1, "CP placement: no parts");
  LCX_CHECK(window >= 1, "CP placement: window {} must be ≥ 1", window);
  LCX_CHECK(part >= 0 && part < P, "CP placement: part {} outside [0, {})", part, P);
  LCX_CHECK(p.bounds.size() == size_t(P) + 1 && p.bounds[0] == 0,
            "CP placement: bounds must have parts+1 = {} entries starting at 0 (has {})", P + 1,
            p.bounds.size());
  for (int i = 0; i < P; i++)
    LCX_CHECK(p.bounds[size_t(i) + 1] >= p.bounds[size_t(i)],
              "CP placement: bounds decrease at part {} ({} > {})", i, p.bounds[size_t(i)],
              p.bounds[size_t(i) + 1]);
  LCX_CHECK(std::set<int>(p.ranks.begin(), p.ranks.end()).size() == p.ranks.size(),
            "CP placement: a rank holds two parts of one stream");
  const auto& cu = p.cu_seqlens;
  LCX_CHECK(cu.size() >= 2 && cu.front() == 0 && cu.back() == p.bounds.back(),
            "CP placement: cu_seqlens must run from 0 to the stream's {} tokens", p.bounds.back());
  for (size_t i = 1; i < cu.size(); i++)
    LCX_CHECK(cu[i] > cu[i - 1], "CP placement: cu_seqlens not increasing at index {}", i);

  CpHaloPlan hp;
  hp.part = part;
  hp.own_begin = p.bounds[size_t(part)];
  hp.own_end = p.bounds[size_t(part) + 1];
  hp.halo_begin = halo_begin_of(p, hp.own_begin, hp.own_end, window);
  for (int j = 0; j < part; j++) {
    const int64_t b = std::max(p.bounds[size_t(j)], hp.halo_begin);
    const int64_t e = std::min(p.bounds[size_t(j) + 1], hp.own_begin);
    if (e > b) hp.recv.push_back({j, b, e});
  }
  for (int j = part + 1; j < P; j++) {
    const int64_t jb = p.bounds[size_t(j)], je = p.bounds[size_t(j) + 1];
    const int64_t b = std::max(hp.own_begin, halo_begin_of(p, jb, je, window));
    const int64_t e = std::min(hp.own_end, jb);
    if (e > b) hp.send.push_back({j, b, e});
  }
  hp.cu_local.push_back(0);
  for (int32_t c : cu)
    if (c > hp.halo_begin && c < hp.own_end) hp.cu_local.push_back(int32_t(c - hp.halo_begin));
  hp.cu_local.push_back(int32_t(hp.own_end - hp.halo_begin));
  if (hp.own_end == hp.halo_begin) hp.cu_local.pop_back();  // empty part: no documents
  return hp;
}

int64_t cp_halo_bytes(const CpHaloPlan& plan, int Hkv, int D, bool backward) {
  int64_t rows = 0;
  for (const auto& s : backward ? plan.recv : plan.send) rows += s.end - s.begin;
  return rows * 2 * Hkv * D * int64_t(sizeof(float));
}

void cp_attention_forward(Comm& comm, const Backend& be, const CpPlacement& p, int part,
                          const CpAttnArgs& a, CpAttnState& st, CpScratch& scr, float* out,
                          float* lse, const float* q, const float* k, const float* v) {
  check_args(comm, p, a, part);
  st.plan = cp_halo_plan(p, part, a.attn.window);
  const CpHaloPlan& hp = st.plan;
  const size_t kvd = size_t(a.attn.Hkv) * a.attn.D, qd = size_t(a.attn.H) * a.attn.D;
  const size_t h = size_t(hp.halo_rows()), T = size_t(hp.own_rows());

  // Receive the halo (K rows then V rows per piece); send the rows later parts need.
  float* rmsg = fit(scr.recv, be, msg_floats(hp.recv, kvd));
  float* smsg = fit(scr.send, be, msg_floats(hp.send, kvd));
  size_t at = 0;
  for (const CpPiece& s : hp.send) {
    pack(be, smsg + at, k, v, hp.own_begin, s.begin, s.end, kvd);
    at += size_t(s.end - s.begin) * 2 * kvd;
  }
  be.sync();  // the messages are complete before the communicator reads them
  std::vector<CommRequest> reqs;
  at = 0;
  for (const CpPiece& r : hp.recv) {
    const size_t n = size_t(r.end - r.begin) * 2 * kvd;
    reqs.push_back(comm.irecv(rmsg + at, n, p.ranks[size_t(r.part)], a.tag));
    at += n;
  }
  at = 0;
  for (const CpPiece& s : hp.send) {
    const size_t n = size_t(s.end - s.begin) * 2 * kvd;
    reqs.push_back(comm.isend(smsg + at, n, p.ranks[size_t(s.part)], a.tag));
    at += n;
  }
  comm.wait_all(reqs);
  float* kh = fit(st.k_halo, be, h * kvd);
  float* vh = fit(st.v_halo, be, h * kvd);
  at = 0;
  for (const CpPiece& r : hp.recv) {
    const size_t n = size_t(r.end - r.begin) * kvd, to = size_t(r.begin - hp.halo_begin) * kvd;
    copy_floats(be, kh + to, rmsg + at, n);
    copy_floats(be, vh + to, rmsg + at + n, n);
    at += 2 * n;
  }
  fit(st.cu_local, be, hp.cu_local.size());
  st.cu_local.upload(hp.cu_local.data(), hp.cu_local.size());
  if (T == 0) return;

  build_local(be, scr, st, a, q, k, v);
  const AttnShape s = local_shape(a, st);
  float* o = fit(scr.out, be, (h + T) * qd);
  if (a.softmax) {
    const size_t H = size_t(a.attn.H);
    float* l = fit(scr.lse, be, (h + T) * H);
    be.softmax_attn_forward(o, l, scr.q.data(), scr.k.data(), scr.v.data(), s);
    copy_floats(be, lse, l + h * H, T * H);
    copy_floats(be, fit(st.lse_halo, be, h * H), l, h * H);
  } else {
    be.swat_forward(o, scr.q.data(), scr.k.data(), scr.v.data(), s);
  }
  copy_floats(be, out, o + h * qd, T * qd);
}

void cp_attention_backward(Comm& comm, const Backend& be, const CpPlacement& p,
                           const CpAttnArgs& a, CpAttnState& st, CpScratch& scr, float* dq,
                           float* dk, float* dv, const float* dout, const float* out,
                           const float* lse, const float* q, const float* k, const float* v) {
  const CpHaloPlan& hp = st.plan;
  check_args(comm, p, a, hp.part);
  const size_t kvd = size_t(a.attn.Hkv) * a.attn.D, qd = size_t(a.attn.H) * a.attn.D;
  const size_t h = size_t(hp.halo_rows()), T = size_t(hp.own_rows());

  // dK/dV of my rows that later parts used as their halo come back (forward's send pieces).
  float* rmsg = fit(scr.recv, be, msg_floats(hp.send, kvd));
  be.sync();  // a grown buffer's zeroing (compute stream) is done before the communicator writes
  std::vector<CommRequest> rreqs, sreqs;
  size_t at = 0;
  for (const CpPiece& s : hp.send) {
    const size_t n = size_t(s.end - s.begin) * 2 * kvd;
    rreqs.push_back(comm.irecv(rmsg + at, n, p.ranks[size_t(s.part)], a.tag));
    at += n;
  }

  if (T > 0) {
    build_local(be, scr, st, a, q, k, v);
    const AttnShape s = local_shape(a, st);
    // halo queries' outputs were discarded: their dout is 0
    const float* d_o = stack(be, scr.dout, nullptr, dout, h, T, qd);
    float* gq = fit(scr.dq, be, (h + T) * qd);
    float* gk = fit(scr.dk, be, (h + T) * kvd);
    float* gv = fit(scr.dv, be, (h + T) * kvd);
    be.zero(gq, (h + T) * qd);
    be.zero(gk, (h + T) * kvd);
    be.zero(gv, (h + T) * kvd);
    if (a.softmax) {
      const float* o = stack(be, scr.out, nullptr, out, h, T, qd);
      const float* l = stack(be, scr.lse, st.lse_halo.data(), lse, h, T, size_t(a.attn.H));
      be.softmax_attn_backward(gq, gk, gv, d_o, o, l, scr.q.data(), scr.k.data(), scr.v.data(),
                               s);
    } else {
      be.swat_backward(gq, gk, gv, d_o, scr.q.data(), scr.k.data(), scr.v.data(), s);
    }
    // The halo's dK/dV go back to the parts that sent those rows.
    float* smsg = fit(scr.send, be, msg_floats(hp.recv, kvd));
    at = 0;
    for (const CpPiece& r : hp.recv) {
      pack(be, smsg + at, gk, gv, hp.halo_begin, r.begin, r.end, kvd);
      at += size_t(r.end - r.begin) * 2 * kvd;
    }
    be.sync();  // the messages are complete before the communicator reads them
    at = 0;
    for (const CpPiece& r : hp.recv) {
      const size_t n = size_t(r.end - r.begin) * 2 * kvd;
      sreqs.push_back(comm.isend(smsg + at, n, p.ranks[size_t(r.part)], a.tag));
      at += n;
    }
    be.add(dq, gq + h * qd, T * qd);
    be.add(dk, gk + h * kvd, T * kvd);
    be.add(dv, gv + h * kvd, T * kvd);
  }
  // Add the returned halo gradients in part order (deterministic).
  comm.wait_all(rreqs);
  at = 0;
  for (const CpPiece& s : hp.send) {
    const size_t n = size_t(s.end - s.begin) * kvd, to = size_t(s.begin - hp.own_begin) * kvd;
    be.add(dk + to, rmsg + at, n);
    be.add(dv + to, rmsg + at + n, n);
    at += 2 * n;
  }
  comm.wait_all(sreqs);
}

}  // namespace longctx
