#include "model/model.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace longctx {

Model::Model(const Config& c, const Backend& be) : config(c), layout(param_layout(c)), backend(&be) {
  config.validate("model config");
  params = Buffer<float>(be, layout.total);
  grads = Buffer<float>(be, layout.total);
  std::vector<float> s(c.num_attention_heads);
  alibi_slopes(s.data(), c.alibi, c.num_attention_heads);
  slopes = Buffer<float>::from_host(be, s.data(), s.size());
}

void Model::reserve(int T_max) {
  if (T_max <= acts.T_max) return;
  const size_t T = size_t(T_max), L = size_t(config.num_hidden_layers);
  const size_t d = config.hidden_size, hd = config.head_dim();
  const size_t qd = config.num_attention_heads * hd, kvd = config.num_key_value_heads * hd;
  const size_t F = config.intermediate_size, H = config.num_attention_heads;
  const bool softmax = config.attention == AttnKind::softmax;
  // Per layer: res, ln1, mid, ln2 (T,d); rstd1, rstd2 (T); q, att (T,qd); k, v (T,kvd);
  // lse (T,H) for softmax; gate, up, h (T,F). With recompute, one set of all but res.
  const size_t per_layer = T * (4 * d + 2 + 2 * qd + 2 * kvd + (softmax ? H : 0) + 3 * F);
  const size_t stored = recompute ? T * d * L + (per_layer - T * d) : per_layer * L;
  const size_t final_ = T * (d /*res[L]*/ + d + 1 + 1);
  const size_t scratch = T * (2 * d + 2 * qd + 2 * kvd + 3 * F);
  Activations a;
  a.T_max = T_max;
  a.arena = Buffer<float>(*backend, stored + final_ + scratch);
  if (backend->device) a.batch = Buffer<int32_t>(*backend, 4 * T + 1);
  float* p = a.arena.data();
  auto take = [&](size_t n) { float* r = p; p += n; return r; };
  for (size_t l = 0; l < L; l++) a.res.push_back(take(T * d));
  for (size_t l = 0; l < L; l++) {
    if (recompute && l > 0) {  // the shared set of layer 0
      for (auto* v : {&a.ln1, &a.rstd1, &a.q, &a.k, &a.v, &a.att, &a.lse, &a.mid, &a.ln2, &a.rstd2,
                      &a.gate, &a.up, &a.h})
        v->push_back(v->front());
      continue;
    }
    a.ln1.push_back(take(T * d));
    a.rstd1.push_back(take(T));
    a.q.push_back(take(T * qd));
    a.k.push_back(take(T * kvd));
    a.v.push_back(take(T * kvd));
    a.att.push_back(take(T * qd));
    a.lse.push_back(softmax ? take(T * H) : nullptr);
    a.mid.push_back(take(T * d));
    a.ln2.push_back(take(T * d));
    a.rstd2.push_back(take(T));
    a.gate.push_back(take(T * F));
    a.up.push_back(take(T * F));
    a.h.push_back(take(T * F));
  }
  a.res.push_back(take(T * d));  // res[L]: the final residual stream
  a.lnf = take(T * d);
  a.rstdf = take(T);
  a.losses = take(T);
  a.dres = take(T * d);
  a.dln = take(T * d);
  a.dq = take(T * qd);
  a.datt = take(T * qd);
  a.dk = take(T * kvd);
  a.dv = take(T * kvd);
  a.dh = take(T * F);
  a.dgate = take(T * F);
  a.dup = take(T * F);
  acts = std::move(a);
}

namespace {

AttnShape attn_shape(const Model& m, const TokenBatch& b) {
  AttnShape s = model_attn_shape(m);
  s.T = b.T;
  s.cu_seqlens = b.cu_seqlens;
  s.n_docs = b.n_docs;
  return s;
}

void check_batch(const Model& m, const TokenBatch& b) {
  LCX_CHECK(b.T > 0 && b.T <= m.acts.T_max, "batch of {} tokens exceeds the reserved {}", b.T,
            m.acts.T_max);
  LCX_CHECK(b.n_docs >= 1 && b.cu_seqlens[0] == 0 && b.cu_seqlens[b.n_docs] == b.T,
            "cu_seqlens must run from 0 to T = {}", b.T);
  for (int t = 0; t < b.T; t++) {
    LCX_CHECK(b.tokens[t] >= 0 && b.tokens[t] < m.config.vocab_size,
              "token id {} at position {} is outside the vocabulary [0, {})", b.tokens[t], t,
              m.config.vocab_size);
    LCX_CHECK(!b.targets || b.targets[t] < m.config.vocab_size,
              "target id {} at position {} is outside the vocabulary [0, {})", b.targets[t], t,
              m.config.vocab_size);
  }
}

// Layer l on the staged batch: x = x + Attn(RMSNorm(x));  x = x + SwiGLU(RMSNorm(x)), saving its
// activations (res[l] → res[l+1]).
void layer_forward(Model& m, int l, const TokenBatch& b, const AttnShape& s) {
  Activations& a = m.acts;
  const int T = b.T;
  layer_qkv_forward(m, l, a.q[l], a.k[l], a.v[l], a.ln1[l], a.rstd1[l], a.res[l], b.pos, T);
  if (m.attention)
    m.attention->forward(m, l, s, a.att[l], a.lse[l], a.q[l], a.k[l], a.v[l]);
  else if (m.config.attention == AttnKind::swat)
    m.backend->swat_forward(a.att[l], a.q[l], a.k[l], a.v[l], s);
  else
    m.backend->softmax_attn_forward(a.att[l], a.lse[l], a.q[l], a.k[l], a.v[l], s);
  layer_out_mlp_forward(m, l, a.res[l + 1], a.mid[l], a.ln2[l], a.rstd2[l], a.gate[l], a.up[l],
                        a.h[l], a.att[l], a.res[l], T);
}

}  // namespace

TokenBatch model_stage_batch(Model& m, const TokenBatch& b) {
  if (!m.backend->device) return b;
  LCX_CHECK(b.T <= m.acts.T_max, "batch of {} tokens exceeds the reserved {}", b.T, m.acts.T_max);
  Buffer<int32_t>& buf = m.acts.batch;
  const size_t T = size_t(m.acts.T_max);
  TokenBatch d = b;
  auto stage = [&](const int32_t* src, size_t n, size_t at) -> const int32_t* {
    if (!src) return nullptr;
    buf.upload(src, n, at);
    return buf.data() + at;
  };
  d.tokens = stage(b.tokens, size_t(b.T), 0);
  d.targets = stage(b.targets, size_t(b.T), T);
  d.pos = stage(b.pos, size_t(b.T), 2 * T);
  d.cu_seqlens = stage(b.cu_seqlens, size_t(b.n_docs) + 1, 3 * T);
  return d;
}

AttnShape model_attn_shape(const Model& m) {
  const Config& c = m.config;
  AttnShape s;
  s.H = c.num_attention_heads;
  s.Hkv = c.num_key_value_heads;
  s.D = c.head_dim();
  s.window = c.window;
  s.slopes = m.slopes.data();
  s.bias = c.attention == AttnKind::swat ? c.sigmoid_bias : 0.0f;
  s.scale = 1.0f / std::sqrt(float(s.D));
  return s;
}

void layer_qkv_forward(const Model& m, int l, float* q, float* k, float* v, float* ln,
                       float* rstd, const float* x, const int32_t* pos, int T) {
  const Config& c = m.config;
  const Backend& be = *m.backend;
  const ParamLayout& P = m.layout;
  const float* w = m.params.data();
  const size_t d = c.hidden_size, hd = c.head_dim();
  const int H = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const size_t qd = H * hd, kvd = Hkv * hd;
  be.rmsnorm_forward(ln, rstd, x, w + P.ln1 + l * d, T, int(d), c.rms_norm_eps);
  be.matmul_forward(q, ln, w + P.wq + l * qd * d, T, int(d), int(qd));
  be.matmul_forward(k, ln, w + P.wk + l * kvd * d, T, int(d), int(kvd));
  be.matmul_forward(v, ln, w + P.wv + l * kvd * d, T, int(d), int(kvd));
  be.rope_forward(q, pos, T, H, int(hd), c.rope_theta);
  be.rope_forward(k, pos, T, Hkv, int(hd), c.rope_theta);
}

void layer_out_mlp_forward(const Model& m, int l, float* out, float* mid, float* ln, float* rstd,
                           float* gate, float* up, float* h, const float* att, const float* x,
                           int T) {
  const Config& c = m.config;
  const Backend& be = *m.backend;
  const ParamLayout& P = m.layout;
  const float* w = m.params.data();
  const size_t d = c.hidden_size, qd = size_t(c.num_attention_heads) * c.head_dim();
  const size_t F = c.intermediate_size, n = size_t(T) * d;
  be.matmul_forward(mid, att, w + P.wo + l * d * qd, T, int(qd), int(d));
  be.add(mid, x, n);
  be.rmsnorm_forward(ln, rstd, mid, w + P.ln2 + l * d, T, int(d), c.rms_norm_eps);
  be.matmul_forward(gate, ln, w + P.wgate + l * F * d, T, int(d), int(F));
  be.matmul_forward(up, ln, w + P.wup + l * F * d, T, int(d), int(F));
  be.swiglu_forward(h, gate, up, T, int(F));
  be.matmul_forward(out, h, w + P.wdown + l * d * F, T, int(F), int(d));
  be.add(out, mid, n);
}

double model_forward(Model& m, const TokenBatch& host_batch, int64_t* n_targets, float dloss) {
  check_batch(m, host_batch);
  const TokenBatch b = model_stage_batch(m, host_batch);
  const Config& c = m.config;
  const Backend& be = *m.backend;
  const ParamLayout& P = m.layout;
  const float* w = m.params.data();
  Activations& a = m.acts;
  const int T = b.T, d = c.hidden_size;
  const AttnShape s = attn_shape(m, b);

  be.embedding_forward(a.res[0], b.tokens, w + P.wte, T, d);
  for (int l = 0; l < c.num_hidden_layers; l++) layer_forward(m, l, b, s);
  const int L = c.num_hidden_layers;
  be.rmsnorm_forward(a.lnf, a.rstdf, a.res[L], w + P.lnf, T, d, c.rms_norm_eps);
  if (!b.targets) {
    if (n_targets) *n_targets = 0;
    return 0.0;
  }
  // Training fuses the head's backward into this pass (one sweep over the vocabulary).
  const bool train = dloss != 0.0f;
  if (train) be.zero(a.dln, size_t(T) * d);
  be.lm_head_xent(a.losses, train ? a.dln : nullptr, train ? m.grads.data() + P.lm_head : nullptr,
                  a.lnf, w + P.lm_head, b.targets, T, d, c.vocab_size, dloss);
  // losses[t] = 0 where there is no target
  if (n_targets) *n_targets = std::count_if(host_batch.targets, host_batch.targets + T,
                                            [](int32_t y) { return y >= 0; });
  return be.sum(a.losses, size_t(T));
}

void model_backward(Model& m, const TokenBatch& host_batch) {
  const TokenBatch b = model_stage_batch(m, host_batch);
  const Config& c = m.config;
  const Backend& be = *m.backend;
  const ParamLayout& P = m.layout;
  const float* w = m.params.data();
  float* g = m.grads.data();
  Activations& a = m.acts;
  const int T = b.T, d = c.hidden_size, hd = c.head_dim(), F = c.intermediate_size;
  const int H = c.num_attention_heads, Hkv = c.num_key_value_heads, qd = H * hd, kvd = Hkv * hd;
  const int L = c.num_hidden_layers;
  const AttnShape s = attn_shape(m, b);
  auto zero = [&be](float* p, size_t n) { be.zero(p, n); };

  // Head: a.dln = d lnf was computed by model_forward(…, dloss); → d res[L].
  zero(a.dres, size_t(T) * d);
  be.rmsnorm_backward(a.dres, g + P.lnf, a.dln, a.res[L], w + P.lnf, a.rstdf, T, d);

  for (int l = L - 1; l >= 0; l--) {
    // Recompute: the layer's activations from its saved input (res[l+1] is rewritten with the
    // same values: every forward op is deterministic).
    if (m.recompute) layer_forward(m, l, b, s);
    // MLP branch: res[l+1] = mid + down(silu(gate(ln2)) ⊙ up(ln2)); a.dres holds d res[l+1].
    zero(a.dh, size_t(T) * F);
    be.matmul_backward(a.dh, g + P.wdown + size_t(l) * d * F, a.dres, a.h[l],
                       w + P.wdown + size_t(l) * d * F, T, F, d);
    zero(a.dgate, size_t(T) * F);
    zero(a.dup, size_t(T) * F);
    be.swiglu_backward(a.dgate, a.dup, a.dh, a.gate[l], a.up[l], T, F);
    zero(a.dln, size_t(T) * d);
    be.matmul_backward(a.dln, g + P.wgate + size_t(l) * F * d, a.dgate, a.ln2[l],
                       w + P.wgate + size_t(l) * F * d, T, d, F);
    be.matmul_backward(a.dln, g + P.wup + size_t(l) * F * d, a.dup, a.ln2[l],
                       w + P.wup + size_t(l) * F * d, T, d, F);
    // residual: d mid = d res[l+1] + RMSNorm backward (accumulated into a.dres)
    be.rmsnorm_backward(a.dres, g + P.ln2 + size_t(l) * d, a.dln, a.mid[l],
                        w + P.ln2 + size_t(l) * d, a.rstd2[l], T, d);

    // Attention branch: mid = res[l] + o_proj(attn(rope(q), rope(k), v)).
    zero(a.datt, size_t(T) * qd);
    be.matmul_backward(a.datt, g + P.wo + size_t(l) * d * qd, a.dres, a.att[l],
                       w + P.wo + size_t(l) * d * qd, T, qd, d);
    zero(a.dq, size_t(T) * qd);
    zero(a.dk, size_t(T) * kvd);
    zero(a.dv, size_t(T) * kvd);
    if (m.attention)
      m.attention->backward(m, l, s, a.dq, a.dk, a.dv, a.datt, a.att[l], a.lse[l], a.q[l],
                            a.k[l], a.v[l]);
    else if (c.attention == AttnKind::swat)
      be.swat_backward(a.dq, a.dk, a.dv, a.datt, a.q[l], a.k[l], a.v[l], s);
    else
      be.softmax_attn_backward(a.dq, a.dk, a.dv, a.datt, a.att[l], a.lse[l], a.q[l], a.k[l],
                               a.v[l], s);
    be.rope_backward(a.dq, b.pos, T, H, hd, c.rope_theta);
    be.rope_backward(a.dk, b.pos, T, Hkv, hd, c.rope_theta);
    zero(a.dln, size_t(T) * d);
    be.matmul_backward(a.dln, g + P.wq + size_t(l) * qd * d, a.dq, a.ln1[l],
                       w + P.wq + size_t(l) * qd * d, T, d, qd);
    be.matmul_backward(a.dln, g + P.wk + size_t(l) * kvd * d, a.dk, a.ln1[l],
                       w + P.wk + size_t(l) * kvd * d, T, d, kvd);
    be.matmul_backward(a.dln, g + P.wv + size_t(l) * kvd * d, a.dv, a.ln1[l],
                       w + P.wv + size_t(l) * kvd * d, T, d, kvd);
    be.rmsnorm_backward(a.dres, g + P.ln1 + size_t(l) * d, a.dln, a.res[l],
                        w + P.ln1 + size_t(l) * d, a.rstd1[l], T, d);
  }
  be.embedding_backward(g + P.wte, a.dres, b.tokens, T, d);
}

void model_logits_last(Model& m, const TokenBatch& b, float* logits) {
  TokenBatch fwd = b;
  fwd.targets = nullptr;
  model_forward(m, fwd, nullptr);
  const Config& c = m.config;
  Buffer<float> out(*m.backend, size_t(c.vocab_size));
  m.backend->matmul_forward(out.data(), m.acts.lnf + size_t(b.T - 1) * c.hidden_size,
                            m.params.data() + m.layout.lm_head, 1, c.hidden_size, c.vocab_size);
  out.download(logits, out.size());
}

}  // namespace longctx
