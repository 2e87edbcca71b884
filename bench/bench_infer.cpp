// Inference benchmarks (issue 6; not tests). Each mode prints one JSON object per line.
//   bench_infer memory --attn swat|softmax --context N   RSS (and device peak) after prefilling
//       N tokens and decoding 128 (run each N in a fresh process); a small random-init model.
//   bench_infer throughput [--preset small]              prefill tokens/s (4096-token prompt),
//       decode tokens/s at batch 1 and 32 (256-token prompts: the window is full).
//   Both take --device cpu|cpu_ref|cuda (default cpu).
//   bench_infer load --ckpt DIR [--requests 1000 --concurrency 64]   HTTP load on 127.0.0.1 against
//       an in-process `longctx serve`: 10 % malformed, 5 % disconnect mid-stream; p50/p99.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/rng.h"
#include "data/loader.h"
#include "infer/engine.h"
#include "infer/server.h"
#include "model/checkpoint.h"
#include "model/params.h"

using namespace longctx;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double secs(Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); }

// VmRSS / VmHWM of this process in MiB.
double proc_mib(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(std::strlen(key) + 1)) / 1024.0;
  return -1;
}

std::string arg(int argc, char** argv, const char* name, const char* def) {
  for (int i = 2; i + 1 < argc; i++)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return def;
}

std::vector<int32_t> random_tokens(size_t n, int V, uint64_t seed) {
  return random_batch(1, int(n), V, seed).tokens;
}

// A random-init model on --device (initialised on the host, then uploaded).
std::unique_ptr<Model> random_model(const Config& c, int argc, char** argv) {
  auto m = std::make_unique<Model>(c, backend_get(arg(argc, argv, "--device", "cpu").c_str()));
  std::vector<float> p(m->params.size());
  param_init(p.data(), m->layout, c, 1);
  m->params.upload(p.data(), p.size());
  return m;
}

int memory(int argc, char** argv) {
  const std::string attn = arg(argc, argv, "--attn", "swat");
  const long context = std::stol(arg(argc, argv, "--context", "1024"));
  Config c;  // small enough that 1M tokens prefill in minutes on 2 cores
  c.hidden_size = 128, c.num_hidden_layers = 2, c.num_attention_heads = 2, c.num_key_value_heads = 2;
  c.intermediate_size = 384, c.vocab_size = 4096, c.window = 256;
  if (attn == "softmax") c.attention = AttnKind::softmax, c.alibi = Alibi::none, c.window = 1 << 30;
  auto m = random_model(c, argc, argv);
  EngineOptions eo;
  eo.max_context = int(context + 128);
  Engine e(*m, eo);
  const double rss0 = proc_mib("VmRSS:");
  KvCache cache = e.new_cache();
  std::vector<float> logits(c.vocab_size);
  auto t0 = Clock::now();
  std::vector<int32_t> chunk;
  for (long done = 0; done < context; done += eo.chunk) {  // stream the prompt chunk by chunk
    chunk = random_tokens(size_t(std::min<long>(eo.chunk, context - done)), c.vocab_size, uint64_t(done));
    Segment s{&cache, chunk.data(), int(chunk.size())};
    e.forward(&s, 1, logits.data());
  }
  const double prefill_s = secs(t0), rss_prefill = proc_mib("VmRSS:");
  Sampler sm({0.0f, 0, 1.0f, 0});
  t0 = Clock::now();
  for (int i = 0; i < 128; i++) {
    int32_t tok = sm.sample(logits.data(), c.vocab_size);
    Segment s{&cache, &tok, 1};
    e.forward(&s, 1, logits.data());
  }
  const double decode_s = secs(t0);
  json out = {{"bench", "memory_vs_context"}, {"attention", attn}, {"context", context},
              {"model", "d128 L2 H2 ffn384 vocab4096 window " + std::string(attn == "swat" ? "256" : "full")},
              {"rss_start_mib", rss0}, {"rss_after_prefill_mib", rss_prefill},
              {"rss_after_decode128_mib", proc_mib("VmRSS:")}, {"rss_peak_mib", proc_mib("VmHWM:")},
              {"device", m->backend->name}, {"device_peak_mib", double(m->backend->peak_bytes()) / (1 << 20)},
              {"kv_cache_mib", double(cache.bytes()) / (1 << 20)},
              {"engine_scratch_mib", double(e.scratch_bytes()) / (1 << 20)},
              {"prefill_tok_s", double(context) / prefill_s}, {"decode_tok_s", 128 / decode_s}};
  std::puts(out.dump().c_str());
  return 0;
}

int throughput(int argc, char** argv) {
  const std::string preset = arg(argc, argv, "--preset", "small");
  Config c = config_preset(preset);
  auto m = random_model(c, argc, argv);
  const char* device = m->backend->name;
  Engine e(*m, {});
  const int V = c.vocab_size;
  std::vector<float> logits(size_t(32) * V);
  {  // prefill: a 4096-token prompt in 512-token chunks
    KvCache kc = e.new_cache();
    auto p = random_tokens(4096, V, 1);
    e.prefill(kc, p.data(), 256, logits.data());  // warm-up
    kc = e.new_cache();
    auto t0 = Clock::now();
    e.prefill(kc, p.data(), int(p.size()), logits.data());
    const double s = secs(t0);
    std::puts(json{{"bench", "prefill"}, {"preset", preset}, {"device", device}, {"prompt", 4096}, {"chunk", 512},
                   {"tok_s", 4096 / s}}.dump().c_str());
  }
  for (int B : {1, 32}) {
    std::vector<KvCache> caches;
    for (int b = 0; b < B; b++) {
      caches.push_back(e.new_cache());
      auto p = random_tokens(256, V, 10 + b);
      e.prefill(caches.back(), p.data(), 256, logits.data());
    }
    const int steps = B == 1 ? 128 : 48;
    std::vector<int32_t> toks(B, 5);
    std::vector<Segment> segs(B);
    double best = 0;
    auto t0 = Clock::now();
    for (int i = 0; i < steps; i++) {
      for (int b = 0; b < B; b++) segs[b] = {&caches[b], &toks[b], 1};
      e.forward(segs.data(), B, logits.data());
      for (int b = 0; b < B; b++)
        toks[b] = int32_t(std::max_element(&logits[size_t(b) * V], &logits[size_t(b + 1) * V]) - &logits[size_t(b) * V]);
    }
    best = double(steps) * B / secs(t0);
    std::puts(json{{"bench", "decode"}, {"preset", preset}, {"device", device}, {"batch", B}, {"context", 256 + steps},
                   {"steps", steps}, {"tok_s", best}, {"ms_per_step", 1000.0 * B / best}}.dump().c_str());
  }
  return 0;
}

// ---------------------------------------------------------------- load test
struct LoadResult {
  std::mutex mu;
  std::vector<double> good_ms, bad_ms;
  int good_ok = 0, good_fail = 0, bad_4xx = 0, bad_other = 0, disconnects = 0, disconnect_fail = 0;
  std::map<std::string, int> why;  // failure → count
  void fail(const httplib::Result& r) {
    why[r ? "status " + std::to_string(r->status) + " " + r->body.substr(0, 80) : "http error " + httplib::to_string(r.error())]++;
  }
};

int load(int argc, char** argv) {
  const std::string ckpt = arg(argc, argv, "--ckpt", "");
  const int n_req = std::stoi(arg(argc, argv, "--requests", "1000"));
  const int conc = std::stoi(arg(argc, argv, "--concurrency", "64"));
  if (ckpt.empty()) {
    std::fprintf(stderr, "load: --ckpt DIR is required\n");
    return 2;
  }
  LoadedModel lm = checkpoint_load(ckpt);
  Tokenizer tok = Tokenizer::load(ckpt + "/tokenizer.model");
  Model m(lm.config, backend_cpu());
  m.params.upload(lm.params.data(), lm.params.size());
  ServerOptions so;
  so.port = 0, so.model_name = "m", so.threads = conc + 16, so.max_batch = 32;
  Server server(m, tok, so, {});
  const int port = server.bind();
  std::thread srv([&] { server.listen(); });
  const double rss0 = proc_mib("VmRSS:");

  const char* malformed[] = {"{not json", R"({"prompt": 5})", R"({"prompt": "x", "max_tokens": 0})",
                             R"({"prompt": "x", "model": "nope"})", R"({"messages": "hi"})",
                             R"({"prompt": "x", "temperature": "hot"})"};
  const char* prompts[] = {"The jury said", "In the city of", "He looked at the", "Once upon a time",
                           "The committee reported that"};
  LoadResult R;
  std::atomic<int> next{0};
  auto worker = [&](int wid) {
    httplib::Client cli("127.0.0.1", port);
    cli.set_read_timeout(300, 0);
    for (int i; (i = next++) < n_req;) {
      const int kind = i % 20;  // 2/20 malformed, 1/20 disconnect, rest good
      auto t0 = Clock::now();
      if (kind == 3 || kind == 13) {
        const char* body = malformed[(i / 20) % 6];
        const bool chat = body[2] == 'm';
        auto r = cli.Post(chat ? "/v1/chat/completions" : "/v1/completions", body, "application/json");
        std::lock_guard<std::mutex> lk(R.mu);
        R.bad_ms.push_back(1000 * secs(t0));
        if (r && r->status >= 400 && r->status < 500 && json::accept(r->body)) {
          R.bad_4xx++;
        } else {
          R.bad_other++;
          R.fail(r);
        }
        continue;
      }
      if (kind == 7) {  // stream, read the first bytes, hang up
        const std::string body = json{{"prompt", prompts[i % 5]}, {"max_tokens", 200}, {"stream", true}}.dump();
        const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET, a.sin_port = htons(uint16_t(port));
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        char buf[512];
        bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  write(fd, req.data(), req.size()) == ssize_t(req.size()) && read(fd, buf, sizeof buf) > 0;
        close(fd);
        std::lock_guard<std::mutex> lk(R.mu);
        R.disconnects++;
        R.disconnect_fail += !ok;
        continue;
      }
      const bool chat = i % 3 == 0, stream = i % 2 == 0;
      json body = {{"max_tokens", 16 + i % 17}, {"temperature", 0.8}, {"seed", i}, {"n", 1 + (i % 7 == 0)},
                   {"stream", stream}};
      if (chat) body["messages"] = {{{"role", "user"}, {"content", prompts[i % 5]}}};
      else body["prompt"] = prompts[i % 5];
      auto r = cli.Post(chat ? "/v1/chat/completions" : "/v1/completions", body.dump(), "application/json");
      const bool ok = r && r->status == 200 && (stream ? r->body.find("data: [DONE]") != std::string::npos : json::accept(r->body));
      std::lock_guard<std::mutex> lk(R.mu);
      if (ok) R.good_ms.push_back(1000 * secs(t0));
      ok ? R.good_ok++ : R.good_fail++;
      if (!ok) R.why[std::string(chat ? "chat " : "completion ") + (stream ? "stream" : "plain")]++, R.fail(r);
    }
    (void)wid;
  };
  auto t0 = Clock::now();
  std::vector<std::thread> ws;
  for (int w = 0; w < conc; w++) ws.emplace_back(worker, w);
  for (auto& t : ws) t.join();
  const double wall = secs(t0);
  // Slots freed: wait for the engine to drain the disconnected streams.
  httplib::Client cli("127.0.0.1", port);
  std::string metrics;
  for (int i = 0; i < 200; i++) {
    auto r = cli.Get("/metrics");
    if (r && r->body.find("longctx_running_sequences 0\n") != std::string::npos &&
        r->body.find("longctx_queue_depth 0\n") != std::string::npos) {
      metrics = r->body;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto pct = [](std::vector<double> v, double q) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, size_t(q * double(v.size())))];
  };
  json out = {{"bench", "load"}, {"ckpt", ckpt}, {"requests", n_req}, {"concurrency", conc}, {"wall_s", wall},
              {"good_ok", R.good_ok}, {"good_failed", R.good_fail}, {"malformed_4xx", R.bad_4xx},
              {"malformed_other", R.bad_other}, {"disconnects", R.disconnects},
              {"disconnect_connect_failed", R.disconnect_fail},
              {"good_p50_ms", pct(R.good_ms, 0.5)}, {"good_p99_ms", pct(R.good_ms, 0.99)},
              {"malformed_p50_ms", pct(R.bad_ms, 0.5)}, {"malformed_p99_ms", pct(R.bad_ms, 0.99)},
              {"drained", !metrics.empty()}, {"rss_before_mib", rss0}, {"rss_after_mib", proc_mib("VmRSS:")},
              {"rss_peak_mib", proc_mib("VmHWM:")}, {"failures", R.why}};
  std::puts(out.dump().c_str());
  server.stop();
  srv.join();
  return R.good_fail == 0 && R.bad_other == 0 && !metrics.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "memory") return memory(argc, argv);
    if (mode == "throughput") return throughput(argc, argv);
    if (mode == "load") return load(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: bench_infer memory|throughput|load [options] (see bench/bench_infer.cpp)\n");
  return 2;
}
