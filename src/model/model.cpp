#include "model/model.h"

#include <algorithm>
#include <array>
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
  LCX_CHECK(offload >= 0.0 && offload <= 1.0, "offload ratio r must be in [0, 1], got {}", offload);
  const Backend& be = *backend;
  const size_t T = size_t(T_max), L = size_t(config.num_hidden_layers);
  const size_t d = config.hidden_size, hd = config.head_dim();
  const size_t qd = config.num_attention_heads * hd, kvd = config.num_key_value_heads * hd;
  const size_t F = config.intermediate_size, H = config.num_attention_heads;
  const bool softmax = config.attention == AttnKind::softmax;
  using A = Activations;
  // Per layer: res, ln1, mid, ln2 (T,d); rstd1, rstd2 (T); q, att (T,qd); k, v (T,kvd);
  // lse (T,H) for softmax; gate, up, h (T,F). With recompute only res is saved per layer and
  // the others are one shared set.
  const std::vector<A::Saved> kinds = {
      {&A::res, d},  {&A::ln1, d}, {&A::rstd1, 1}, {&A::q, qd},   {&A::k, kvd},
      {&A::v, kvd},  {&A::att, qd}, {&A::lse, softmax ? H : 0}, {&A::mid, d}, {&A::ln2, d},
      {&A::rstd2, 1}, {&A::gate, F}, {&A::up, F},   {&A::h, F}};
  Activations a;
  a.T_max = T_max;
  for (const A::Saved& k : kinds)
    if (k.row && (!recompute || k.at == &A::res)) a.saved.push_back(k);
  if (offload > 0) {
    a.n_slots = 3;
    a.n_off = int(std::ceil(offload * double(T)));
  }
  // Two passes over one carving: count floats (base null), then point into the arena. Every
  // tensor starts 256-byte aligned, offloading or not (same GEMM algorithms either way).
  float* base = nullptr;
  size_t used = 0;
  auto take = [&](size_t n) {
    float* r = base ? base + used : nullptr;
    used += (n + 63) / 64 * 64;
    return r;
  };
  auto carve = [&](Activations& c) {
    for (const A::Saved& k : kinds) (c.*k.at).assign(L, nullptr);
    for (const A::Saved& k : kinds) {
      if (!k.row) continue;
      const bool is_saved = !recompute || k.at == &A::res;
      if (!is_saved) {  // the recompute set
        (c.*k.at).assign(L, take(T * k.row));
      } else if (!c.n_slots) {
        for (size_t l = 0; l < L; l++) (c.*k.at)[l] = take(T * k.row);
      }
    }
    if (c.n_slots) {
      c.resident.assign(L, {});
      for (const A::Saved& k : c.saved) {
        // Layer l computes in slot l%2 while layer l−1's rows leave slot (l−1)%2; it writes
        // its output res[l+1] into res slot (l+1)%3, the one of layer l−2 (already left).
        std::vector<float*> slot;
        for (int i = 0; i < (k.at == &A::res ? 3 : 2); i++) slot.push_back(take(T * k.row));
        for (size_t l = 0; l < L; l++) {
          (c.*k.at)[l] = slot[l % slot.size()];
          if (l + 2 < L) c.resident[l].push_back(take((T - size_t(c.n_off)) * k.row));
        }
      }
    }
    c.res.push_back(take(T * d));  // res[L]: the final residual stream
    c.lnf = take(T * d);
    c.rstdf = take(T);
    c.losses = take(T);
    c.dres = take(T * d);
    c.dln = take(T * d);
    c.dq = take(T * qd);
    c.datt = take(T * qd);
    c.dk = take(T * kvd);
    c.dv = take(T * kvd);
    c.dh = take(T * F);
    c.dgate = take(T * F);
    c.dup = take(T * F);
  };
  {
    Activations count;
    count.saved = a.saved, count.n_slots = a.n_slots, count.n_off = a.n_off;
    carve(count);
  }
  a.arena = Buffer<float>(be, used);
  base = a.arena.data();
  used = 0;
  carve(a);
  if (be.device) a.batch = Buffer<int32_t>(be, 4 * T + 1);
  if (a.n_slots) {
    size_t row = 0;
    for (const A::Saved& k : a.saved) row += k.row;
    const size_t kept = std::min<size_t>(L, 2);  // the last two layers never leave their slots
    const size_t bytes = (L - kept) * size_t(a.n_off) * row * sizeof(float);
    a.pinned = {be.pinned_alloc(bytes), be.pinned_release};
    float* p = static_cast<float*>(a.pinned.get());
    a.host.assign(L - kept, {});
    for (size_t l = 0; l + kept < L; l++)
      for (const A::Saved& k : a.saved) a.host[l].push_back(p), p += size_t(a.n_off) * k.row;
    for (int i = 0; i < 2 * a.n_slots + 2; i++) a.events.emplace_back(be.event_create(), be.event_release);
  }
  acts = std::move(a);
}

size_t Model::offload_host_bytes() const {
  size_t row = 0;
  for (const Activations::Saved& k : acts.saved) row += k.row;
  return acts.host.size() * size_t(acts.n_off) * row * sizeof(float);  // host: layers that leave
}

namespace {

// Layer l's projections of one shared input (Backend::matmul_*_group): q/k/v of RMSNorm₁'s
// output or gate/up of RMSNorm₂'s — their weights' offsets in ParamLayout (params and grads
// share it) and output widths.
struct Projections {
  int G;
  size_t at[3];
  int OC[3];
  // the G weights (or weight gradients) in the flat buffer at `base`
  template <class P>
  std::array<P, 3> in(P base) const {
    return {base + at[0], base + at[1], base + at[2]};
  }
};
Projections qkv_projections(const Model& m, int l) {
  const Config& c = m.config;
  const size_t d = c.hidden_size, qd = size_t(c.num_attention_heads) * c.head_dim(),
               kvd = size_t(c.num_key_value_heads) * c.head_dim(), L = size_t(l);
  return {3, {m.layout.wq + L * qd * d, m.layout.wk + L * kvd * d, m.layout.wv + L * kvd * d},
          {int(qd), int(kvd), int(kvd)}};
}
Projections gate_up_projections(const Model& m, int l) {
  const size_t d = m.config.hidden_size, F = m.config.intermediate_size, L = size_t(l);
  return {2, {m.layout.wgate + L * F * d, m.layout.wup + L * F * d, 0}, {int(F), int(F), 0}};
}

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

// ---- offloading schedule (Activations; DESIGN.md §3.2). Events: stashed[l % 3] (layer l's rows
// have left its slots), fetched[l % 3] (its host rows are back), computed, done.
void* event(Activations& a, int i) { return a.events[size_t(i)].get(); }
int slot_of(const Activations& a, int l) { return l % a.n_slots; }
// Rows of each saved tensor that go to the host for a batch of T tokens: ⌈r·T⌉ ≤ n_off.
size_t rows_off(const Model& m, int T) { return size_t(std::ceil(m.offload * double(T))); }
// Layers that leave their slots: all but the last two, whose slots nothing overwrites before
// their backward (Eq. 3: two layers stay on the device, the other l − 2 keep 1 − r).
bool leaves(const Model& m, int l) { return l + 2 < m.config.num_hidden_layers; }

// After layer l's forward: its first rows of each saved tensor → host (d2h stream), the other
// rows → its resident storage (compute stream, before anything overwrites the slot).
void stash(Model& m, int l, int T) {
  Activations& a = m.acts;
  const Backend& be = *m.backend;
  const int s = slot_of(a, l);
  const size_t n = rows_off(m, T);
  be.event_record(event(a, 2 * a.n_slots), Stream::compute);
  be.stream_wait(Stream::d2h, event(a, 2 * a.n_slots));
  for (size_t i = 0; i < a.saved.size(); i++) {
    const size_t row = a.saved[i].row * sizeof(float);
    const float* x = (a.*a.saved[i].at)[size_t(l)];
    be.copy_async(a.host[size_t(l)][i], x, n * row, Copy::to_host, Stream::d2h);
    be.copy_async(a.resident[size_t(l)][i], x + n * a.saved[i].row, (size_t(T) - n) * row,
                  Copy::within, Stream::compute);
  }
  be.event_record(event(a, s), Stream::d2h);
}

// Prefetch layer l's host rows into its slot (h2d stream) once the compute stream's last mark
// (`done`, the layer above) has freed it and its own stash has left.
void fetch(Model& m, int l, int T) {
  Activations& a = m.acts;
  const Backend& be = *m.backend;
  const int s = slot_of(a, l);
  const size_t n = rows_off(m, T);
  be.stream_wait(Stream::h2d, event(a, 2 * a.n_slots + 1));
  be.stream_wait(Stream::h2d, event(a, s));
  for (size_t i = 0; i < a.saved.size(); i++)
    be.copy_async((a.*a.saved[i].at)[size_t(l)], a.host[size_t(l)][i],
                  n * a.saved[i].row * sizeof(float), Copy::to_device, Stream::h2d);
  be.event_record(event(a, a.n_slots + s), Stream::h2d);
}

// Before layer l's backward: its host rows have arrived; its resident rows go back (compute).
void restore(Model& m, int l, int T) {
  Activations& a = m.acts;
  const Backend& be = *m.backend;
  const size_t n = rows_off(m, T);
  be.stream_wait(Stream::compute, event(a, a.n_slots + slot_of(a, l)));
  for (size_t i = 0; i < a.saved.size(); i++)
    be.copy_async((a.*a.saved[i].at)[size_t(l)] + n * a.saved[i].row, a.resident[size_t(l)][i],
                  (size_t(T) - n) * a.saved[i].row * sizeof(float), Copy::within,
                  Stream::compute);
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
  be.rmsnorm_forward(ln, rstd, x, w + P.ln1 + l * d, T, int(d), c.rms_norm_eps);
  const Projections qkv = qkv_projections(m, l);
  float* const out[] = {q, k, v};
  be.matmul_forward_group(out, ln, qkv.in(w).data(), T, int(d), qkv.OC, qkv.G);
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
  const Projections gu = gate_up_projections(m, l);
  float* const out_gu[] = {gate, up};
  be.matmul_forward_group(out_gu, ln, gu.in(w).data(), T, int(d), gu.OC, gu.G);
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

  const int L = c.num_hidden_layers;
  // Offloading: stash each layer when a backward follows (dloss ≠ 0). Layer l writes its slots,
  // those of layer l−2, so layer l−2's stash must have left (overlapping layer l−1's compute).
  const bool stashing = a.n_slots && dloss != 0.0f;
  for (int i = 0; i < a.n_slots; i++) be.stream_wait(Stream::compute, event(a, i));
  be.embedding_forward(a.res[0], b.tokens, w + P.wte, T, d);
  for (int l = 0; l < L; l++) {
    if (a.n_slots) be.stream_wait(Stream::compute, event(a, slot_of(a, l + 1)));  // = (l−2)%3
    layer_forward(m, l, b, s);
    if (stashing && leaves(m, l)) stash(m, l, T);
  }
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

  // Offloading: layer l−1's host rows arrive while layer l runs its backward.
  const bool off = a.n_slots > 0;
  if (off) be.event_record(event(a, 2 * a.n_slots + 1), Stream::compute);
  for (int l = L - 1; l >= 0; l--) {
    if (off && l > 0 && leaves(m, l - 1)) fetch(m, l - 1, T);
    if (off && leaves(m, l)) restore(m, l, T);
    // Recompute: the layer's activations from its saved input (res[l+1] is rewritten with the
    // same values: every forward op is deterministic).
    if (m.recompute) layer_forward(m, l, b, s);
    // MLP branch: res[l+1] = mid + down(silu(gate(ln2)) ⊙ up(ln2)); a.dres holds d res[l+1].
    // dh, dgate, dup, dln have one producer each (dln: one group op): written, not zeroed.
    be.matmul_backward(a.dh, g + P.wdown + size_t(l) * d * F, a.dres, a.h[l],
                       w + P.wdown + size_t(l) * d * F, T, F, d, Grad::write);
    be.swiglu_backward(a.dgate, a.dup, a.dh, a.gate[l], a.up[l], T, F, Grad::write);
    const Projections gu = gate_up_projections(m, l);
    const float* const dgu[] = {a.dgate, a.dup};
    be.matmul_backward_group(a.dln, gu.in(g).data(), dgu, a.ln2[l], gu.in(w).data(), T, d, gu.OC,
                             gu.G, Grad::write);
    // residual: d mid = d res[l+1] + RMSNorm backward (accumulated into a.dres)
    be.rmsnorm_backward(a.dres, g + P.ln2 + size_t(l) * d, a.dln, a.mid[l],
                        w + P.ln2 + size_t(l) * d, a.rstd2[l], T, d);

    // Attention branch: mid = res[l] + o_proj(attn(rope(q), rope(k), v)).
    be.matmul_backward(a.datt, g + P.wo + size_t(l) * d * qd, a.dres, a.att[l],
                       w + P.wo + size_t(l) * d * qd, T, qd, d, Grad::write);
    zero(a.dq, size_t(T) * qd);  // the attention backward ops accumulate
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
    const Projections qkv = qkv_projections(m, l);
    const float* const dqkv[] = {a.dq, a.dk, a.dv};
    be.matmul_backward_group(a.dln, qkv.in(g).data(), dqkv, a.ln1[l], qkv.in(w).data(), T, d,
                             qkv.OC, qkv.G, Grad::write);
    be.rmsnorm_backward(a.dres, g + P.ln1 + size_t(l) * d, a.dln, a.res[l],
                        w + P.ln1 + size_t(l) * d, a.rstd1[l], T, d);
    if (off) be.event_record(event(a, 2 * a.n_slots + 1), Stream::compute);
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
