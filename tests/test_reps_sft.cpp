// LongRePS after filtering: SFT (assistant-only loss mask, two stages, checkpoint), the judge
// loop (stop after 3 scores of 100, best path, resumable, unparsable ratings counted), answer
// extraction for eval, and the `reps judge` / `reps sft` / `eval` commands on a tiny checkpoint.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "model/checkpoint.h"
#include "model/model.h"
#include "model/params.h"
#include "reps/filter.h"
#include "reps/judge.h"
#include "reps/prompt.h"
#include "reps/qa_metrics.h"
#include "reps/sft.h"
#include "test_util.h"
#include "tiny_tokenizer.h"

using namespace longctx;
using namespace longctx::testing;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Env {
  TempDir dir{"reps_sft"};
  std::string tok, ckpt, data;
  Config config;
};
Env* env = nullptr;

json question(const std::string& id, const std::string& fact, const std::string& q, const std::string& a) {
  return {{"id", id},
          {"paragraphs", {{{"idx", 0}, {"title", "Town"}, {"paragraph_text", "The jury said that " + fact}, {"is_supporting", true}}}},
          {"question", q},
          {"answer", a},
          {"answer_aliases", json::array()},
          {"hops", 2},
          {"length_bucket", 512}};
}

class RepsSft : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setenv("OMP_NUM_THREADS", "1", 1);
    env = new Env;
    env->tok = env->dir.file("tokenizer.model");
    train_tiny_tokenizer(env->tok);
    Config& c = env->config;
    c.hidden_size = 32, c.num_hidden_layers = 1, c.num_attention_heads = 2, c.num_key_value_heads = 2;
    c.intermediate_size = 64, c.vocab_size = Tokenizer::load(env->tok).vocab_size(), c.window = 16;
    Model m(c, backend_cpu_ref());
    param_init(m.params.data(), m.layout, c, 1);
    env->ckpt = env->dir.file("ck");
    checkpoint_save(env->ckpt, c, m.params.data(), m.layout, nullptr, env->tok);
    env->data = env->dir.file("q.jsonl");
    write_file(env->data, question("q1", "Orlan Vesk was born in Dravenmoor.", "Where was Orlan Vesk born?", "Dravenmoor").dump() + "\n" +
                              question("q2", "Dravenmoor lies on the river Quill.", "Which river?", "Quill").dump() + "\n" +
                              question("q3", "the election was won by Mara Tell.", "Who won?", "Mara Tell").dump() + "\n");
  }
  static void TearDownTestSuite() {
    delete env;
    env = nullptr;
  }
};

// ---------------------------------------------------------------- SFT
TEST_F(RepsSft, TargetsOnlyOnTheAssistantReply) {
  const Tokenizer tok = Tokenizer::load(env->tok);
  const std::string reply = reps_reply("[Excerpt 1] `x`", "Quill");
  const SftExample e = sft_encode(tok, "Which river?", reply);
  ASSERT_EQ(e.tokens.size(), e.targets.size());
  const std::vector<int32_t> prompt(e.tokens.begin() + 1, e.tokens.begin() + e.prompt_tokens);
  EXPECT_EQ(e.tokens[0], tok.bos_id());
  EXPECT_EQ(tok.decode(prompt), reps_chat_prompt("Which river?"));
  EXPECT_EQ(reps_chat_prompt("Which river?"), "user: Which river?\nassistant:");  // longctx serve's template
  EXPECT_EQ(e.tokens.back(), tok.eos_id());
  for (int t = 0; t + 1 < e.prompt_tokens; t++) EXPECT_EQ(e.targets[size_t(t)], -1) << "prompt position " << t;
  for (size_t t = size_t(e.prompt_tokens) - 1; t + 1 < e.tokens.size(); t++) EXPECT_EQ(e.targets[t], e.tokens[t + 1]);
  EXPECT_EQ(e.targets.back(), -1);
  const std::vector<int32_t> rep(e.tokens.begin() + e.prompt_tokens, e.tokens.end() - 1);
  EXPECT_EQ(tok.decode(rep), tok.decode(tok.encode(reply)));
  EXPECT_EQ(reply, R"( {"reasoning":"[Excerpt 1] `x`","answer":"Quill"})");
  EXPECT_EQ(reps_reply("", "Quill"), R"( {"answer":"Quill"})");  // outcome supervision
}

// The SFT loss is exactly the sum of the reply positions' token losses of an unmasked pass, and
// its gradient exactly the reply positions' part: the gradient of the unmasked loss splits into
// (SFT gradient) + (gradient of the context positions alone), the latter non-zero. So context
// and question tokens add no loss and no gradient of their own.
TEST_F(RepsSft, ContextTokensGetNoLossAndNoGradient) {
  const Tokenizer tok = Tokenizer::load(env->tok);
  const SftExample e = sft_encode(tok, "The jury said that Orlan Vesk was born in Dravenmoor. Where was he born?",
                                  reps_reply("", "Dravenmoor"));
  const size_t T = e.tokens.size();
  Model m(env->config, backend_cpu_ref());
  LoadedModel lm = checkpoint_load(env->ckpt);
  m.params.upload(lm.params.data(), lm.params.size());
  int64_t n = 0;
  const double loss = sft_grads(m, {&e}, &n);
  std::vector<float> g_sft = m.grads.to_host();
  EXPECT_EQ(n, int64_t(T) - e.prompt_tokens);  // the reply's tokens + EOS

  // Sum-of-losses passes (dloss = 1) with chosen targets; returns the summed loss and gradient.
  std::vector<int32_t> pos(T), cu = {0, int32_t(T)};
  for (size_t t = 0; t < T; t++) pos[t] = int32_t(t);
  auto pass = [&](const std::vector<int32_t>& targets, std::vector<float>& grads, std::vector<float>* losses) {
    TokenBatch b{e.tokens.data(), targets.data(), pos.data(), cu.data(), int(T), 1};
    m.backend->zero(m.grads.data(), m.grads.size());
    const double l = model_forward(m, b, nullptr, 1.0f);
    if (losses) losses->assign(m.acts.losses, m.acts.losses + T);
    model_backward(m, b);
    grads = m.grads.to_host();
    return l;
  };
  std::vector<int32_t> all(T, -1), ctx(T, -1);
  for (size_t t = 0; t + 1 < T; t++) all[t] = e.tokens[t + 1], ctx[t] = e.targets[t] >= 0 ? -1 : e.tokens[t + 1];
  std::vector<float> g_all, g_ctx, losses;
  const double l_all = pass(all, g_all, &losses);
  const double l_ctx = pass(ctx, g_ctx, nullptr);
  double reply_sum = 0;
  for (size_t t = 0; t < T; t++) reply_sum += e.targets[t] >= 0 ? losses[t] : 0.0;
  EXPECT_NEAR(loss * double(n), reply_sum, 1e-5 * reply_sum);
  EXPECT_NEAR(l_all, reply_sum + l_ctx, 1e-5 * l_all);
  EXPECT_GT(l_ctx, 1.0);  // without the mask the context would carry real loss
  double ctx_norm = 0, diff = 0, ref = 0;
  for (size_t i = 0; i < g_all.size(); i++) {
    const double reply_part = double(g_sft[i]) * double(n);
    ctx_norm += double(g_ctx[i]) * g_ctx[i];
    diff += std::pow(double(g_all[i]) - reply_part - g_ctx[i], 2);
    ref += double(g_all[i]) * g_all[i];
  }
  EXPECT_GT(ctx_norm, 1e-6 * ref);
  EXPECT_LT(std::sqrt(diff), 1e-4 * std::sqrt(ref));
}

TEST_F(RepsSft, TwoStagesLowerTheLossAndWriteACheckpoint) {
  const std::string paths = env->dir.file("paths.jsonl");
  write_file(paths, json{{"id", "q2"}, {"reasoning", "[Excerpt 1] `Dravenmoor lies on the river Quill.`"}, {"answer", "Quill"}}.dump() + "\n" +
                        json{{"id", "q3"}, {"reasoning", "[Excerpt 1] `won by Mara Tell`"}, {"answer", "Mara Tell"}}.dump() + "\n");
  SftOptions o;
  o.ckpt = env->ckpt;
  o.questions = env->data;
  o.out = env->dir.file("sft");
  o.batch = 2;
  o.quiet = true;
  o.stages = {{"warmup", env->data, 10, 1e-2f}, {"paths", paths, 40, 1e-2f}};  // warm-up: QA file = answers only
  const SftReport r = sft_run(o);
  ASSERT_EQ(r.stages.size(), 2u);
  EXPECT_EQ(r.stages[0].examples, 3);
  EXPECT_EQ(r.stages[1].examples, 2);
  EXPECT_EQ(r.stages[1].steps, 40);
  EXPECT_DOUBLE_EQ(r.stages[1].epochs, 40.0);
  EXPECT_LT(r.stages[1].last_loss, 0.5 * r.stages[1].first_loss);
  const LoadedModel lm = checkpoint_load(o.out + "/checkpoint");
  EXPECT_TRUE(fs::exists(o.out + "/checkpoint/tokenizer.model"));
  const LoadedModel base = checkpoint_load(env->ckpt);
  EXPECT_NE(lm.params, base.params);
  EXPECT_EQ(read_file(o.out + "/metrics.jsonl").find("\"stage\":\"paths\"") != std::string::npos, true);

  // Too long examples are skipped and counted; none left is an error; an unknown id too.
  o.max_tokens = 60;
  o.stages = {{"paths", paths, 1, 1e-3f}};
  expect_error([&] { sft_run(o); }, {"no usable example", "2 longer than --max-tokens 60"});
  o.max_tokens = 2048;
  write_file(paths, R"({"id": "nope", "answer": "x"})" "\n");
  expect_error([&] { sft_run(o); }, {"'nope'", "not a question"});
}

// ---------------------------------------------------------------- judge
// A judge that answers from a script: (id, path) → its output; counts the requests.
struct ScriptedJudge : SampleBackend {
  std::map<std::pair<std::string, int>, std::string> out;
  int requests = 0, fail_after = -1;
  void run(const std::vector<SampleJob>& jobs, const SampleOptions& opt, const SampleSink& sink) override {
    for (const SampleJob& j : jobs) {
      EXPECT_EQ(j.n, 1);
      EXPECT_EQ(opt.temperature, 0.0);
      EXPECT_NE(j.prompt.find("Rating: [[score]]"), std::string::npos);
      if (fail_after >= 0 && requests >= fail_after) fail("judge went away");
      requests++;
      sink.sample(j, j.first, out.at({j.ex->id, j.first}));
    }
  }
};

std::vector<json> kept_paths(const std::map<std::string, int>& per_q) {
  std::vector<json> k;
  for (const auto& [id, n] : per_q)
    for (int p = 0; p < n; p++)
      k.push_back({{"id", id}, {"path", 2 * p}, {"reasoning", fmt::format("r{}", p)}, {"answer", "a"}});
  return k;
}

TEST_F(RepsSft, JudgeStopsAfterThreePerfectKeepsBestAndResumes) {
  const std::vector<QaExample> qs = qa_read(env->data);
  const std::vector<json> kept = kept_paths({{"q1", 6}, {"q2", 3}, {"q3", 2}});
  ScriptedJudge j;
  // q1: 100 at paths 2, 4, 8 → stop after path 8 (index 4); path 10 never judged.
  const char* q1[] = {"Rating: [[90]]", "ok Rating: [[100]]", "Rating: [[100]]", "garbage", "Rating: [[100]]", "Rating: [[100]]"};
  for (int p = 0; p < 6; p++) j.out[{"q1", 2 * p}] = q1[p];
  j.out[{"q2", 0}] = "Rating: [[70]]", j.out[{"q2", 2}] = "Rating: [[85]]", j.out[{"q2", 4}] = "Rating: [[85]]";
  j.out[{"q3", 0}] = "no score", j.out[{"q3", 2}] = "Rating: [[101]]";
  JudgeOptions o;
  o.quiet = true;
  const std::string out = env->dir.file("judge.jsonl");
  JudgeResult r = judge_run(qs, kept, out, j, o);
  EXPECT_EQ(j.requests, 5 + 3 + 2);
  ASSERT_EQ(r.best.size(), 2u);  // q3 has no parsable rating: dropped
  EXPECT_EQ(r.best[0]["id"], "q1");
  EXPECT_EQ(r.best[0]["path"], 2);  // the first of the 100s
  EXPECT_EQ(r.best[0]["judge_score"], 100);
  EXPECT_EQ(r.best[0]["judged"], 5);
  EXPECT_EQ(r.best[1]["path"], 2);  // q2: 85 ties, first wins
  EXPECT_EQ(r.report.judged, 10);
  EXPECT_EQ(r.report.rated, 7);
  EXPECT_EQ(r.report.rejected[int(RatingReject::NoRating)], 2);
  EXPECT_EQ(r.report.rejected[int(RatingReject::OutOfRange)], 1);
  EXPECT_EQ(r.report.not_judged, 1);
  EXPECT_EQ(r.report.stopped_early, 1);
  const json rep = judge_report_json(r.report);
  EXPECT_EQ(rep["rejected"]["no_rating"], 2);
  EXPECT_EQ(rep["selected"], 2);

  // A rerun asks nothing and selects the same; --unrated-first keeps q3's first path.
  ScriptedJudge again;
  o.unrated_first = true;
  r = judge_run(qs, kept, out, again, o);
  EXPECT_EQ(again.requests, 0);
  EXPECT_EQ(r.report.already_done, 10);
  ASSERT_EQ(r.best.size(), 3u);
  EXPECT_EQ(r.best[2]["id"], "q3");
  EXPECT_TRUE(r.best[2]["judge_score"].is_null());
  EXPECT_EQ(r.report.selected_unrated, 1);

  // Interrupted after 4 judgements: the rerun asks only for the 6 missing ones.
  const std::string out2 = env->dir.file("judge2.jsonl");
  ScriptedJudge crash = j;
  crash.requests = 0, crash.fail_after = 4;
  expect_error([&] { judge_run(qs, kept, out2, crash, o); }, {"judge went away"});
  EXPECT_EQ(sample_read(out2).size(), 4u);
  ScriptedJudge rest = j;
  rest.requests = 0;
  r = judge_run(qs, kept, out2, rest, o);
  EXPECT_EQ(rest.requests, 6);
  EXPECT_EQ(sample_read(out2).size(), 10u);
  EXPECT_EQ(r.best[0]["path"], 2);
}

// ---------------------------------------------------------------- eval
TEST(RepsEval, PredictionFromJsonOrFirstLine) {
  EXPECT_EQ(reps_prediction(R"( {"reasoning": "x", "answer": "Quill"})"), "Quill");
  EXPECT_EQ(reps_prediction("```json\n{\"answer\": 1961}\n```"), "1961");
  EXPECT_EQ(reps_prediction("\n  Mara Tell \nmore"), "Mara Tell");
  EXPECT_EQ(reps_prediction(R"({"reasoning": "no answer"} Quill)"), R"({"reasoning": "no answer"} Quill)");
  EXPECT_EQ(reps_prediction(""), "");
}

TEST_F(RepsSft, EvalCommandScoresGreedyGenerations) {
  const std::string out = env->dir.file("eval");
  CliRun r = run_cli(fmt::format("eval --data {} --ckpt {} --out {} --max-tokens 6 --chat --no-plot", env->data,
                                 env->ckpt, out));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("3 questions"), std::string::npos) << r.out;
  const json m = json::parse(read_file(out + "/metrics.json"));
  EXPECT_EQ(m["n"], 3);
  EXPECT_TRUE(m["by_hops"].contains("2"));
  EXPECT_TRUE(m["by_length"].contains("512"));
  // The metrics are LongBench F1 of the predictions file against the golds.
  const auto pred = qa_predictions_read(out + "/predictions.jsonl");
  ASSERT_EQ(pred.size(), 3u);
  double f1 = 0;
  for (const QaExample& q : qa_read(env->data)) f1 += qa_f1_max(pred.at(q.id), qa_golds(q));
  EXPECT_NEAR(m["qa_f1"].get<double>(), 100.0 * f1 / 3, 1e-9);
  // Greedy and resumable: a rerun reuses the generations.
  const std::string gen = read_file(out + "/generations.jsonl");
  r = run_cli(fmt::format("eval --data {} --ckpt {} --out {} --max-tokens 6 --chat --no-plot", env->data, env->ckpt, out));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(read_file(out + "/generations.jsonl"), gen);
  // A base model's reading: the plain completion prompt (not with --chat).
  r = run_cli(fmt::format("eval --data {} --ckpt {} --out {}_completion --max-tokens 4 --completion --no-plot",
                          env->data, env->ckpt, out));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(qa_predictions_read(out + "_completion/predictions.jsonl").size(), 3u);
  EXPECT_NE(read_file(out + "_completion/generations.jsonl"), gen);
  r = run_cli(fmt::format("eval --data {} --ckpt {} --out {}_both --completion --chat", env->data, env->ckpt, out));
  EXPECT_NE(r.code, 0);  // a CLI11 parse error (its own exit code)
  EXPECT_NE(r.out.find("excludes"), std::string::npos) << r.out;
  // The plot, where gnuplot is installed.
  if (std::system("command -v gnuplot > /dev/null 2>&1") == 0) {
    r = run_cli(fmt::format("eval --data {} --ckpt {} --out {} --max-tokens 6 --quiet", env->data, env->ckpt, out));
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_GT(fs::file_size(out + "/f1_vs_length.png"), 1000u);
  }
}

TEST_F(RepsSft, CommandsEndToEndAndErrors) {
  const std::string kept = env->dir.file("cli_kept.jsonl");
  write_file(kept, json{{"id", "q1"}, {"path", 0}, {"reasoning", "[Excerpt 1] `x`"}, {"answer", "Dravenmoor"}}.dump() + "\n");
  const std::string d = env->dir.file("cli");
  CliRun r = run_cli(fmt::format("reps judge --data {} --kept {} --out {}/j.jsonl --best {}/b.jsonl --ckpt {} "
                                 "--max-tokens 4 --unrated-first --quiet --report {}/r.json",
                                 env->data, kept, d, d, env->ckpt, d));
  EXPECT_CLI_ERROR(r, "cannot open");  // no such folder yet
  fs::create_directories(d);
  r = run_cli(fmt::format("reps judge --data {} --kept {} --out {}/j.jsonl --best {}/b.jsonl --ckpt {} "
                          "--max-tokens 4 --unrated-first --quiet --report {}/r.json",
                          env->data, kept, d, d, env->ckpt, d));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(json::parse(read_file(d + "/r.json"))["judged"], 1);
  EXPECT_EQ(sample_read(d + "/j.jsonl").size(), 1u);
  r = run_cli(fmt::format("reps sft --ckpt {} --data {} --train {}/b.jsonl --steps 2 --lr 1e-3 --warmup-data {} "
                          "--warmup-steps 1 --out {}/sft --quiet",
                          env->ckpt, env->data, d, env->data, d));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(json::parse(read_file(d + "/sft/sft.json"))["stages"].size(), 2u);
  EXPECT_TRUE(fs::exists(d + "/sft/checkpoint/model.safetensors"));

  EXPECT_CLI_ERROR(run_cli(fmt::format("eval --data {}/missing.jsonl --ckpt {} --out {}/e", d, env->ckpt, d)), "missing.jsonl");
  EXPECT_CLI_ERROR(run_cli(fmt::format("eval --data {} --out {}/e", env->data, d)), "either --ckpt");
  EXPECT_CLI_ERROR(run_cli(fmt::format("eval --data {} --ckpt {}/nockpt --out {}/e", env->data, d, d)), "nockpt");
  EXPECT_CLI_ERROR(run_cli(fmt::format("reps sft --ckpt {} --data {} --train {} --steps 2 --warmup-steps 3 --out {}/s2",
                                       env->ckpt, env->data, env->data, d)),
                   "--warmup-data and --warmup-steps go together");
  EXPECT_CLI_ERROR(run_cli(fmt::format("reps sft --ckpt {} --data {} --train {} --steps 0 --out {}/s2", env->ckpt,
                                       env->data, env->data, d)),
                   "--steps must be >= 1");
  write_file(d + "/bad_kept.jsonl", "{\"id\": \"q1\"}\n");
  EXPECT_CLI_ERROR(run_cli(fmt::format("reps judge --data {} --kept {}/bad_kept.jsonl --out {}/j3.jsonl --best {}/b3.jsonl "
                                       "--ckpt {}", env->data, d, d, d, env->ckpt)),
                   "kept path 1");
}

}  // namespace
