#include "reps/judge.h"

#include <cctype>
#include <chrono>
#include <map>
#include <mutex>
#include <set>

#include "core/error.h"
#include "core/progress.h"
#include "reps/prompt.h"

namespace longctx {

const char* rating_reject_name(RatingReject r) {
  switch (r) {
    case RatingReject::None: return "ok";
    case RatingReject::NoRating: return "no_rating";
    case RatingReject::Malformed: return "malformed_rating";
    case RatingReject::OutOfRange: return "rating_out_of_range";
  }
  return "?";
}

namespace {
bool ieq_prefix(std::string_view s, size_t at, std::string_view word) {
  if (at + word.size() > s.size()) return false;
  for (size_t k = 0; k < word.size(); k++)
    if (std::tolower(uint8_t(s[at + k])) != word[k]) return false;
  return true;
}
size_t skip_spaces(std::string_view s, size_t p) {
  while (p < s.size() && (s[p] == ' ' || s[p] == '\t')) p++;
  return p;
}
}  // namespace

Rating rating_parse(std::string_view t) {
  Rating best{0, RatingReject::NoRating};
  for (size_t i = 0; i < t.size(); i++) {
    if (!ieq_prefix(t, i, "rating")) continue;
    size_t p = skip_spaces(t, i + 6);
    if (p < t.size() && t[p] == ':') p = skip_spaces(t, p + 1);
    if (!(p + 1 < t.size() && t[p] == '[' && t[p + 1] == '[')) continue;
    p = skip_spaces(t, p + 2);
    const size_t close = t.find("]]", p);
    Rating r{0, RatingReject::Malformed};
    if (close != std::string_view::npos) {
      size_t e = close;
      while (e > p && (t[e - 1] == ' ' || t[e - 1] == '\t')) e--;
      std::string_view num = t.substr(p, e - p);
      bool digits = !num.empty() && num.size() <= 6;
      for (char c : num) digits &= c >= '0' && c <= '9';
      if (digits) {
        const int v = std::stoi(std::string(num));
        r = v >= 1 && v <= 100 ? Rating{v, RatingReject::None} : Rating{0, RatingReject::OutOfRange};
      }
    }
    best = r;  // the last rating in the text wins
  }
  return best;
}

JudgeSelection judge_select(const std::vector<std::optional<int>>& scores, int stop_after) {
  JudgeSelection s;
  int perfect = 0;
  for (size_t i = 0; i < scores.size(); i++) {
    s.judged = int(i) + 1;
    if (scores[i] && (s.best < 0 || *scores[i] > s.best_score)) {
      s.best = int(i);
      s.best_score = *scores[i];
    }
    if (scores[i] && *scores[i] == 100 && ++perfect >= stop_after) {
      s.stopped_early = i + 1 < scores.size();
      break;
    }
  }
  return s;
}

bool judge_should_stop(const std::vector<std::optional<int>>& scores_so_far, int stop_after) {
  int perfect = 0;
  for (const auto& s : scores_so_far) perfect += s && *s == 100;
  return perfect >= stop_after;
}

namespace {
using nlohmann::json;

// One question's kept paths and its judgements so far.
struct Judged {
  const QaExample* ex = nullptr;
  std::vector<const json*> paths;
  std::vector<std::optional<int>> scores;
  bool done = false;
};
}  // namespace

JudgeResult judge_run(const std::vector<QaExample>& examples, const std::vector<json>& kept, const std::string& out,
                      SampleBackend& backend, const JudgeOptions& o) {
  LCX_CHECK(o.stop_after >= 1, "--stop-after must be >= 1, got {}", o.stop_after);
  const auto t0 = std::chrono::steady_clock::now();
  JudgeResult res;
  JudgeReport& rep = res.report;
  std::map<std::string, Judged> by_id;
  std::set<std::string> ids;
  for (const QaExample& ex : examples) by_id[ex.id].ex = &ex, ids.insert(ex.id);
  for (size_t i = 0; i < kept.size(); i++) {
    const json& k = kept[i];
    const bool ok = k.is_object() && k.contains("id") && k["id"].is_string() && k.contains("path") &&
                    k["path"].is_number_integer() && k.contains("reasoning") && k["reasoning"].is_string() &&
                    k.contains("answer") && k["answer"].is_string();
    LCX_CHECK(ok, "kept path {}: expected {{\"id\", \"path\", \"reasoning\", \"answer\"}} as `reps filter` writes, got {}",
              i + 1, k.dump().substr(0, 200));
    auto it = by_id.find(k["id"].get<std::string>());
    LCX_CHECK(it != by_id.end(), "kept path {}: question id '{}' is not in the data file", i + 1,
              k["id"].get<std::string>());
    it->second.paths.push_back(&k);
  }
  // Judgements already in `out` (verified and repaired like a sample file).
  SampleOptions so;
  so.n = 1;
  so.temperature = o.temperature;
  so.max_tokens = o.max_tokens;
  so.seed = o.seed;
  so.fsync_every = o.fsync_every;
  so.quiet = true;
  const SampleIndex idx = sample_index_load(out, ids, so);
  std::map<std::pair<std::string, int>, std::string> texts;
  if (!idx.done.empty())
    for (SampleRecord& r : sample_read(out)) texts[{r.id, r.path}] = std::move(r.text);
  rep.already_done = int64_t(texts.size());
  std::set<std::pair<std::string, int>> skipped;  // prompt too long for the judge

  SampleAppender app(out, o.fsync_every, idx.needs_newline);
  for (const auto& [id, q] : by_id) rep.paths += int64_t(q.paths.size()), rep.questions += !q.paths.empty();
  Progress bar("judge", uint64_t(rep.paths), "paths", o.quiet);
  uint64_t progressed = 0;
  std::mutex mu;
  SampleSink sink;
  sink.sample = [&](const SampleJob& job, int path, const std::string& text) {
    std::lock_guard<std::mutex> lk(mu);
    app.append({job.ex->id, path, text, o.temperature, o.seed + uint64_t(path), ""});
    texts[{job.ex->id, path}] = text;
  };
  sink.skip = [&](const SampleJob& job, const std::string&) {
    std::lock_guard<std::mutex> lk(mu);
    skipped.insert({job.ex->id, job.first});
  };
  for (;;) {  // rounds: the next unjudged path of every question still being judged
    std::vector<SampleJob> jobs;
    for (const QaExample& ex : examples) {
      Judged& q = by_id[ex.id];
      while (!q.done) {
        if (q.scores.size() == q.paths.size() || judge_should_stop(q.scores, o.stop_after)) {
          q.done = true;
          break;
        }
        const json& p = *q.paths[q.scores.size()];
        const std::pair<std::string, int> key{ex.id, p["path"].get<int>()};
        if (skipped.count(key)) {
          rep.prompt_too_long++;
          q.scores.push_back(std::nullopt);
        } else if (auto t = texts.find(key); t != texts.end()) {
          const Rating r = rating_parse(t->second);
          rep.judged++;
          rep.rejected[int(r.reject)]++;
          rep.rated += r.reject == RatingReject::None;
          q.scores.push_back(r.reject == RatingReject::None ? std::optional<int>(r.score) : std::nullopt);
        } else {
          std::string prompt = reps_judge_prompt(ex, p["reasoning"].get<std::string>(), p["answer"].get<std::string>());
          jobs.push_back({&ex, o.chat ? reps_chat_prompt(prompt) : prompt, key.second, 1});
          break;
        }
        bar.update(++progressed);
      }
    }
    if (jobs.empty()) break;
    backend.run(jobs, so, sink);
  }
  app.sync();
  bar.finish();
  for (const QaExample& ex : examples) {
    const Judged& q = by_id[ex.id];
    if (q.paths.empty()) continue;
    const JudgeSelection sel = judge_select(q.scores, o.stop_after);
    rep.stopped_early += judge_should_stop(q.scores, o.stop_after);
    rep.not_judged += int64_t(q.paths.size() - q.scores.size());
    json b;
    if (sel.best >= 0) {
      b = *q.paths[size_t(sel.best)];
      b["judge_score"] = sel.best_score;
      rep.best_score_sum += sel.best_score;
    } else if (o.unrated_first) {
      b = *q.paths[0];
      b["judge_score"] = nullptr;
      rep.selected_unrated++;
    } else {
      continue;
    }
    b["judged"] = sel.judged;
    rep.selected++;
    res.best.push_back(std::move(b));
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

json judge_report_json(const JudgeReport& r) {
  json rej = json::object();
  for (int i = 1; i < 4; i++) rej[rating_reject_name(RatingReject(i))] = r.rejected[i];
  const int64_t rated_sel = r.selected - r.selected_unrated;
  return {{"questions", r.questions},
          {"paths", r.paths},
          {"judged", r.judged},
          {"already_done", r.already_done},
          {"rated", r.rated},
          {"rejected", rej},
          {"prompt_too_long", r.prompt_too_long},
          {"not_judged_after_stop", r.not_judged},
          {"stopped_early", r.stopped_early},
          {"selected", r.selected},
          {"selected_unrated_first", r.selected_unrated},
          {"mean_best_score", rated_sel > 0 ? r.best_score_sum / double(rated_sel) : 0.0},
          {"seconds", r.seconds}};
}

}  // namespace longctx
