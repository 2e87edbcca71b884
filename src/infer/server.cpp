#include "infer/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include "core/error.h"

namespace longctx {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// A 4xx/5xx answer in OpenAI's error format.
struct HttpError {
  int status;
  std::string message, type, param, code;
};

json error_body(const HttpError& e) {
  return {{"error",
           {{"message", e.message},
            {"type", e.type},
            {"param", e.param.empty() ? json(nullptr) : json(e.param)},
            {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
}

[[noreturn]] void bad_request(const std::string& msg, const std::string& param = "",
                              const std::string& code = "") {
  throw HttpError{400, msg, "invalid_request_error", param, code};
}

// ---------------------------------------------------------------- request fields
std::optional<json> field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::nullopt;
  return *it;
}
int int_field(const json& body, const char* name, int def, int lo, int hi) {
  auto v = field(body, name);
  if (!v) return def;
  if (!v->is_number_integer()) bad_request(fmt::format("'{}' must be an integer", name), name);
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi)
    bad_request(fmt::format("'{}' must be in [{}, {}], got {}", name, lo, hi, x), name);
  return int(x);
}
double num_field(const json& body, const char* name, double def, double lo, double hi,
                 bool lo_open = false) {
  auto v = field(body, name);
  if (!v) return def;
  if (!v->is_number()) bad_request(fmt::format("'{}' must be a number", name), name);
  const double x = v->get<double>();
  if (!std::isfinite(x) || x > hi || x < lo || (lo_open && x == lo))
    bad_request(fmt::format("'{}' must be in {}{}, {}], got {}", name, lo_open ? "(" : "[", lo, hi, x), name);
  return x;
}
bool bool_field(const json& body, const char* name, bool def) {
  auto v = field(body, name);
  if (!v) return def;
  if (!v->is_boolean()) bad_request(fmt::format("'{}' must be a boolean", name), name);
  return v->get<bool>();
}
std::vector<std::string> stop_field(const json& body) {
  auto v = field(body, "stop");
  std::vector<std::string> out;
  if (!v) return out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array() && v->size() <= 4) {
    for (const json& s : *v) {
      if (!s.is_string()) bad_request("'stop' must be a string or an array of up to 4 strings", "stop");
      out.push_back(s.get<std::string>());
    }
  } else {
    bad_request("'stop' must be a string or an array of up to 4 strings", "stop");
  }
  out.erase(std::remove(out.begin(), out.end(), std::string()), out.end());
  return out;
}
std::string content_text(const json& c, size_t i) {
  if (c.is_string()) return c.get<std::string>();
  if (c.is_array()) {  // [{"type": "text", "text": "..."}]
    std::string s;
    for (const json& part : c) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
          !part["text"].is_string())
        bad_request(fmt::format("messages[{}].content: only text parts are supported", i), "messages");
      s += part["text"].get<std::string>();
    }
    return s;
  }
  bad_request(fmt::format("messages[{}].content must be a string", i), "messages");
}
std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
  return s;
}

// ---------------------------------------------------------------- metrics
struct Metrics {
  std::mutex mu;
  std::map<std::pair<std::string, int>, int64_t> requests;  // (path, status) → count
  static constexpr double kBuckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
  int64_t lat_count[std::size(kBuckets)] = {};
  int64_t lat_n = 0;
  double lat_sum = 0;
  int64_t disconnects = 0;
  void request(const std::string& path, int status) {
    std::lock_guard<std::mutex> lk(mu);
    requests[{path, status}]++;
  }
  void latency(double s) {
    std::lock_guard<std::mutex> lk(mu);
    for (size_t i = 0; i < std::size(kBuckets); i++) lat_count[i] += s <= kBuckets[i];
    lat_n++, lat_sum += s;
  }
};

// ---------------------------------------------------------------- one generation job
// Shared by the HTTP thread and the scheduler thread (callbacks) under `mu`.
struct Job {
  std::mutex mu;
  std::condition_variable cv;
  struct Choice {
    std::vector<int32_t> tokens;
    std::string sent;      // text already handed out (streamed)
    std::string final_;    // text cut at a stop string, once found
    bool stopped = false;  // a stop string ended it
    Finish why = Finish::none;
  };
  std::vector<Choice> choices;
  int finished = 0;
  std::deque<std::string> events;  // SSE payloads ready to send (stream only)
  bool stream = false, chat = false;
  std::vector<std::string> stop;
  size_t max_stop = 0;
  std::string id, model;
  // Text is decoded after the prompt's last token and cut after its text, so a reply keeps its
  // leading space (SentencePiece drops the first piece's).
  int32_t anchor = 0;
  std::string anchor_text;
  std::string decode(const Tokenizer& tok, const std::vector<int32_t>& toks) const {
    std::vector<int32_t> all = {anchor};
    all.insert(all.end(), toks.begin(), toks.end());
    std::string s = tok.decode(all);
    return s.compare(0, anchor_text.size(), anchor_text) == 0 ? s.substr(anchor_text.size()) : tok.decode(toks);
  }
  int64_t created = 0;
  int prompt_tokens = 0;
  Clock::time_point t0;
  std::shared_ptr<GenRequest> req;
  std::atomic<bool> recorded{false};

  json chunk(int i, const std::string& delta, const char* finish) const {
    json c = {{"index", i}, {"finish_reason", finish ? json(finish) : json(nullptr)}};
    if (chat) {
      json d = json::object();
      if (!delta.empty() || !finish) d["content"] = delta;
      c["delta"] = d;
    } else {
      c["text"] = delta, c["logprobs"] = nullptr;
    }
    return {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created}, {"model", model}, {"choices", json::array({c})}};
  }
  void push_delta(int i, const std::string& delta) {
    if (stream && !delta.empty()) events.push_back(chunk(i, delta, nullptr).dump(-1, ' ', false, json::error_handler_t::replace));
  }
};

// Text of choice i after a new token: the stop string check, then the part safe to hand out
// (not a possible stop-string prefix, not a partial UTF-8 character). Returns false on a stop.
bool job_on_token(Job& j, const Tokenizer& tok, int i, int32_t t) {
  std::lock_guard<std::mutex> lk(j.mu);
  Job::Choice& c = j.choices[i];
  c.tokens.push_back(t);
  const std::string full = j.decode(tok, c.tokens);
  for (const std::string& s : j.stop) {
    const size_t from = c.sent.size() > s.size() ? c.sent.size() - s.size() : 0;
    const size_t p = full.find(s, from);
    if (p != std::string::npos && (c.final_.empty() || p < c.final_.size())) {
      c.final_ = full.substr(0, p), c.stopped = true;
    }
  }
  if (c.stopped) return false;
  size_t safe = full.size() - std::min(full.size(), j.max_stop ? j.max_stop - 1 : 0);
  while (safe > 0 && safe < full.size() && (uint8_t(full[safe]) & 0xC0) == 0x80) safe--;
  if (safe >= 3 && full.compare(safe - 3, 3, "\xEF\xBF\xBD") == 0) safe -= 3;  // byte piece pending
  if (safe > c.sent.size() && full.compare(0, c.sent.size(), c.sent) == 0) {
    j.push_delta(i, full.substr(c.sent.size(), safe - c.sent.size()));
    c.sent = full.substr(0, safe);
    j.cv.notify_all();
  }
  return true;
}

void job_on_finish(Job& j, const Tokenizer& tok, int i, Finish why) {
  std::lock_guard<std::mutex> lk(j.mu);
  Job::Choice& c = j.choices[i];
  if (!c.stopped) c.final_ = j.decode(tok, c.tokens);
  if (c.final_.size() > c.sent.size() && c.final_.compare(0, c.sent.size(), c.sent) == 0)
    j.push_delta(i, c.final_.substr(c.sent.size()));
  c.sent = c.final_;
  c.why = c.stopped ? Finish::stop : why;
  const char* reason = c.why == Finish::length ? "length" : "stop";
  if (j.stream) j.events.push_back(j.chunk(i, "", reason).dump(-1, ' ', false, json::error_handler_t::replace));
  if (++j.finished == int(j.choices.size()) && j.stream) j.events.push_back("[DONE]");
  j.cv.notify_all();
}

// httplib 0.11 listens with a backlog of 5: a burst of concurrent clients overflows the accept
// queue and connections get reset. Linux lets listen() be called again to raise it.
struct HttpServer : httplib::Server {
  void raise_backlog(int n) { ::listen(svr_sock_, n); }
};

}  // namespace

struct Server::Impl {
  Model& model;
  const Tokenizer& tok;
  ServerOptions opt;
  Engine engine;
  Scheduler sched;
  HttpServer http;
  Metrics metrics;
  std::atomic<int64_t> next_id{0};
  std::mt19937_64 seed_rng{std::random_device{}()};
  std::mutex seed_mu;

  Impl(Model& m, const Tokenizer& t, const ServerOptions& o, const EngineOptions& eo)
      : model(m), tok(t), opt(o), engine(m, eo), sched(engine, o.max_batch) {}

  void check_auth(const httplib::Request& req) {
    if (opt.api_key.empty()) return;
    if (req.get_header_value("Authorization") != "Bearer " + opt.api_key)
      throw HttpError{401, "invalid or missing API key (send 'Authorization: Bearer <key>')",
                      "invalid_request_error", "", "invalid_api_key"};
  }

  json parse_body(const httplib::Request& req) {
    json body;
    try {
      body = json::parse(req.body);
    } catch (const json::parse_error& e) {
      bad_request(std::string("invalid JSON in the request body: ") + e.what());
    }
    if (!body.is_object()) bad_request("the request body must be a JSON object");
    if (auto m = field(body, "model")) {
      if (!m->is_string()) bad_request("'model' must be a string", "model");
      if (m->get<std::string>() != opt.model_name)
        throw HttpError{404, fmt::format("the model '{}' does not exist (this server serves '{}')",
                                         m->get<std::string>(), opt.model_name),
                        "invalid_request_error", "model", "model_not_found"};
    }
    return body;
  }

  // Builds and submits the job of a completions or chat request.
  std::shared_ptr<Job> start_job(const json& body, bool chat) {
    auto j = std::make_shared<Job>();
    j->chat = chat;
    j->t0 = Clock::now();
    std::string prompt;
    if (chat) {
      auto msgs = field(body, "messages");
      if (!msgs || !msgs->is_array() || msgs->empty())
        bad_request("'messages' must be a non-empty array", "messages");
      for (size_t i = 0; i < msgs->size(); i++) {
        const json& m = (*msgs)[i];
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
          bad_request(fmt::format("messages[{}] must be an object with a string 'role'", i), "messages");
        if (!m.contains("content") || m["content"].is_null())
          bad_request(fmt::format("messages[{}] has no 'content'", i), "messages");
        prompt += chat_render_message(opt, m["role"].get<std::string>(), content_text(m["content"], i));
      }
      prompt += opt.assistant_prefix;
    } else {
      auto p = field(body, "prompt");
      if (!p) bad_request("'prompt' is required", "prompt");
      if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) p = (*p)[0];
      if (!p->is_string()) bad_request("'prompt' must be a string (or an array of one string)", "prompt");
      prompt = p->get<std::string>();
    }
    const int ctx_cap = int(std::min<int64_t>(engine.max_sequence(), INT32_MAX));
    int max_tokens = int_field(body, "max_tokens", chat ? 256 : opt.default_max_tokens, 1, ctx_cap);
    if (chat) max_tokens = int_field(body, "max_completion_tokens", max_tokens, 1, ctx_cap);
    auto r = std::make_shared<GenRequest>();
    r->n = int_field(body, "n", 1, 1, opt.max_n);
    r->max_tokens = max_tokens;
    r->sampling.temperature = float(num_field(body, "temperature", 1.0, 0.0, 2.0));
    r->sampling.top_p = float(num_field(body, "top_p", 1.0, 0.0, 1.0, true));
    r->sampling.top_k = int_field(body, "top_k", 0, 0, 1 << 30);
    if (auto s = field(body, "seed")) {
      if (!s->is_number_integer()) bad_request("'seed' must be an integer", "seed");
      r->sampling.seed = uint64_t(s->get<int64_t>());
    } else {
      std::lock_guard<std::mutex> lk(seed_mu);
      r->sampling.seed = seed_rng();
    }
    j->stream = bool_field(body, "stream", false);
    j->stop = stop_field(body);
    for (const auto& s : j->stop) j->max_stop = std::max(j->max_stop, s.size());
    r->prompt = {tok.bos_id()};
    for (int32_t t : tok.encode(prompt)) r->prompt.push_back(t);
    j->prompt_tokens = int(r->prompt.size());
    j->anchor = r->prompt.back();
    j->anchor_text = tok.decode({j->anchor});
    if (int64_t(r->prompt.size()) > opt.max_prompt_tokens ||
        int64_t(r->prompt.size()) + max_tokens > engine.max_sequence())
      throw HttpError{400,
                      fmt::format("the prompt is {} tokens and max_tokens {}, but this model's "
                                  "context allows {} prompt tokens and {} in total",
                                  r->prompt.size(), max_tokens, opt.max_prompt_tokens,
                                  engine.max_sequence()),
                      "invalid_request_error", chat ? "messages" : "prompt", "context_length_exceeded"};
    r->eos = bool_field(body, "ignore_eos", false) ? -1 : tok.eos_id();  // vLLM's extension
    j->choices.resize(r->n);
    j->id = fmt::format("{}-{}", chat ? "chatcmpl" : "cmpl", next_id++);
    j->model = opt.model_name;
    j->created = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch()).count();
    // weak: the job owns the request, and may be gone (server shutting down) before it ends
    std::weak_ptr<Job> wj = j;
    const Tokenizer* t = &tok;
    r->on_token = [wj, t](int i, int32_t token) {
      auto jp = wj.lock();
      return jp && job_on_token(*jp, *t, i, token);
    };
    r->on_finish = [wj, t](int i, Finish f) {
      if (auto jp = wj.lock()) job_on_finish(*jp, *t, i, f);
    };
    j->req = r;
    if (chat && j->stream) {  // OpenAI sends the role first
      for (int i = 0; i < r->n; i++) {
        json c = j->chunk(i, "", nullptr);
        c["choices"][0]["delta"] = {{"role", "assistant"}, {"content", ""}};
        j->events.push_back(c.dump(-1, ' ', false, json::error_handler_t::replace));
      }
    }
    try {
      sched.submit(r);
    } catch (const Error& e) {
      bad_request(e.what());
    }
    return j;
  }

  // A streaming client went away: cancel its request (frees its slots at the next step).
  void disconnected(Job& j) {
    std::lock_guard<std::mutex> lk(metrics.mu);  // counted before the scheduler can see it
    if (j.req->cancelled) return;
    metrics.disconnects++;
    j.req->cancelled = true;
  }

  void record_latency(Job& j) {
    if (!j.recorded.exchange(true))
      metrics.latency(std::chrono::duration<double>(Clock::now() - j.t0).count());
  }

  json final_body(Job& j) {
    json choices = json::array();
    int64_t completion = 0;
    for (size_t i = 0; i < j.choices.size(); i++) {
      const Job::Choice& c = j.choices[i];
      completion += int64_t(c.tokens.size());
      const char* reason = c.why == Finish::length ? "length" : "stop";
      if (j.chat)
        choices.push_back({{"index", i},
                           {"message", {{"role", "assistant"}, {"content", c.final_}}},
                           {"logprobs", nullptr},
                           {"finish_reason", reason}});
      else
        choices.push_back({{"index", i}, {"text", c.final_}, {"logprobs", nullptr}, {"finish_reason", reason}});
    }
    return {{"id", j.id},
            {"object", j.chat ? "chat.completion" : "text_completion"},
            {"created", j.created},
            {"model", j.model},
            {"choices", choices},
            {"usage", {{"prompt_tokens", j.prompt_tokens},
                       {"completion_tokens", completion},
                       {"total_tokens", j.prompt_tokens + completion}}}};
  }

  void completions(const httplib::Request& req, httplib::Response& res, bool chat) {
    check_auth(req);
    std::shared_ptr<Job> j = start_job(parse_body(req), chat);
    if (!j->stream) {
      std::unique_lock<std::mutex> lk(j->mu);
      j->cv.wait(lk, [&] { return j->finished == int(j->choices.size()); });
      for (const auto& c : j->choices)
        if (c.why == Finish::error || c.why == Finish::cancelled)
          throw HttpError{500, "generation failed on the server", "server_error", "", ""};
      res.set_content(final_body(*j).dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
      lk.unlock();
      record_latency(*j);
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, j](size_t, httplib::DataSink& sink) {
          std::unique_lock<std::mutex> lk(j->mu);
          j->cv.wait_for(lk, std::chrono::milliseconds(200), [&] { return !j->events.empty(); });
          while (!j->events.empty()) {
            const std::string data = "data: " + j->events.front() + "\n\n";
            const bool last = j->events.front() == "[DONE]";
            j->events.pop_front();
            lk.unlock();
            if (!sink.write(data.data(), data.size())) {  // the client went away
              disconnected(*j);
              return false;
            }
            if (last) {
              record_latency(*j);
              sink.done();
              return true;
            }
            lk.lock();
          }
          lk.unlock();
          if (!sink.is_writable()) {
            disconnected(*j);
            return false;
          }
          return true;
        },
        [this, j](bool) {  // always runs: a stream cut short cancels its request
          std::unique_lock<std::mutex> lk(j->mu);
          const bool unfinished = j->finished < int(j->choices.size());
          lk.unlock();
          if (unfinished) disconnected(*j);
        });
  }

  std::string metrics_text() {
    const SchedulerStats s = sched.stats();
    std::string o;
    std::lock_guard<std::mutex> lk(metrics.mu);
    o += "# HELP longctx_requests_total HTTP requests by path and status.\n# TYPE longctx_requests_total counter\n";
    for (const auto& [k, n] : metrics.requests)
      o += fmt::format("longctx_requests_total{{path=\"{}\",status=\"{}\"}} {}\n", k.first, k.second, n);
    o += fmt::format("# TYPE longctx_generation_requests_total counter\nlongctx_generation_requests_total {}\n", s.requests);
    o += fmt::format("# TYPE longctx_prompt_tokens_total counter\nlongctx_prompt_tokens_total {}\n", s.prompt_tokens);
    o += fmt::format("# TYPE longctx_generated_tokens_total counter\nlongctx_generated_tokens_total {}\n", s.generated_tokens);
    o += fmt::format("# TYPE longctx_engine_steps_total counter\nlongctx_engine_steps_total {}\n", s.steps);
    o += fmt::format("# HELP longctx_queue_depth Requests waiting for prefill.\n# TYPE longctx_queue_depth gauge\nlongctx_queue_depth {}\n", s.waiting);
    o += fmt::format("# HELP longctx_running_sequences Sequences admitted (prefilling or decoding).\n# TYPE longctx_running_sequences gauge\nlongctx_running_sequences {}\n", s.running);
    o += fmt::format("# TYPE longctx_client_disconnects_total counter\nlongctx_client_disconnects_total {}\n", metrics.disconnects);
    o += "# HELP longctx_request_latency_seconds Completion latency (first byte to last token).\n"
         "# TYPE longctx_request_latency_seconds histogram\n";
    for (size_t i = 0; i < std::size(Metrics::kBuckets); i++)
      o += fmt::format("longctx_request_latency_seconds_bucket{{le=\"{}\"}} {}\n", Metrics::kBuckets[i], metrics.lat_count[i]);
    o += fmt::format("longctx_request_latency_seconds_bucket{{le=\"+Inf\"}} {}\n", metrics.lat_n);
    o += fmt::format("longctx_request_latency_seconds_sum {}\nlongctx_request_latency_seconds_count {}\n", metrics.lat_sum, metrics.lat_n);
    return o;
  }

  // Runs a handler, turning HttpError/Error into OpenAI-style JSON errors.
  template <class Fn>
  httplib::Server::Handler wrap(Fn fn) {
    return [this, fn](const httplib::Request& req, httplib::Response& res) {
      try {
        fn(req, res);
      } catch (const HttpError& e) {
        res.status = e.status;
        res.set_content(error_body(e).dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
      } catch (const std::exception& e) {
        res.status = 500;
        res.set_content(error_body({500, e.what(), "server_error", "", ""}).dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
      }
    };
  }

  void routes() {
    http.new_task_queue = [n = opt.threads] { return new httplib::ThreadPool(size_t(n)); };
    http.set_payload_max_length(opt.max_body_bytes);
    http.Post("/v1/completions", wrap([this](const auto& q, auto& r) { completions(q, r, false); }));
    http.Post("/v1/chat/completions", wrap([this](const auto& q, auto& r) { completions(q, r, true); }));
    http.Get("/v1/models", wrap([this](const httplib::Request& q, httplib::Response& r) {
      check_auth(q);
      json m = {{"id", opt.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "longctx"}};
      r.set_content(json{{"object", "list"}, {"data", json::array({m})}}.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    }));
    http.Get("/health", [](const httplib::Request&, httplib::Response& r) {
      r.set_content(R"({"status":"ok"})", "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& r) {
      r.set_content(metrics_text(), "text/plain; version=0.0.4");
    });
    // Statuses httplib sets itself (404 no route, 413 body too large, 400 bad HTTP) get JSON too.
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      HttpError e{res.status, fmt::format("HTTP {} for {} {}", res.status, req.method, req.path),
                  "invalid_request_error", "", ""};
      if (res.status == 404) e.message = fmt::format("no route {} {}", req.method, req.path), e.code = "not_found";
      if (res.status == 413) e.message = "the request body is larger than the server's limit", e.code = "body_too_large";
      res.set_content(error_body(e).dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    });
    // Counted before the response is written (post-routing, not the logger, which runs after it),
    // so a client that has its answer sees it in /metrics.
    http.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      metrics.request(req.path.rfind("/v1/", 0) == 0 || req.path == "/health" || req.path == "/metrics" ? req.path : "other", res.status);
    });
  }
};

Server::Server(Model& m, const Tokenizer& tok, const ServerOptions& opt, const EngineOptions& eopt)
    : impl_(std::make_unique<Impl>(m, tok, opt, eopt)) {
  LCX_CHECK(tok.vocab_size() == m.config.vocab_size,
            "tokenizer has {} pieces but the model's vocab_size is {}", tok.vocab_size(), m.config.vocab_size);
  impl_->routes();
}

Server::~Server() {
  stop();
  impl_->sched.stop();
}

int Server::bind() {
  Impl& s = *impl_;
  int port = s.opt.port;
  if (port == 0) {
    port = s.http.bind_to_any_port(s.opt.host);
    LCX_CHECK(port > 0, "serve: cannot bind to {} (any port)", s.opt.host);
  } else {
    LCX_CHECK(s.http.bind_to_port(s.opt.host, port), "serve: cannot bind to {}:{} (in use?)", s.opt.host, port);
  }
  s.http.raise_backlog(1024);
  return port;
}

void Server::listen() {
  impl_->sched.start();
  impl_->http.listen_after_bind();
}

void Server::stop() {
  if (impl_->http.is_running()) impl_->http.stop();
}

std::string chat_render_message(const ServerOptions& opt, const std::string& role, const std::string& content) {
  return replace_all(replace_all(opt.message_template, "{role}", role), "{content}", content);
}

}  // namespace longctx
