// Reading a whole JSON file with errors that name it (configs, cost profiles).
#pragma once
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"

namespace longctx {

// `what` names the kind of file in messages: "cannot open {what} {path}", "{what} {path}: not
// valid JSON (…)".
inline nlohmann::json json_from_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  LCX_CHECK(in.good(), "cannot open {} {}", what, path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("{} {}: not valid JSON ({})", what, path, e.what());
  }
}

}  // namespace longctx
