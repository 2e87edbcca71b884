// Seeds shared by the two fuzzers of the checkpoint parsers (test_fuzz.cpp, fuzz_safetensors.cpp):
// a tiny untied GQA config and a valid model.safetensors for it.
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/params.h"
#include "model/safetensors.h"

namespace longctx::testing {

inline Config fuzz_config() {
  Config c;
  c.hidden_size = 8, c.num_hidden_layers = 2, c.num_attention_heads = 2, c.num_key_value_heads = 1;
  c.intermediate_size = 12, c.vocab_size = 10, c.window = 4, c.tie_word_embeddings = false;
  return c;
}

// The tensors of a valid model.safetensors for fuzz_config(); `params` backs their data.
inline std::vector<StWrite> fuzz_tensors(std::vector<float>& params) {
  Config c = fuzz_config();
  ParamLayout l = param_layout(c);
  params.assign(l.total, 0.0f);
  param_init(params.data(), l, c, 1);
  std::vector<StWrite> ws;
  for (const auto& t : l.tensors) ws.push_back({t.name, t.shape, params.data() + t.offset});
  return ws;
}

// A valid model.safetensors for fuzz_config(), with metadata.
inline std::vector<uint8_t> seed_safetensors() {
  std::vector<float> params;
  return safetensors_serialize(fuzz_tensors(params), {{"format", "pt"}, {"step", "12"}});
}

}  // namespace longctx::testing
