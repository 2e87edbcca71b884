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

// Copies rows [b, e) of the part starting at `base` from K and V (kvd floats a row) into msg:
// K rows, then V rows.
void pack(float* msg, const float* k, const float* v, int64_t base, int64_t b, int64_t e,
          size_t kvd) {
  const size_t n = size_t(e - b) * kvd;
  std::copy(k + size_t(b - base) * kvd, k + size_t(b - base) * kvd + n, msg);
  std::copy(v + size_t(b - base) * kvd, v + size_t(b - base) * kvd + n, msg + n);
}

AttnShape local_shape(const CpAttnArgs& a, const CpHaloPlan& hp) {
  AttnShape s;
  s.T = hp.halo_rows() + hp.own_rows();
  s.H = a.H;
  s.Hkv = a.Hkv;
  s.D = a.D;
  s.window = a.window;
  s.cu_seqlens = hp.cu_local.data();
  s.n_docs = int(hp.cu_local.size()) - 1;
  s.slopes = a.slopes;
  s.bias = a.softmax ? 0.0f : a.bias;
  s.scale = a.scale;
  return s;
}

// scr.q/k/v = [halo + own] rows: q of halo rows is 0 (their outputs are discarded).
void build_local(CpScratch& scr, const CpAttnState& st, const CpAttnArgs& a, const float* q,
                 const float* k, const float* v) {
  const size_t h = size_t(st.plan.halo_rows()), T = size_t(st.plan.own_rows());
  const size_t qd = size_t(a.H) * a.D, kvd = size_t(a.Hkv) * a.D;
  scr.q.assign((h + T) * qd, 0.0f);
  std::copy(q, q + T * qd, scr.q.begin() + long(h * qd));
  scr.k.resize((h + T) * kvd);
  scr.v.resize((h + T) * kvd);
  std::copy(st.k_halo.begin(), st.k_halo.end(), scr.k.begin());
  std::copy(st.v_halo.begin(), st.v_halo.end(), scr.v.begin());
  std::copy(k, k + T * kvd, scr.k.begin() + long(h * kvd));
  std::copy(v, v + T * kvd, scr.v.begin() + long(h * kvd));
}

void check_args(const Comm& comm, const CpPlacement& p, const CpAttnArgs& a, int part) {
  LCX_CHECK(part >= 0 && part < p.parts(), "cp_attention: part {} outside [0, {})", part,
            p.parts());
  LCX_CHECK(p.ranks[size_t(part)] == comm.rank(),
            "cp_attention: part {} belongs to rank {}, called on rank {}", part,
            p.ranks[size_t(part)], comm.rank());
  LCX_CHECK(a.H > 0 && a.Hkv > 0 && a.H % a.Hkv == 0 && a.D > 0,
            "cp_attention: H={} must be a multiple of Hkv={} (D={})", a.H, a.Hkv, a.D);
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
  st.plan = cp_halo_plan(p, part, a.window);
  const CpHaloPlan& hp = st.plan;
  const size_t kvd = size_t(a.Hkv) * a.D, qd = size_t(a.H) * a.D;
  const size_t h = size_t(hp.halo_rows()), T = size_t(hp.own_rows());

  // Receive the halo (K rows then V rows per piece); send the rows later parts need.
  std::vector<std::vector<float>> rbuf(hp.recv.size()), sbuf(hp.send.size());
  std::vector<CommRequest> reqs;
  for (size_t i = 0; i < hp.recv.size(); i++) {
    const CpPiece& r = hp.recv[i];
    rbuf[i].resize(size_t(r.end - r.begin) * 2 * kvd);
    reqs.push_back(comm.irecv(rbuf[i].data(), rbuf[i].size(), p.ranks[size_t(r.part)], a.tag));
  }
  for (size_t i = 0; i < hp.send.size(); i++) {
    const CpPiece& s = hp.send[i];
    sbuf[i].resize(size_t(s.end - s.begin) * 2 * kvd);
    pack(sbuf[i].data(), k, v, hp.own_begin, s.begin, s.end, kvd);
    reqs.push_back(comm.isend(sbuf[i].data(), sbuf[i].size(), p.ranks[size_t(s.part)], a.tag));
  }
  comm.wait_all(reqs);
  st.k_halo.resize(h * kvd);
  st.v_halo.resize(h * kvd);
  for (size_t i = 0; i < hp.recv.size(); i++) {
    const CpPiece& r = hp.recv[i];
    const size_t n = size_t(r.end - r.begin) * kvd, at = size_t(r.begin - hp.halo_begin) * kvd;
    std::copy(rbuf[i].begin(), rbuf[i].begin() + long(n), st.k_halo.begin() + long(at));
    std::copy(rbuf[i].begin() + long(n), rbuf[i].end(), st.v_halo.begin() + long(at));
  }
  if (T == 0) return;

  build_local(scr, st, a, q, k, v);
  const AttnShape s = local_shape(a, hp);
  scr.out.resize((h + T) * qd);
  if (a.softmax) {
    scr.lse.resize((h + T) * size_t(a.H));
    be.softmax_attn_forward(scr.out.data(), scr.lse.data(), scr.q.data(), scr.k.data(),
                            scr.v.data(), s);
    std::copy(scr.lse.begin() + long(h * a.H), scr.lse.end(), lse);
    st.lse_halo.assign(scr.lse.begin(), scr.lse.begin() + long(h * a.H));
  } else {
    be.swat_forward(scr.out.data(), scr.q.data(), scr.k.data(), scr.v.data(), s);
  }
  std::copy(scr.out.begin() + long(h * qd), scr.out.end(), out);
}

void cp_attention_backward(Comm& comm, const Backend& be, const CpPlacement& p,
                           const CpAttnArgs& a, CpAttnState& st, CpScratch& scr, float* dq,
                           float* dk, float* dv, const float* dout, const float* out,
                           const float* lse, const float* q, const float* k, const float* v) {
  const CpHaloPlan& hp = st.plan;
  check_args(comm, p, a, hp.part);
  const size_t kvd = size_t(a.Hkv) * a.D, qd = size_t(a.H) * a.D;
  const size_t h = size_t(hp.halo_rows()), T = size_t(hp.own_rows());

  // dK/dV of my rows that later parts used as their halo come back (forward's send pieces).
  std::vector<std::vector<float>> rbuf(hp.send.size()), sbuf(hp.recv.size());
  std::vector<CommRequest> rreqs, sreqs;
  for (size_t i = 0; i < hp.send.size(); i++) {
    const CpPiece& s = hp.send[i];
    rbuf[i].resize(size_t(s.end - s.begin) * 2 * kvd);
    rreqs.push_back(comm.irecv(rbuf[i].data(), rbuf[i].size(), p.ranks[size_t(s.part)], a.tag));
  }

  if (T > 0) {
    build_local(scr, st, a, q, k, v);
    const AttnShape s = local_shape(a, hp);
    scr.dout.assign((h + T) * qd, 0.0f);  // halo queries' outputs were discarded: dout = 0
    std::copy(dout, dout + T * qd, scr.dout.begin() + long(h * qd));
    scr.dq.assign((h + T) * qd, 0.0f);
    scr.dk.assign((h + T) * kvd, 0.0f);
    scr.dv.assign((h + T) * kvd, 0.0f);
    if (a.softmax) {
      scr.out.assign((h + T) * qd, 0.0f);
      std::copy(out, out + T * qd, scr.out.begin() + long(h * qd));
      scr.lse.resize((h + T) * size_t(a.H));
      std::copy(st.lse_halo.begin(), st.lse_halo.end(), scr.lse.begin());
      std::copy(lse, lse + T * size_t(a.H), scr.lse.begin() + long(h * a.H));
      be.softmax_attn_backward(scr.dq.data(), scr.dk.data(), scr.dv.data(), scr.dout.data(),
                               scr.out.data(), scr.lse.data(), scr.q.data(), scr.k.data(),
                               scr.v.data(), s);
    } else {
      be.swat_backward(scr.dq.data(), scr.dk.data(), scr.dv.data(), scr.dout.data(),
                       scr.q.data(), scr.k.data(), scr.v.data(), s);
    }
    // The halo's dK/dV go back to the parts that sent those rows.
    for (size_t i = 0; i < hp.recv.size(); i++) {
      const CpPiece& r = hp.recv[i];
      sbuf[i].resize(size_t(r.end - r.begin) * 2 * kvd);
      pack(sbuf[i].data(), scr.dk.data(), scr.dv.data(), hp.halo_begin, r.begin, r.end, kvd);
      sreqs.push_back(comm.isend(sbuf[i].data(), sbuf[i].size(), p.ranks[size_t(r.part)], a.tag));
    }
    for (size_t t = 0; t < T * qd; t++) dq[t] += scr.dq[h * qd + t];
    for (size_t t = 0; t < T * kvd; t++) {
      dk[t] += scr.dk[h * kvd + t];
      dv[t] += scr.dv[h * kvd + t];
    }
  }
  // Add the returned halo gradients in part order (deterministic).
  comm.wait_all(rreqs);
  for (size_t i = 0; i < hp.send.size(); i++) {
    const CpPiece& s = hp.send[i];
    const size_t n = size_t(s.end - s.begin) * kvd, at = size_t(s.begin - hp.own_begin) * kvd;
    for (size_t t = 0; t < n; t++) {
      dk[at + t] += rbuf[i][t];
      dv[at + t] += rbuf[i][n + t];
    }
  }
  comm.wait_all(sreqs);
}

}  // namespace longctx
