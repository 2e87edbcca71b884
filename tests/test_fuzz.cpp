// Bounded, seeded mutation fuzzing of the checkpoint parsers (DESIGN.md §6 reliability): every
// mutant of a valid model.safetensors or config.json must parse or throw longctx::Error — never
// crash, hang, or throw anything else. tests/fuzz_safetensors.cpp is the open-ended libFuzzer
// version (tools/run_fuzz.sh).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/rng.h"
#include "fuzz_seeds.h"
#include "model/checkpoint.h"   // checkpoint_parse_config, checkpoint_read_params
#include "model/safetensors.h"  // safetensors_parse, safetensors_serialize, safetensors_to_f32

using namespace longctx;
using nlohmann::json;

namespace {

using longctx::testing::fuzz_config;
using longctx::testing::seed_safetensors;

const char* kTokens[] = {
    "{", "}", "[", "]", ",", ":", "\"", " ", "\\", "\\u0000", "\\ud800", "\xff", "\xc3\x28", "0",
    "-1", "1", "7", "1.5", "1e999", "-0", "4294967296", "18446744073709551615",
    "18446744073709551616", "9223372036854775807", "true", "null", "[]", "{}", "\"\"", "\"F32\"",
    "\"BF16\"", "\"F16\"", "\"I64\"", "\"F33\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"",
    "\"__metadata__\"", "[0,0]", "[0,4]", "[4,0]", "[1,2,3]", "\"model.norm.weight\"",
    "\"lm_head.weight\"", "\"hidden_size\"", "\"num_hidden_layers\"", "\"num_attention_heads\"",
    "\"vocab_size\"", "\"window\"", "\"alibi\"", "\"attention\"", "\"swat\"", "\"softmax\"",
    "\"tie_word_embeddings\"", "\"rope_theta\"", "2147483647", "2147483648", "-2147483649",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
};

std::string pick_token(Rng& r) { return kTokens[r.below(std::size(kTokens))]; }

// A random JSON value that is sometimes right and mostly wrong.
json random_value(Rng& r) {
  switch (r.below(12)) {
    case 0: return int64_t(r.below(5)) - 1;
    case 1: return r.next_u64();
    case 2: return int64_t(r.below(100));
    case 3: return 1.5;
    case 4: return "F32";
    case 5: return pick_token(r);
    case 6: return json::array({int64_t(r.below(20)), int64_t(r.below(20))});
    case 7: return json::array();
    case 8: return json::object();
    case 9: return nullptr;
    case 10: return bool(r.below(2));
    default: return json::array({int64_t(r.below(4000)), int64_t(r.below(4000)) - 5});
  }
}

// Mutations that know the JSON structure, so they reach the checks behind the parser.
void mutate_json(json& j, Rng& r) {
  if (!j.is_object() || j.empty()) return;
  auto it = j.begin();
  std::advance(it, r.below(j.size()));
  switch (r.below(6)) {
    case 0: j.erase(it); return;                                  // drop a tensor / field
    case 1: j[pick_token(r)] = *it; return;                      // duplicate under another name
    case 2: *it = random_value(r); return;                       // replace whole value
    case 3: j["extra" + std::to_string(r.below(3))] = random_value(r); return;
    default:
      if (it->is_object() && !it->empty()) {                     // edit one field inside
        auto f = it->begin();
        std::advance(f, r.below(it->size()));
        if (f->is_array() && !f->empty() && r.below(2))
          (*f)[r.below(f->size())] = f->at(0).is_number() && r.below(2)
                                         ? json(f->at(0).get<double>() + double(r.below(9)) - 4)
                                         : random_value(r);
        else
          *f = random_value(r);
      }
  }
}

// Byte-level mutations on `text` (a header or a config), 1-4 stacked.
void mutate_text(std::string& s, Rng& r) {
  int n = 1 + int(r.below(4));
  for (int k = 0; k < n; k++) {
    size_t pos = s.empty() ? 0 : r.below(s.size());
    switch (r.below(7)) {
      case 0:
        if (!s.empty()) s[pos] ^= char(1u << r.below(8));
        break;
      case 1:
        if (!s.empty()) s[pos] = char(r.next_u32());
        break;
      case 2: s.insert(pos, pick_token(r)); break;
      case 3: s.erase(pos, r.below(16)); break;
      case 4:
        if (!s.empty()) s.replace(pos, r.below(8), pick_token(r));
        break;
      case 5: {  // replace a run of digits with an interesting number
        size_t d = s.find_first_of("0123456789", pos);
        if (d == std::string::npos) break;
        size_t e = s.find_first_not_of("0123456789", d);
        s.replace(d, (e == std::string::npos ? s.size() : e) - d, pick_token(r));
        break;
      }
      default: {  // copy a chunk of the text elsewhere
        size_t a = r.below(s.size() + 1), len = r.below(32);
        s.insert(r.below(s.size() + 1), s.substr(a, len));
      }
    }
  }
}

std::vector<uint8_t> with_header(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(8 + header.size());
  uint64_t n = header.size();
  for (int i = 0; i < 8; i++) out[i] = uint8_t(n >> (8 * i));
  std::copy(header.begin(), header.end(), out.begin() + 8);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::vector<uint8_t> mutate_safetensors(const std::vector<uint8_t>& seed, Rng& r) {
  uint64_t n;
  std::memcpy(&n, seed.data(), 8);
  std::string header(seed.begin() + 8, seed.begin() + 8 + long(n));
  std::vector<uint8_t> data(seed.begin() + 8 + long(n), seed.end());
  std::vector<uint8_t> out;
  switch (r.below(6)) {
    case 0: {  // structured edit of the header, length fixed up
      json j = json::parse(header);
      int k = 1 + int(r.below(3));
      for (int i = 0; i < k; i++) mutate_json(j, r);
      out = with_header(j.dump(-1, ' ', false, json::error_handler_t::replace), data);
      break;
    }
    case 1: {  // textual edit of the header, length fixed up (mostly) or stale
      mutate_text(header, r);
      out = with_header(header, data);
      if (r.below(4) == 0) std::memcpy(out.data(), &n, 8);
      break;
    }
    case 2: {  // header length tampering
      out = seed;
      const uint64_t choices[] = {0, 1, n - 1, n + 1, seed.size() - 8, seed.size() - 7,
                                  100'000'000, 100'000'001, uint64_t(1) << 63, ~uint64_t(0),
                                  r.next_u64(), r.below(seed.size())};
      uint64_t v = choices[r.below(std::size(choices))];
      std::memcpy(out.data(), &v, 8);
      break;
    }
    case 3: {  // truncation anywhere
      out = seed;
      out.resize(r.below(seed.size() + 1));
      break;
    }
    case 4: {  // data section grows or shrinks
      out = seed;
      if (r.below(2)) out.resize(out.size() + 1 + r.below(9), 0);
      else out.erase(out.begin() + long(8 + n + r.below(data.size())));
      break;
    }
    default: {  // raw bit flips / byte edits anywhere, biased to the first bytes
      out = seed;
      int k = 1 + int(r.below(8));
      for (int i = 0; i < k; i++) {
        size_t pos = r.below(2) ? r.below(std::min<size_t>(out.size(), 8 + n)) : r.below(out.size());
        out[pos] ^= uint8_t(1u << r.below(8));
      }
    }
  }
  return out;
}

struct Outcome {
  size_t ok = 0, errors = 0;
  std::set<std::string> kinds;  // error messages with digits and quoted names stripped
  void record(const std::string& msg) {
    errors++;
    std::string k;
    bool quoted = false;
    for (char ch : msg.substr(msg.find(':') + 1)) {
      if (ch == '\'') quoted = !quoted;
      else if (!quoted && !std::isdigit(static_cast<unsigned char>(ch))) k += ch;
    }
    kinds.insert(k.substr(0, 40));
  }
};

// Runs one input through parser + checkpoint matching; returns false (after reporting) if it
// threw anything but Error or took too long.
template <class F>
bool run_one(F&& f, Outcome& out, const std::string& input, const char* what, size_t iter) {
  auto t0 = std::chrono::steady_clock::now();
  bool good = true;
  try {
    f();
    out.ok++;
  } catch (const Error& e) {
    out.record(e.what());
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << " iteration " << iter << ": non-Error exception: " << e.what();
    good = false;
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (s > 1.0) {
    ADD_FAILURE() << what << " iteration " << iter << " took " << s << " s";
    good = false;
  }
  if (!good) {
    std::string path = fmt::format("{}/fuzz_fail_{}_{}.bin", LONGCTX_BINARY_DIR, what, iter);
    std::ofstream(path, std::ios::binary).write(input.data(), std::streamsize(input.size()));
    ADD_FAILURE() << "input saved to " << path;
  }
  return good;
}

}  // namespace

TEST(Fuzz, SafetensorsMutantsParseOrThrowError) {
  const auto seed = seed_safetensors();
  const Config c = fuzz_config();
  Rng r(20241125);
  Outcome out;
  std::vector<float> params, scratch;
  ParamLayout layout;
  const size_t iters = 20000;
  for (size_t it = 0; it < iters; it++) {
    auto bytes = mutate_safetensors(seed, r);
    std::string input(bytes.begin(), bytes.end());
    bool good = run_one([&] {
      SafeTensors st = safetensors_parse(bytes, "fuzz.safetensors");
      for (const auto& t : st.tensors) {  // every float tensor converts without reading past it
        scratch.resize(t.numel);
        if (t.dtype == DType::F32 || t.dtype == DType::BF16 || t.dtype == DType::F16 ||
            t.dtype == DType::F64)
          safetensors_to_f32(t, scratch.data(), st.where);
      }
      checkpoint_read_params(st, c, layout, params);
    }, out, input, "safetensors", it);
    if (!good) break;
  }
  fmt::print("safetensors: {} mutants, {} parsed, {} Errors of {} kinds\n", iters, out.ok,
             out.errors, out.kinds.size());
  EXPECT_GT(out.ok, 0u);
  EXPECT_GT(out.errors, iters / 2);
  EXPECT_GE(out.kinds.size(), 20u) << "mutations no longer reach the validation checks";
}

TEST(Fuzz, ConfigMutantsParseOrThrowError) {
  const std::string seed = config_to_json(fuzz_config()).dump(2);
  Rng r(77);
  Outcome out;
  const size_t iters = 20000;
  for (size_t it = 0; it < iters; it++) {
    std::string text = seed;
    if (r.below(2)) {
      json j = json::parse(text);
      int k = 1 + int(r.below(3));
      for (int i = 0; i < k; i++) mutate_json(j, r);
      text = j.dump(int(r.below(3)) - 1, ' ', false, json::error_handler_t::replace);
    } else {
      mutate_text(text, r);
    }
    bool good = run_one([&] { checkpoint_parse_config(text, "fuzz config.json"); }, out, text,
                        "config", it);
    if (!good) break;
  }
  fmt::print("config: {} mutants, {} parsed, {} Errors of {} kinds\n", iters, out.ok, out.errors,
             out.kinds.size());
  EXPECT_GT(out.ok, 0u);
  EXPECT_GE(out.kinds.size(), 10u);
}
