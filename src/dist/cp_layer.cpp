// Model::attention over local runs, halo slices and ring parts (see cp_layer.h).
#include "dist/cp_layer.h"

#include "core/error.h"

namespace longctx {
namespace {

bool is_softmax(const Model& m) { return m.config.attention == AttnKind::softmax; }

CpAttnArgs cp_args(const Model& m, const AttnShape& s, int layer) {
  CpAttnArgs a;
  a.softmax = is_softmax(m);
  a.attn = s;
  a.tag = 2 * layer;
  return a;
}

// The attention shape of a local run: the model's options over the run's rows and documents
// (cu: r.cu_seqlens in the backend's memory).
AttnShape run_shape(const AttnShape& s, const CpRun& r, const int32_t* cu) {
  AttnShape rs = s;
  rs.T = int(r.row_end - r.row_begin);
  rs.cu_seqlens = cu;
  rs.n_docs = int(r.cu_seqlens.size()) - 1;
  return rs;
}

}  // namespace

CpLayerAttention::CpLayerAttention(Comm& comm, int layers) : comm_(comm), state_(size_t(layers)) {
  LCX_CHECK(layers > 0 && 2 * layers - 1 <= Comm::kMaxUserTag - 2,
            "CpLayerAttention: {} layers need message tags up to {}, above the {} available",
            layers, 2 * layers - 1, Comm::kMaxUserTag - 2);
}

void CpLayerAttention::set_runs(std::vector<CpRun> runs) {
  int64_t at = 0;
  for (const CpRun& r : runs) {
    const int64_t n = r.row_end - r.row_begin;
    LCX_CHECK(r.row_begin == at && n > 0,
              "CpLayerAttention: runs must tile the stream in order (run at row {}, expected {})",
              r.row_begin, at);
    switch (r.kind) {
      case CpRun::Kind::local:
        LCX_CHECK(r.cu_seqlens.size() >= 2 && r.cu_seqlens.front() == 0 && r.cu_seqlens.back() == n,
                  "CpLayerAttention: a local run's cu_seqlens must run from 0 to its {} rows", n);
        break;
      case CpRun::Kind::halo:
        LCX_CHECK(r.part >= 0 && r.part < r.placement.parts() &&
                      r.placement.bounds.size() == size_t(r.placement.parts()) + 1 &&
                      r.placement.bounds[size_t(r.part) + 1] - r.placement.bounds[size_t(r.part)] == n,
                  "CpLayerAttention: a halo run of {} rows does not match part {} of its placement", n,
                  r.part);
        break;
      case CpRun::Kind::ring:
        LCX_CHECK(r.part >= 0 && r.part < r.ring.parts() && int64_t(r.ring.rows[size_t(r.part)].size()) == n,
                  "CpLayerAttention: a ring run of {} rows does not match part {} of its placement", n,
                  r.part);
        break;
    }
    at = r.row_end;
  }
  runs_ = std::move(runs);
  for (auto& st : state_) st.resize(runs_.size());
  cu_be_ = nullptr;
}

const int32_t* CpLayerAttention::run_cu(const Backend& be, size_t run) {
  if (cu_be_ != &be) {
    std::vector<int32_t> all;
    cu_at_.assign(runs_.size(), 0);
    for (size_t i = 0; i < runs_.size(); i++) {
      cu_at_[i] = all.size();
      all.insert(all.end(), runs_[i].cu_seqlens.begin(), runs_[i].cu_seqlens.end());
    }
    fit(cu_, be, all.size());
    cu_.upload(all.data(), all.size());
    cu_be_ = &be;
  }
  return cu_.data() + cu_at_[run];
}

void CpLayerAttention::forward(const Model& m, int layer, const AttnShape& s, float* out,
                               float* lse, const float* q, const float* k, const float* v) {
  LCX_CHECK(!runs_.empty() && runs_.back().row_end == s.T,
            "CpLayerAttention: runs cover {} rows, the batch has {}",
            runs_.empty() ? 0 : runs_.back().row_end, s.T);
  const Backend& be = *m.backend;
  const size_t qd = size_t(s.H) * s.D, kvd = size_t(s.Hkv) * s.D;
  const bool sm = is_softmax(m);
  for (size_t i = 0; i < runs_.size(); i++) {
    const CpRun& r = runs_[i];
    const size_t b = size_t(r.row_begin);
    float* lse_r = sm ? lse + b * size_t(s.H) : nullptr;
    switch (r.kind) {
      case CpRun::Kind::halo:
        cp_attention_forward(comm_, be, r.placement, r.part, cp_args(m, s, layer),
                             state_[size_t(layer)][i], scratch_, out + b * qd, lse_r, q + b * qd,
                             k + b * kvd, v + b * kvd);
        break;
      case CpRun::Kind::ring:
        ring_attention_forward(comm_, be, r.ring, r.part, cp_args(m, s, layer), ring_scratch_,
                               out + b * qd, lse_r, q + b * qd, k + b * kvd, v + b * kvd);
        break;
      case CpRun::Kind::local:
        if (sm)
          be.softmax_attn_forward(out + b * qd, lse_r, q + b * qd, k + b * kvd, v + b * kvd,
                                  run_shape(s, r, run_cu(be, i)));
        else
          be.swat_forward(out + b * qd, q + b * qd, k + b * kvd, v + b * kvd,
                          run_shape(s, r, run_cu(be, i)));
        break;
    }
  }
}

void CpLayerAttention::backward(const Model& m, int layer, const AttnShape& s, float* dq,
                                float* dk, float* dv, const float* dout, const float* out,
                                const float* lse, const float* q, const float* k,
                                const float* v) {
  const Backend& be = *m.backend;
  const size_t qd = size_t(s.H) * s.D, kvd = size_t(s.Hkv) * s.D;
  const bool sm = is_softmax(m);
  for (size_t i = 0; i < runs_.size(); i++) {
    const CpRun& r = runs_[i];
    const size_t b = size_t(r.row_begin);
    const float* lse_r = sm ? lse + b * size_t(s.H) : nullptr;
    switch (r.kind) {
      case CpRun::Kind::halo:
        cp_attention_backward(comm_, be, r.placement, cp_args(m, s, layer),
                              state_[size_t(layer)][i], scratch_, dq + b * qd, dk + b * kvd,
                              dv + b * kvd, dout + b * qd, out + b * qd, lse_r, q + b * qd,
                              k + b * kvd, v + b * kvd);
        break;
      case CpRun::Kind::ring:
        ring_attention_backward(comm_, be, r.ring, r.part, cp_args(m, s, layer), ring_scratch_,
                                dq + b * qd, dk + b * kvd, dv + b * kvd, dout + b * qd,
                                out + b * qd, lse_r, q + b * qd, k + b * kvd, v + b * kvd);
        break;
      case CpRun::Kind::local:
        if (sm)
          be.softmax_attn_backward(dq + b * qd, dk + b * kvd, dv + b * kvd, dout + b * qd,
                                   out + b * qd, lse_r, q + b * qd, k + b * kvd, v + b * kvd,
                                   run_shape(s, r, run_cu(be, i)));
        else
          be.swat_backward(dq + b * qd, dk + b * kvd, dv + b * kvd, dout + b * qd, q + b * qd,
                           k + b * kvd, v + b * kvd, run_shape(s, r, run_cu(be, i)));
        break;
    }
  }
}

}  // namespace longctx
