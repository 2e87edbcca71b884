// Checkpoints (DESIGN.md §2.3). A checkpoint is a directory:
//   model.safetensors            every tensor of param_layout() under its HF Llama name, F32
//                                (BF16/F16/F64 files are accepted on load and converted to fp32)
//   config.json                  config_to_json()
//   tokenizer.model              copied in when a path is given
//   training_state.safetensors   training runs only: AdamW moments as two flat F32 tensors
//                                "adam.m", "adam.v" of shape [n_params] in the flat parameter
//                                layout; __metadata__ = {"format": "longctx.train_state.v1",
//                                "step": "<decimal>", "trainer": "<JSON object>"} where the
//                                trainer's JSON holds RNG state, data cursor, anything else.
//
// Atomic save: checkpoint_save writes every file (each fsynced) into "<dir>.tmp/", fsyncs it,
// then swaps it into place with one renameat2(RENAME_EXCHANGE) and fsyncs the parent, so `dir`
// is at every instant either the complete old checkpoint or the complete new one. Where the
// filesystem cannot exchange, it renames dir -> "<dir>.old", "<dir>.tmp" -> dir; a crash between
// those two leaves only "<dir>.old", which checkpoint_load (and the next save) pick up. Stale
// "<dir>.tmp" directories from a crash are ignored by load and replaced by the next save.
// Only one process (rank 0) may save to a given dir at a time.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/rng.h"
#include "model/config.h"
#include "model/params.h"
#include "model/safetensors.h"

namespace longctx {

// AdamW state and trainer bookkeeping; m and v use the flat parameter layout.
struct TrainState {
  int64_t step = 0;
  std::vector<float> m, v;
  nlohmann::json meta = nlohmann::json::object();  // trainer's own state: RNG, data cursor, ...
};

// Save a complete checkpoint directory atomically (see above). `train` adds
// training_state.safetensors; `tokenizer_path` (if not empty) is copied to tokenizer.model.
void checkpoint_save(const std::string& dir, const Config& config, const float* params,
                     const ParamLayout& layout, const TrainState* train = nullptr,
                     const std::string& tokenizer_path = "");

struct LoadedModel {
  Config config;
  ParamLayout layout;
  std::vector<float> params;  // layout.total floats
  std::string dir;            // the directory actually read (`dir`, or "<dir>.old" after a crash)
};

// Strict load: config.json must parse and validate; model.safetensors must hold exactly the
// tensors of param_layout(config), with matching shapes and a float dtype. Errors name the file
// and the tensor ("checkpoint c/model.safetensors: tensor '...' has shape [..], config expects
// [..]").
LoadedModel checkpoint_load(const std::string& dir);

// Throws Error "<where>: config mismatch: <field> is <found> in the checkpoint, but <expected>
// in this run" for the first field (of config_to_json) that differs.
void checkpoint_check_config(const Config& expected, const Config& found, const std::string& where);

// training_state.safetensors of a checkpoint `dir`; m and v must have n_params elements.
TrainState train_state_load(const std::string& dir, size_t n_params);
bool train_state_exists(const std::string& dir);  // false (no throw) when dir is missing

// The pieces checkpoint_load is made of, exposed for the fuzzers and for tools:
// config.json text -> validated Config (Error names `where` and the field).
Config checkpoint_parse_config(std::string_view json_text, const std::string& where);
// Check `st` holds exactly the tensors of param_layout(config) and convert them into `params`
// (resized to layout.total). Never allocates more than the file's data justifies.
void checkpoint_read_params(const SafeTensors& st, const Config& config, ParamLayout& layout,
                            std::vector<float>& params);

// Philox stream position as JSON ({"seed", "counter", "buf", "used"}) for TrainState::meta;
// rng_from_json(rng_to_json(r)) continues exactly where r left off.
nlohmann::json rng_to_json(const Rng& r);
Rng rng_from_json(const nlohmann::json& j, const std::string& where);

namespace test_hooks {
// Force the two-rename fallback instead of RENAME_EXCHANGE (atomicity tests).
extern bool checkpoint_no_exchange;
}  // namespace test_hooks

}  // namespace longctx
