// LongBench QA metrics (DESIGN.md §4 steps 2 and 6): answer normalisation, token F1, exact match,
// and their aggregation over a test set with per-hop and per-context-length breakdowns.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "reps/qa_data.h"

namespace longctx {

// LongBench's normalize_answer: lowercase, drop punctuation, drop the articles a/an/the, collapse
// whitespace. Python's string.punctuation is ASCII only; we also drop Unicode punctuation
// (general punctuation U+2010–U+205E, curly quotes, guillemets, ¡ ¿ «» · …, CJK/fullwidth
// punctuation) so “Dravenmoor” and "Dravenmoor" agree. Lowercasing covers ASCII, Latin-1,
// Latin Extended-A, Greek and Cyrillic; other characters are kept as they are. Articles are
// dropped as whole whitespace-separated tokens (LongBench: regex \b(a|an|the)\b after
// punctuation removal — the same except next to non-word symbols such as "€").
std::string qa_normalize(std::string_view s);
std::vector<std::string> qa_tokens(std::string_view normalized);  // split on spaces

// LongBench qa_f1_score: token-overlap F1 of the normalised strings (multiset intersection);
// 0 when either side normalises to nothing.
double qa_f1(std::string_view prediction, std::string_view gold);
bool qa_exact(std::string_view prediction, std::string_view gold);  // normalised equality
// Best over the golds (LongBench takes the max over ground truths).
double qa_f1_max(std::string_view prediction, const std::vector<std::string>& golds);
bool qa_exact_any(std::string_view prediction, const std::vector<std::string>& golds);

// Per-example score and its keys for the breakdown.
struct QaScore {
  std::string id;
  int hops = 0;                // 0 = unknown
  int64_t length_key = 0;      // see qa_length_key
  double f1 = 0;
  bool em = false;
  bool missing = false;        // no prediction: scored 0
};

// The context-length key of an example: its length_bucket (synth's target) when set, else the
// power of two ≥ context_tokens (min 1024), else of words × 1.3 of qa_context (approximate).
int64_t qa_length_key(const QaExample& ex);

struct QaGroup {
  int64_t n = 0, missing = 0;
  double f1_sum = 0, em_sum = 0;
  double f1() const { return n ? 100.0 * f1_sum / double(n) : 0.0; }  // LongBench reports ×100
  double em() const { return n ? 100.0 * em_sum / double(n) : 0.0; }
};

struct QaReport {
  QaGroup all;
  std::map<int, QaGroup> by_hops;          // 0 = unknown
  std::map<int64_t, QaGroup> by_length;    // key from qa_length_key
  std::map<std::pair<int, int64_t>, QaGroup> by_hops_length;
  std::vector<QaScore> scores;             // in example order
};

// Scores `predictions` (question id → predicted answer) against every example; an example with
// no prediction counts as F1 0 / EM 0 and is counted in `missing`. Pure function.
QaReport qa_evaluate(const std::vector<QaExample>& examples,
                     const std::map<std::string, std::string>& predictions);
// {"n", "missing", "qa_f1", "em", "by_hops": {"2": {...}}, "by_length": {"4096": {...}},
//  "by_hops_length": {"2/4096": {...}}}; with per_example also "examples": [{id, f1, em, ...}].
nlohmann::json qa_report_json(const QaReport& r, bool per_example = false);

// Predictions JSONL: {"id": ..., "prediction": "..."} per line (also accepts "answer" or "pred").
std::map<std::string, std::string> qa_predictions_read(const std::string& path);

}  // namespace longctx
