// LongRePS consistency judge (DESIGN.md §4 step 4): parsing the judge's "Rating: [[score]]", the
// selection rule "stop after 3 paths score 100; keep the best path, ties to the first", and
// judge_run, which asks a judge model (any SampleBackend: a local checkpoint or an endpoint) to
// rate the kept paths of each question.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "reps/qa_data.h"
#include "reps/sample.h"

namespace longctx {

enum class RatingReject { None = 0, NoRating, Malformed, OutOfRange };
const char* rating_reject_name(RatingReject r);  // "ok", "no_rating", "malformed_rating", "rating_out_of_range"

// The last "Rating: [[N]]" in `text` ("rating" case-insensitive, spaces allowed around and
// inside the brackets). N must be an integer 1–100: "[[85.5]]", "[[ninety]]", "[[]]" are
// Malformed, "[[0]]" and "[[101]]" OutOfRange, no "Rating:" followed by "[[" is NoRating.
struct Rating {
  int score = 0;  // 1..100 when reject == None
  RatingReject reject = RatingReject::None;
};
Rating rating_parse(std::string_view text);

// Paths are judged in order; `scores[i]` is the rating of path i (nullopt: unparsable, never
// selected). Judging stops right after the `stop_after`-th score of 100 (later paths are not
// judged). best = the highest score among judged paths, the first one on ties; -1 when none
// parsed. judged = how many paths were (or would be) judged.
struct JudgeSelection {
  int best = -1;
  int best_score = 0;
  int judged = 0;
  bool stopped_early = false;
};
JudgeSelection judge_select(const std::vector<std::optional<int>>& scores, int stop_after = 3);
// True when judging may stop now, given the scores so far (the same rule, for a sampling loop).
bool judge_should_stop(const std::vector<std::optional<int>>& scores_so_far, int stop_after = 3);

struct JudgeOptions {
  int stop_after = 3;
  int max_tokens = 256;       // judge output tokens
  double temperature = 0.0;   // greedy
  uint64_t seed = 1;          // path p's judgement draws with seed + p
  bool chat = false;          // wrap the judge prompt in longctx serve's chat template
  bool unrated_first = false; // a question with no parsable rating keeps its first path (else none)
  int fsync_every = 64;
  bool quiet = false;
};

struct JudgeReport {
  int64_t questions = 0, paths = 0;           // questions with kept paths, kept paths in
  int64_t judged = 0, already_done = 0;       // judgements used (already_done: read from --out)
  int64_t rated = 0;                          // judgements with a parsable score
  int64_t rejected[4] = {};                   // by RatingReject (index 0 unused)
  int64_t prompt_too_long = 0;                // judge prompts the backend skipped
  int64_t not_judged = 0;                     // paths after an early stop
  int64_t stopped_early = 0;                  // questions that reached stop_after scores of 100
  int64_t selected = 0, selected_unrated = 0; // questions with a best path (unrated: first path)
  double best_score_sum = 0;                  // over rated selections
  double seconds = 0;
};
struct JudgeResult {
  JudgeReport report;
  std::vector<nlohmann::json> best;  // per question: its kept path + "judge_score", "judged"
};

// Judges, for each question in `examples` order, its `kept` paths ({"id", "path", "reasoning",
// "answer", ...} as `reps filter` writes them) in file order, one judgement a path, until
// judge_should_stop; then keeps judge_select's best. Judgements are appended to `out` as sample
// records ({"id", "path", "text" = the judge's output, "temperature", "seed"}) and the run
// resumes like sample_run: judgements already in `out` are reused, never asked again. All
// questions advance together: each round asks the backend for the next path of every question
// still being judged, so a local model batches them.
JudgeResult judge_run(const std::vector<QaExample>& examples, const std::vector<nlohmann::json>& kept,
                      const std::string& out, SampleBackend& backend, const JudgeOptions& o);
// {"questions", "paths", "judged", ..., "rejected": {"no_rating": n, ...}, "mean_best_score"}
nlohmann::json judge_report_json(const JudgeReport& r);

}  // namespace longctx
