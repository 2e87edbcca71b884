#include "model/config.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_file.h"

namespace longctx {

const char* to_string(AttnKind k) { return k == AttnKind::swat ? "swat" : "softmax"; }

const char* to_string(Alibi a) {
  switch (a) {
    case Alibi::none: return "none";
    case Alibi::balanced: return "balanced";
    case Alibi::neg: return "neg";
    case Alibi::pos: return "pos";
  }
  return "?";
}

Alibi alibi_from_string(const std::string& s) {
  if (s == "none") return Alibi::none;
  if (s == "balanced") return Alibi::balanced;
  if (s == "neg") return Alibi::neg;
  if (s == "pos") return Alibi::pos;
  fail("alibi '{}' is not one of balanced|neg|pos|none", s);
}

AttnKind attn_kind_from_string(const std::string& s) {
  if (s == "swat") return AttnKind::swat;
  if (s == "softmax") return AttnKind::softmax;
  fail("attention '{}' is not one of swat|softmax", s);
}

void Config::validate(const std::string& where) const {
  auto positive = [&](const char* field, long v) {
    LCX_CHECK(v > 0, "{}: '{}' must be > 0, got {}", where, field, v);
  };
  positive("hidden_size", hidden_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("intermediate_size", intermediate_size);
  positive("vocab_size", vocab_size);
  positive("window", window);
  positive("max_position_embeddings", max_position_embeddings);
  LCX_CHECK(hidden_size % num_attention_heads == 0,
            "{}: hidden_size {} is not divisible by num_attention_heads {}", where, hidden_size,
            num_attention_heads);
  LCX_CHECK(num_attention_heads % num_key_value_heads == 0,
            "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", where,
            num_attention_heads, num_key_value_heads);
  LCX_CHECK(head_dim() % 2 == 0, "{}: head dim {} must be even for RoPE", where, head_dim());
  LCX_CHECK(alibi != Alibi::balanced || num_attention_heads % 2 == 0,
            "{}: alibi 'balanced' needs an even num_attention_heads, got {}", where,
            num_attention_heads);
  LCX_CHECK(rope_theta > 0, "{}: rope_theta must be > 0, got {}", where, rope_theta);
  LCX_CHECK(rms_norm_eps > 0, "{}: rms_norm_eps must be > 0, got {}", where, rms_norm_eps);
  // Sizes that would overflow int32 indexing of a (vocab × hidden) or (ffn × hidden) matrix.
  LCX_CHECK(long(vocab_size) * hidden_size < (1L << 31) &&
                long(intermediate_size) * hidden_size < (1L << 31),
            "{}: vocab_size·hidden_size or intermediate_size·hidden_size exceeds 2^31", where);
}

Config config_preset(const std::string& name) {
  Config c;
  if (name == "tiny") {  // 2-core CPU demo
    c.hidden_size = 256, c.num_hidden_layers = 4, c.num_attention_heads = 4;
    c.num_key_value_heads = 4, c.intermediate_size = 768, c.vocab_size = 8192, c.window = 256;
  } else if (name == "small") {
    c.hidden_size = 512, c.num_hidden_layers = 8, c.num_attention_heads = 8;
    c.num_key_value_heads = 8, c.intermediate_size = 1536, c.vocab_size = 16384, c.window = 256;
  } else if (name == "swat-340m") {  // SWAT paper 340M
    c.hidden_size = 1024, c.num_hidden_layers = 24, c.num_attention_heads = 16;
    c.num_key_value_heads = 16, c.intermediate_size = 2816, c.vocab_size = 32000, c.window = 256;
  } else if (name == "swat-760m") {  // SWAT paper 760M
    c.hidden_size = 1536, c.num_hidden_layers = 24, c.num_attention_heads = 24;
    c.num_key_value_heads = 24, c.intermediate_size = 4096, c.vocab_size = 32000, c.window = 256;
  } else {
    fail("unknown preset '{}' (known: tiny, small, swat-340m, swat-760m)", name);
  }
  return c;
}

std::vector<std::string> config_preset_names() { return {"tiny", "small", "swat-340m", "swat-760m"}; }

nlohmann::json config_to_json(const Config& c) {
  return {
      {"model_type", "swat"},
      {"architectures", {"SwatForCausalLM"}},
      {"hidden_size", c.hidden_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"intermediate_size", c.intermediate_size},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings},
      {"attention", to_string(c.attention)},
      {"window", c.window},
      {"alibi", to_string(c.alibi)},
      {"sigmoid_bias", c.sigmoid_bias},
      {"rope_theta", c.rope_theta},
      {"rms_norm_eps", c.rms_norm_eps},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"hidden_act", "silu"},
      {"torch_dtype", "float32"},
  };
}

namespace {

// A value for an error message: scalars as JSON, containers by type only (a deeply nested
// value would make dump() recurse without bound).
std::string describe(const nlohmann::json& v) {
  return v.is_structured() ? std::string("a JSON ") + v.type_name() : v.dump();
}

template <class T>
T get_field(const nlohmann::json& j, const char* key, const std::string& where, T fallback,
            bool required) {
  auto it = j.find(key);
  if (it == j.end()) {
    LCX_CHECK(!required, "{}: required field '{}' is missing", where, key);
    return fallback;
  }
  if constexpr (std::is_same_v<T, bool>) {
    LCX_CHECK(it->is_boolean(), "{}: field '{}' must be a boolean, got {}", where, key, describe(*it));
    return it->template get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    LCX_CHECK(it->is_number_integer(), "{}: field '{}' must be an integer, got {}", where, key,
              describe(*it));
    auto v = it->template get<long long>();
    LCX_CHECK(v >= -(1LL << 31) && v < (1LL << 31), "{}: field '{}' = {} is out of range", where,
              key, v);
    return T(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    LCX_CHECK(it->is_number(), "{}: field '{}' must be a number, got {}", where, key, describe(*it));
    return it->template get<T>();
  } else {
    LCX_CHECK(it->is_string(), "{}: field '{}' must be a string, got {}", where, key, describe(*it));
    return it->template get<std::string>();
  }
}

}  // namespace

Config config_from_json(const nlohmann::json& j, const std::string& where) {
  LCX_CHECK(j.is_object(), "{}: config must be a JSON object", where);
  auto mt = get_field<std::string>(j, "model_type", where, "swat", false);
  LCX_CHECK(mt == "swat" || mt == "llama", "{}: model_type '{}' is not supported (expected 'swat')",
            where, mt);
  Config c;
  c.hidden_size = get_field<int>(j, "hidden_size", where, 0, true);
  c.num_hidden_layers = get_field<int>(j, "num_hidden_layers", where, 0, true);
  c.num_attention_heads = get_field<int>(j, "num_attention_heads", where, 0, true);
  c.num_key_value_heads =
      get_field<int>(j, "num_key_value_heads", where, c.num_attention_heads, false);
  c.intermediate_size = get_field<int>(j, "intermediate_size", where, 0, true);
  c.vocab_size = get_field<int>(j, "vocab_size", where, 0, true);
  c.max_position_embeddings =
      get_field<int>(j, "max_position_embeddings", where, c.max_position_embeddings, false);
  try {
    c.attention = attn_kind_from_string(get_field<std::string>(j, "attention", where, "swat", false));
    c.alibi = alibi_from_string(get_field<std::string>(j, "alibi", where, "balanced", false));
  } catch (const Error& e) {
    fail("{}: {}", where, e.what());
  }
  c.window = get_field<int>(j, "window", where, c.window, false);
  c.sigmoid_bias = get_field<float>(j, "sigmoid_bias", where, 0.0f, false);
  c.rope_theta = get_field<float>(j, "rope_theta", where, c.rope_theta, false);
  c.rms_norm_eps = get_field<float>(j, "rms_norm_eps", where, c.rms_norm_eps, false);
  c.tie_word_embeddings = get_field<bool>(j, "tie_word_embeddings", where, true, false);
  c.validate(where);
  return c;
}

Config config_from_file(const std::string& path) {
  return config_from_json(json_from_file(path, "config"), "config " + path);
}

}  // namespace longctx
