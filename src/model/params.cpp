#include "model/params.h"

#include <cmath>
#include <fmt/format.h>

#include "core/rng.h"

namespace longctx {

ParamLayout param_layout(const Config& c) {
  const int64_t d = c.hidden_size, L = c.num_hidden_layers, V = c.vocab_size;
  const int64_t hd = c.head_dim(), qd = c.num_attention_heads * hd, kvd = c.num_key_value_heads * hd;
  const int64_t F = c.intermediate_size;
  ParamLayout p;
  size_t off = 0;
  // Stack kind X over layers: returns the offset of layer 0.
  auto stack = [&](size_t per_layer) { size_t o = off; off += per_layer * L; return o; };
  p.wte = off, off += V * d;
  p.ln1 = stack(d);
  p.wq = stack(qd * d);
  p.wk = stack(kvd * d);
  p.wv = stack(kvd * d);
  p.wo = stack(d * qd);
  p.ln2 = stack(d);
  p.wgate = stack(F * d);
  p.wup = stack(F * d);
  p.wdown = stack(d * F);
  p.lnf = off, off += d;
  if (c.tie_word_embeddings) {
    p.lm_head = p.wte;
  } else {
    p.lm_head = off, off += V * d;
  }
  p.total = off;

  auto add = [&](std::string name, std::vector<int64_t> shape, size_t offset, bool decay) {
    size_t n = 1;
    for (auto s : shape) n *= size_t(s);
    p.tensors.push_back({std::move(name), std::move(shape), offset, n, decay});
  };
  add("model.embed_tokens.weight", {V, d}, p.wte, true);
  for (int64_t i = 0; i < L; i++) {
    auto pre = fmt::format("model.layers.{}.", i);
    add(pre + "input_layernorm.weight", {d}, p.ln1 + i * d, false);
    add(pre + "self_attn.q_proj.weight", {qd, d}, p.wq + i * qd * d, true);
    add(pre + "self_attn.k_proj.weight", {kvd, d}, p.wk + i * kvd * d, true);
    add(pre + "self_attn.v_proj.weight", {kvd, d}, p.wv + i * kvd * d, true);
    add(pre + "self_attn.o_proj.weight", {d, qd}, p.wo + i * d * qd, true);
    add(pre + "post_attention_layernorm.weight", {d}, p.ln2 + i * d, false);
    add(pre + "mlp.gate_proj.weight", {F, d}, p.wgate + i * F * d, true);
    add(pre + "mlp.up_proj.weight", {F, d}, p.wup + i * F * d, true);
    add(pre + "mlp.down_proj.weight", {d, F}, p.wdown + i * d * F, true);
  }
  add("model.norm.weight", {d}, p.lnf, false);
  if (!c.tie_word_embeddings) add("lm_head.weight", {V, d}, p.lm_head, true);
  return p;
}

void param_init(float* params, const ParamLayout& layout, const Config& c, unsigned long long seed) {
  Rng rng(seed);
  const float std_out = 0.02f / std::sqrt(2.0f * float(c.num_hidden_layers));
  for (const auto& t : layout.tensors) {
    float* p = params + t.offset;
    if (t.shape.size() == 1) {  // norm weights
      for (size_t i = 0; i < t.numel; i++) p[i] = 1.0f;
      continue;
    }
    bool out_proj = t.name.ends_with("o_proj.weight") || t.name.ends_with("down_proj.weight");
    float sd = out_proj ? std_out : 0.02f;
    for (size_t i = 0; i < t.numel; i++) p[i] = sd * rng.normal();
  }
}

}  // namespace longctx
