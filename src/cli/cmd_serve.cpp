// `longctx serve`: the OpenAI-compatible server (src/infer/server.h) over a checkpoint.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/commands.h"
#include "core/error.h"
#include "infer/server.h"
#include "model/checkpoint.h"
#include "tokenizer/tokenizer.h"

namespace longctx {

void register_serve(CLI::App& app) {
  auto* cmd = app.add_subcommand("serve", "Serve a checkpoint over an OpenAI-compatible HTTP API");
  struct Opts {
    std::string ckpt, device = "cpu";
    ServerOptions so;
    EngineOptions eo;
    CLI::Option *template_flag = nullptr, *prefix_flag = nullptr;
  };
  auto o = std::make_shared<Opts>();
  o->so.model_name = "";
  cmd->add_option("--ckpt", o->ckpt, "Checkpoint directory (model.safetensors, config.json, tokenizer.model)")->required();
  cmd->add_option("--host", o->so.host, "Address to bind (127.0.0.1: this machine only)")->capture_default_str();
  cmd->add_option("--port", o->so.port, "Port (0 = any free port, printed on start)")->capture_default_str();
  cmd->add_option("--api-key", o->so.api_key, "Require 'Authorization: Bearer KEY' on /v1 requests");
  cmd->add_option("--model-name", o->so.model_name, "Model id clients name (default: the checkpoint directory's name)");
  cmd->add_option("--max-batch", o->so.max_batch, "Sequences decoded together")->capture_default_str();
  cmd->add_option("--max-n", o->so.max_n, "Largest `n` (samples per request)")->capture_default_str();
  cmd->add_option("--max-context", o->eo.max_context, "Longest context of a softmax-full model (its KV cache grows to this); SWAT runs past it")->capture_default_str();
  cmd->add_option("--max-prompt-tokens", o->so.max_prompt_tokens, "Longest prompt accepted")->capture_default_str();
  cmd->add_option("--chunk", o->eo.chunk, "Prefill chunk (tokens per engine step)")->capture_default_str();
  cmd->add_option("--max-body", o->so.max_body_bytes, "Largest request body in bytes (413 above)")->capture_default_str();
  cmd->add_option("--threads", o->so.threads, "HTTP worker threads (each open stream holds one)")->capture_default_str();
  o->template_flag = cmd->add_option("--chat-template", o->so.message_template,
                                     "Chat message template with {role} and {content} (default: config.json's "
                                     "\"chat_template\", else this)")->capture_default_str();
  o->prefix_flag = cmd->add_option("--assistant-prefix", o->so.assistant_prefix,
                                   "Text that starts the assistant's reply (config.json: \"chat_assistant_prefix\")")
                       ->capture_default_str();
  cmd->add_option("--device", o->device, "Backend: cpu | cpu_ref | cuda")->capture_default_str();
  cmd->callback([o] {
    LoadedModel lm = checkpoint_load(o->ckpt);
    Tokenizer tok = Tokenizer::load(o->ckpt + "/tokenizer.model");
    Model m(lm.config, backend_get(o->device.c_str()));
    m.params.upload(lm.params.data(), lm.params.size());
    ServerOptions so = o->so;
    // Chat template from the checkpoint's config.json ("chat_template": "{role}: {content}\n",
    // "chat_assistant_prefix": "assistant:"), unless given as flags.
    std::ifstream cf(lm.dir + "/config.json");
    const nlohmann::json cj = nlohmann::json::parse(cf, nullptr, false);
    if (cj.is_object()) {
      if (cj.contains("chat_template") && cj["chat_template"].is_string() && o->template_flag->count() == 0)
        so.message_template = cj["chat_template"].get<std::string>();
      if (cj.contains("chat_assistant_prefix") && cj["chat_assistant_prefix"].is_string() &&
          o->prefix_flag->count() == 0)
        so.assistant_prefix = cj["chat_assistant_prefix"].get<std::string>();
    }
    if (so.model_name.empty())
      so.model_name = std::filesystem::path(o->ckpt).lexically_normal().filename().string();
    if (so.model_name.empty()) so.model_name = "longctx";
    // SIGINT/SIGTERM stop the server from a thread of their own (no work in a signal handler).
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    signal(SIGPIPE, SIG_IGN);
    Server server(m, tok, so, o->eo);
    const int port = server.bind();
    std::printf("longctx serve: model '%s' (%s, window %d) on http://%s:%d\n", so.model_name.c_str(),
                to_string(m.config.attention), m.config.window, so.host.c_str(), port);
    std::fflush(stdout);
    std::thread sig([&server, set] {
      int s = 0;
      sigwait(&set, &s);
      server.stop();
    });
    server.listen();
    pthread_kill(sig.native_handle(), SIGTERM);  // wake the signal thread if it still waits
    sig.join();
  });
}

}  // namespace longctx
