// libFuzzer target for the checkpoint parsers (DESIGN.md §6): the first byte picks the parser,
// the rest is its input. Every input must parse or throw longctx::Error; anything else (a crash,
// a sanitizer report, another exception, a hang) is a bug. Build and run: tools/run_fuzz.sh.
//   byte0 even: model.safetensors bytes -> safetensors_parse, fp32 conversion of every float
//               tensor, checkpoint_read_params against a fixed tiny config
//   byte0 odd:  config.json text -> checkpoint_parse_config
// With LONGCTX_FUZZ_SEEDS=<dir> set, LLVMFuzzerInitialize writes a valid seed of each kind there.
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/checkpoint.h"   // checkpoint_parse_config, checkpoint_read_params
#include "model/safetensors.h"  // safetensors_parse, safetensors_to_f32
#include "fuzz_seeds.h"

using namespace longctx;
using longctx::testing::fuzz_config;
using longctx::testing::fuzz_tensors;
using longctx::testing::seed_safetensors;

namespace {

void write_seed(const std::string& path, uint8_t kind, const void* p, size_t n) {
  std::ofstream f(path, std::ios::binary);
  f.put(char(kind));
  f.write(static_cast<const char*>(p), std::streamsize(n));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("LONGCTX_FUZZ_SEEDS");
  if (!dir) return 0;
  std::vector<float> p;
  std::vector<StWrite> ws = fuzz_tensors(p);
  auto st = seed_safetensors();
  write_seed(std::string(dir) + "/seed_model.safetensors", 0, st.data(), st.size());
  // The same file with BF16 norms (a mixed-dtype file), to seed the conversions.
  std::vector<uint16_t> ones(64, 0x3f80);
  for (auto& w : ws)
    if (w.shape.size() == 1) w.data = ones.data(), w.dtype = DType::BF16;
  st = safetensors_serialize(ws);
  write_seed(std::string(dir) + "/seed_model_bf16.safetensors", 0, st.data(), st.size());
  std::string cfg = config_to_json(fuzz_config()).dump(2);
  write_seed(std::string(dir) + "/seed_config.json", 1, cfg.data(), cfg.size());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const Config config = fuzz_config();
  try {
    if (data[0] % 2 == 0) {
      SafeTensors st = safetensors_parse(std::vector<uint8_t>(data + 1, data + size), "fuzz");
      std::vector<float> scratch;
      for (const auto& t : st.tensors) {
        if (t.dtype != DType::F32 && t.dtype != DType::BF16 && t.dtype != DType::F16 &&
            t.dtype != DType::F64)
          continue;
        scratch.resize(t.numel);
        safetensors_to_f32(t, scratch.data(), st.where);
      }
      ParamLayout layout;
      std::vector<float> params;
      checkpoint_read_params(st, config, layout, params);
    } else {
      checkpoint_parse_config(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1),
                              "fuzz config.json");
    }
  } catch (const Error&) {
    // the expected outcome for bad input
  }
  return 0;
}
