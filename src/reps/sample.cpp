#include "reps/sample.h"

#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/progress.h"
#include "infer/engine.h"
#include "kernels/profile.h"
#include "model/checkpoint.h"
#include "reps/prompt.h"
#include "tokenizer/tokenizer.h"

namespace longctx {

using nlohmann::json;
namespace fs = std::filesystem;

// ---------------------------------------------------------------- resume index
SampleIndex sample_index_load(const std::string& path, const std::set<std::string>& ids, const SampleOptions& opt) {
  SampleIndex idx;
  std::error_code ec;
  if (!fs::exists(path, ec)) return idx;
  std::ifstream f(path, std::ios::binary);
  LCX_CHECK(f, "cannot read '{}': {}", path, std::strerror(errno));
  const std::string bytes((std::istreambuf_iterator<char>(f)), {});
  size_t pos = 0;
  for (int64_t line = 1; pos < bytes.size(); line++) {
    const size_t nl = bytes.find('\n', pos);
    const bool last = nl == std::string::npos;
    const std::string text = bytes.substr(pos, last ? std::string::npos : nl - pos);
    const std::string where = fmt::format("{}:{}", path, line);
    const size_t start = pos;
    pos = last ? bytes.size() : nl + 1;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) {
      if (last) {  // cut mid-write: drop it, its path is sampled again
        fs::resize_file(path, start);
        idx.dropped_bytes = int64_t(text.size());
        break;
      }
      fail("{}: not valid JSON, and not the last line: the file is damaged (fix or remove the line, or "
           "write to another --out)", where);
    }
    const SampleRecord s = sample_from_json(j, where);
    LCX_CHECK(ids.count(s.id), "{}: question id '{}' is not in the data file (a different --data? use another --out)",
              where, s.id);
    LCX_CHECK(s.temperature == opt.temperature,
              "{}: sampled at temperature {}, but this run uses {} (resume with the same --temperature, or use "
              "another --out)", where, s.temperature, opt.temperature);
    LCX_CHECK(s.seed == opt.seed + uint64_t(s.path),
              "{}: path {} has seed {}, but this run gives it seed {} (resume with the same --seed, or use "
              "another --out)", where, s.path, s.seed, opt.seed + uint64_t(s.path));
    LCX_CHECK(idx.done.insert({s.id, s.path}).second, "{}: (id '{}', path {}) appears twice", where, s.id, s.path);
    idx.needs_newline = last;
  }
  return idx;
}

// ---------------------------------------------------------------- appender
SampleAppender::SampleAppender(const std::string& path, int every, bool newline_first)
    : path_(path), every_(std::max(1, every)) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  LCX_CHECK(fd_ >= 0, "cannot open '{}' for appending: {}", path, std::strerror(errno));
  if (newline_first) write_all("\n");
}
SampleAppender::~SampleAppender() {
  if (fd_ >= 0) {
    ::fsync(fd_);
    ::close(fd_);
  }
}
void SampleAppender::append(const SampleRecord& s) {
  write_all(sample_to_json(s).dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
  if (++since_sync_ >= every_) sync();
}
void SampleAppender::sync() {
  LCX_CHECK(::fsync(fd_) == 0, "fsync '{}': {}", path_, std::strerror(errno));
  since_sync_ = 0;
}
void SampleAppender::write_all(const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t w = ::write(fd_, s.data() + off, s.size() - off);
    if (w < 0 && errno == EINTR) continue;
    LCX_CHECK(w > 0, "error writing '{}': {}", path_, std::strerror(errno));
    off += size_t(w);
  }
}

namespace {

// ---------------------------------------------------------------- local backend
class LocalBackend : public SampleBackend {
 public:
  explicit LocalBackend(const LocalBackendOptions& o) : o_(o) {
    LoadedModel lm = checkpoint_load(o.ckpt);
    tok_ = Tokenizer::load(lm.dir + "/tokenizer.model");
    model_ = std::make_unique<Model>(lm.config, backend_get(o.device.c_str()));
    model_->params.upload(lm.params.data(), lm.params.size());
    // --profile-ops: every op through the profiled table (memory ops pass through), timed
    if (o.profile_ops) model_->backend = &backend_profiled(*model_->backend, prof_);
    EngineOptions eo;
    eo.max_context = o.max_context;
    engine_ = std::make_unique<Engine>(*model_, eo);
  }

  void run(const std::vector<SampleJob>& jobs, const SampleOptions& opt, const SampleSink& sink) override {
    std::map<size_t, Live> live;  // job index → its request's state
    int failed = 0;
    Scheduler sched(*engine_, o_.max_batch);  // after `live`: destroyed first
    // One request queued beyond those admitted, so the scheduler admits the next one as soon as
    // its samples fit, no more (each holds its prompt's tokens). A request counts until its last
    // sample ends, so a cap on live requests would starve the batch while they wait on stragglers.
    size_t next = 0;
    double submit_s = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      const auto ts = std::chrono::steady_clock::now();
      while (next < jobs.size() && sched.stats().waiting == 0) submit(jobs, next++, opt, sink, sched, live, failed);
      submit_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
      if (!sched.step() && next >= jobs.size()) break;
    }
    if (o_.engine_stats || o_.profile_ops)
      print_profile(sched.counters(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                    submit_s);
    LCX_CHECK(failed == 0, "{} samples failed in the engine (not written; rerun to retry them)", failed);
  }

 private:
  struct Live {  // a submitted request's samples
    std::vector<std::vector<int32_t>> tokens;
    int left = 0;
    std::string anchor_text;
  };
  void submit(const std::vector<SampleJob>& jobs, size_t k, const SampleOptions& opt, const SampleSink& sink,
              Scheduler& sched, std::map<size_t, Live>& live, int& failed) {
    const SampleJob& job = jobs[k];
    auto r = std::make_shared<GenRequest>();
    r->prompt = {tok_.bos_id()};
    for (int32_t t : tok_.encode(job.prompt)) r->prompt.push_back(t);
    const int64_t limit = o_.max_prompt_tokens > 0 ? o_.max_prompt_tokens : engine_->max_sequence();
    if (int64_t(r->prompt.size()) > limit || int64_t(r->prompt.size()) + opt.max_tokens > engine_->max_sequence()) {
      sink.skip(job, fmt::format("prompt of {} tokens (+ {} new) exceeds the limit of {} prompt / {} total tokens",
                                 r->prompt.size(), opt.max_tokens, limit, engine_->max_sequence()));
      return;
    }
    r->n = job.n;
    r->max_tokens = opt.max_tokens;
    r->sampling.temperature = float(opt.temperature);
    r->sampling.seed = opt.seed + uint64_t(job.first);
    r->eos = tok_.eos_id();
    auto& l = live[k];
    l.tokens.resize(job.n);
    l.left = job.n;
    l.anchor_text = tok_.decode({r->prompt.back()});
    const int32_t anchor = r->prompt.back();
    r->on_token = [&l](int i, int32_t t) {
      l.tokens[i].push_back(t);
      return true;
    };
    r->on_finish = [this, &l, &live, &failed, &job, &sink, k, anchor](int i, Finish why) {
      if (why == Finish::stop || why == Finish::length) {
        // Decoded after the prompt's last token, as the server does, so a leading space survives.
        std::vector<int32_t> all = {anchor};
        all.insert(all.end(), l.tokens[i].begin(), l.tokens[i].end());
        std::string s = tok_.decode(all);
        s = s.compare(0, l.anchor_text.size(), l.anchor_text) == 0 ? s.substr(l.anchor_text.size())
                                                                    : tok_.decode(l.tokens[i]);
        sink.sample(job, job.first + i, s);
      } else {
        failed++;
      }
      if (--l.left == 0) live.erase(k);
    };
    sched.submit(r);
  }

  // --engine-stats / --profile-ops on stderr: the scheduler's counters (then the per-op table,
  // ms per scheduler step).
  void print_profile(const StepCounters& c, double wall_s, double submit_s) {
    const double steps = double(std::max<int64_t>(1, c.steps));
    const int64_t tokens = c.decode_rows + c.prefill_rows;
    fmt::print(stderr,
               "engine: {} steps ({} with a prefill chunk), {:.1f} decoding sequences a step (max {}, {} "
               "steps at --max-batch {}); {} decoded + {} prefilled tokens in {:.2f} s: {:.0f} decoded tokens/s\n",
               c.steps, c.mixed_steps, double(c.decode_rows) / steps, c.max_decode_rows, c.full_steps,
               o_.max_batch, c.decode_rows, c.prefill_rows, wall_s, double(c.decode_rows) / std::max(wall_s, 1e-9));
    const double other = c.step_s - c.forward_s - c.sample_s - c.cache_s - c.emit_s;
    auto part = [&](const char* name, double sec) {
      fmt::print(stderr, "  {:<34}{:>10.2f} s{:>10.3f} ms/step{:>7.1f} %\n", name, sec, 1e3 * sec / steps,
                 100.0 * sec / std::max(wall_s, 1e-9));
    };
    part("forward (ops + syncs + copies)", c.forward_s);
    part("sampling (host threads or device)", c.sample_s);
    part("KV caches for the n samples", c.cache_s);
    part("callbacks (detokenize, write)", c.emit_s);
    part("other scheduler work", other);
    part("submitting (tokenize prompts)", submit_s);
    part("outside the above", wall_s - c.step_s - submit_s);
    fmt::print(stderr, "  KV caches: {} used, {} allocated (the rest recycled); {:.1f} tokens a step through the "
               "model; {} of {} decode rows drawn on the device\n", c.caches_used, c.caches_allocated,
               double(tokens) / steps, c.device_rows, c.decode_rows);
    if (!o_.profile_ops) return;
    prof_.steps = int(steps);
    print_op_table(stderr, prof_.to_json());
    fmt::print(stderr, "ops {:.3f} ms/step (forward's and the KV-cache copies'); forward {:.3f} ms/step\n",
               1e3 * prof_.seconds() / steps, 1e3 * c.forward_s / steps);
  }

  LocalBackendOptions o_;
  OpProfile prof_;  // before model_: the profiled table charges it until the model is gone
  Tokenizer tok_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Engine> engine_;
};

// ---------------------------------------------------------------- endpoint backend
class EndpointBackend : public SampleBackend {
 public:
  explicit EndpointBackend(const EndpointOptions& o) : o_(o) {
    LCX_CHECK(o.concurrency >= 1, "--concurrency must be >= 1, got {}", o.concurrency);
    LCX_CHECK(o.retries >= 0, "--retries must be >= 0, got {}", o.retries);
    std::string u = o.url;
    const size_t scheme = u.find("://");
    LCX_CHECK(scheme != std::string::npos && (u.compare(0, scheme, "http") == 0 || u.compare(0, scheme, "https") == 0),
              "--endpoint '{}': expected http://HOST:PORT (optionally ending in /v1)", o.url);
    const size_t slash = u.find('/', scheme + 3);
    host_ = u.substr(0, slash);
    std::string base = slash == std::string::npos ? "" : u.substr(slash);
    while (!base.empty() && base.back() == '/') base.pop_back();
    if (base.size() < 3 || base.compare(base.size() - 3, 3, "/v1") != 0) base += "/v1";
    path_ = base + "/completions";
    // httplib sends without MSG_NOSIGNAL: a server closing the socket mid-request must give a
    // retryable error, not kill the process.
    signal(SIGPIPE, SIG_IGN);
  }

  void run(const std::vector<SampleJob>& jobs, const SampleOptions& opt, const SampleSink& sink) override {
    std::atomic<size_t> next{0};
    std::atomic<bool> stop{false};
    std::exception_ptr err;
    std::mutex err_mu;
    auto worker = [&] {
      try {
        httplib::Client cli(host_);
        cli.set_connection_timeout(10, 0);
        cli.set_read_timeout(time_t(o_.timeout_s), 0);
        cli.set_write_timeout(time_t(o_.timeout_s), 0);
        if (!o_.api_key.empty()) cli.set_bearer_token_auth(o_.api_key.c_str());
        for (size_t k; !stop && (k = next++) < jobs.size();) request(cli, jobs[k], opt, sink, stop);
      } catch (...) {
        std::lock_guard<std::mutex> lk(err_mu);
        if (!err) err = std::current_exception();
        stop = true;
      }
    };
    std::vector<std::thread> pool;
    const int n_workers = int(std::min<size_t>(size_t(o_.concurrency), std::max<size_t>(1, jobs.size())));
    for (int w = 0; w < n_workers; w++) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
    if (err) std::rethrow_exception(err);
  }

 private:
  void request(httplib::Client& cli, const SampleJob& job, const SampleOptions& opt, const SampleSink& sink,
               const std::atomic<bool>& stop) {
    json body = {{"prompt", job.prompt}, {"n", job.n}, {"temperature", opt.temperature},
                 {"max_tokens", opt.max_tokens}, {"seed", opt.seed + uint64_t(job.first)}};
    if (!o_.model.empty()) body["model"] = o_.model;
    const std::string payload = body.dump(-1, ' ', false, json::error_handler_t::replace);
    std::string last_error;
    for (int attempt = 0; attempt <= o_.retries && !stop; attempt++) {
      if (attempt > 0) {  // exponential backoff, in small sleeps so a failing run stops promptly
        const double wait = std::min(30.0, o_.backoff_s * double(1 << std::min(attempt - 1, 20)));
        const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(wait);
        while (!stop && std::chrono::steady_clock::now() < until)
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      auto res = cli.Post(path_.c_str(), payload, "application/json");
      if (!res) {
        last_error = res.error() == httplib::Error::Connection ? "could not connect (is the server running?)"
                                                               : "HTTP client error: " + httplib::to_string(res.error());
        continue;
      }
      if (res->status == 429 || res->status >= 500) {
        last_error = fmt::format("HTTP {}: {}", res->status, server_message(res->body));
        continue;
      }
      const json r = json::parse(res->body, nullptr, false);
      if (res->status == 400 && r.is_object() && r.contains("error") && r["error"].is_object() &&
          r["error"].value("code", json()) == "context_length_exceeded") {
        sink.skip(job, server_message(res->body));
        return;
      }
      LCX_CHECK(res->status == 200, "endpoint {}{} returned HTTP {} for question '{}': {}", host_, path_, res->status,
                job.ex->id, server_message(res->body));
      accept(r, job, sink);
      return;
    }
    if (stop) return;
    fail("endpoint {}{}: question '{}' failed after {} retries: {}", host_, path_, job.ex->id, o_.retries, last_error);
  }

  // The choices of a 200 response: exactly job.n, indices 0..n-1.
  void accept(const json& r, const SampleJob& job, const SampleSink& sink) const {
    const std::string where = fmt::format("endpoint {}{}, question '{}'", host_, path_, job.ex->id);
    LCX_CHECK(r.is_object() && r.contains("choices") && r["choices"].is_array(),
              "{}: the response has no \"choices\" array", where);
    const json& ch = r["choices"];
    LCX_CHECK(ch.size() == size_t(job.n), "{}: asked for n = {} samples, got {} choices", where, job.n, ch.size());
    std::vector<bool> seen(size_t(job.n), false);
    for (const json& c : ch) {
      const int i = c.is_object() && c.contains("index") && c["index"].is_number_integer() ? c["index"].get<int>() : -1;
      LCX_CHECK(i >= 0 && i < job.n && !seen[size_t(i)], "{}: bad or repeated choice index in {}", where, c.dump());
      LCX_CHECK(c.contains("text") && c["text"].is_string(), "{}: choice {} has no \"text\" string", where, i);
      seen[size_t(i)] = true;
      sink.sample(job, job.first + i, c["text"].get<std::string>());
    }
  }

  // The "message" of an OpenAI-style error body, else the body itself (cut short).
  static std::string server_message(const std::string& body) {
    const json j = json::parse(body, nullptr, false);
    if (j.is_object() && j.contains("error")) {
      const json& e = j["error"];
      if (e.is_object() && e.contains("message") && e["message"].is_string()) return e["message"].get<std::string>();
      if (e.is_string()) return e.get<std::string>();
    }
    return body.size() > 300 ? body.substr(0, 300) + "..." : body;
  }

  EndpointOptions o_;
  std::string host_, path_;
};

}  // namespace

std::unique_ptr<SampleBackend> sample_backend_local(const LocalBackendOptions& o) {
  return std::make_unique<LocalBackend>(o);
}
std::unique_ptr<SampleBackend> sample_backend_endpoint(const EndpointOptions& o) {
  return std::make_unique<EndpointBackend>(o);
}

// ---------------------------------------------------------------- the run
SampleReport sample_run(const std::vector<QaExample>& examples, const std::set<std::string>& all_ids,
                        const std::string& out, SampleBackend& backend, const SampleOptions& opt) {
  LCX_CHECK(opt.n >= 1, "--n must be >= 1, got {}", opt.n);
  LCX_CHECK(opt.max_tokens >= 1, "--max-tokens must be >= 1, got {}", opt.max_tokens);
  LCX_CHECK(opt.temperature >= 0 && opt.temperature <= 2, "--temperature must be in [0, 2], got {}", opt.temperature);
  const auto t0 = std::chrono::steady_clock::now();
  SampleReport rep;
  rep.questions = int64_t(examples.size());
  const SampleIndex idx = sample_index_load(out, all_ids, opt);
  rep.dropped_bytes = idx.dropped_bytes;
  if (idx.dropped_bytes > 0 && !opt.quiet)
    fmt::print(stderr, "{}: dropped a truncated last line ({} bytes) left by an interrupted run; its path is sampled again\n",
               out, idx.dropped_bytes);
  // The missing paths of each question, as contiguous runs.
  std::vector<SampleJob> jobs;
  for (const QaExample& ex : examples) {
    std::string prompt;
    for (int p = 0; p < opt.n;) {
      if (idx.done.count({ex.id, p})) {
        rep.already_done++, p++;
        continue;
      }
      int e = p;
      while (e < opt.n && !idx.done.count({ex.id, e})) e++;
      if (prompt.empty())
        prompt = opt.completion ? reps_completion_prompt(ex)
                 : opt.chat     ? reps_chat_prompt(reps_sample_prompt(ex, opt.max_quotes))
                                : reps_sample_prompt(ex, opt.max_quotes);
      jobs.push_back({&ex, prompt, p, e - p});
      p = e;
    }
  }
  if (!opt.quiet && rep.already_done > 0)
    fmt::print(stderr, "{}: resuming, {} of {} paths already done\n", out, rep.already_done, rep.questions * opt.n);
  SampleAppender app(out, opt.fsync_every, idx.needs_newline);
  Progress progress("sample", uint64_t(rep.questions * opt.n), "paths", opt.quiet);
  uint64_t done = uint64_t(rep.already_done);
  progress.update(done);
  std::mutex mu;
  std::set<std::string> skipped_ids;
  SampleSink sink;
  sink.sample = [&](const SampleJob& job, int path, const std::string& text) {
    std::lock_guard<std::mutex> lk(mu);
    app.append({job.ex->id, path, text, opt.temperature, opt.seed + uint64_t(path), ""});
    rep.written++;
    progress.update(++done);
  };
  sink.skip = [&](const SampleJob& job, const std::string& why) {
    std::lock_guard<std::mutex> lk(mu);
    if (skipped_ids.insert(job.ex->id).second) rep.skipped.push_back(job.ex->id + ": " + why);
    done += uint64_t(job.n);
    progress.update(done);
  };
  backend.run(jobs, opt, sink);
  app.sync();
  progress.finish();
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace longctx
