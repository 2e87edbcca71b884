#include "reps/sft.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>

#include "core/error.h"
#include "core/progress.h"
#include "core/rng.h"
#include "model/checkpoint.h"
#include "reps/prompt.h"
#include "train/optimizer.h"

namespace longctx {

using nlohmann::json;
namespace fs = std::filesystem;

SftExample sft_encode(const Tokenizer& tok, const std::string& prompt, const std::string& reply) {
  SftExample e;
  e.tokens.push_back(tok.bos_id());
  for (int32_t t : tok.encode(reps_chat_prompt(prompt))) e.tokens.push_back(t);
  e.prompt_tokens = int(e.tokens.size());
  for (int32_t t : tok.encode(reply)) e.tokens.push_back(t);
  e.tokens.push_back(tok.eos_id());
  // Position t predicts tokens[t + 1]; only reply tokens (and EOS) are targets.
  e.targets.assign(e.tokens.size(), -1);
  for (size_t t = size_t(e.prompt_tokens) - 1; t + 1 < e.tokens.size(); t++) e.targets[t] = e.tokens[t + 1];
  return e;
}

std::vector<SftRecord> sft_read(const std::string& path) {
  std::vector<SftRecord> out;
  jsonl_for_each(path, [&](const json& j, const std::string& where) {
    LCX_CHECK(j.is_object(), "{}: expected a JSON object", where);
    SftRecord r;
    const char* id_key = j.contains("id") ? "id" : "_id";
    LCX_CHECK(j.contains(id_key) && (j[id_key].is_string() || j[id_key].is_number_integer()),
              "{}: no \"id\" (a string) naming a question", where);
    r.id = j[id_key].is_string() ? j[id_key].get<std::string>() : j[id_key].dump();
    if (j.contains("answer")) {
      const json& a = j["answer"];
      LCX_CHECK(a.is_string() || a.is_number(), "{}: \"answer\" must be a string", where);
      r.answer = a.is_string() ? a.get<std::string>() : a.dump();
    } else {
      LCX_CHECK(j.contains("answers") && j["answers"].is_array() && !j["answers"].empty() &&
                    j["answers"][0].is_string(),
                "{}: no \"answer\" (or LongBench \"answers\")", where);
      r.answer = j["answers"][0].get<std::string>();
    }
    LCX_CHECK(!r.answer.empty(), "{}: empty answer", where);
    if (j.contains("reasoning")) {
      LCX_CHECK(j["reasoning"].is_string(), "{}: \"reasoning\" must be a string", where);
      r.reasoning = j["reasoning"].get<std::string>();
    }
    out.push_back(std::move(r));
  });
  return out;
}

double sft_grads(Model& m, const std::vector<const SftExample*>& batch, int64_t* n_targets) {
  std::vector<int32_t> tokens, targets, pos, cu = {0};
  int64_t n = 0;
  for (const SftExample* e : batch) {
    tokens.insert(tokens.end(), e->tokens.begin(), e->tokens.end());
    targets.insert(targets.end(), e->targets.begin(), e->targets.end());
    for (size_t t = 0; t < e->tokens.size(); t++) pos.push_back(int32_t(t));
    cu.push_back(int32_t(tokens.size()));
    for (int32_t t : e->targets) n += t >= 0;
  }
  LCX_CHECK(n > 0, "sft: a batch without target tokens");
  TokenBatch b{tokens.data(), targets.data(), pos.data(), cu.data(), int(tokens.size()), int(batch.size())};
  m.reserve(b.T);
  m.backend->zero(m.grads.data(), m.grads.size());
  const double loss = model_forward(m, b, nullptr, 1.0f / float(n));  // mean over target tokens
  model_backward(m, b);
  if (n_targets) *n_targets = n;
  return loss / double(n);
}

namespace {

// One stage's examples: every record whose question is known, encoded; too long ones counted.
std::vector<SftExample> stage_examples(const SftStage& st, const std::map<std::string, const QaExample*>& qs,
                                       const Tokenizer& tok, const SftOptions& o, SftStageReport& rep) {
  const std::vector<SftRecord> recs = sft_read(st.data);
  rep.records = int64_t(recs.size());
  std::vector<SftExample> out;
  for (const SftRecord& r : recs) {
    auto it = qs.find(r.id);
    LCX_CHECK(it != qs.end(), "{}: id '{}' is not a question of {} (SFT data and --data must match)", st.data, r.id,
              o.questions);
    SftExample e = sft_encode(tok, reps_sample_prompt(*it->second, o.max_quotes), reps_reply(r.reasoning, r.answer));
    e.id = r.id;
    if (int(e.tokens.size()) > o.max_tokens) {
      rep.skipped_long++;
      continue;
    }
    out.push_back(std::move(e));
  }
  LCX_CHECK(!out.empty(), "{}: no usable example ({} records, {} longer than --max-tokens {})", st.data, rep.records,
            rep.skipped_long, o.max_tokens);
  rep.examples = int64_t(out.size());
  return out;
}

}  // namespace

SftReport sft_run(const SftOptions& o) {
  LCX_CHECK(!o.stages.empty(), "sft: no stage to run");
  LCX_CHECK(o.batch >= 1, "--batch must be >= 1, got {}", o.batch);
  LCX_CHECK(o.max_tokens >= 8, "--max-tokens must be >= 8, got {}", o.max_tokens);
  for (const SftStage& s : o.stages) {
    LCX_CHECK(s.steps >= 1, "{} stage: --steps must be >= 1, got {}", s.name, s.steps);
    LCX_CHECK(s.lr > 0 && std::isfinite(s.lr), "{} stage: --lr must be > 0, got {}", s.name, s.lr);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<QaExample> questions = qa_read(o.questions);
  std::map<std::string, const QaExample*> qs;
  for (const QaExample& q : questions) qs[q.id] = &q;

  LoadedModel lm = checkpoint_load(o.ckpt);
  const std::string tok_path = lm.dir + "/tokenizer.model";
  const Tokenizer tok = Tokenizer::load(tok_path);
  const Backend& be = backend_get(o.device.c_str());
  Model m(lm.config, be);
  m.params.upload(lm.params.data(), lm.params.size());
  m.reserve(o.batch * o.max_tokens);
  AdamW opt;
  opt.weight_decay = o.weight_decay;

  fs::create_directories(o.out);
  std::ofstream metrics(o.out + "/metrics.jsonl");
  LCX_CHECK(metrics, "cannot write '{}/metrics.jsonl'", o.out);
  SftReport rep;
  Rng rng(o.seed);
  int64_t global = 0;
  for (const SftStage& st : o.stages) {
    SftStageReport sr;
    sr.name = st.name;
    const std::vector<SftExample> ex = stage_examples(st, qs, tok, o, sr);
    // Epochs of a fresh shuffle each (Fisher–Yates on the project's Philox stream).
    std::vector<size_t> order;
    size_t cursor = 0;
    auto next = [&]() -> const SftExample* {
      if (cursor == order.size()) {
        order.resize(ex.size());
        std::iota(order.begin(), order.end(), size_t(0));
        for (size_t i = order.size(); i > 1; i--) std::swap(order[i - 1], order[rng.below(i)]);
        cursor = 0;
      }
      return &ex[order[cursor++]];
    };
    Progress bar("sft " + st.name, uint64_t(st.steps), "steps", o.quiet);
    std::vector<double> losses;
    for (int64_t s = 0; s < st.steps; s++) {
      std::vector<const SftExample*> batch;
      for (int i = 0; i < o.batch; i++) batch.push_back(next());
      int64_t n = 0;
      const double loss = sft_grads(m, batch, &n);
      const double norm = grad_norm(be, m.grads.data(), m.grads.size());
      LCX_CHECK(std::isfinite(loss) && std::isfinite(norm), "sft {} step {}: non-finite loss {} / grad norm {}",
                st.name, s + 1, loss, norm);
      grad_clip(be, m.grads.data(), m.grads.size(), norm, o.clip);
      adamw_step(be, opt, m.params.data(), m.grads.data(), m.layout, st.lr);  // constant lr (§4.5)
      losses.push_back(loss);
      sr.target_tokens += n;
      metrics << json{{"step", ++global}, {"stage", st.name}, {"loss", loss}, {"lr", st.lr}, {"grad_norm", norm},
                      {"target_tokens", n}}.dump()
              << "\n";
      bar.update(uint64_t(s + 1));
    }
    bar.finish();
    sr.steps = st.steps;
    sr.epochs = double(st.steps) * o.batch / double(ex.size());
    sr.first_loss = losses.front();
    const size_t tail = std::min<size_t>(10, losses.size());
    sr.last_loss = std::accumulate(losses.end() - long(tail), losses.end(), 0.0) / double(tail);
    rep.stages.push_back(sr);
  }
  checkpoint_save(o.out + "/checkpoint", lm.config, m.params.to_host().data(), m.layout, nullptr, tok_path);
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace longctx
