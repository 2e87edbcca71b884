// Flags shared by the commands that run a model over QA data (`reps sample`, `reps judge`,
// `longctx eval`): the data format, a local checkpoint or an OpenAI-compatible endpoint, and
// writing a JSON report.
#pragma once
#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "reps/qa_data.h"
#include "reps/sample.h"

namespace longctx {

inline QaFormat parse_qa_format(const std::string& f) {
  if (f == "auto") return QaFormat::Auto;
  if (f == "musique") return QaFormat::Musique;
  if (f == "longbench") return QaFormat::LongBench;
  fail("unknown data format '{}' (expected auto, musique or longbench)", f);
}

inline void write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream f(path);
  LCX_CHECK(f, "cannot write '{}': {}", path, std::strerror(errno));
  f << j.dump(2) << "\n";
  LCX_CHECK(f.good(), "error writing '{}'", path);
}

// --ckpt/--device/... (local) and --endpoint/--model/... (endpoint) on `cmd`.
struct ModelFlags {
  LocalBackendOptions local;
  EndpointOptions ep;
  void add(CLI::App* cmd) {
    cmd->add_option("--ckpt", local.ckpt, "Local mode: checkpoint directory (model + tokenizer.model)");
    cmd->add_option("--device", local.device, "Local mode: backend cpu | cpu_ref | cuda")->capture_default_str();
    cmd->add_option("--max-batch", local.max_batch, "Local mode: sequences decoded together")->capture_default_str();
    cmd->add_option("--max-prompt-tokens", local.max_prompt_tokens,
                    "Local mode: skip questions whose prompt is longer (0 = the engine's limit)")
        ->capture_default_str();
    cmd->add_option("--max-context", local.max_context, "Local mode: KV cache bound of a softmax-full model")
        ->capture_default_str();
    cmd->add_flag("--engine-stats", local.engine_stats,
                  "Local mode: then print the engine's counters (steps, rows a step, time in forward / sampling / "
                  "KV caches / callbacks) on stderr");
    cmd->add_flag("--profile-ops", local.profile_ops,
                  "Local mode: --engine-stats and a per-op table (every op timed between device syncs: slower)");
    cmd->add_option("--endpoint", ep.url, "Endpoint mode: http://HOST:PORT of an OpenAI-compatible server");
    cmd->add_option("--model", ep.model, "Endpoint mode: model name sent with each request");
    cmd->add_option("--api-key", ep.api_key, "Endpoint mode: sent as 'Authorization: Bearer KEY'");
    cmd->add_option("--concurrency", ep.concurrency, "Endpoint mode: requests in flight")->capture_default_str();
    cmd->add_option("--retries", ep.retries, "Endpoint mode: retries of a request on connection errors, 429, 5xx")
        ->capture_default_str();
    cmd->add_option("--backoff", ep.backoff_s, "Endpoint mode: first retry wait in seconds (doubles each retry)")
        ->capture_default_str();
    cmd->add_option("--timeout", ep.timeout_s, "Endpoint mode: seconds to wait for one response")->capture_default_str();
  }
  // The backend the flags name; exactly one of --ckpt and --endpoint.
  std::unique_ptr<SampleBackend> backend(const std::string& command) const {
    LCX_CHECK(local.ckpt.empty() != ep.url.empty(),
              "{}: give either --ckpt DIR (a local model) or --endpoint URL (an OpenAI-compatible server){}", command,
              local.ckpt.empty() ? "" : ", not both");
    return local.ckpt.empty() ? sample_backend_endpoint(ep) : sample_backend_local(local);
  }
};

}  // namespace longctx
