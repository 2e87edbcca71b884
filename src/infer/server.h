// `longctx serve`: an OpenAI-compatible HTTP server (cpp-httplib) over the inference engine's
// continuous-batching Scheduler (engine.h). Endpoints:
//   POST /v1/completions        prompt, max_tokens, temperature, top_p, top_k, n, stop, seed, stream,
//                               ignore_eos (vLLM's extension: fixed-length outputs for benchmarks)
//   POST /v1/chat/completions   messages rendered with the chat template; same sampling fields
//   GET  /v1/models, /health, /metrics (Prometheus text)
// Streaming uses server-sent events ("data: {json}\n\n" … "data: [DONE]\n\n"). Bad requests get
// a 4xx with an OpenAI-style body {"error": {"message", "type", "param", "code"}}; a client that
// disconnects mid-stream cancels its request, which frees its batch slots at the next step.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "infer/engine.h"
#include "tokenizer/tokenizer.h"

namespace longctx {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                      // 0: any free port (see Server::bind)
  std::string model_name = "longctx";   // the id /v1/models lists and requests must name
  std::string api_key;                  // if set, requests need "Authorization: Bearer <key>"
  size_t max_body_bytes = 1 << 20;      // larger bodies get 413
  int threads = 128;                    // HTTP worker threads (each open stream holds one)
  int max_batch = 32;                   // sequences decoded together
  int max_n = 64;                       // largest `n` accepted
  int max_prompt_tokens = 1 << 20;      // longer prompts get 400 context_length_exceeded
  int default_max_tokens = 16;          // /v1/completions default (OpenAI's)
  // Chat template: each message is `message_template` with {role} and {content} replaced,
  // then `assistant_prefix` starts the reply.
  std::string message_template = "{role}: {content}\n";
  std::string assistant_prefix = "assistant:";
};

// One chat message rendered with the template: message_template with {role} and {content}
// replaced (the server appends assistant_prefix after the last message).
std::string chat_render_message(const ServerOptions& opt, const std::string& role, const std::string& content);

class Server {
 public:
  Server(Model& m, const Tokenizer& tok, const ServerOptions& opt, const EngineOptions& eopt);
  ~Server();
  int bind();     // binds host:port, returns the port; throws Error when it cannot
  void listen();  // serves until stop() (call bind() first)
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace longctx
