// `longctx reps sample` end to end over a tiny random-init checkpoint and 3 synthetic questions:
// local mode writes questions×n records with the right ids, paths and seeds; an interrupted run
// (a partial output with a truncated last line) resumes with every (id, path) exactly once and
// the finished lines untouched; endpoint mode against a real `longctx serve` child process gives
// the same records; bad inputs give clear errors; the output feeds `reps filter`.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "model/checkpoint.h"
#include "model/model.h"
#include "model/params.h"
#include "reps/qa_data.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "tiny_tokenizer.h"

using namespace longctx;
using namespace longctx::testing;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr int kN = 4;  // paths per question in these tests

struct Env {
  TempDir dir{"reps_sample"};
  std::string ckpt, data;
};
Env* env = nullptr;

json question(const std::string& id, const std::string& fact, const std::string& q, const std::string& a) {
  return {{"id", id},
          {"paragraphs",
           {{{"idx", 0}, {"title", "Town"}, {"paragraph_text", "The jury said it did find that " + fact}, {"is_supporting", true}},
            {{"idx", 1}, {"title", "Other"}, {"paragraph_text", "Hello there, how are you today?"}, {"is_supporting", false}}}},
          {"question", q},
          {"answer", a},
          {"answer_aliases", json::array()},
          {"answerable", true}};
}

class RepsSample : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setenv("OMP_NUM_THREADS", "1", 1);  // children inherit it: no OpenMP spinning on a shared box
    env = new Env;
    const std::string tok_path = env->dir.file("tokenizer.model");
    longctx::testing::train_tiny_tokenizer(tok_path);
    Config c;
    c.hidden_size = 32, c.num_hidden_layers = 1, c.num_attention_heads = 2, c.num_key_value_heads = 2;
    c.intermediate_size = 64, c.vocab_size = Tokenizer::load(tok_path).vocab_size(), c.window = 16;
    Model m(c, backend_cpu_ref());
    param_init(m.params.data(), m.layout, c, 1);
    env->ckpt = env->dir.file("ck");
    checkpoint_save(env->ckpt, c, m.params.data(), m.layout, nullptr, tok_path);
    env->data = env->dir.file("q.jsonl");
    std::string d;
    d += question("q1", "Orlan Vesk was born in Dravenmoor.", "Where was Orlan Vesk born?", "Dravenmoor").dump() + "\n";
    d += question("q2", "Dravenmoor lies on the river Quill.", "Which river runs through Dravenmoor?", "Quill").dump() + "\n";
    d += question("q3", "the election was won by Mara Tell.", "Who won the election?", "Mara Tell").dump() + "\n";
    write_file(env->data, d);
  }
  static void TearDownTestSuite() {
    delete env;
    env = nullptr;
  }
  static std::string local(const std::string& out, const std::string& extra = "", int max_tokens = 6,
                           int max_batch = 8) {
    return fmt::format("reps sample --data {} --out {} --ckpt {} --n {} --max-tokens {} --seed 7 --max-batch {} {}",
                       env->data, out, env->ckpt, kN, max_tokens, max_batch, extra);
  }
};

// (id, path) → record, checking each pair appears once.
std::map<std::pair<std::string, int>, SampleRecord> by_key(const std::vector<SampleRecord>& v) {
  std::map<std::pair<std::string, int>, SampleRecord> m;
  for (const SampleRecord& s : v) EXPECT_TRUE(m.emplace(std::make_pair(s.id, s.path), s).second) << s.id << "/" << s.path;
  return m;
}

void expect_complete(const std::vector<SampleRecord>& v, int questions) {
  const auto m = by_key(v);
  EXPECT_EQ(v.size(), size_t(questions * kN));
  for (int q = 1; q <= questions; q++)
    for (int p = 0; p < kN; p++) {
      auto it = m.find({fmt::format("q{}", q), p});
      ASSERT_NE(it, m.end()) << "q" << q << " path " << p << " missing";
      EXPECT_EQ(it->second.seed, uint64_t(7 + p));
      EXPECT_DOUBLE_EQ(it->second.temperature, 0.7);
    }
}

// A free port nobody listens on (bound, then closed).
int free_port() {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  close(s);
  return ntohs(a.sin_port);
}

// `longctx serve` as a child process on a free port (--port 0; the port is read from its banner).
struct ServeChild {
  pid_t pid = -1;
  int port = 0;
  FILE* out = nullptr;
  explicit ServeChild(const std::string& ckpt, const std::string& max_prompt_tokens) {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    pid = fork();
    if (pid == 0) {
      dup2(fds[1], 1);
      close(fds[0]);
      const std::string bin = std::string(LONGCTX_BINARY_DIR) + "/longctx";
      execl(bin.c_str(), bin.c_str(), "serve", "--ckpt", ckpt.c_str(), "--port", "0", "--model-name", "tiny",
            "--threads", "8", "--max-batch", "8", "--max-prompt-tokens", max_prompt_tokens.c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[1]);
    out = fdopen(fds[0], "r");
    char line[1024];
    while (fgets(line, sizeof line, out)) {
      const char* p = strstr(line, "http://127.0.0.1:");
      if (p) {
        port = atoi(p + strlen("http://127.0.0.1:"));
        break;
      }
    }
  }
  ~ServeChild() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
    if (out) fclose(out);
  }
};

}  // namespace

TEST_F(RepsSample, LocalWritesEveryPathWithItsSeed) {
  TempDir t("rs_local");
  const auto r = run_cli(local(t.file("s.jsonl")));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("3 questions x 4 paths: 0 already done, 12 sampled"), std::string::npos) << r.out;
  expect_complete(sample_read(t.file("s.jsonl")), 3);
  // Rerunning finds everything done and appends nothing.
  const std::string before = read_file(t.file("s.jsonl"));
  const auto again = run_cli(local(t.file("s.jsonl")));
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_NE(again.out.find("12 already done, 0 sampled"), std::string::npos) << again.out;
  EXPECT_EQ(read_file(t.file("s.jsonl")), before);
  // The output feeds `reps filter`.
  const auto f = run_cli("reps filter --data " + env->data + " --samples " + t.file("s.jsonl") + " --out " +
                         t.file("kept.jsonl"));
  ASSERT_EQ(f.code, 0) << f.out;
  EXPECT_NE(f.out.find("\"samples\": 12"), std::string::npos) << f.out;
}

// --engine-stats prints the scheduler's counters; --profile-ops adds the per-op table (also on
// `generate`). The records are the same either way (the profiled table computes the same ops).
TEST_F(RepsSample, EngineStatsAndOpProfile) {
  TempDir t("rs_prof");
  ASSERT_EQ(run_cli(local(t.file("plain.jsonl"), "--quiet")).code, 0);
  const auto st = run_cli(local(t.file("stats.jsonl"), "--quiet --engine-stats"));
  ASSERT_EQ(st.code, 0) << st.out;
  for (const char* want : {"engine: ", "decoded tokens/s", "forward (ops + syncs + copies)", "sampling",
                           "KV caches: 12 used"})  // 3 questions x 4 samples
    EXPECT_NE(st.out.find(want), std::string::npos) << want << "\n" << st.out;
  EXPECT_EQ(st.out.find("matmul_forward"), std::string::npos) << st.out;
  const auto pr = run_cli(local(t.file("prof.jsonl"), "--quiet --profile-ops"));
  ASSERT_EQ(pr.code, 0) << pr.out;
  for (const char* want : {"engine: ", "KV caches: 12 used", "matmul_forward", "decode_attn_forward", "ms/step"})
    EXPECT_NE(pr.out.find(want), std::string::npos) << want << "\n" << pr.out;
  const auto gen = run_cli("generate --ckpt " + env->ckpt + " --prompt 'The jury said' --max-tokens 4 --profile-ops");
  ASSERT_EQ(gen.code, 0) << gen.out;
  EXPECT_NE(gen.out.find("decode_attn_forward"), std::string::npos) << gen.out;
  const auto plain = by_key(sample_read(t.file("plain.jsonl")));
  for (const char* f : {"stats.jsonl", "prof.jsonl"}) {
    const auto m = by_key(sample_read(t.file(f)));
    ASSERT_EQ(m.size(), plain.size()) << f;
    for (const auto& [k, rec] : plain) EXPECT_EQ(m.at(k).text, rec.text) << f << " " << k.first << "/" << k.second;
  }
}

TEST_F(RepsSample, ResumeAfterCrashLosesAndDuplicatesNothing) {
  TempDir t("rs_resume");
  const std::string full = t.file("full.jsonl"), out = t.file("s.jsonl");
  ASSERT_EQ(run_cli(local(full, "--quiet")).code, 0);
  // A run stopped by --limit, then "killed" mid-write of the question after: 2 complete
  // questions, 2 of q3's lines kept, and half of a third line.
  ASSERT_EQ(run_cli(local(out, "--quiet --limit 2")).code, 0);
  expect_complete(sample_read(out), 2);
  std::string partial = read_file(out);
  const std::string q3 = read_file(full).substr(0);
  std::vector<std::string> q3_lines;
  for (size_t p = 0, e; (e = q3.find('\n', p)) != std::string::npos; p = e + 1)
    if (q3.compare(p, 12, "{\"id\":\"q3\",\"") == 0) q3_lines.push_back(q3.substr(p, e + 1 - p));
  ASSERT_EQ(q3_lines.size(), size_t(kN));
  partial += q3_lines[0] + q3_lines[2] + q3_lines[3].substr(0, q3_lines[3].size() / 2);
  write_file(out, partial);
  const std::string finished = partial.substr(0, partial.rfind('\n') + 1);

  const auto r = run_cli(local(out));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("dropped a truncated last line"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("10 already done, 2 sampled"), std::string::npos) << r.out;
  const std::string after = read_file(out);
  EXPECT_EQ(after.compare(0, finished.size(), finished), 0) << "finished lines were changed";
  const auto got = sample_read(out);
  expect_complete(got, 3);
  // The resumed paths drew with their own seeds: the same text as an uninterrupted run.
  const auto want = by_key(sample_read(full));
  for (const auto& [key, s] : by_key(got)) EXPECT_EQ(s.text, want.at(key).text) << key.first << "/" << key.second;
}

TEST_F(RepsSample, ResumeAfterSigkill) {
  TempDir t("rs_kill");
  const std::string full = t.file("full.jsonl"), out = t.file("s.jsonl");
  const std::string opts = "--quiet --fsync-every 1";
  ASSERT_EQ(run_cli(local(full, opts, 300, 2)).code, 0);
  // The same run, killed (SIGKILL) once a few records are written.
  const pid_t pid = fork();
  if (pid == 0) {
    const std::string cmd = "exec " + std::string(LONGCTX_BINARY_DIR) + "/longctx " + local(out, opts, 300, 2);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  for (int i = 0; i < 20000; i++) {
    const std::string s = read_file(out);
    if (std::count(s.begin(), s.end(), '\n') >= 3) break;
    usleep(200);
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  const size_t before = sample_read(out).size();
  const auto r = run_cli(local(out, "--fsync-every 1", 300, 2));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto got = sample_read(out);
  expect_complete(got, 3);
  const auto want = by_key(sample_read(full));
  for (const auto& [key, s] : by_key(got)) EXPECT_EQ(s.text, want.at(key).text) << key.first << "/" << key.second;
  std::printf("killed after %zu of %d records\n", before, 3 * kN);
}

TEST_F(RepsSample, ResumeRefusesAnotherRunsOutput) {
  TempDir t("rs_mismatch");
  const std::string out = t.file("s.jsonl");
  ASSERT_EQ(run_cli(local(out, "--quiet --limit 1")).code, 0);
  EXPECT_CLI_ERROR(run_cli(local(out, "--temperature 0.5")), "s.jsonl:1: sampled at temperature 0.7, but this run uses 0.5");
  std::string s = read_file(out);
  write_file(out, "garbage\n" + s);
  EXPECT_CLI_ERROR(run_cli(local(out)), "s.jsonl:1: not valid JSON, and not the last line");
}

// The 3 questions and one whose prompt is far over 1000 tokens.
std::string write_with_big_question(const TempDir& t) {
  const std::string data = t.file("big.jsonl");
  write_file(data, read_file(env->data) + question("big", std::string(2000, 'x') + ".", "What?", "x").dump() + "\n");
  return data;
}

TEST_F(RepsSample, SkipsPromptsTooLong) {
  TempDir t("rs_skip");
  const std::string data = write_with_big_question(t);
  const auto r = run_cli("reps sample --data " + data + " --out " + t.file("s.jsonl") + " --ckpt " + env->ckpt +
                         " --n 4 --max-tokens 6 --seed 7 --max-prompt-tokens 1000");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("skipped 1 questions"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("big: prompt of"), std::string::npos) << r.out;
  expect_complete(sample_read(t.file("s.jsonl")), 3);
}

TEST_F(RepsSample, EndpointMatchesLocal) {
  TempDir t("rs_endpoint");
  ASSERT_EQ(run_cli(local(t.file("local.jsonl"), "--quiet")).code, 0);
  ServeChild serve(env->ckpt, "1000");
  ASSERT_GT(serve.port, 0) << "longctx serve did not start";
  const std::string url = "http://127.0.0.1:" + std::to_string(serve.port);
  const std::string ep = "reps sample --data " + env->data + " --endpoint " + url +
                         " --model tiny --n 4 --max-tokens 6 --seed 7 --concurrency 3 --out ";
  const auto r = run_cli(ep + t.file("ep.jsonl"));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto got = sample_read(t.file("ep.jsonl"));
  expect_complete(got, 3);
  const auto want = by_key(sample_read(t.file("local.jsonl")));
  for (const auto& [key, s] : by_key(got)) EXPECT_EQ(s.text, want.at(key).text) << key.first << "/" << key.second;
  // The server's 400 context_length_exceeded skips the question, as the local limit does.
  const auto skip = run_cli("reps sample --data " + write_with_big_question(t) + " --endpoint " + url +
                            " --model tiny --n 4 --max-tokens 6 --seed 7 --out " + t.file("skip.jsonl"));
  ASSERT_EQ(skip.code, 0) << skip.out;
  EXPECT_NE(skip.out.find("skipped 1 questions"), std::string::npos) << skip.out;
  EXPECT_NE(skip.out.find("big: the prompt is"), std::string::npos) << skip.out;
  expect_complete(sample_read(t.file("skip.jsonl")), 3);
  // A 4xx names the status and the server's message.
  EXPECT_CLI_ERROR(run_cli("reps sample --data " + env->data + " --endpoint " + url + "/v1 --model nope --out " +
                           t.file("bad.jsonl")),
                   "/v1/completions returned HTTP 404 for question 'q");  // whichever worker fails first
  EXPECT_CLI_ERROR(run_cli("reps sample --data " + env->data + " --endpoint " + url + " --model nope --concurrency 1 --out " +
                           t.file("bad.jsonl")),
                   "returned HTTP 404 for question 'q1': the model 'nope' does not exist (this server serves 'tiny')");
}

TEST_F(RepsSample, BadInputsGiveClearErrors) {
  TempDir t("rs_errors");
  const std::string out = " --out " + t.file("s.jsonl");
  EXPECT_CLI_ERROR(run_cli("reps sample --data " + t.file("none.jsonl") + out + " --ckpt " + env->ckpt),
                   "cannot open '" + t.file("none.jsonl") + "'");
  EXPECT_CLI_ERROR(run_cli("reps sample --data " + env->data + out + " --ckpt " + env->ckpt +
                           " --endpoint http://127.0.0.1:1"),
                   "give either --ckpt DIR (a local model) or --endpoint URL (an OpenAI-compatible server), not both");
  EXPECT_CLI_ERROR(run_cli("reps sample --data " + env->data + out), "give either --ckpt DIR");
  const auto r = run_cli("reps sample --data " + env->data + out + " --endpoint http://127.0.0.1:" +
                         std::to_string(free_port()) + " --retries 2 --backoff 0.05");
  EXPECT_CLI_ERROR(r, "failed after 2 retries: could not connect (is the server running?)");
  EXPECT_CLI_ERROR(run_cli("reps sample --data " + env->data + out + " --endpoint localhost:8000"),
                   "expected http://HOST:PORT");
}
