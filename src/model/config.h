// Model configuration (DESIGN.md §2, §2.3). JSON uses HF Llama names plus SWAT's fields.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace longctx {

enum class AttnKind { swat, softmax };

struct Config {
  int hidden_size = 256;
  int num_hidden_layers = 4;
  int num_attention_heads = 4;
  int num_key_value_heads = 4;
  int intermediate_size = 768;
  int vocab_size = 4096;
  int max_position_embeddings = 1 << 20;
  AttnKind attention = AttnKind::swat;
  int window = 256;
  Alibi alibi = Alibi::balanced;
  float sigmoid_bias = 0.0f;
  float rope_theta = 10000.0f;
  float rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = true;

  int head_dim() const { return hidden_size / num_attention_heads; }
  // Throws Error naming `where` (a file or "preset x") and the offending field.
  void validate(const std::string& where) const;
};

// Presets: tiny (2-core demo), small, swat-340m, swat-760m.
Config config_preset(const std::string& name);
std::vector<std::string> config_preset_names();

// JSON <-> Config. Parsing is strict: unknown model_type, wrong types, missing required
// fields or out-of-range values throw Error naming `where` and the field.
Config config_from_json(const nlohmann::json& j, const std::string& where);
Config config_from_file(const std::string& path);
nlohmann::json config_to_json(const Config& c);

const char* to_string(AttnKind k);
const char* to_string(Alibi a);
Alibi alibi_from_string(const std::string& s);        // throws Error
AttnKind attn_kind_from_string(const std::string& s);  // throws Error

}  // namespace longctx
