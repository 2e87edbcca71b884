#include "model/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"

namespace fs = std::filesystem;

namespace longctx {

namespace test_hooks {
bool checkpoint_no_exchange = false;
}

namespace {

constexpr const char* kTrainFormat = "longctx.train_state.v1";
constexpr int kMaxJsonDepth = 32;

void hook(const char* stage) {
  if (test_hooks::io_fault_hook) test_hooks::io_fault_hook(stage);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ","));
}

// "a/b/" -> "a/b"; the directory names we derive (".tmp", ".old") must not end in '/'.
std::string clean_dir(const std::string& dir) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  LCX_CHECK(!d.empty(), "checkpoint: empty directory name");
  return d;
}

std::string parent_dir(const std::string& path) {
  auto p = fs::path(path).parent_path();
  return p.empty() ? "." : p.string();
}

// The directory to read: `dir`, or "<dir>.old" when a save was interrupted between the two
// renames of the fallback path (see checkpoint.h).
std::string resolve_dir(const std::string& dir_) {
  std::string dir = clean_dir(dir_);
  std::error_code ec;
  if (fs::is_directory(dir, ec)) return dir;
  if (fs::is_directory(dir + ".old", ec)) return dir + ".old";
  LCX_CHECK(!fs::exists(dir, ec), "checkpoint {}: not a directory", dir);
  fail("checkpoint {}: directory not found", dir);
}

std::string read_text(const std::string& path, const std::string& where) {
  std::ifstream f(path, std::ios::binary);
  LCX_CHECK(f.good(), "{}: cannot open ({})", where, std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  LCX_CHECK(!f.bad(), "{}: read failed", where);
  return ss.str();
}

// JSON text -> value; nesting beyond kMaxJsonDepth is refused (nothing valid nests that deep,
// and error messages dump values recursively).
nlohmann::json parse_json(std::string_view text, const std::string& where) {
  auto guard = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json&) {
    if ((ev == nlohmann::json::parse_event_t::object_start ||
         ev == nlohmann::json::parse_event_t::array_start) &&
        depth > kMaxJsonDepth)
      fail("{}: JSON nests deeper than {} levels", where, kMaxJsonDepth);
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), guard);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", where, e.what());
  }
}

void write_text(const std::string& path, const std::string& text) {
  atomic_write_file(path, [&](std::FILE* f) {
    LCX_CHECK(std::fwrite(text.data(), 1, text.size(), f) == text.size(), "{}: write failed ({})",
              path, std::strerror(errno));
  });
}

// Remove a directory tree we own; failures are reported, the caller decides if they matter.
bool remove_tree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  return !ec;
}

}  // namespace

Config checkpoint_parse_config(std::string_view json_text, const std::string& where) {
  nlohmann::json j = parse_json(json_text, where);
  try {
    return config_from_json(j, where);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: {}", where, e.what());
  }
}

void checkpoint_read_params(const SafeTensors& st, const Config& config, ParamLayout& layout,
                            std::vector<float>& params) {
  const std::string& where = st.where;
  // A config may claim more layers than the file holds tensors for; lay out only as many layers
  // as could possibly match, so a hostile num_hidden_layers cannot make us build a huge layout.
  // If we cut, some tensor of the cut layout is necessarily missing and is reported below.
  Config c = config;
  const size_t max_layers = st.tensors.size() / 9 + 1;
  const bool cut = size_t(c.num_hidden_layers) > max_layers;
  if (cut) c.num_hidden_layers = int(max_layers);
  layout = param_layout(c);

  for (const auto& p : layout.tensors) {
    const StTensor* t = st.find(p.name);
    LCX_CHECK(t, "{}: tensor '{}' is missing (config expects shape {})", where, p.name,
              shape_str(p.shape));
    LCX_CHECK(t->shape == p.shape, "{}: tensor '{}' has shape {}, config expects {}", where, p.name,
              shape_str(t->shape), shape_str(p.shape));
    LCX_CHECK(t->dtype == DType::F32 || t->dtype == DType::BF16 || t->dtype == DType::F16 ||
                  t->dtype == DType::F64,
              "{}: tensor '{}' has dtype {}, expected F32 (or BF16, F16, F64)", where, p.name,
              to_string(t->dtype));
  }
  LCX_CHECK(!cut, "{}: config has {} layers, more than the file holds", where,
            config.num_hidden_layers);
  if (layout.tensors.size() != st.tensors.size()) {
    std::set<std::string_view> expected;
    for (const auto& p : layout.tensors) expected.insert(p.name);
    for (const auto& t : st.tensors) {
      if (expected.count(t.name)) continue;
      if (t.name == "lm_head.weight" && config.tie_word_embeddings)
        fail("{}: unexpected tensor 'lm_head.weight': config has tie_word_embeddings: true", where);
      fail("{}: unexpected tensor '{}' (not a parameter of this config)", where, t.name);
    }
  }
  // Every shape matched, so layout.total floats are backed by the file's bytes.
  params.assign(layout.total, 0.0f);
  for (const auto& p : layout.tensors)
    safetensors_to_f32(*st.find(p.name), params.data() + p.offset, where);
}

LoadedModel checkpoint_load(const std::string& dir_) {
  LoadedModel out;
  out.dir = resolve_dir(dir_);
  const std::string cfg_path = out.dir + "/config.json";
  const std::string cfg_where = "checkpoint " + cfg_path;
  out.config = checkpoint_parse_config(read_text(cfg_path, cfg_where), cfg_where);
  const std::string model_path = out.dir + "/model.safetensors";
  SafeTensors st = safetensors_read(model_path, "checkpoint " + model_path);
  checkpoint_read_params(st, out.config, out.layout, out.params);
  return out;
}

void checkpoint_check_config(const Config& expected, const Config& found,
                             const std::string& where) {
  auto e = config_to_json(expected), f = config_to_json(found);
  for (const auto& [k, v] : e.items())
    LCX_CHECK(f.contains(k) && f[k] == v,
              "{}: config mismatch: {} is {} in the checkpoint, but {} in this run", where, k,
              f.contains(k) ? f[k].dump() : "absent", v.dump());
}

bool train_state_exists(const std::string& dir) {
  try {
    std::error_code ec;
    return fs::exists(resolve_dir(dir) + "/training_state.safetensors", ec);
  } catch (const Error&) {
    return false;  // no such checkpoint directory
  }
}

TrainState train_state_load(const std::string& dir_, size_t n_params) {
  const std::string path = resolve_dir(dir_) + "/training_state.safetensors";
  const std::string where = "checkpoint " + path;
  SafeTensors st = safetensors_read(path, where);
  auto meta = [&](const char* key) -> const std::string& {
    auto it = st.metadata.find(key);
    LCX_CHECK(it != st.metadata.end(), "{}: __metadata__ field '{}' is missing", where, key);
    return it->second;
  };
  LCX_CHECK(meta("format") == kTrainFormat, "{}: format '{}' is not '{}'", where, meta("format"),
            kTrainFormat);
  TrainState ts;
  const std::string& step = meta("step");
  auto [end, ec] = std::from_chars(step.data(), step.data() + step.size(), ts.step);
  LCX_CHECK(ec == std::errc() && end == step.data() + step.size() && ts.step >= 0,
            "{}: __metadata__ step '{}' is not a non-negative integer", where, step);
  ts.meta = parse_json(meta("trainer"), where + ": __metadata__ trainer");
  LCX_CHECK(ts.meta.is_object(), "{}: __metadata__ trainer must be a JSON object", where);
  for (const auto& t : st.tensors)
    LCX_CHECK(t.name == "adam.m" || t.name == "adam.v", "{}: unexpected tensor '{}'", where,
              t.name);
  for (auto [name, vec] : {std::pair{"adam.m", &ts.m}, std::pair{"adam.v", &ts.v}}) {
    const StTensor& t = st.get(name);
    LCX_CHECK(t.dtype == DType::F32, "{}: tensor '{}' has dtype {}, expected F32", where, name,
              to_string(t.dtype));
    LCX_CHECK(t.shape == std::vector<int64_t>{int64_t(n_params)},
              "{}: tensor '{}' has shape {}, the model expects [{}]", where, name,
              shape_str(t.shape), n_params);
    vec->resize(n_params);
    safetensors_to_f32(t, vec->data(), where);
  }
  return ts;
}

namespace {

// Write every file of the checkpoint into the fresh directory `tmp`, config.json last.
void save_into(const std::string& tmp, const Config& config, const float* params,
               const ParamLayout& layout, const TrainState* train,
               const std::string& tokenizer_path) {
  hook("tmp_created");
  std::vector<StWrite> ws;
  for (const auto& p : layout.tensors) ws.push_back({p.name, p.shape, params + p.offset});
  safetensors_write(tmp + "/model.safetensors", ws, {{"format", "pt"}});
  hook("model_written");
  if (train) {
    const int64_t n = int64_t(layout.total);
    safetensors_write(tmp + "/training_state.safetensors",
                      {{"adam.m", {n}, train->m.data()}, {"adam.v", {n}, train->v.data()}},
                      {{"format", kTrainFormat},
                       {"step", std::to_string(train->step)},
                       {"trainer", train->meta.dump()}});
    hook("train_state_written");
  }
  if (!tokenizer_path.empty()) {
    write_text(tmp + "/tokenizer.model", read_text(tokenizer_path, "tokenizer " + tokenizer_path));
    hook("tokenizer_written");
  }
  write_text(tmp + "/config.json", config_to_json(config).dump(2) + "\n");
  hook("config_written");
  fsync_dir(tmp);
  hook("before_swap");
}

// Put the complete directory `tmp` in place of `dir` (see checkpoint.h).
void swap_into_place(const std::string& dir, const std::string& tmp, const std::string& old,
                     const std::string& parent) {
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    if (!test_hooks::checkpoint_no_exchange &&
        ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
      fsync_dir(parent);
      hook("swapped");
      remove_tree(tmp);  // now the previous checkpoint
      remove_tree(old);  // stale, from an earlier interrupted fallback
      return;
    }
    LCX_CHECK(test_hooks::checkpoint_no_exchange || errno == EINVAL || errno == ENOSYS ||
                  errno == ENOTSUP,
              "checkpoint {}: cannot swap in {} ({})", dir, tmp, std::strerror(errno));
    // Fallback: dir -> dir.old, tmp -> dir. Between the two, load reads dir.old.
    LCX_CHECK(remove_tree(old), "checkpoint {}: cannot remove stale {}", dir, old);
    LCX_CHECK(::rename(dir.c_str(), old.c_str()) == 0, "checkpoint {}: cannot rename to {} ({})",
              dir, old, std::strerror(errno));
    hook("moved_old");
  }
  LCX_CHECK(::rename(tmp.c_str(), dir.c_str()) == 0, "checkpoint {}: cannot rename {} to it ({})",
            dir, tmp, std::strerror(errno));
  fsync_dir(parent);
  hook("swapped");
  remove_tree(old);
}

}  // namespace

void checkpoint_save(const std::string& dir_, const Config& config, const float* params,
                     const ParamLayout& layout, const TrainState* train,
                     const std::string& tokenizer_path) {
  const std::string dir = clean_dir(dir_);
  const std::string tmp = dir + ".tmp", old = dir + ".old", parent = parent_dir(dir);
  std::error_code ec;
  // Never swap away a directory that is not a checkpoint (e.g. a run's output dir).
  if (fs::exists(dir, ec)) {
    LCX_CHECK(fs::is_directory(dir, ec), "checkpoint {}: exists and is not a directory", dir);
    LCX_CHECK(fs::is_empty(dir, ec) || fs::exists(dir + "/config.json", ec) ||
                  fs::exists(dir + "/model.safetensors", ec),
              "checkpoint {}: exists and is not a checkpoint (no config.json or model.safetensors); "
              "refusing to replace it", dir);
  }
  if (train) {
    LCX_CHECK(train->m.size() == layout.total && train->v.size() == layout.total,
              "checkpoint {}: AdamW state has {}/{} floats, the model has {}", dir, train->m.size(),
              train->v.size(), layout.total);
    LCX_CHECK(train->step >= 0 && train->meta.is_object(),
              "checkpoint {}: training state needs step >= 0 and a JSON object of trainer state",
              dir);
  }
  fs::create_directories(parent, ec);
  LCX_CHECK(remove_tree(tmp), "checkpoint {}: cannot remove stale {}", dir, tmp);
  LCX_CHECK(fs::create_directory(tmp, ec) && !ec, "checkpoint {}: cannot create {} ({})", dir, tmp,
            ec.message());
  try {
    save_into(tmp, config, params, layout, train, tokenizer_path);
    swap_into_place(dir, tmp, old, parent);
  } catch (...) {
    remove_tree(tmp);  // holds the new files, or after a swap the old ones: never the only copy
    throw;
  }
}

nlohmann::json rng_to_json(const Rng& r) {
  return {{"seed", r.seed}, {"counter", r.counter}, {"buf", r.buf}, {"used", r.used}};
}

Rng rng_from_json(const nlohmann::json& j, const std::string& where) {
  auto u64 = [&](const char* k) {
    LCX_CHECK(j.is_object() && j.contains(k) && j[k].is_number_unsigned(),
              "{}: RNG field '{}' must be a non-negative integer", where, k);
    return j[k].get<uint64_t>();
  };
  Rng r(u64("seed"), u64("counter"));
  uint64_t used = u64("used");
  LCX_CHECK(used <= 4, "{}: RNG field 'used' = {} must be <= 4", where, used);
  r.used = int(used);
  LCX_CHECK(j.contains("buf") && j["buf"].is_array() && j["buf"].size() == 4,
            "{}: RNG field 'buf' must be a list of 4 integers", where);
  for (int i = 0; i < 4; i++) {
    const auto& b = j["buf"][i];
    LCX_CHECK(b.is_number_unsigned() && b.get<uint64_t>() <= 0xffffffffu,
              "{}: RNG field 'buf' must hold 32-bit integers", where);
    r.buf[i] = uint32_t(b.get<uint64_t>());
  }
  return r;
}

}  // namespace longctx
