// `longctx serve` (src/infer/server.h) over a tiny random-init checkpoint, in process on a free
// 127.0.0.1 port: every endpoint, SSE streaming, n > 1, stop strings, OpenAI-style errors for
// malformed requests (raw HTTP), a client disconnecting mid-stream, metrics — and the official
// OpenAI npm client (tests/node/openai_client.test.mjs) when tests/node/node_modules exists
// (tools/install_deps.sh runs `npm ci` there).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "infer/server.h"
#include "model/checkpoint.h"
#include "model/params.h"
#include "tokenizer/tokenizer.h"
#include "tiny_tokenizer.h"

using namespace longctx;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* kKey = "test-key";
const char* kModel = "tiny-swat";

struct Env {
  fs::path dir;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<Model> model;
  std::unique_ptr<Server> server;
  std::thread thread;
  int port = 0;
};
Env* env = nullptr;

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    env = new Env;
    env->dir = fs::temp_directory_path() / ("longctx_server_" + std::to_string(getpid()));
    fs::create_directories(env->dir);
    // A small BPE, then a random-init SWAT model of its size.
    longctx::testing::train_tiny_tokenizer((env->dir / "tokenizer.model").string());
    env->tok = std::make_unique<Tokenizer>(Tokenizer::load((env->dir / "tokenizer.model").string()));
    Config c;
    c.hidden_size = 64, c.num_hidden_layers = 2, c.num_attention_heads = 4, c.num_key_value_heads = 2;
    c.intermediate_size = 128, c.vocab_size = env->tok->vocab_size(), c.window = 16;
    env->model = std::make_unique<Model>(c, backend_cpu());
    param_init(env->model->params.data(), env->model->layout, c, 1);
    ServerOptions so;
    so.port = 0, so.model_name = kModel, so.api_key = kKey, so.max_body_bytes = 4096;
    so.max_prompt_tokens = 200, so.threads = 16, so.max_batch = 8;
    EngineOptions eo;
    eo.chunk = 32;
    env->server = std::make_unique<Server>(*env->model, *env->tok, so, eo);
    env->port = env->server->bind();
    env->thread = std::thread([] { env->server->listen(); });
  }
  static void TearDownTestSuite() {
    env->server->stop();
    env->thread.join();
    env->server.reset();
    fs::remove_all(env->dir);
    delete env;
  }
  httplib::Client client() {
    httplib::Client c("127.0.0.1", env->port);
    c.set_bearer_token_auth(kKey);
    c.set_read_timeout(60, 0);
    return c;
  }
  json post(const std::string& path, const std::string& body, int* status) {
    auto res = client().Post(path, body, "application/json");
    EXPECT_TRUE(res) << "no response for " << path;
    if (!res) return {};
    *status = res->status;
    return json::parse(res->body);
  }
  json post_ok(const std::string& path, const json& body) {
    int st = 0;
    json r = post(path, body.dump(), &st);
    EXPECT_EQ(st, 200) << r.dump();
    return r;
  }
  // SSE stream → the `data:` payloads, in order.
  std::vector<std::string> stream(const std::string& path, const json& body) {
    std::string raw;
    auto c = client();
    auto res = c.Post(path, body.dump(), "application/json");
    EXPECT_TRUE(res);
    if (!res) return {};
    EXPECT_EQ(res->status, 200);
    EXPECT_NE(res->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
    std::vector<std::string> out;
    size_t p = 0;
    while ((p = res->body.find("data: ", p)) != std::string::npos) {
      size_t e = res->body.find("\n\n", p);
      out.push_back(res->body.substr(p + 6, e - p - 6));
      p = e;
    }
    return out;
  }
  void expect_error(const std::string& path, const std::string& body, int status,
                    const std::string& param = "") {
    int st = 0;
    json r = post(path, body, &st);
    EXPECT_EQ(st, status) << body << " -> " << r.dump();
    ASSERT_TRUE(r.contains("error")) << r.dump();
    EXPECT_TRUE(r["error"]["message"].is_string());
    EXPECT_FALSE(r["error"]["message"].get<std::string>().empty());
    if (!param.empty()) {
      EXPECT_EQ(r["error"]["param"], param) << r.dump();
    }
  }
};

}  // namespace

TEST_F(ServerTest, HealthModelsMetrics) {
  auto c = client();
  auto h = c.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  auto m = c.Get("/v1/models");
  ASSERT_TRUE(m);
  EXPECT_EQ(json::parse(m->body)["data"][0]["id"], kModel);
  post_ok("/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 3}});
  auto nf = c.Get("/no/such/route");
  ASSERT_TRUE(nf);
  EXPECT_EQ(nf->status, 404);
  // Counted before each response is written: a client that has its answer sees it here.
  auto met = c.Get("/metrics");
  ASSERT_TRUE(met);
  for (const char* s : {"longctx_requests_total{path=\"/v1/completions\",status=\"200\"}",
                        "longctx_requests_total{path=\"other\",status=\"404\"}",
                        "longctx_generated_tokens_total", "longctx_queue_depth",
                        "longctx_request_latency_seconds_count", "longctx_running_sequences"})
    EXPECT_NE(met->body.find(s), std::string::npos) << s;
}

TEST_F(ServerTest, CompletionsGreedyNAndUsage) {
  json r = post_ok("/v1/completions", {{"model", kModel}, {"prompt", "The jury said"}, {"max_tokens", 10},
                                       {"temperature", 0}, {"n", 3}});
  EXPECT_EQ(r["object"], "text_completion");
  ASSERT_EQ(r["choices"].size(), 3u);
  for (int i = 0; i < 3; i++) {
    EXPECT_EQ(r["choices"][i]["index"], i);
    EXPECT_EQ(r["choices"][i]["text"], r["choices"][0]["text"]);  // greedy: identical samples
  }
  EXPECT_EQ(r["usage"]["total_tokens"].get<int>(),
            r["usage"]["prompt_tokens"].get<int>() + r["usage"]["completion_tokens"].get<int>());
  // Seeded sampling is reproducible; different seeds differ.
  json a = post_ok("/v1/completions", {{"prompt", "Hello"}, {"max_tokens", 12}, {"seed", 3}, {"ignore_eos", true}});
  json b = post_ok("/v1/completions", {{"prompt", "Hello"}, {"max_tokens", 12}, {"seed", 3}, {"ignore_eos", true}});
  json d = post_ok("/v1/completions", {{"prompt", "Hello"}, {"max_tokens", 12}, {"seed", 4}, {"top_p", 0.9},
                                       {"ignore_eos", true}});
  EXPECT_EQ(a["usage"]["completion_tokens"], 12);
  EXPECT_EQ(a["choices"][0]["text"], b["choices"][0]["text"]);
  EXPECT_NE(a["choices"][0]["text"], d["choices"][0]["text"]);
}

TEST_F(ServerTest, StopStringCutsTheText) {
  json body = {{"prompt", "Numbers"}, {"max_tokens", 24}, {"seed", 11}, {"temperature", 1}, {"ignore_eos", true}};
  json full = post_ok("/v1/completions", body);
  const std::string text = full["choices"][0]["text"];
  ASSERT_GE(text.size(), 6u) << text;
  size_t at = 3;  // one whole UTF-8 character from byte 3 on
  while (at < text.size() && (uint8_t(text[at]) & 0xC0) == 0x80) at++;
  ASSERT_LT(at, text.size());
  size_t len = 1;
  while (at + len < text.size() && (uint8_t(text[at + len]) & 0xC0) == 0x80) len++;
  const std::string stop = text.substr(at, len);
  body["stop"] = {stop};
  json cut = post_ok("/v1/completions", body);
  EXPECT_EQ(cut["choices"][0]["text"], text.substr(0, text.find(stop)));
  EXPECT_EQ(cut["choices"][0]["finish_reason"], "stop");
  // Streaming with the stop string gives the same text.
  body["stream"] = true;
  std::string streamed;
  for (const auto& e : stream("/v1/completions", body))
    if (e != "[DONE]") streamed += json::parse(e)["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(streamed, cut["choices"][0]["text"]);
}

TEST_F(ServerTest, StreamingMatchesNonStreaming) {
  json body = {{"prompt", "Hello there"}, {"max_tokens", 15}, {"seed", 7}, {"n", 2}};
  json whole = post_ok("/v1/completions", body);
  body["stream"] = true;
  auto events = stream("/v1/completions", body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  std::string texts[2];
  int finishes = 0;
  for (size_t i = 0; i + 1 < events.size(); i++) {
    json e = json::parse(events[i]);
    const int idx = e["choices"][0]["index"];
    texts[idx] += e["choices"][0]["text"].get<std::string>();
    finishes += !e["choices"][0]["finish_reason"].is_null();
  }
  EXPECT_EQ(finishes, 2);
  for (int i = 0; i < 2; i++) EXPECT_EQ(texts[i], whole["choices"][i]["text"]);
}

TEST_F(ServerTest, ChatCompletionsPlainAndStreamed) {
  json body = {{"model", kModel},
               {"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}}},
               {"max_tokens", 8}, {"temperature", 0}};
  json r = post_ok("/v1/chat/completions", body);
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["choices"][0]["message"]["role"], "assistant");
  body["stream"] = true;
  auto events = stream("/v1/chat/completions", body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(json::parse(events[0])["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); i++) {
    json e = json::parse(events[i]);
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    if (e["choices"][0]["delta"].contains("content")) text += e["choices"][0]["delta"]["content"].get<std::string>();
  }
  EXPECT_EQ(text, r["choices"][0]["message"]["content"]);
}

TEST_F(ServerTest, MalformedRequestsGetOpenAIErrors) {
  const std::string c = "/v1/completions", chat = "/v1/chat/completions";
  expect_error(c, "{not json", 400);
  expect_error(c, "[1,2]", 400);
  expect_error(c, R"({"prompt": 5})", 400, "prompt");
  expect_error(c, R"({"max_tokens": 4})", 400, "prompt");
  expect_error(c, R"({"prompt": "x", "max_tokens": "ten"})", 400, "max_tokens");
  expect_error(c, R"({"prompt": "x", "max_tokens": 0})", 400, "max_tokens");
  expect_error(c, R"({"prompt": "x", "max_tokens": -3})", 400, "max_tokens");
  expect_error(c, R"({"prompt": "x", "temperature": "hot"})", 400, "temperature");
  expect_error(c, R"({"prompt": "x", "top_p": 0})", 400, "top_p");
  expect_error(c, R"({"prompt": "x", "n": 0})", 400, "n");
  expect_error(c, R"({"prompt": "x", "stream": "yes"})", 400, "stream");
  expect_error(c, R"({"prompt": "x", "stop": [1]})", 400, "stop");
  expect_error(c, R"({"prompt": "x", "model": "gpt-4"})", 404, "model");
  expect_error(c, R"({"prompt": "x", "model": 3})", 400, "model");
  std::string long_prompt(3000, 'a');
  for (size_t i = 0; i < long_prompt.size(); i += 2) long_prompt[i] = ' ';
  expect_error(c, json{{"prompt", long_prompt}}.dump(), 400, "prompt");  // > 200 prompt tokens
  expect_error(c, json{{"prompt", std::string(5000, 'x')}}.dump(), 413);  // > 4096-byte body
  expect_error(chat, R"({"messages": []})", 400, "messages");
  expect_error(chat, R"({"messages": [{"content": "x"}]})", 400, "messages");
  expect_error(chat, R"({"messages": [{"role": "user", "content": 7}]})", 400, "messages");
  // No key → 401; unknown route → 404; both JSON.
  httplib::Client anon("127.0.0.1", env->port);
  auto r = anon.Post(c, R"({"prompt": "x"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "invalid_api_key");
  auto nf = client().Get("/v1/nothing");
  ASSERT_TRUE(nf);
  EXPECT_EQ(nf->status, 404);
  EXPECT_TRUE(json::parse(nf->body).contains("error"));
  // The server still answers.
  post_ok(c, {{"prompt", "ok"}, {"max_tokens", 2}});
}

TEST_F(ServerTest, ClientDisconnectMidStreamFreesItsSlot) {
  // Raw socket: start a long stream, read its first bytes, hang up.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET, a.sin_port = htons(uint16_t(env->port));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const std::string body = json{{"prompt", "Hello"}, {"max_tokens", 20000}, {"n", 4}, {"stream", true},
                                {"ignore_eos", true}}.dump();
  const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\n"
                          "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                          "\r\n\r\n" + body;
  ASSERT_EQ(write(fd, req.data(), req.size()), ssize_t(req.size()));
  char buf[256];
  ASSERT_GT(read(fd, buf, sizeof buf), 0);
  close(fd);
  // The request is cancelled at the next token it fails to send: nothing keeps running.
  auto c = client();
  bool freed = false;
  for (int i = 0; i < 200 && !freed; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto m = c.Get("/metrics");
    freed = m && m->body.find("longctx_running_sequences 0\n") != std::string::npos &&
            m->body.find("longctx_queue_depth 0\n") != std::string::npos &&
            m->body.find("longctx_client_disconnects_total 0\n") == std::string::npos;
  }
  EXPECT_TRUE(freed);
  // Cancelled long before its 4 × 20000 tokens, and counted as a disconnect.
  auto m = c.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->body.find("longctx_client_disconnects_total 0\n"), std::string::npos) << m->body;
  const size_t g = m->body.find("\nlongctx_generated_tokens_total ");
  ASSERT_NE(g, std::string::npos);
  EXPECT_LT(std::stol(m->body.substr(g + 32)), 40000) << m->body;
  post_ok("/v1/completions", {{"prompt", "still alive"}, {"max_tokens", 3}});
}

TEST_F(ServerTest, OfficialOpenAINodeClient) {
  const fs::path node_dir = fs::path(LONGCTX_SOURCE_DIR) / "tests/node";
  if (!fs::exists(node_dir / "node_modules/openai") || std::system("node --version > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "node or tests/node/node_modules/openai missing (tools/install_deps.sh installs them)";
  const std::string cmd = "node " + (node_dir / "openai_client.test.mjs").string() + " http://127.0.0.1:" +
                          std::to_string(env->port) + "/v1 " + kModel + " " + kKey + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_TRUE(p);
  std::string out;
  char buf[512];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int rc = pclose(p);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("all checks passed"), std::string::npos) << out;
}

// The `longctx serve` command itself: starts on a free port, answers, stops on SIGTERM.
TEST_F(ServerTest, CliServeStartsAnswersAndStopsOnSigterm) {
  const fs::path ck = env->dir / "ckpt";
  checkpoint_save(ck.string(), env->model->config, env->model->params.data(), env->model->layout,
                  nullptr, (env->dir / "tokenizer.model").string());
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  const std::string bin = std::string(LONGCTX_BINARY_DIR) + "/longctx";
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    execl(bin.c_str(), bin.c_str(), "serve", "--ckpt", ck.c_str(), "--port", "0", "--model-name", "cli",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  std::string line;
  char ch;
  while (read(out[0], &ch, 1) == 1 && ch != '\n') line += ch;
  close(out[0]);
  const size_t colon = line.rfind(':');
  ASSERT_NE(colon, std::string::npos) << "serve printed: " << line;
  const int port = std::stoi(line.substr(colon + 1));
  httplib::Client c("127.0.0.1", port);
  auto r = c.Post("/v1/completions", R"({"model": "cli", "prompt": "Hello", "max_tokens": 4})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}
