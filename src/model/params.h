// Parameter layout: one flat fp32 buffer holds every parameter, one flat buffer of the same
// layout holds the gradients (llm.c). Parameters of one kind are stacked over layers, so each
// HF tensor (`model.layers.{i}.self_attn.q_proj.weight`, …) is a contiguous slice.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "model/config.h"

namespace longctx {

// One named tensor inside the flat buffer.
struct ParamTensor {
  std::string name;            // HF Llama name
  std::vector<int64_t> shape;  // row-major, e.g. {out_features, in_features}
  size_t offset = 0;           // in floats, into the flat buffer
  size_t numel = 0;
  bool decay = false;          // AdamW weight decay applies (matrices only)
};

// Per-kind stacked views (offsets in floats); layer i of kind X starts at X + i·size(X).
struct ParamLayout {
  size_t wte = 0;        // (V, d)           model.embed_tokens.weight
  size_t ln1 = 0;        // (L, d)           input_layernorm
  size_t wq = 0;         // (L, H·hd, d)     q_proj
  size_t wk = 0;         // (L, Hkv·hd, d)   k_proj
  size_t wv = 0;         // (L, Hkv·hd, d)   v_proj
  size_t wo = 0;         // (L, d, H·hd)     o_proj
  size_t ln2 = 0;        // (L, d)           post_attention_layernorm
  size_t wgate = 0;      // (L, F, d)        gate_proj
  size_t wup = 0;        // (L, F, d)        up_proj
  size_t wdown = 0;      // (L, d, F)        down_proj
  size_t lnf = 0;        // (d)              model.norm
  size_t lm_head = 0;    // (V, d)           lm_head (== wte when tied)
  size_t total = 0;      // floats in the flat buffer
  std::vector<ParamTensor> tensors;  // every HF tensor, in buffer order
};

ParamLayout param_layout(const Config& c);

// Deterministic init (seeded Philox): normal(0, 0.02) for matrices and embeddings,
// out-projections (o_proj, down_proj) scaled by 1/sqrt(2L) (GPT-2), norms = 1.
void param_init(float* params, const ParamLayout& layout, const Config& c, unsigned long long seed);

}  // namespace longctx
